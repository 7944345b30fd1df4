// Package isakmp owns the IKEv1 wire format: the ISAKMP header (RFC 2408
// §3.1), the payloads IKEv1 uses (RFC 2408 §3.2-3.15, RFC 2407 §4.6, NAT-T
// RFC 3947), their decoding into typed values and their encoding back to
// exactly the same bytes.
//
// It never interprets payloads beyond their structure: it does not choose
// proposals, check hashes, encrypt or decrypt, and it keeps payload types it
// does not model as Unknown. It has no state, no I/O and no logging; bad
// input yields an *Error naming the payload and its offset, never a panic.
//
// Decoded payloads are pointers (*SA, *KE, *Notify, ...); the encoder accepts
// both pointers and values. Decoded values never alias the caller's buffer.
//
// This package must never import other ikegw packages.
package isakmp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// HeaderLen is the size of the ISAKMP header.
const HeaderLen = 28

// Version1 is the version byte of ISAKMP 1.0 (major 1, minor 0).
const Version1 = 0x10

// Limits that bound the work one message can cause (DoS bound).
const (
	// MaxPayloads is the maximum number of payloads in one message, of
	// proposals in one SA payload, of transforms in one proposal and of
	// attributes in one transform.
	MaxPayloads = 64
)

// Domains of interpretation and situations (RFC 2407 §4.2).
const (
	DOIISAKMP       uint32 = 0
	DOIIPsec        uint32 = 1
	SitIdentityOnly uint32 = 1
	SitSecrecy      uint32 = 2
	SitIntegrity    uint32 = 4
)

// PayloadType is the "Next Payload" value of RFC 2408 §3.1.
type PayloadType uint8

// Payload types (RFC 2408 §3.1, RFC 3947 §3.1/§5, and the NAT-T draft
// numbers still sent by older peers).
const (
	PayloadNone      PayloadType = 0
	PayloadSA        PayloadType = 1
	PayloadProposal  PayloadType = 2
	PayloadTransform PayloadType = 3
	PayloadKE        PayloadType = 4
	PayloadID        PayloadType = 5
	PayloadCert      PayloadType = 6
	PayloadCR        PayloadType = 7
	PayloadHash      PayloadType = 8
	PayloadSig       PayloadType = 9
	PayloadNonce     PayloadType = 10
	PayloadNotify    PayloadType = 11
	PayloadDelete    PayloadType = 12
	PayloadVendorID  PayloadType = 13
	PayloadNATD      PayloadType = 20
	PayloadNATOA     PayloadType = 21
	// PayloadNATDDraft and PayloadNATOADraft are the numbers of
	// draft-ietf-ipsec-nat-t-ike-02/03; decoded as NATD / NATOA with Draft set.
	PayloadNATDDraft  PayloadType = 130
	PayloadNATOADraft PayloadType = 131
)

var payloadNames = map[PayloadType]string{
	PayloadNone: "NONE", PayloadSA: "SA", PayloadProposal: "PROPOSAL",
	PayloadTransform: "TRANSFORM", PayloadKE: "KE", PayloadID: "ID",
	PayloadCert: "CERT", PayloadCR: "CR", PayloadHash: "HASH",
	PayloadSig: "SIG", PayloadNonce: "NONCE", PayloadNotify: "NOTIFY",
	PayloadDelete: "DELETE", PayloadVendorID: "VID", PayloadNATD: "NAT-D",
	PayloadNATOA: "NAT-OA", PayloadNATDDraft: "NAT-D(draft)",
	PayloadNATOADraft: "NAT-OA(draft)",
}

func (t PayloadType) String() string {
	if s, ok := payloadNames[t]; ok {
		return s
	}
	return "PAYLOAD(" + strconv.Itoa(int(t)) + ")"
}

// ExchangeType is the exchange type of the ISAKMP header.
type ExchangeType uint8

