package isakmp

// Phase 1 (ISAKMP SA) attribute types, RFC 2409 Appendix A.
const (
	AttrEncryptionAlgorithm uint16 = 1
	AttrHashAlgorithm       uint16 = 2
	AttrAuthMethod          uint16 = 3
	AttrGroupDescription    uint16 = 4
	AttrGroupType           uint16 = 5
	AttrGroupPrime          uint16 = 6
	AttrGroupGeneratorOne   uint16 = 7
	AttrGroupGeneratorTwo   uint16 = 8
	AttrGroupCurveA         uint16 = 9
	AttrGroupCurveB         uint16 = 10
	AttrLifeType            uint16 = 11
	AttrLifeDuration        uint16 = 12
	AttrPRF                 uint16 = 13
	AttrKeyLength           uint16 = 14
	AttrFieldSize           uint16 = 15
	AttrGroupOrder          uint16 = 16
)

// Phase 1 attribute values, RFC 2409 Appendix A (AES: RFC 3602; SHA-2:
// RFC 4868).
const (
	EncDESCBC      uint16 = 1
	EncIDEACBC     uint16 = 2
	EncBlowfishCBC uint16 = 3
	EncRC5CBC      uint16 = 4
	Enc3DESCBC     uint16 = 5
	EncCASTCBC     uint16 = 6
	EncAESCBC      uint16 = 7

	HashMD5    uint16 = 1
	HashSHA1   uint16 = 2
	HashTiger  uint16 = 3
	HashSHA256 uint16 = 4
	HashSHA384 uint16 = 5
	HashSHA512 uint16 = 6

	AuthPSK          uint16 = 1
	AuthDSSSig       uint16 = 2
	AuthRSASig       uint16 = 3
	AuthRSAEnc       uint16 = 4
	AuthRSAEncRev    uint16 = 5
	AuthXAuthInitPSK uint16 = 65001

	GroupModp768  uint16 = 1
	GroupModp1024 uint16 = 2
	GroupModp1536 uint16 = 5
	GroupModp2048 uint16 = 14
	GroupModp3072 uint16 = 15
	GroupModp4096 uint16 = 16
	GroupModp6144 uint16 = 17
	GroupModp8192 uint16 = 18
	GroupECP256   uint16 = 19
	GroupECP384   uint16 = 20
	GroupECP521   uint16 = 21

	LifeSeconds   uint16 = 1
	LifeKilobytes uint16 = 2
)

// Phase 2 (IPsec SA) attribute types, RFC 2407 §4.5.
const (
	AttrSALifeType          uint16 = 1
	AttrSALifeDuration      uint16 = 2
	AttrSAGroupDescription  uint16 = 3
	AttrEncapsulationMode   uint16 = 4
	AttrAuthAlgorithm       uint16 = 5
	AttrSAKeyLength         uint16 = 6
	AttrKeyRounds           uint16 = 7
	AttrCompressDictSize    uint16 = 8
	AttrCompressPrivateAlgo uint16 = 9
)

// Phase 2 attribute values (RFC 2407 §4.5, RFC 3947 §5.1, RFC 4868).
const (
	EncapTunnel            uint16 = 1
	EncapTransport         uint16 = 2
	EncapUDPTunnel         uint16 = 3
	EncapUDPTransport      uint16 = 4
	EncapUDPTunnelDraft    uint16 = 61443
	EncapUDPTransportDraft uint16 = 61444
	AuthAlgHMACMD5         uint16 = 1
	AuthAlgHMACSHA1        uint16 = 2
	AuthAlgHMACSHA256      uint16 = 5
	AuthAlgHMACSHA384      uint16 = 6
	AuthAlgHMACSHA512      uint16 = 7
)

// Transform IDs: KEY_IKE for the ISAKMP protocol (RFC 2407 §4.4.2) and the
// ESP transform IDs (RFC 2407 §4.4.4, RFC 3602, RFC 4106).
const (
	TransformKeyIKE uint8 = 1

	ESPDES      uint8 = 2
	ESP3DES     uint8 = 3
	ESPNull     uint8 = 11
	ESPAESCBC   uint8 = 12
	ESPAESCTR   uint8 = 13
	ESPAESGCM8  uint8 = 18
	ESPAESGCM12 uint8 = 19
	ESPAESGCM16 uint8 = 20
)
