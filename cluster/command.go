package cluster

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"ikegw/ike/sa"
	"ikegw/store"
)

// CommandType is the first byte of every Raft log entry the FSM applies.
// Values are forever: a retired type is never reused.
type CommandType uint8

// Command types known to this build.
const (
	TypeUpsertIKE     CommandType = 1
	TypeDeleteIKE     CommandType = 2
	TypeUpsertChild   CommandType = 3
	TypeDeleteChild   CommandType = 4
	TypeCountersBatch CommandType = 5
	TypeConfigApply   CommandType = 6
	TypeSetActive     CommandType = 7
	TypeBatch         CommandType = 8
	TypeHandover      CommandType = 9

	// MaxCommandType is the highest type this build can apply. It is
	// advertised in the membership metadata so a feature is only switched on
	// when every member understands its commands.
	MaxCommandType = TypeHandover
)

func (t CommandType) String() string {
	switch t {
	case TypeUpsertIKE:
		return "UpsertIKE"
	case TypeDeleteIKE:
		return "DeleteIKE"
	case TypeUpsertChild:
		return "UpsertChild"
	case TypeDeleteChild:
		return "DeleteChild"
	case TypeCountersBatch:
		return "CountersBatch"
	case TypeConfigApply:
		return "ConfigApply"
	case TypeSetActive:
		return "SetActive"
	case TypeBatch:
		return "Batch"
	case TypeHandover:
		return "Handover"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Flags is the second byte of a log entry.
type Flags uint8

// FlagIgnorable marks a command an older node that does not know its type
// (or its version) may skip instead of refusing.
const FlagIgnorable Flags = 1 << 0

// headerLen is the size of the entry header: type, flags, command version.
const headerLen = 3

// Command is one state change proposed through Node.Commit. Build it with
// the constructors (UpsertIKE, DeleteIKE, ...); Body is encoded with the
// same deterministic CBOR as the SA records (sa.Marshal) when committed.
type Command struct {
	Type    CommandType
	Flags   Flags
	Version uint8
	Body    any
}

// DeleteChildBody is the payload of a DeleteChild command.
type DeleteChildBody struct {
	SPI uint32 `cbor:"1,keyasint"`
}

// ConfigBody is the payload of a ConfigApply command: the cluster
// configuration as opaque bytes (it may hold PSKs: it is stored sealed) and
// its version. A version lower than the stored one is refused.
type ConfigBody struct {
	Version uint64 `cbor:"1,keyasint"`
	Data    []byte `cbor:"2,keyasint"`
}

// ActiveBody is the payload of a SetActive command: the node that owns the
// virtual IPs from now on, and the Raft term in which it was decided. A term
// lower than the stored one is refused.
type ActiveBody struct {
	Node string `cbor:"1,keyasint"`
	Term uint64 `cbor:"2,keyasint"`
}

// HandoverBody is the payload of a Handover command: the active node From,
// leader in Term, is about to hand the active role to To (planned
// failover) and will commit no SA change before it does; ID tells one
// handover from another (chosen by the proposer). An empty To cancels an
// announced handover. The last one applied is kept (ReadHandover).
type HandoverBody struct {
	ID   uint64 `cbor:"1,keyasint"`
	From string `cbor:"2,keyasint"`
	To   string `cbor:"3,keyasint"`
	Term uint64 `cbor:"4,keyasint"`
}

// UpsertIKE stores (or replaces) an ISAKMP SA.
func UpsertIKE(s *sa.IKESA) Command { return Command{Type: TypeUpsertIKE, Version: 1, Body: s} }

// DeleteIKE removes an ISAKMP SA.
func DeleteIKE(c sa.Cookies) Command { return Command{Type: TypeDeleteIKE, Version: 1, Body: c} }

// UpsertChild stores (or replaces) an IPsec SA pair, keyed by its inbound SPI.
func UpsertChild(c *sa.ChildSA) Command { return Command{Type: TypeUpsertChild, Version: 1, Body: c} }

// DeleteChild removes the IPsec SA pair with this inbound SPI.
func DeleteChild(inSPI uint32) Command {
	return Command{Type: TypeDeleteChild, Version: 1, Body: DeleteChildBody{SPI: inSPI}}
}

// CountersBatch max-merges counters of IPsec SA pairs, by inbound SPI.
func CountersBatch(m map[uint32]sa.Counters) Command {
	return Command{Type: TypeCountersBatch, Version: 1, Body: m}
}

// ConfigApply replaces the cluster configuration.
func ConfigApply(version uint64, data []byte) Command {
	return Command{Type: TypeConfigApply, Version: 1, Body: ConfigBody{Version: version, Data: data}}
}

// SetActive names the active node.
func SetActive(node string, term uint64) Command {
	return Command{Type: TypeSetActive, Version: 1, Body: ActiveBody{Node: node, Term: term}}
}

// Handover announces (or, with an empty To, cancels) a planned handover.
// Not ignorable: Commit refuses it with ErrUnsupportedByCluster while a
// member cannot apply it, and the caller falls back to a handover without
// announcement.
func Handover(b HandoverBody) Command { return Command{Type: TypeHandover, Version: 1, Body: b} }

// Errors of command encoding and application.
var (
	// ErrUnknownCommand: the entry's type is not known to this build and it
	// is not flagged ignorable.
	ErrUnknownCommand = errors.New("cluster: unknown command type")
	// ErrNewerCommand: the entry's command version is newer than this build
	// applies and it is not flagged ignorable.
	ErrNewerCommand = errors.New("cluster: command version newer than this build applies")
	// ErrMalformedEntry: the entry could not be decoded.
	ErrMalformedEntry = errors.New("cluster: malformed log entry")
	// ErrStale: a ConfigApply or SetActive older than the stored one.
	ErrStale = errors.New("cluster: stale command")
	// ErrInvalidCommand: a command that cannot be encoded or is refused
	// before it reaches Raft.
	ErrInvalidCommand = errors.New("cluster: invalid command")
)

// encodeCommand renders a command as header | plain CBOR body.
func encodeCommand(c Command) ([]byte, error) {
	if c.Type == 0 {
		return nil, fmt.Errorf("%w: command type 0", ErrInvalidCommand)
	}
	if c.Type == TypeBatch {
		return nil, fmt.Errorf("%w: Batch is built by the committer, not by callers", ErrInvalidCommand)
	}
	if c.Version == 0 {
		return nil, fmt.Errorf("%w: %v: version 0", ErrInvalidCommand, c.Type)
	}
	body, err := sa.Marshal(c.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v: encode body: %v", ErrInvalidCommand, c.Type, err)
	}
	out := make([]byte, headerLen, headerLen+len(body))
	out[0], out[1], out[2] = byte(c.Type), byte(c.Flags), c.Version
	return append(out, body...), nil
}

// batchBody is the plain payload of a Batch entry: groups of encoded
// commands. Each group is one Commit call and is applied atomically; groups
// succeed or fail independently.
type batchBody struct {
	Groups [][][]byte `cbor:"1,keyasint"`
}

// Sealer seals and opens entry payloads (it is satisfied by *store.Sealer).
// Seal must be safe for concurrent use.
type Sealer interface {
	Seal(plain, ad []byte) []byte
	Open(sealed, ad []byte) ([]byte, error)
}

// sealEntry builds a top-level log entry: header | Seal(body, header).
func sealEntry(s Sealer, plainCmd []byte) []byte {
	hdr := plainCmd[:headerLen:headerLen]
	sealed := s.Seal(plainCmd[headerLen:], hdr)
	out := make([]byte, headerLen, headerLen+len(sealed))
	copy(out, hdr)
	return append(out, sealed...)
}

// encodeBatch builds the sealed Batch entry for groups of encoded commands.
func encodeBatch(s Sealer, groups [][][]byte) ([]byte, error) {
	body, err := sa.Marshal(batchBody{Groups: groups})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode batch: %w", err)
	}
	plain := make([]byte, headerLen, headerLen+len(body))
	plain[0], plain[1], plain[2] = byte(TypeBatch), 0, 1
	return sealEntry(s, append(plain, body...)), nil
}

// EncodeEntry returns the sealed Raft log entry for a single command, as
// the FSM expects it. Node.Commit builds Batch entries; this is for tools
// and tests that append entries directly.
func EncodeEntry(s Sealer, c Command) ([]byte, error) {
	plain, err := encodeCommand(c)
	if err != nil {
		return nil, err
	}
	return sealEntry(s, plain), nil
}

var decMode cbor.DecMode

func init() {
	var err error
	decMode, err = cbor.DecOptions{
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
		MaxNestedLevels:  16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// ReadHandover returns the last Handover applied; ok is false when none was.
func ReadHandover(db *store.DB) (h HandoverBody, ok bool, err error) {
	err = db.View(func(tx *store.Tx) error {
		raw, err := txWriter{tx}.Meta(metaHandover)
		if err != nil || raw == nil {
			return err
		}
		if err := decMode.Unmarshal(raw, &h); err != nil {
			return fmt.Errorf("cluster: stored handover: %w", err)
		}
		ok = true
		return nil
	})
	return h, ok, err
}
