package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
)

func openTestRaft(t testing.TB, dir string) *RaftStores {
	t.Helper()
	r, err := OpenRaftStores(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRaftStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	r := openTestRaft(t, dir)
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("one")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("two")},
		{Index: 3, Term: 2, Type: raft.LogNoop},
	}
	if err := r.Log.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := r.Stable.Set([]byte("CurrentTerm"), []byte{2}); err != nil {
		t.Fatal(err)
	}
	if err := r.Stable.SetUint64([]byte("LastVoteTerm"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Stable.Get([]byte("missing")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing stable key: %v (raft wants the text \"not found\")", err)
	}
	sink, err := r.Snapshots.Create(raft.SnapshotVersionMax, 2, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte("snapshot body"))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	r.Close()

	r = openTestRaft(t, dir)
	first, _ := r.Log.FirstIndex()
	last, _ := r.Log.LastIndex()
	if first != 1 || last != 3 {
		t.Fatalf("index range %d..%d after reopen, want 1..3", first, last)
	}
	var l raft.Log
	if err := r.Log.GetLog(2, &l); err != nil || string(l.Data) != "two" || l.Term != 1 {
		t.Fatalf("GetLog(2) = %+v, %v", l, err)
	}
	if err := r.Log.GetLog(9, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(9): %v, want raft.ErrLogNotFound", err)
	}
	if v, err := r.Stable.GetUint64([]byte("LastVoteTerm")); err != nil || v != 2 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	metas, err := r.Snapshots.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("snapshots: %v, %v", metas, err)
	}
	_, rc, err := r.Snapshots.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != "snapshot body" {
		t.Fatalf("snapshot body %q", body)
	}
	if err := r.Log.DeleteRange(1, 2); err != nil {
		t.Fatal(err)
	}
	if first, _ := r.Log.FirstIndex(); first != 3 {
		t.Fatalf("first index %d after DeleteRange, want 3", first)
	}
	for _, p := range []string{dir, filepath.Join(dir, RaftDBFile)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %04o, open to group or others", p, fi.Mode().Perm())
		}
	}
}

func TestRaftStoresDirMode(t *testing.T) {
	dir := t.TempDir() // 0755 or wider
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	openTestRaft(t, dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("raft dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	file := filepath.Join(dir, RaftDBFile)
	if _, err := OpenRaftStores(file, nil); err == nil {
		t.Fatal("a file accepted as the raft directory")
	}
}

func TestRaftStoresLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	dir := t.TempDir()
	openTestRaft(t, dir)
	if _, err := OpenRaftStores(dir, nil); err == nil {
		t.Fatal("second open of the same raft.db succeeded")
	}
}

// A sealed payload stored through the Raft log leaves no key bytes in
// raft.db.
func TestRaftLogSealed(t *testing.T) {
	dir := t.TempDir()
	r := openTestRaft(t, dir)
	s := testSealer(t, testKey(t))
	var keys [][]byte
	for i := range 10 {
		c := sampleChild(uint64(i))
		keys = append(keys, keyBytesChild(c)...)
		b, err := sa.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Log.StoreLog(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: s.Seal(b, []byte("cmd"))}); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	raw, err := os.ReadFile(filepath.Join(dir, RaftDBFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("logs")) {
		t.Fatal("raft.db does not contain its bucket name; search is broken")
	}
	for i, k := range keys {
		for off := 0; off+8 <= len(k); off += 8 {
			if bytes.Contains(raw, k[off:off+8]) {
				t.Fatalf("raft.db holds key %d in clear", i)
			}
		}
	}
}