// Exchange types (RFC 2408 §3.1, RFC 2409 §5/§5.5).
const (
	ExchangeBase       ExchangeType = 1
	ExchangeMain       ExchangeType = 2 // Identity Protection
	ExchangeAuthOnly   ExchangeType = 3
	ExchangeAggressive ExchangeType = 4
	ExchangeInfo       ExchangeType = 5
	ExchangeQuick      ExchangeType = 32
	ExchangeNewGroup   ExchangeType = 33
)

func (e ExchangeType) String() string {
	switch e {
	case ExchangeBase:
		return "Base"
	case ExchangeMain:
		return "Main"
	case ExchangeAuthOnly:
		return "AuthOnly"
	case ExchangeAggressive:
		return "Aggressive"
	case ExchangeInfo:
		return "Informational"
	case ExchangeQuick:
		return "Quick"
	case ExchangeNewGroup:
		return "NewGroup"
	}
	return "EXCHANGE(" + strconv.Itoa(int(e)) + ")"
}

// Flags are the header flags (RFC 2408 §3.1).
type Flags uint8

const (
	FlagEncryption Flags = 1
	FlagCommit     Flags = 2
	FlagAuthOnly   Flags = 4
)

func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	if f&FlagEncryption != 0 {
		parts = append(parts, "E")
	}
	if f&FlagCommit != 0 {
		parts = append(parts, "C")
	}
	if f&FlagAuthOnly != 0 {
		parts = append(parts, "A")
	}
	if rest := f &^ (FlagEncryption | FlagCommit | FlagAuthOnly); rest != 0 {
		parts = append(parts, fmt.Sprintf("0x%02x", uint8(rest)))
	}
	return strings.Join(parts, "|")
}

// ProtocolID is a protocol identifier (RFC 2407 §4.4.1).
type ProtocolID uint8

const (
	ProtoISAKMP ProtocolID = 1
	ProtoAH     ProtocolID = 2
	ProtoESP    ProtocolID = 3
	ProtoIPComp ProtocolID = 4
)

func (p ProtocolID) String() string {
	switch p {
	case ProtoISAKMP:
		return "ISAKMP"
	case ProtoAH:
		return "AH"
	case ProtoESP:
		return "ESP"
	case ProtoIPComp:
		return "IPCOMP"
	}
	return "PROTO(" + strconv.Itoa(int(p)) + ")"
}

// IDType is an identification type (RFC 2407 §4.6.2.1).
type IDType uint8

const (
	IDIPv4Addr   IDType = 1
	IDFQDN       IDType = 2
	IDUserFQDN   IDType = 3
	IDIPv4Subnet IDType = 4
	IDIPv6Addr   IDType = 5
	IDIPv6Subnet IDType = 6
	IDIPv4Range  IDType = 7
	IDIPv6Range  IDType = 8
	IDDerASN1DN  IDType = 9
	IDDerASN1GN  IDType = 10
	IDKeyID      IDType = 11
)

var idNames = map[IDType]string{
	IDIPv4Addr: "IPV4_ADDR", IDFQDN: "FQDN", IDUserFQDN: "USER_FQDN",
	IDIPv4Subnet: "IPV4_ADDR_SUBNET", IDIPv6Addr: "IPV6_ADDR",
	IDIPv6Subnet: "IPV6_ADDR_SUBNET", IDIPv4Range: "IPV4_ADDR_RANGE",
	IDIPv6Range: "IPV6_ADDR_RANGE", IDDerASN1DN: "DER_ASN1_DN",
	IDDerASN1GN: "DER_ASN1_GN", IDKeyID: "KEY_ID",
}

func (t IDType) String() string {
	if s, ok := idNames[t]; ok {
		return s
	}
	return "ID(" + strconv.Itoa(int(t)) + ")"
}

// NotifyType is a notify message type (RFC 2408 §3.14.1, RFC 2407 §4.6.3,
// RFC 3706).
type NotifyType uint16

