package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// Names inside a Raft store directory.
const (
	RaftDBFile        = "raft.db"   // log and stable store (raft-boltdb/v2)
	RaftSnapshotsDir  = "snapshots" // raft.FileSnapshotStore
	RaftSnapshotsKept = 2
)

// RaftLogPrewrite is how much of the Raft log file OpenRaftStores makes
// sure is written (zeros beyond bbolt's high-water mark) before bbolt opens
// it. bbolt grows its file with ftruncate, which leaves holes: every page
// it later writes into a hole allocates a block, and the fdatasync of that
// append must then also commit the file system's journal. Into written
// blocks an fdatasync only flushes data (BenchmarkRaftStoreLogs compares
// the two; numbers in BENCHMARKS.md, commit latency).
// A long-running node reuses the pages its log compaction frees, which are
// written blocks; this gives a new or restarted node the same from its
// first append. It costs the disk space (16 MiB, bbolt's default growth
// step) and one sequential write when the file is created or has holes.
const RaftLogPrewrite = 16 << 20

// RaftCompactChunk is how many entries one bbolt transaction of the Raft
// log's DeleteRange removes. Raft compacts its log after each snapshot by
// deleting everything older than TrailingLogs in one call; in one
// transaction that holds bbolt's only writer, and with it every append of
// the node, for the whole delete (8,192 entries of 2 KiB: 14-51 ms at load
// 4-9). In chunks, appends wait for at most one chunk; the whole delete
// takes longer (BenchmarkRaftCompaction, BENCHMARKS.md).
const RaftCompactChunk = 1024

// raftBoltOptions are the bbolt options of the Raft log. The freelist is
// not written: after a compaction it lists thousands of free pages, and
// bbolt writes all of it in every append's transaction (two fdatasyncs of
// more pages); bbolt rebuilds it on open by scanning the file instead (26-31
// ms for a 160 MB log). Appends after a compaction of 8,192 entries: p50
// 0.34 -> 0.30 ms, p90 0.60-0.68 -> 0.43-0.49 ms (BenchmarkRaftAppendAfterCompaction).
// The hashmap freelist allocates in constant time from a large freelist.
func raftBoltOptions() *bolt.Options {
	return &bolt.Options{Timeout: openTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
}

// chunkedLog is the bbolt Raft log with a compaction (a DeleteRange from
// the first entry) split into transactions of RaftCompactChunk entries,
// lowest first: a crash part-way leaves a shorter, still contiguous log
// whose first index moved up, as if the compaction had stopped there. Any
// other DeleteRange is one transaction, as before.
type chunkedLog struct {
	raft.LogStore
}

// DeleteRange deletes the entries from index from to index to, inclusive.
func (l chunkedLog) DeleteRange(from, to uint64) error {
	// Only the stored range: no empty chunks up to a bound far past it.
	first, err := l.FirstIndex()
	if err != nil {
		return fmt.Errorf("store: raft log: first index: %w", err)
	}
	last, err := l.LastIndex()
	if err != nil {
		return fmt.Errorf("store: raft log: last index: %w", err)
	}
	if last == 0 { // empty
		return nil
	}
	if from > first {
		// Not a compaction (a follower dropping a conflicting suffix):
		// one transaction, so that no crash leaves a gap in the log.
		if err := l.LogStore.DeleteRange(from, to); err != nil {
			return fmt.Errorf("store: raft log: delete entries %d to %d: %w", from, to, err)
		}
		return nil
	}
	from, to = first, min(to, last)
	for lo := from; lo <= to; {
		hi := to
		if to-lo >= RaftCompactChunk {
			hi = lo + RaftCompactChunk - 1
		}
		if err := l.LogStore.DeleteRange(lo, hi); err != nil {
			return fmt.Errorf("store: raft log: delete entries %d to %d: %w", lo, hi, err)
		}
		if hi == to {
			break
		}
		lo = hi + 1
	}
	return nil
}

// RaftStores is the Raft persistence of one node on bbolt: the log and
// stable store in dir/raft.db (the log behind a LogCache of the newest
// entries), snapshots in dir/snapshots (the two newest are kept). Log entries are stored as given: the cluster seals command
// payloads with a Sealer before raft.Apply, so key material is sealed in the
// log too.
type RaftStores struct {
	Log       raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore

	bolt *raftboltdb.BoltStore
}

// OpenRaftStores opens (creating with mode 0700 if needed) the Raft stores in
// dir. logger receives the snapshot store's logs; nil discards them.
func OpenRaftStores(dir string, logger hclog.Logger) (*RaftStores, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: raft stores in %s: %w", dir, err)
	}
	if err := tightenDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, RaftDBFile)
	if err := prewriteLog(path, RaftLogPrewrite); err != nil {
		return nil, err
	}
	bs, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: raftBoltOptions(),
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: raft log %s: locked by another process (waited %s)", path, openTimeout)
		}
		return nil, fmt.Errorf("store: raft log %s: %w", path, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, RaftSnapshotsKept, logger)
	if err != nil {
		bs.Close()
		return nil, fmt.Errorf("store: raft snapshots in %s: %w", filepath.Join(dir, RaftSnapshotsDir), err)
	}
	snapDir := filepath.Join(dir, RaftSnapshotsDir)
	if err := tightenTree(snapDir); err != nil {
		bs.Close()
		return nil, err
	}
	cache, err := NewLogCache(chunkedLog{bs}, RaftCacheEntries, RaftCacheBytes, RaftCacheEntryBytes)
	if err != nil {
		bs.Close()
		return nil, err
	}
	return &RaftStores{Log: cache, Stable: bs, Snapshots: privateSnapshots{SnapshotStore: snaps, dir: snapDir}, bolt: bs}, nil
}

