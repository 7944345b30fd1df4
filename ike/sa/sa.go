// Package sa holds the replicated SA records shared by the IKE engine, the
// data planes, the store and the cluster: an ISAKMP (IKE phase 1) SA and an
// IPsec SA pair (one Quick Mode). They are plain values: everything another
// node needs to continue an SA is in them, and nothing else (no sockets, no
// timers, no pointers into live state).
//
// Records are encoded with CBOR using integer keys (see Marshal). The rule
// for changing them, the base of mixed-version upgrades:
//
//   - A field is never renamed on the wire, retyped or reused: its integer
//     key is forever. A removed field's key is retired, not recycled.
//   - A new field takes the next free key and must have a zero value that
//     means "absent" and is safe for an older reader to not know about
//     (older readers skip unknown keys).
//   - A change an older node cannot safely ignore bumps Version; readers
//     refuse versions newer than they understand, with an error that says so.
//
// This package must never import other ikegw packages.
package sa

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"

	"github.com/fxamacker/cbor/v2"
)

// RecordVersion is the newest record layout this build writes and reads.
const RecordVersion = 1

// ErrNewerRecord is returned when a record was written by a newer build with
// a layout this build does not understand.
var ErrNewerRecord = errors.New("sa: record version newer than this build understands")

// Role is our role in an exchange or SA.
type Role uint8

const (
	Initiator Role = 1
	Responder Role = 2
)

