package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
)

// Writer is what a command changes: the SA database inside one write
// transaction. *store.Tx provides it through the store adapter.
// DeleteIKE, DeleteChild and PutCounters of a missing record are no-ops.
type Writer interface {
	PutIKE(*sa.IKESA) error
	DeleteIKE(sa.Cookies) error
	PutChild(*sa.ChildSA) error
	DeleteChild(spi uint32) error
	PutCounters(spi uint32, c sa.Counters) error
	// Meta returns nil, nil for a missing key.
	Meta(key string) ([]byte, error)
	PutMeta(key string, v []byte) error
	// SealedMeta returns nil, nil for a missing key.
	SealedMeta(key string) ([]byte, error)
	PutSealedMeta(key string, v []byte) error
}

// Backend is the FSM's state: the SA database (store.DB in production).
// Update runs fn in one atomic write transaction: all of it or nothing.
type Backend interface {
	Update(fn func(Writer) error) error
	WriteSnapshot(w io.Writer) error
	Restore(r io.Reader) error
}

// Meta keys written by the FSM.
const (
	metaConfig        = "cluster.config" // sealed
	metaConfigVersion = "cluster.config.version"
	metaActive        = "cluster.active"
	metaHandover      = "cluster.handover"
	// metaApplied is the index and term (8 bytes each, big endian) of the
	// last entry whose changes the SA database holds, written in the same
	// transaction as those changes (see restart.go).
	metaApplied = "cluster.applied"
)

// op is a decoded command ready to run inside a transaction.
type op func(Writer) error

// handler decodes one command type. Registered once in the table below
// (the Consul pattern); the table is the only place a type is added.
type handler struct {
	maxVersion uint8
	decode     func(body []byte) (op, error)
}

var commandTable = map[CommandType]handler{
	TypeUpsertIKE: {1, func(b []byte) (op, error) {
		var s sa.IKESA
		if err := sa.Unmarshal(b, &s); err != nil {
			return nil, err
		}
		return func(w Writer) error { return w.PutIKE(&s) }, nil
	}},
	TypeDeleteIKE: {1, func(b []byte) (op, error) {
		var c sa.Cookies
		if err := decMode.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		return func(w Writer) error { return w.DeleteIKE(c) }, nil
	}},
	TypeUpsertChild: {1, func(b []byte) (op, error) {
		var c sa.ChildSA
		if err := sa.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		return func(w Writer) error { return w.PutChild(&c) }, nil
	}},
	TypeDeleteChild: {1, func(b []byte) (op, error) {
		var d DeleteChildBody
		if err := decMode.Unmarshal(b, &d); err != nil {
			return nil, err
		}
		return func(w Writer) error { return w.DeleteChild(d.SPI) }, nil
	}},
	TypeCountersBatch: {1, func(b []byte) (op, error) {
		var m map[uint32]sa.Counters
		if err := decMode.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		return func(w Writer) error {
			// Map order is random; max-merge per SPI is order-independent,
			// but keep the write order deterministic anyway.
			for _, spi := range sortedKeys(m) {
				if err := w.PutCounters(spi, m[spi]); err != nil {
					return fmt.Errorf("counters of SPI %#08x: %w", spi, err)
				}
			}
			return nil
		}, nil
	}},
	TypeConfigApply: {1, func(b []byte) (op, error) {
		var c ConfigBody
		if err := decMode.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		return func(w Writer) error {
			cur, err := readUint(w, metaConfigVersion)
			if err != nil {
				return err
			}
			if c.Version < cur {
				return fmt.Errorf("%w: config version %d is older than the applied version %d", ErrStale, c.Version, cur)
			}
			if err := w.PutSealedMeta(metaConfig, c.Data); err != nil {
				return err
			}
			return w.PutMeta(metaConfigVersion, encodeUint(c.Version))
		}, nil
	}},
	TypeSetActive: {1, func(b []byte) (op, error) {
		var a ActiveBody
		if err := decMode.Unmarshal(b, &a); err != nil {
			return nil, err
		}
		if a.Node == "" {
			return nil, errors.New("empty node name")
		}
		return func(w Writer) error {
			raw, err := w.Meta(metaActive)
			if err != nil {
				return err
			}
			if raw != nil {
				var cur ActiveBody
				if err := decMode.Unmarshal(raw, &cur); err != nil {
					return fmt.Errorf("stored active owner: %w", err)
				}
				if a.Term < cur.Term {
					return fmt.Errorf("%w: active owner from term %d, the stored one is from term %d", ErrStale, a.Term, cur.Term)
				}
			}
			enc, err := sa.Marshal(a)
			if err != nil {
				return err
			}
			return w.PutMeta(metaActive, enc)
		}, nil
	}},
	TypeHandover: {1, func(b []byte) (op, error) {
		var h HandoverBody
		if err := decMode.Unmarshal(b, &h); err != nil {
			return nil, err
		}
		if h.From == "" || h.ID == 0 {
			return nil, errors.New("handover without proposer or ID")
		}
		return func(w Writer) error {
			enc, err := sa.Marshal(h)
			if err != nil {
				return err
			}
			return w.PutMeta(metaHandover, enc)
		}, nil
	}},
}