// Error types (RFC 2408 §3.14.1).
const (
	NotifyInvalidPayloadType      NotifyType = 1
	NotifyDOINotSupported         NotifyType = 2
	NotifySituationNotSupported   NotifyType = 3
	NotifyInvalidCookie           NotifyType = 4
	NotifyInvalidMajorVersion     NotifyType = 5
	NotifyInvalidMinorVersion     NotifyType = 6
	NotifyInvalidExchangeType     NotifyType = 7
	NotifyInvalidFlags            NotifyType = 8
	NotifyInvalidMessageID        NotifyType = 9
	NotifyInvalidProtocolID       NotifyType = 10
	NotifyInvalidSPI              NotifyType = 11
	NotifyInvalidTransformID      NotifyType = 12
	NotifyAttributesNotSupported  NotifyType = 13
	NotifyNoProposalChosen        NotifyType = 14
	NotifyBadProposalSyntax       NotifyType = 15
	NotifyPayloadMalformed        NotifyType = 16
	NotifyInvalidKeyInformation   NotifyType = 17
	NotifyInvalidIDInformation    NotifyType = 18
	NotifyInvalidCertEncoding     NotifyType = 19
	NotifyInvalidCertificate      NotifyType = 20
	NotifyCertTypeUnsupported     NotifyType = 21
	NotifyInvalidCertAuthority    NotifyType = 22
	NotifyInvalidHashInformation  NotifyType = 23
	NotifyAuthenticationFailed    NotifyType = 24
	NotifyInvalidSignature        NotifyType = 25
	NotifyAddressNotification     NotifyType = 26
	NotifyNotifySALifetime        NotifyType = 27
	NotifyCertificateUnavailable  NotifyType = 28
	NotifyUnsupportedExchangeType NotifyType = 29
	NotifyUnequalPayloadLengths   NotifyType = 30
)

// Status types (RFC 2407 §4.6.3) and Dead Peer Detection (RFC 3706).
const (
	NotifyResponderLifetime NotifyType = 24576
	NotifyReplayStatus      NotifyType = 24577
	NotifyInitialContact    NotifyType = 24578
	NotifyRUThere           NotifyType = 36136
	NotifyRUThereAck        NotifyType = 36137
)

var notifyNames = map[NotifyType]string{
	NotifyInvalidPayloadType:      "INVALID-PAYLOAD-TYPE",
	NotifyDOINotSupported:         "DOI-NOT-SUPPORTED",
	NotifySituationNotSupported:   "SITUATION-NOT-SUPPORTED",
	NotifyInvalidCookie:           "INVALID-COOKIE",
	NotifyInvalidMajorVersion:     "INVALID-MAJOR-VERSION",
	NotifyInvalidMinorVersion:     "INVALID-MINOR-VERSION",
	NotifyInvalidExchangeType:     "INVALID-EXCHANGE-TYPE",
	NotifyInvalidFlags:            "INVALID-FLAGS",
	NotifyInvalidMessageID:        "INVALID-MESSAGE-ID",
	NotifyInvalidProtocolID:       "INVALID-PROTOCOL-ID",
	NotifyInvalidSPI:              "INVALID-SPI",
	NotifyInvalidTransformID:      "INVALID-TRANSFORM-ID",
	NotifyAttributesNotSupported:  "ATTRIBUTES-NOT-SUPPORTED",
	NotifyNoProposalChosen:        "NO-PROPOSAL-CHOSEN",
	NotifyBadProposalSyntax:       "BAD-PROPOSAL-SYNTAX",
	NotifyPayloadMalformed:        "PAYLOAD-MALFORMED",
	NotifyInvalidKeyInformation:   "INVALID-KEY-INFORMATION",
	NotifyInvalidIDInformation:    "INVALID-ID-INFORMATION",
	NotifyInvalidCertEncoding:     "INVALID-CERT-ENCODING",
	NotifyInvalidCertificate:      "INVALID-CERTIFICATE",
	NotifyCertTypeUnsupported:     "CERT-TYPE-UNSUPPORTED",
	NotifyInvalidCertAuthority:    "INVALID-CERT-AUTHORITY",
	NotifyInvalidHashInformation:  "INVALID-HASH-INFORMATION",
	NotifyAuthenticationFailed:    "AUTHENTICATION-FAILED",
	NotifyInvalidSignature:        "INVALID-SIGNATURE",
	NotifyAddressNotification:     "ADDRESS-NOTIFICATION",
	NotifyNotifySALifetime:        "NOTIFY-SA-LIFETIME",
	NotifyCertificateUnavailable:  "CERTIFICATE-UNAVAILABLE",
	NotifyUnsupportedExchangeType: "UNSUPPORTED-EXCHANGE-TYPE",
	NotifyUnequalPayloadLengths:   "UNEQUAL-PAYLOAD-LENGTHS",
	NotifyResponderLifetime:       "RESPONDER-LIFETIME",
	NotifyReplayStatus:            "REPLAY-STATUS",
	NotifyInitialContact:          "INITIAL-CONTACT",
	NotifyRUThere:                 "R-U-THERE",
	NotifyRUThereAck:              "R-U-THERE-ACK",
}

