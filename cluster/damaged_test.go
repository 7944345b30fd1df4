package cluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ikegw/ike/sa"
	"ikegw/store"
)

// The SA database is written without fsync (it is the Raft FSM): a damaged
// file after a power loss is moved aside and Raft rebuilds the records from
// its log.
func TestOpenRebuildsDamagedSADatabase(t *testing.T) {
	dir := t.TempDir()
	labFiles(t, dir, "n1")
	n, err := openTLSNode(dir, "n1", "", "127.0.0.1:0", 1, benchLog)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a ready leader", n.IsLeaderReady)
	rec := &sa.IKESA{Version: sa.RecordVersion, Cookies: sa.Cookies{I: [8]byte{1}, R: [8]byte{2}}, State: sa.IKEEstablished,
		Connection: "c", SKEYID: []byte{1, 2, 3}}
	if err := n.Commit(context.Background(), UpsertIKE(rec)); err != nil {
		t.Fatal(err)
	}
	raftAddr := n.Addr()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "n1", SADBFile)
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xee}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err = openTLSNode(dir, "n1", "", raftAddr, 1, benchLog)
	if err != nil {
		t.Fatalf("reopen over a damaged SA database: %v", err)
	}
	defer n.Shutdown()
	aside, _ := filepath.Glob(path + ".damaged-*")
	if len(aside) != 1 {
		t.Fatalf("damaged file not kept aside: %v", aside)
	}
	waitFor(t, 20*time.Second, "the record rebuilt from the Raft log", func() bool {
		var got *sa.IKESA
		n.Store().View(func(tx *store.Tx) error {
			got, _ = tx.IKE(rec.Cookies)
			return nil
		})
		return got != nil && bytes.Equal(got.SKEYID, rec.SKEYID)
	})
}
