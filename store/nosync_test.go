package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// withBoot makes bootID read id for the rest of the test.
func withBoot(t *testing.T, id string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := bootIDFile
	bootIDFile = p
	t.Cleanup(func() { bootIDFile = old })
}

func unsyncedRecord(t *testing.T, db *DB) []byte {
	t.Helper()
	var v []byte
	if err := db.bo.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketSys).Get(keyUnsynced))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// copyOpen copies the file of an open database (a process killed between
// transactions leaves exactly that in the page cache) and opens the copy.
func copyOpen(t *testing.T, db *DB, s *Sealer) *DB {
	t.Helper()
	b, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "sa.db")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(p, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestNoSyncLostWrites: a database written without fsync and not closed
// may have lost writes only if the machine rebooted since (another boot
// ID); a clean Close, or fsync turned back on, clears the record.
func TestNoSyncLostWrites(t *testing.T) {
	withBoot(t, "boot-1")
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	if err := db.SetNoSync(true); err != nil {
		t.Fatal(err)
	}
	if got := string(unsyncedRecord(t, db)); got != "boot-1" {
		t.Fatalf("unsynced record %q, want boot-1", got)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutIKE(sampleIKE(1)) }); err != nil {
		t.Fatal(err)
	}
	if c := copyOpen(t, db, s); c.MayHaveLostWrites() {
		t.Error("killed on the same boot: reported lost writes")
	}
	withBoot(t, "boot-2")
	c := copyOpen(t, db, s)
	if !c.MayHaveLostWrites() {
		t.Error("unsynced before a reboot: lost writes not reported")
	}
	// Not even an unknown boot is trusted.
	bootIDFile = filepath.Join(t.TempDir(), "missing")
	if c := copyOpen(t, db, s); !c.MayHaveLostWrites() {
		t.Error("unsynced, boot unknown: lost writes not reported")
	}
	withBoot(t, "boot-2")
	if err := db.SetNoSync(false); err != nil {
		t.Fatal(err)
	}
	if v := unsyncedRecord(t, db); v != nil {
		t.Errorf("fsync back on: record %q left", v)
	}
	if c := copyOpen(t, db, s); c.MayHaveLostWrites() {
		t.Error("fsync back on: reported lost writes")
	}
	if err := db.SetNoSync(true); err != nil {
		t.Fatal(err)
	}
	p := db.Path()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	withBoot(t, "boot-3")
	re, err := Open(p, s)
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	if re.MayHaveLostWrites() {
		t.Error("closed cleanly, then rebooted: reported lost writes")
	}
	if v := unsyncedRecord(t, re); v != nil {
		t.Errorf("closed cleanly: record %q left", v)
	}
}

// TestRestoreKeepsUnsyncedRecord: the record describes the file, not the
// snapshot's source: a restore neither takes the source's nor drops ours.
func TestRestoreKeepsUnsyncedRecord(t *testing.T) {
	s := testSealer(t, testKey(t))
	withBoot(t, "source-boot")
	src := openTestDB(t, s)
	if err := src.SetNoSync(true); err != nil {
		t.Fatal(err)
	}
	if err := src.Update(func(tx *Tx) error { return tx.PutIKE(sampleIKE(1)) }); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := src.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	withBoot(t, "dest-boot")
	dst := openTestDB(t, s)
	if err := dst.SetNoSync(true); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := string(unsyncedRecord(t, dst)); got != "dest-boot" {
		t.Errorf("after a restore the record is %q, want dest-boot", got)
	}
	fsynced := openTestDB(t, s)
	if err := fsynced.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if v := unsyncedRecord(t, fsynced); v != nil {
		t.Errorf("a database with fsync took the source's record %q", v)
	}
	if ike, _, err := fsynced.Counts(); err != nil || ike != 1 {
		t.Errorf("restored %d IKE SAs (%v), want 1", ike, err)
	}
}