func (n NotifyType) String() string {
	if s, ok := notifyNames[n]; ok {
		return s
	}
	return "NOTIFY(" + strconv.Itoa(int(n)) + ")"
}

// IsError reports whether n is an error type (1..8191, RFC 2408 §3.14.1).
func (n NotifyType) IsError() bool { return n >= 1 && n < 8192 }

// Header is the ISAKMP header (RFC 2408 §3.1).
type Header struct {
	ICookie, RCookie [8]byte
	NextPayload      PayloadType
	Version          uint8
	Exchange         ExchangeType
	Flags            Flags
	MessageID        uint32
	Length           uint32
}

// Payload is one decoded ISAKMP payload. Type is the payload type written
// in the preceding Next Payload field.
type Payload interface{ Type() PayloadType }

// Attribute is a data attribute (RFC 2408 §3.3). Type is the attribute type
// WITHOUT the AF bit. Basic (TV) attributes carry Value; variable (TLV) ones
// carry Data. Encode writes TV when Basic is true, so a decoded attribute
// re-encodes in the form it arrived in.
type Attribute struct {
	Type  uint16
	Basic bool
	Value uint16
	Data  []byte
}

// Transform is a transform payload inside a proposal (RFC 2408 §3.6).
type Transform struct {
	Number     uint8
	ID         uint8
	Attributes []Attribute
}

// Proposal is a proposal payload inside an SA payload (RFC 2408 §3.5).
type Proposal struct {
	Number     uint8
	Protocol   ProtocolID
	SPI        []byte
	Transforms []Transform
}

// SA is the Security Association payload (RFC 2408 §3.4). DOI 1 is IPsec;
// Situation 1 is SIT_IDENTITY_ONLY.
type SA struct {
	DOI       uint32
	Situation uint32
	Proposals []Proposal
}

// KE is the Key Exchange payload (RFC 2408 §3.7).
type KE struct{ Data []byte }

// ID is the Identification payload with the IPsec DOI fields (RFC 2407
// §4.6.2).
type ID struct {
	IDType   IDType
	Protocol uint8
	Port     uint16
	Data     []byte
}

// Cert is the Certificate payload (RFC 2408 §3.9).
type Cert struct {
	Encoding uint8
	Data     []byte
}

// CertRequest is the Certificate Request payload (RFC 2408 §3.10).
type CertRequest struct {
	Encoding  uint8
	Authority []byte
}

// Hash is the Hash payload (RFC 2408 §3.11).
type Hash struct{ Data []byte }

// Signature is the Signature payload (RFC 2408 §3.12).
type Signature struct{ Data []byte }

// Nonce is the Nonce payload (RFC 2408 §3.13).
type Nonce struct{ Data []byte }

// Notify is the Notification payload (RFC 2408 §3.14).
//
// The notify message type is the field NotifyType, not Type: a field named
// Type would clash with the Type() method every Payload has.
type Notify struct {
	DOI        uint32
	Protocol   ProtocolID
	NotifyType NotifyType
	SPI        []byte
	Data       []byte
}

// Delete is the Delete payload (RFC 2408 §3.15). On encode the SPI size is
// taken from SPIs[0]; all SPIs must have that size and there must be at
// least one.
type Delete struct {
	DOI      uint32
	Protocol ProtocolID
	SPIs     [][]byte
}