// Close closes the log and stable store. Snapshots need no closing.
func (r *RaftStores) Close() error {
	if r.bolt == nil {
		return nil
	}
	err := r.bolt.Close()
	r.bolt = nil
	if err != nil {
		return fmt.Errorf("store: close raft log: %w", err)
	}
	return nil
}

// prewriteLog opens (creating if needed) the bbolt file at path and, while
// holding bbolt's file lock, writes zeros from the first hole at or above
// bbolt's high-water mark up to max(size, file size), then syncs the file.
// Pages at or above the high-water mark belong to no transaction bbolt has
// committed, so nothing bbolt reads is changed, and a crash part-way leaves
// a valid database. A file without holes past the mark and at least size
// long is left alone.
func prewriteLog(path string, size int64) error {
	// An existing log is opened read-only (a shared lock still keeps
	// another ikegwd out): opened for writing without NoFreelistSync,
	// bbolt would rebuild the freelist of a log written without one and
	// write it back, a scan, a write and two fsyncs at every start.
	opts := &bolt.Options{Timeout: openTimeout}
	if _, err := os.Stat(path); err == nil {
		opts.ReadOnly = true
	}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("store: raft log %s: locked by another process (waited %s)", path, openTimeout)
		}
		return fmt.Errorf("store: raft log %s: %w", path, err)
	}
	defer db.Close()
	var hwm int64
	if err := db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		return fmt.Errorf("store: raft log %s: read high-water mark: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("store: raft log %s: open to prewrite: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: raft log %s: %w", path, err)
	}
	end := max(size, fi.Size())
	from := hwm
	if hwm < fi.Size() {
		// The first hole at or after the mark; SEEK_HOLE answers the file
		// size when there is none (or the file system does not track holes).
		hole, err := unix.Seek(int(f.Fd()), hwm, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("store: raft log %s: find holes from offset %d: %w", path, hwm, err)
		}
		from = hole
	}
	if from >= end {
		return nil
	}
	zeros := make([]byte, 1<<20)
	for off := from; off < end; {
		n := min(int64(len(zeros)), end-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("store: raft log %s: prewrite at offset %d: %w", path, off, err)
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: raft log %s: sync after prewrite: %w", path, err)
	}
	return nil
}

// tightenDir sets an existing Raft directory that is open to group or
// others to 0700: snapshot metadata and log framing are not sealed.
func tightenDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("store: raft stores in %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("store: raft stores in %s: not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("store: raft stores in %s: mode %04o is open to group or others and chmod 0700 failed: %w", dir, perm, err)
		}
		slog.Warn("store: raft directory was open to group or others; set to 0700", "path", dir, "mode", fmt.Sprintf("%04o", perm))
	}
	return nil
}
