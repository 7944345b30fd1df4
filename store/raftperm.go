package store

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// privateSnapshots is raft's FileSnapshotStore with owner-only modes:
// raft creates its snapshot directories 0755 and files 0644 (they hold
// sealed values but plain metadata); every snapshot is set to 0700/0600
// when its sink closes.
type privateSnapshots struct {
	raft.SnapshotStore
	dir string // the snapshots directory
}

func (p privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	s, err := p.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &privateSink{SnapshotSink: s, dir: p.dir}, nil
}

type privateSink struct {
	raft.SnapshotSink
	dir string
}

func (s *privateSink) Close() error {
	err := s.SnapshotSink.Close()
	if terr := tightenTree(filepath.Join(s.dir, s.ID())); terr != nil && err == nil && !os.IsNotExist(terr) {
		err = terr
	}
	return err
}

var _ io.Closer = (*privateSink)(nil)

// tightenTree sets every directory under root (root included) to 0700 and
// every file to 0600 where they are open to group or others.
func tightenTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, want); err != nil {
				return fmt.Errorf("store: raft snapshots: chmod %s: %w", p, err)
			}
		}
		return nil
	})
}