// FSM applies committed log entries to the SA database. Apply is a pure
// function of (state, entry): no clock, no randomness. Snapshot and Apply are
// never called concurrently (hashicorp/raft's contract); Persist may run
// concurrently with Apply, so Snapshot copies the state first.
type FSM struct {
	backend Backend
	sealer  Sealer
	log     *slog.Logger
	// applied is the index of the last entry Apply finished (applied or
	// refused), or skipped because the SA database already held it; after
	// a restart or a snapshot Restore, the index the database records.
	// Raft's own AppliedIndex runs ahead of it: raft counts an entry
	// applied once it is queued for the FSM, not once the FSM has applied
	// it.
	applied atomic.Uint64
	// skipTo: entries at or below it are already in the SA database (a
	// restart with the database kept, or a snapshot restored that was
	// taken while its node was skipping). Only the goroutine running
	// Apply and Restore (raft's FSM goroutine) touches it after New.
	skipTo uint64
	// skipped counts the entries Apply skipped since the node started.
	skipped atomic.Uint64
	// snaps, when set, is the node's snapshot store: Restore reads the
	// index of the snapshot it restores from it (snapshotIndex).
	snaps raft.SnapshotStore
}

// NewFSM returns an FSM over backend, opening entries with sealer.
func NewFSM(backend Backend, sealer Sealer, log *slog.Logger) *FSM {
	if log == nil {
		log = slog.Default()
	}
	return &FSM{backend: backend, sealer: sealer, log: log}
}

var _ raft.FSM = (*FSM)(nil)

// BatchResult is what Apply returns for a Batch entry: one error (or nil)
// per group, in order.
type BatchResult struct {
	Errs []error
}

// Apply applies one committed entry. It returns nil on success, an error
// value when the entry is refused (unknown type, newer version, undecodable,
// stale), or *BatchResult for a Batch entry. It never panics on bad input.
func (f *FSM) Apply(l *raft.Log) any {
	if f.skipTo != 0 && l.Index <= f.skipTo {
		// Already in the SA database: neither opened nor decoded.
		if f.skipped.Add(1) == 1 {
			f.log.Info("cluster: skipping entries the SA database already holds", "from", l.Index, "to", f.skipTo)
		}
		if l.Index == f.skipTo {
			f.log.Info("cluster: skipped the entries the SA database already held", "entries", f.skipped.Load(), "index", l.Index)
		}
		return nil
	}
	defer f.applied.Store(l.Index)
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) < headerLen {
		return fmt.Errorf("%w at index %d: %d bytes, shorter than the %d-byte header", ErrMalformedEntry, l.Index, len(l.Data), headerLen)
	}
	hdr := l.Data[:headerLen]
	t, flags, ver := CommandType(hdr[0]), Flags(hdr[1]), hdr[2]
	if err := f.checkKnown(t, flags, ver); err != nil {
		if errors.Is(err, errSkip) {
			f.log.Info("cluster: skipping ignorable command", "index", l.Index, "type", t.String(), "version", ver)
			return nil
		}
		return fmt.Errorf("entry at index %d: %w", l.Index, err)
	}
	body, err := f.sealer.Open(l.Data[headerLen:], hdr)
	if err != nil {
		return fmt.Errorf("%w at index %d: %v payload does not open under the cluster key: %v", ErrMalformedEntry, l.Index, t, err)
	}
	if t == TypeBatch {
		return f.applyBatch(l.Index, l.Term, body)
	}
	o, err := commandTable[t].decode(body)
	if err != nil {
		return fmt.Errorf("%w at index %d: %v: %v", ErrMalformedEntry, l.Index, t, err)
	}
	if err := f.backend.Update(func(w Writer) error {
		if err := o(w); err != nil {
			return err
		}
		return putApplied(w, l.Index, l.Term)
	}); err != nil {
		return fmt.Errorf("cluster: apply %v at index %d: %w", t, l.Index, err)
	}
	return nil
}

