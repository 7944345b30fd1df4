package cluster

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// A restart keeps the SA database. Every Apply records the index and term
// of its entry in the database (metaApplied), in the same transaction as
// the entry's changes, so the two never disagree, even after kill -9.
// Raft runs with NoSnapshotRestoreOnStart: it takes the newest snapshot's
// index as applied and hands the FSM only later entries, which the FSM
// skips up to the recorded index without opening them. The node restores
// the newest snapshot into the database itself (resume) only when the
// database is older than it, lost, or cannot be trusted.
//
// A database written by the release before this one records no index:
// it is restored from the newest snapshot and the log after it applied
// once (DESIGN.md invariant 5), as that release did at every start.

// appliedMark is the entry the SA database holds everything up to.
type appliedMark struct{ Index, Term uint64 }

func putApplied(w Writer, index, term uint64) error {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, index)
	binary.BigEndian.PutUint64(b[8:], term)
	return w.PutMeta(metaApplied, b)
}

// readApplied returns the recorded mark; ok is false when the database
// records none (a new database, or one of the previous release).
func readApplied(w Writer) (m appliedMark, ok bool, err error) {
	b, err := w.Meta(metaApplied)
	if err != nil || b == nil {
		return m, false, err
	}
	if len(b) != 16 {
		return m, false, fmt.Errorf("meta %q: %d bytes, want 16", metaApplied, len(b))
	}
	return appliedMark{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, true, nil
}

// recordRestored records, after a snapshot was restored into the database,
// the snapshot's index and term, or the mark the snapshot's bytes carry if
// it is newer (a snapshot taken while its node was still skipping entries
// holds more than its index says). It returns the mark in effect.
func (f *FSM) recordRestored(index, term uint64) (appliedMark, error) {
	var m appliedMark
	err := f.backend.Update(func(w Writer) error {
		cur, ok, err := readApplied(w)
		if err != nil {
			return err
		}
		if ok && cur.Index >= index {
			m = cur
			return nil
		}
		m = appliedMark{index, term}
		return putApplied(w, index, term)
	})
	return m, err
}

// snapshotIndex returns the index and term of the snapshot Restore has
// just read (size bytes), or zeros when it cannot tell. Raft calls Restore
// only to install a snapshot it has just written to the snapshot store (a
// leader's InstallSnapshot): that snapshot is the newest there, since a
// leader sends one only to a follower whose applied index is below it, and
// no local snapshot is taken while the FSM restores. The size must match.
func (f *FSM) snapshotIndex(size int64) (index, term uint64) {
	if f.snaps == nil {
		return 0, 0
	}
	metas, err := f.snaps.List()
	if err != nil || len(metas) == 0 {
		f.log.Warn("cluster: restored a snapshot but cannot list the snapshot store; recording the index its bytes hold", "err", err)
		return 0, 0
	}
	if metas[0].Size != size {
		f.log.Warn("cluster: restored a snapshot that is not the newest one in the store; recording the index its bytes hold",
			"newest", metas[0].ID, "newest_size", metas[0].Size, "restored_size", size)
		return 0, 0
	}
	return metas[0].Index, metas[0].Term
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// resume prepares the FSM before raft starts (with
// NoSnapshotRestoreOnStart): it keeps the SA database when the index it
// records belongs to this node's log and is not older than the newest
// snapshot, and otherwise restores that snapshot into it. has tells
// whether the node has any Raft state.
func (n *Node) resume(has bool) error {
	f, d := n.fsm, n.deps
	f.snaps = d.Snapshots
	var mark appliedMark
	var ok bool
	if err := d.Backend.Update(func(w Writer) error {
		var err error
		mark, ok, err = readApplied(w)
		return err
	}); err != nil {
		return fmt.Errorf("cluster: node %q: read the SA database's applied index: %w", n.cfg.NodeID, err)
	}
	metas, err := d.Snapshots.List()
	if err != nil {
		return fmt.Errorf("cluster: node %q: list snapshots: %w", n.cfg.NodeID, err)
	}
	var newest *raft.SnapshotMeta
	if len(metas) > 0 {
		newest = metas[0]
	}
	why := ""
	switch {
	case !ok:
		why = "the SA database records no applied index (new, or written by an older release)"
	case mark.Index == 0:
		why = "the SA database holds no applied entry"
	case !has:
		why = "no Raft state: the SA database's index belongs to another log"
	default:
		if err := n.checkMark(mark, newest); err != nil {
			why = err.Error()
		} else if newest != nil && mark.Index < newest.Index {
			why = fmt.Sprintf("the SA database (index %d) is older than the newest snapshot (index %d)", mark.Index, newest.Index)
		}
	}
	if why == "" {
		f.skipTo = mark.Index
		f.applied.Store(mark.Index)
		n.log.Info("cluster: SA database kept; entries it holds are skipped", "applied_index", mark.Index, "applied_term", mark.Term, "snapshot_index", snapIndex(newest))
		return nil
	}
	if newest == nil {
		if ok && mark.Index != 0 {
			// Forget an index that does not belong to this log: it
			// would skip entries the database does not hold.
			if err := d.Backend.Update(func(w Writer) error { return putApplied(w, 0, 0) }); err != nil {
				return fmt.Errorf("cluster: node %q: clear the SA database's applied index: %w", n.cfg.NodeID, err)
			}
		}
		n.log.Info("cluster: no snapshot; the log is applied to the SA database from its start", "reason", why)
		return nil
	}
	meta, rc, err := d.Snapshots.Open(newest.ID)
	if err != nil {
		return fmt.Errorf("cluster: node %q: open snapshot %s: %w", n.cfg.NodeID, newest.ID, err)
	}
	err = d.Backend.Restore(rc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("cluster: node %q: restore snapshot %s into the SA database: %w", n.cfg.NodeID, newest.ID, err)
	}
	m, err := f.recordRestored(meta.Index, meta.Term)
	if err != nil {
		return fmt.Errorf("cluster: node %q: record snapshot %s's index: %w", n.cfg.NodeID, newest.ID, err)
	}
	f.skipTo = m.Index
	f.applied.Store(m.Index)
	n.log.Info("cluster: SA database restored from the newest snapshot", "reason", why, "snapshot_index", meta.Index, "applied_index", m.Index)
	return nil
}

// checkMark verifies that the database's mark names an entry of this
// node's Raft state (same index and term: Raft's log matching property
// makes everything before it the same too).
func (n *Node) checkMark(m appliedMark, newest *raft.SnapshotMeta) error {
	if newest != nil && m.Index == newest.Index {
		if m.Term != newest.Term {
			return fmt.Errorf("the SA database's applied entry %d is of term %d, the snapshot's of term %d", m.Index, m.Term, newest.Term)
		}
		return nil
	}
	first, err := n.deps.Logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("reading the log's first index: %v", err)
	}
	last, err := n.deps.Logs.LastIndex()
	if err != nil {
		return fmt.Errorf("reading the log's last index: %v", err)
	}
	if first == 0 || m.Index < first || m.Index > last {
		return fmt.Errorf("the SA database's applied entry %d is not in the log (%d..%d)", m.Index, first, last)
	}
	var l raft.Log
	if err := n.deps.Logs.GetLog(m.Index, &l); err != nil {
		return fmt.Errorf("reading log entry %d: %v", m.Index, err)
	}
	if l.Term != m.Term {
		return fmt.Errorf("the SA database's applied entry %d is of term %d, the log's of term %d", m.Index, m.Term, l.Term)
	}
	return nil
}

func snapIndex(m *raft.SnapshotMeta) uint64 {
	if m == nil {
		return 0
	}
	return m.Index
}

// RestartSkipped returns how many log entries this node's FSM skipped since
// it started because its SA database already held them.
func (n *Node) RestartSkipped() uint64 { return n.fsm.skipped.Load() }
