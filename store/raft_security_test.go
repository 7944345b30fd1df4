package store

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// TestRaftSnapshotsPrivate: raft creates snapshot directories 0755 and
// files 0644; the store's snapshot directory and every snapshot written
// through it end up owner-only, and an existing open tree is tightened at
// open.
func TestRaftSnapshotsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	r := openTestRaft(t, dir)
	_, trans := raft.NewInmemTransport("")
	sink, err := r.Snapshots.Create(raft.SnapshotVersionMax, 10, 2, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("sealed state")); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	checkPrivate := func() int {
		t.Helper()
		n := 0
		err := filepath.WalkDir(filepath.Join(dir, RaftSnapshotsDir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %04o", p, fi.Mode().Perm())
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := checkPrivate(); n < 3 {
		t.Fatalf("only %d entries under the snapshots directory: no snapshot written", n)
	}
	// The snapshot still opens.
	list, err := r.Snapshots.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	_, rc, err := r.Snapshots.Open(list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	// A tree left open (an older version wrote it) is tightened at open.
	r.Close()
	if err := os.Chmod(filepath.Join(dir, RaftSnapshotsDir, list[0].ID), 0o755); err != nil {
		t.Fatal(err)
	}
	openTestRaft(t, dir)
	checkPrivate()
}