// VendorID is the Vendor ID payload (RFC 2408 §3.16).
type VendorID struct{ Data []byte }

// NATD is the NAT-Discovery payload (RFC 3947 §3.2). Draft is set when it
// was (or is to be) sent with the draft payload number 130.
type NATD struct {
	Hash  []byte
	Draft bool
}

// NATOA is the NAT Original Address payload (RFC 3947 §5.2). IDType is
// IDIPv4Addr or IDIPv6Addr (if zero on encode, it is taken from Addr).
// Draft is set when it was (or is to be) sent with the draft number 131.
type NATOA struct {
	IDType IDType
	Addr   netip.Addr
	Draft  bool
}

// Unknown is a payload this package does not model. It is kept as its body
// (without the 4-byte generic header) and never interpreted.
type Unknown struct {
	PayloadType PayloadType
	Data        []byte
}

func (SA) Type() PayloadType          { return PayloadSA }
func (KE) Type() PayloadType          { return PayloadKE }
func (ID) Type() PayloadType          { return PayloadID }
func (Cert) Type() PayloadType        { return PayloadCert }
func (CertRequest) Type() PayloadType { return PayloadCR }
func (Hash) Type() PayloadType        { return PayloadHash }
func (Signature) Type() PayloadType   { return PayloadSig }
func (Nonce) Type() PayloadType       { return PayloadNonce }
func (Notify) Type() PayloadType      { return PayloadNotify }
func (Delete) Type() PayloadType      { return PayloadDelete }
func (VendorID) Type() PayloadType    { return PayloadVendorID }
func (u Unknown) Type() PayloadType   { return u.PayloadType }

// Type is PayloadNATD, or PayloadNATDDraft when Draft is set.
func (n NATD) Type() PayloadType {
	if n.Draft {
		return PayloadNATDDraft
	}
	return PayloadNATD
}

// Type is PayloadNATOA, or PayloadNATOADraft when Draft is set.
func (n NATOA) Type() PayloadType {
	if n.Draft {
		return PayloadNATOADraft
	}
	return PayloadNATOA
}

// Message is a whole plaintext ISAKMP message.
type Message struct {
	Header   Header
	Payloads []Payload
	// Raw[i] is payload i's exact wire bytes including its generic header
	// (set by Parse; ignored by Marshal).
	Raw [][]byte
}

// Decoded is the result of DecodePayloads.
type Decoded struct {
	Payloads []Payload
	// Raw[i] is payload i's exact wire bytes including its 4-byte generic
	// header (e.g. SAi_b for HASH_I is Raw[i][4:]).
	Raw [][]byte
	// Len is the number of bytes consumed; bytes after it (the padding of
	// a decrypted body) are not examined.
	Len int
}

// Sentinel causes, usable with errors.Is on any error of this package.
var (
	ErrShort      = errors.New("truncated")
	ErrBadLength  = errors.New("bad length")
	ErrVersion    = errors.New("unsupported ISAKMP version")
	ErrEncrypted  = errors.New("message is encrypted")
	ErrTooMany    = errors.New("too many elements")
	ErrBadPayload = errors.New("malformed payload")
	// ErrNotEncrypted is returned by ParseEncrypted for a plaintext message.
	ErrNotEncrypted = errors.New("message is not encrypted")
)

// Error is the error type of this package: what was wrong (Err, wrapping
// one of the sentinels) and where (the payload and its byte offset within
// the message, or within the buffer given to DecodePayloads/AppendPayloads).
type Error struct {
	Payload PayloadType
	Offset  int
	Err     error
}

func (e *Error) Error() string {
	what := "header"
	if e.Payload != PayloadNone {
		what = e.Payload.String()
	}
	return fmt.Sprintf("isakmp: %s at offset %d: %v", what, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// errf builds an *Error whose cause wraps sentinel with a detail text.
func errf(pt PayloadType, off int, sentinel error, format string, args ...any) *Error {
	if format == "" {
		return &Error{Payload: pt, Offset: off, Err: sentinel}
	}
	return &Error{Payload: pt, Offset: off, Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}
}