var errSkip = errors.New("skip")

func (f *FSM) checkKnown(t CommandType, flags Flags, ver uint8) error {
	maxVer := uint8(0)
	if t == TypeBatch {
		maxVer = 1
	} else if h, ok := commandTable[t]; ok {
		maxVer = h.maxVersion
	} else {
		if flags&FlagIgnorable != 0 {
			return errSkip
		}
		return fmt.Errorf("%w %d (this build applies up to %d)", ErrUnknownCommand, uint8(t), uint8(MaxCommandType))
	}
	if ver == 0 || ver > maxVer {
		if ver > maxVer && flags&FlagIgnorable != 0 {
			return errSkip
		}
		return fmt.Errorf("%w: %v version %d (this build applies 1..%d)", ErrNewerCommand, t, ver, maxVer)
	}
	return nil
}

// decodeGroup decodes the plain commands of one group; nil ops are skipped.
func (f *FSM) decodeGroup(index uint64, g [][]byte) ([]op, error) {
	ops := make([]op, 0, len(g))
	for i, c := range g {
		if len(c) < headerLen {
			return nil, fmt.Errorf("%w at index %d: command %d: %d bytes, shorter than the header", ErrMalformedEntry, index, i, len(c))
		}
		t, flags, ver := CommandType(c[0]), Flags(c[1]), c[2]
		if t == TypeBatch {
			return nil, fmt.Errorf("%w at index %d: command %d: nested Batch", ErrMalformedEntry, index, i)
		}
		if err := f.checkKnown(t, flags, ver); err != nil {
			if errors.Is(err, errSkip) {
				f.log.Info("cluster: skipping ignorable command", "index", index, "command", i, "type", t.String(), "version", ver)
				continue
			}
			return nil, fmt.Errorf("entry at index %d, command %d: %w", index, i, err)
		}
		o, err := commandTable[t].decode(c[headerLen:])
		if err != nil {
			return nil, fmt.Errorf("%w at index %d: command %d (%v): %v", ErrMalformedEntry, index, i, t, err)
		}
		ops = append(ops, o)
	}
	return ops, nil
}

