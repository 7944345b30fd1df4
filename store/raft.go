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
)

// Names inside a Raft store directory.
const (
	RaftDBFile        = "raft.db"   // log and stable store (raft-boltdb/v2)
	RaftSnapshotsDir  = "snapshots" // raft.FileSnapshotStore
	RaftSnapshotsKept = 2
)

// RaftStores is the Raft persistence of one node on bbolt: the log and
// stable store in dir/raft.db, snapshots in dir/snapshots (the two newest
// are kept). Log entries are stored as given: the cluster seals command
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
	bs, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bolt.Options{Timeout: openTimeout},
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
	return &RaftStores{Log: bs, Stable: bs, Snapshots: privateSnapshots{SnapshotStore: snaps, dir: snapDir}, bolt: bs}, nil
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