func (r Role) String() string {
	switch r {
	case Initiator:
		return "initiator"
	case Responder:
		return "responder"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Cookies identifies an ISAKMP SA: the initiator and responder cookies.
type Cookies struct {
	I [8]byte `cbor:"1,keyasint"`
	R [8]byte `cbor:"2,keyasint"`
}

// String prints the cookie pair as swanctl does (hex, "_i" "_r").
func (c Cookies) String() string {
	return hex.EncodeToString(c.I[:]) + "_i " + hex.EncodeToString(c.R[:]) + "_r"
}

// Key returns the pair as a 16-byte array usable as a map key.
func (c Cookies) Key() [16]byte {
	var k [16]byte
	copy(k[:8], c.I[:])
	copy(k[8:], c.R[:])
	return k
}

// Identity is an ISAKMP identification (RFC 2407 §4.6.2): the ID type and
// its data as on the wire (address bytes, FQDN text, ...).
type Identity struct {
	Type     uint8  `cbor:"1,keyasint"`
	Protocol uint8  `cbor:"2,keyasint,omitempty"`
	Port     uint16 `cbor:"3,keyasint,omitempty"`
	Data     []byte `cbor:"4,keyasint"`
}

// IKEState is where an ISAKMP SA is in its life.
type IKEState uint8

const (
	IKEEstablished IKEState = 1 // phase 1 complete, usable
	IKEDeleted     IKEState = 2 // deleted or expired; kept only until removed
)

func (s IKEState) String() string {
	switch s {
	case IKEEstablished:
		return "ESTABLISHED"
	case IKEDeleted:
		return "DELETED"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// IKEProposal is the negotiated phase 1 transform, in ISAKMP attribute values
// (RFC 2409 Appendix A).
type IKEProposal struct {
	Encr       uint16 `cbor:"1,keyasint"` // encryption algorithm (7 = AES-CBC, 5 = 3DES-CBC)
	KeyLen     uint16 `cbor:"2,keyasint,omitempty"`
	Hash       uint16 `cbor:"3,keyasint"` // hash algorithm (2 SHA1, 4 SHA2-256, 5 SHA2-384, 6 SHA2-512)
	Group      uint16 `cbor:"4,keyasint"` // DH group
	AuthMethod uint16 `cbor:"5,keyasint"` // 1 PSK, 3 RSA sig, 9/10/11 ECDSA
	Lifetime   uint32 `cbor:"6,keyasint"` // seconds
}

// Exchange is an exchange in flight on an ISAKMP SA that is keyed by its own
// IV (Quick Mode, Informational). Only exchanges the peer has seen a message
// of are worth replicating; see DESIGN.md invariant 1.
type Exchange struct {
	MessageID uint32 `cbor:"1,keyasint"`
	Type      uint8  `cbor:"2,keyasint"` // ISAKMP exchange type
	IV        []byte `cbor:"3,keyasint"` // last cipher block of the exchange so far
	// LastReply is the last message we sent in this exchange, kept to answer
	// a retransmitted request from cache.
	LastReply []byte `cbor:"4,keyasint,omitempty"`
	// LastRequestHash identifies the request LastReply answers.
	LastRequestHash []byte `cbor:"5,keyasint,omitempty"`
	// Nonces of a Quick Mode (Ni_b, Nr_b), needed to verify its HASH(3).
	Ni []byte `cbor:"6,keyasint,omitempty"`
	Nr []byte `cbor:"7,keyasint,omitempty"`
	// InSPI names the IPsec SA pair this Quick Mode created (responder side,
	// persisted before its reply and installed when HASH(3) arrives).
	InSPI uint32 `cbor:"8,keyasint,omitempty"`
}

// IKESA is a replicated ISAKMP SA.
type IKESA struct {
	Version    uint16         `cbor:"1,keyasint"`
	Cookies    Cookies        `cbor:"2,keyasint"`
	Role       Role           `cbor:"3,keyasint"`
	State      IKEState       `cbor:"4,keyasint"`
	Connection string         `cbor:"5,keyasint"`
	Local      netip.AddrPort `cbor:"6,keyasint"`
	Remote     netip.AddrPort `cbor:"7,keyasint"`
	// NAT-T: which side is behind a NAT, and whether IKE floated to 4500.
	NATLocal  bool `cbor:"8,keyasint,omitempty"`
	NATRemote bool `cbor:"9,keyasint,omitempty"`
	NATT      bool `cbor:"10,keyasint,omitempty"` // RFC 3947 negotiated
	Floated   bool `cbor:"11,keyasint,omitempty"`

	LocalID  Identity    `cbor:"12,keyasint"`
	RemoteID Identity    `cbor:"13,keyasint"`
	Proposal IKEProposal `cbor:"14,keyasint"`

	// Key material. Sealed at rest and in the Raft log by store/cluster.
	SKEYID  []byte `cbor:"15,keyasint"`
	SKEYIDd []byte `cbor:"16,keyasint"`
	SKEYIDa []byte `cbor:"17,keyasint"`
	SKEYIDe []byte `cbor:"18,keyasint"`
	EncKey  []byte `cbor:"19,keyasint"`
	// IVBase is the last cipher block of phase 1; each later exchange's IV is
	// hash(IVBase | message ID) truncated to the block size.
	IVBase []byte `cbor:"20,keyasint"`

	Exchanges []Exchange `cbor:"21,keyasint,omitempty"`

	// DPD (RFC 3706): our last sequence number used and the peer's last seen.
	DPDOurSeq  uint32 `cbor:"22,keyasint,omitempty"`
	DPDPeerSeq uint32 `cbor:"23,keyasint,omitempty"`
	DPD        bool   `cbor:"24,keyasint,omitempty"` // peer supports DPD

	// Absolute times, Unix nanoseconds (decided by the active node).
	Established int64 `cbor:"25,keyasint"`
	RekeyAt     int64 `cbor:"26,keyasint,omitempty"`
	ExpireAt    int64 `cbor:"27,keyasint,omitempty"`

	// Peer identity as authenticated (certificate fingerprint when
	// signature-authenticated; empty for PSK).
	PeerCertSHA256 []byte `cbor:"28,keyasint,omitempty"`
	// ReauthOf names the cookies of the SA this one reauthenticated.
	ReauthOf *Cookies `cbor:"29,keyasint,omitempty"`
}

// Mode is the IPsec encapsulation mode.
type Mode uint8

const (
	Tunnel    Mode = 1
	Transport Mode = 2
)

func (m Mode) String() string {
	switch m {
	case Tunnel:
		return "tunnel"
	case Transport:
		return "transport"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Encryption and integrity algorithms of an IPsec SA, named as the Linux
// kernel names them so both data planes share one vocabulary.
const (
	EncrAESCBC = "cbc(aes)"
	EncrAESGCM = "rfc4106(gcm(aes))" // ICV 16 bytes
	Encr3DES   = "cbc(des3_ede)"
	EncrNull   = "ecb(cipher_null)"

	IntegSHA1   = "hmac(sha1)"   // 96-bit truncation
	IntegSHA256 = "hmac(sha256)" // 128-bit truncation
	IntegSHA384 = "hmac(sha384)" // 192-bit truncation
	IntegSHA512 = "hmac(sha512)" // 256-bit truncation
)

// SADir is one direction of an IPsec SA pair.
type SADir struct {
	SPI      uint32     `cbor:"1,keyasint"`
	Src      netip.Addr `cbor:"2,keyasint"` // outer source address
	Dst      netip.Addr `cbor:"3,keyasint"` // outer destination address
	Encr     string     `cbor:"4,keyasint"`
	EncrKey  []byte     `cbor:"5,keyasint"` // for GCM: key | 4-byte salt
	Integ    string     `cbor:"6,keyasint,omitempty"`
	IntegKey []byte     `cbor:"7,keyasint,omitempty"`
	// TruncBits is the ICV length in bits for integrity algorithms (96 for
	// SHA1, half the digest for SHA2) or 128 for GCM.
	TruncBits uint16 `cbor:"8,keyasint,omitempty"`
}

// TrafficSelector is one side of a Quick Mode policy: a prefix, an IP
// protocol (0 = any) and a port (0 = any).
type TrafficSelector struct {
	Prefix   netip.Prefix `cbor:"1,keyasint"`
	Protocol uint8        `cbor:"2,keyasint,omitempty"`
	Port     uint16       `cbor:"3,keyasint,omitempty"`
}

// Lifetime limits an IPsec SA. Zero means unlimited.
type Lifetime struct {
	SoftSeconds uint64 `cbor:"1,keyasint,omitempty"`
	HardSeconds uint64 `cbor:"2,keyasint,omitempty"`
	SoftBytes   uint64 `cbor:"3,keyasint,omitempty"`
	HardBytes   uint64 `cbor:"4,keyasint,omitempty"`
}

// Counters is the sequence and traffic state of an IPsec SA pair, synced
// periodically from the active's data plane. OutSeq never goes back
// (DESIGN.md invariant 3).
type Counters struct {
	OutSeq       uint64   `cbor:"1,keyasint"` // last outbound sequence number used
	InSeq        uint64   `cbor:"2,keyasint"` // highest inbound sequence number accepted
	ReplayBitmap []uint64 `cbor:"3,keyasint,omitempty"`
	InBytes      uint64   `cbor:"4,keyasint,omitempty"`
	InPackets    uint64   `cbor:"5,keyasint,omitempty"`
	OutBytes     uint64   `cbor:"6,keyasint,omitempty"`
	OutPackets   uint64   `cbor:"7,keyasint,omitempty"`
	SyncedAt     int64    `cbor:"8,keyasint,omitempty"` // Unix nanoseconds
}

// ChildState is where an IPsec SA pair is in its life.
type ChildState uint8

const (
	ChildInstalled ChildState = 1
	ChildRekeyed   ChildState = 2 // superseded by a rekey, still accepted inbound until deleted
	ChildDeleted   ChildState = 3
)

func (s ChildState) String() string {
	switch s {
	case ChildInstalled:
		return "INSTALLED"
	case ChildRekeyed:
		return "REKEYED"
	case ChildDeleted:
		return "DELETED"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ChildSA is a replicated IPsec SA pair, the result of one Quick Mode.
type ChildSA struct {
	Version    uint16            `cbor:"1,keyasint"`
	IKE        Cookies           `cbor:"2,keyasint"` // the ISAKMP SA that negotiated it
	Connection string            `cbor:"3,keyasint"`
	Child      string            `cbor:"4,keyasint"` // child (phase 2) config name
	State      ChildState        `cbor:"5,keyasint"`
	Reqid      uint32            `cbor:"6,keyasint"`
	Mode       Mode              `cbor:"7,keyasint"`
	Protocol   uint8             `cbor:"8,keyasint"` // 50 = ESP
	In         SADir             `cbor:"9,keyasint"`
	Out        SADir             `cbor:"10,keyasint"`
	LocalTS    []TrafficSelector `cbor:"11,keyasint"`
	RemoteTS   []TrafficSelector `cbor:"12,keyasint"`
	// UDP encapsulation (RFC 3948): zero ports when ESP is not encapsulated.
	EncapLocalPort  uint16   `cbor:"13,keyasint,omitempty"`
	EncapRemotePort uint16   `cbor:"14,keyasint,omitempty"`
	Lifetime        Lifetime `cbor:"15,keyasint"`
	Counters        Counters `cbor:"16,keyasint"`
	PFSGroup        uint16   `cbor:"17,keyasint,omitempty"`
	Established     int64    `cbor:"18,keyasint"`
	RekeyAt         int64    `cbor:"19,keyasint,omitempty"`
	ExpireAt        int64    `cbor:"20,keyasint,omitempty"`
	// Initiated is true when we started the Quick Mode (we rekey it).
	Initiated bool `cbor:"21,keyasint,omitempty"`
}

// ID returns the key of an IPsec SA pair: its inbound SPI, unique per node.
func (c *ChildSA) ID() uint32 { return c.In.SPI }

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxArrayElements: 1 << 16,
		MaxMapPairs:      1 << 16,
		MaxNestedLevels:  16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes a record deterministically (CBOR core deterministic
// encoding), so equal records give equal bytes on every node.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes a record. Unknown keys are skipped (they come from newer
// builds); a Version newer than RecordVersion is refused.
func Unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("sa: decode %T: %w", v, err)
	}
	var ver uint16
	switch r := v.(type) {
	case *IKESA:
		ver = r.Version
	case *ChildSA:
		ver = r.Version
	}
	if ver > RecordVersion {
		return fmt.Errorf("%w: %T version %d, this build reads up to %d", ErrNewerRecord, v, ver, RecordVersion)
	}
	return nil
}