func (f *FSM) applyBatch(index, term uint64, body []byte) any {
	var b batchBody
	if err := decMode.Unmarshal(body, &b); err != nil {
		return fmt.Errorf("%w at index %d: Batch: %v", ErrMalformedEntry, index, err)
	}
	res := &BatchResult{Errs: make([]error, len(b.Groups))}
	ops := make([][]op, len(b.Groups))
	for i, g := range b.Groups {
		ops[i], res.Errs[i] = f.decodeGroup(index, g)
	}
	// Fast path: every decodable group in one transaction (one fsync).
	err := f.backend.Update(func(w Writer) error {
		for i, g := range ops {
			if res.Errs[i] != nil {
				continue
			}
			for _, o := range g {
				if err := o(w); err != nil {
					return err
				}
			}
		}
		return putApplied(w, index, term)
	})
	if err == nil {
		return res
	}
	// A group failed inside the store: the transaction rolled back. Redo
	// group by group so each fails or succeeds on its own. Same input, same
	// state: every node reaches the same outcome. The index is recorded
	// after the last group: a crash in between leaves the entry to be
	// applied again whole after the restart, and applying a group again
	// changes nothing (puts of whole records, deletes, max-merged
	// counters, config and active owner refused only when older).
	for i, g := range ops {
		if res.Errs[i] != nil {
			continue
		}
		if err := f.backend.Update(func(w Writer) error {
			for _, o := range g {
				if err := o(w); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			res.Errs[i] = fmt.Errorf("cluster: apply group %d at index %d: %w", i, index, err)
			f.log.Warn("cluster: group refused by the store", "index", index, "group", i, "err", err)
		}
	}
	if err := f.backend.Update(func(w Writer) error { return putApplied(w, index, term) }); err != nil {
		// Only the restart's shortcut is lost: the entry is applied again.
		f.log.Warn("cluster: recording the applied index failed", "index", index, "err", err)
	}
	return res
}

// Snapshot copies the whole SA database (point in time: Apply is not running
// while this runs); Persist then writes the copy.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	var buf bytes.Buffer
	if err := f.backend.WriteSnapshot(&buf); err != nil {
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	return &fsmSnapshot{data: buf.Bytes()}, nil
}

// Restore replaces the SA database with a snapshot (raft calls it to
// install a snapshot sent by the leader). The database then records the
// snapshot's index (see restoreSnapshot), or the newer one the snapshot's
// bytes hold, so that a restart after it skips what it holds.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	cr := &countingReader{r: rc}
	f.applied.Store(0)
	if err := f.backend.Restore(cr); err != nil {
		return fmt.Errorf("cluster: restore snapshot: %w", err)
	}
	index, term := f.snapshotIndex(cr.n)
	a, err := f.recordRestored(index, term)
	if err != nil {
		return fmt.Errorf("cluster: restore snapshot: %w", err)
	}
	f.skipTo = a.Index
	f.applied.Store(a.Index)
	return nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func readUint(w Writer, key string) (uint64, error) {
	b, err := w.Meta(key)
	if err != nil || b == nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("meta %q: %d bytes, want 8", key, len(b))
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v, nil
}

func encodeUint(v uint64) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

func sortedKeys(m map[uint32]sa.Counters) []uint32 {
	return slices.Sorted(maps.Keys(m))
}

// PriorTermsApplied reports whether this node has applied every entry of
// its log written in an earlier term than the current one (entries that
// change nothing new, see changesNothingNew, may still wait). On a leader that
// is what the Barrier establishes: a leader's log holds every committed
// entry (Raft's leader completeness), entries of its own term are its own
// (none carries an SA it has not committed itself), and a follower applies
// only entries it knows are committed. So a leader for which it holds may
// act on its store without waiting for the Barrier (failover uses it for a
// planned handover, where the old leader left time for its last commit
// index to reach the target). Any read error answers false.
//
// Applied means applied by the FSM (FSMAppliedIndex), not raft's
// AppliedIndex, which counts entries merely queued for the FSM: a node
// catching up (just restarted, or loaded) may be leader with a store that
// lacks entries raft calls applied.
func (n *Node) PriorTermsApplied() bool {
	term := n.raft.CurrentTerm()
	applied, last := n.fsm.applied.Load(), n.raft.LastIndex()
	if last <= applied {
		return true
	}
	if last-applied > 64 {
		return false // far behind: the Barrier is no slower
	}
	var l raft.Log
	for i := applied + 1; i <= last; i++ {
		if err := n.deps.Logs.GetLog(i, &l); err != nil {
			return false
		}
		if l.Term < term && !n.fsm.changesNothingNew(&l) {
			return false
		}
	}
	return true
}

// FSMAppliedIndex is the index of the last log entry this node's FSM has
// applied to the SA database; right after a start or a snapshot restore,
// the index the database records (restart.go). Unlike
// Raft().AppliedIndex(), which counts entries handed to the FSM's queue
// (and after a start that kept the database begins at the snapshot's
// index), the store holds everything up to it.
func (n *Node) FSMAppliedIndex() uint64 { return n.fsm.applied.Load() }

// changesNothingNew reports whether applying l can change no SA and no
// counter: an entry that is not a command (no-op, barrier, membership), or
// a Batch of Handover commands only. A planned handover ends with such an
// entry (the announcement repeated: its replication tells the target that
// the first one is committed), which the target may leave for later.
func (f *FSM) changesNothingNew(l *raft.Log) bool {
	if l.Type != raft.LogCommand {
		return true
	}
	if len(l.Data) < headerLen || CommandType(l.Data[0]) != TypeBatch {
		return false
	}
	hdr := l.Data[:headerLen]
	body, err := f.sealer.Open(l.Data[headerLen:], hdr)
	if err != nil {
		return false
	}
	var b batchBody
	if err := decMode.Unmarshal(body, &b); err != nil {
		return false
	}
	for _, g := range b.Groups {
		for _, c := range g {
			if len(c) < headerLen || CommandType(c[0]) != TypeHandover {
				return false
			}
		}
	}
	return true
}
