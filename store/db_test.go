package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"ikegw/ike/sa"

	"github.com/fxamacker/cbor/v2"
)

func TestIKERoundTrip(t *testing.T) {
	db := openTestDB(t, testSealer(t, testKey(t)))
	recs := []*sa.IKESA{sampleIKE(3), sampleIKE(1), sampleIKE(2)}
	if err := db.Update(func(tx *Tx) error {
		for _, r := range recs {
			if err := tx.PutIKE(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *Tx) error {
		for _, r := range recs {
			got, err := tx.IKE(r.Cookies)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("IKE(%s) =\n%+v\nwant\n%+v", r.Cookies, got, r)
			}
		}
		var seen []uint64
		if err := tx.ForEachIKE(func(r *sa.IKESA) error {
			seen = append(seen, uint64(r.Established-1700000000000000000))
			return nil
		}); err != nil {
			return err
		}
		if !reflect.DeepEqual(seen, []uint64{1, 2, 3}) {
			t.Errorf("ForEachIKE order %v, want [1 2 3]", seen)
		}
		_, err := tx.IKE(sampleIKE(9).Cookies)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("IKE(missing) error %v, want ErrNotFound", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteIKE(recs[1].Cookies) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.DeleteIKE(recs[1].Cookies) }); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	db.View(func(tx *Tx) error {
		if _, err := tx.IKE(recs[1].Cookies); !errors.Is(err, ErrNotFound) {
			t.Errorf("after delete: %v, want ErrNotFound", err)
		}
		if _, err := tx.IKE(recs[0].Cookies); err != nil {
			t.Errorf("other record gone: %v", err)
		}
		return nil
	})
}

func TestChildRoundTrip(t *testing.T) {
	db := openTestDB(t, testSealer(t, testKey(t)))
	recs := []*sa.ChildSA{sampleChild(5), sampleChild(4)}
	if err := db.Update(func(tx *Tx) error {
		for _, r := range recs {
			if err := tx.PutChild(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *Tx) error {
		for _, r := range recs {
			got, err := tx.Child(r.In.SPI)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("Child(%08x) =\n%+v\nwant\n%+v", r.In.SPI, got, r)
			}
		}
		var spis []uint32
		tx.ForEachChild(func(r *sa.ChildSA) error { spis = append(spis, r.In.SPI); return nil })
		if !reflect.DeepEqual(spis, []uint32{recs[1].In.SPI, recs[0].In.SPI}) {
			t.Errorf("ForEachChild order %x", spis)
		}
		if _, err := tx.Child(1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Child(missing): %v, want ErrNotFound", err)
		}
		stop := errors.New("stop")
		n := 0
		if err := tx.ForEachChild(func(*sa.ChildSA) error { n++; return stop }); err != stop || n != 1 {
			t.Errorf("ForEachChild did not stop on error: %v after %d", err, n)
		}
		return nil
	})
	if err := db.Update(func(tx *Tx) error { return tx.DeleteChild(recs[0].In.SPI) }); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *Tx) error {
		if _, err := tx.Child(recs[0].In.SPI); !errors.Is(err, ErrNotFound) {
			t.Errorf("after delete: %v", err)
		}
		return nil
	})
}

func TestPutValidation(t *testing.T) {
	db := openTestDB(t, testSealer(t, testKey(t)))
	zero := sampleChild(1)
	zero.In.SPI = 0
	newer := sampleIKE(1)
	newer.Version = sa.RecordVersion + 1
	cases := []struct {
		name string
		fn   func(tx *Tx) error
		want string
	}{
		{"nil ike", func(tx *Tx) error { return tx.PutIKE(nil) }, "nil record"},
		{"nil child", func(tx *Tx) error { return tx.PutChild(nil) }, "nil record"},
		{"spi 0", func(tx *Tx) error { return tx.PutChild(zero) }, "inbound SPI is 0"},
		{"newer ike", func(tx *Tx) error { return tx.PutIKE(newer) }, "version 2"},
		{"empty meta", func(tx *Tx) error { return tx.PutMeta("", []byte{1}) }, "empty key"},
		{"long meta", func(tx *Tx) error { return tx.PutSealedMeta(strings.Repeat("k", 300), nil) }, "limit 255"},
		{"counters missing", func(tx *Tx) error { return tx.PutCounters(77, sa.Counters{}) }, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := db.Update(c.fn)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	// Writes in a read transaction fail.
	if err := db.View(func(tx *Tx) error { return tx.PutIKE(sampleIKE(1)) }); err == nil {
		t.Fatal("PutIKE in View succeeded")
	}
}

// Records are stored in deterministic encoding: the plaintext of a stored
// record is exactly sa.Marshal of it, whatever the insertion history.
func TestDeterministicEncoding(t *testing.T) {
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	r := sampleChild(2)
	want, _ := sa.Marshal(r)
	db.Update(func(tx *Tx) error { return tx.PutChild(r) })
	// PutCounters with the same counters rewrites through the raw path.
	if err := db.Update(func(tx *Tx) error { return tx.PutCounters(r.In.SPI, r.Counters) }); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *Tx) error {
		k := childKey(r.In.SPI)
		pt, err := s.Open(tx.tx.Bucket(bucketChild).Get(k), recordAD(bucketChild, k))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pt, want) {
			t.Errorf("stored plaintext differs from sa.Marshal:\n%x\n%x", pt, want)
		}
		return nil
	})
}

func TestMeta(t *testing.T) {
	db := openTestDB(t, testSealer(t, testKey(t)))
	if err := db.Update(func(tx *Tx) error {
		if err := tx.PutMeta("applied", []byte{0, 0, 0, 9}); err != nil {
			return err
		}
		if err := tx.PutMeta("empty", nil); err != nil {
			return err
		}
		return tx.PutSealedMeta("config", []byte("psk = hunter2-secret"))
	}); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *Tx) error {
		if v, err := tx.Meta("applied"); err != nil || !bytes.Equal(v, []byte{0, 0, 0, 9}) {
			t.Errorf("Meta(applied) = %x, %v", v, err)
		}
		if v, err := tx.Meta("empty"); err != nil || len(v) != 0 {
			t.Errorf("Meta(empty) = %x, %v", v, err)
		}
		if v, err := tx.SealedMeta("config"); err != nil || string(v) != "psk = hunter2-secret" {
			t.Errorf("SealedMeta(config) = %q, %v", v, err)
		}
		if _, err := tx.Meta("config"); !errors.Is(err, ErrNotFound) {
			t.Errorf("sealed key visible as plain meta: %v", err)
		}
		if _, err := tx.SealedMeta("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("SealedMeta(missing): %v", err)
		}
		return nil
	})
	db.Update(func(tx *Tx) error { return tx.DeleteMeta("applied") })
	db.View(func(tx *Tx) error {
		if _, err := tx.Meta("applied"); !errors.Is(err, ErrNotFound) {
			t.Errorf("after DeleteMeta: %v", err)
		}
		return nil
	})
}

func TestPutCountersMerge(t *testing.T) {
	db := openTestDB(t, testSealer(t, testKey(t)))
	r := sampleChild(1)
	r.Counters = sa.Counters{OutSeq: 100, InSeq: 90, ReplayBitmap: []uint64{0b1011}, InBytes: 5}
	db.Update(func(tx *Tx) error { return tx.PutChild(r) })
	steps := []struct {
		upd, want sa.Counters
	}{
		// Forward: everything taken.
		{sa.Counters{OutSeq: 200, InSeq: 150, ReplayBitmap: []uint64{1}, InBytes: 9, SyncedAt: 2},
			sa.Counters{OutSeq: 200, InSeq: 150, ReplayBitmap: []uint64{1}, InBytes: 9, SyncedAt: 2}},
		// A stale sync: sequence numbers and the bitmap stay.
		{sa.Counters{OutSeq: 120, InSeq: 100, ReplayBitmap: []uint64{0xff}, InBytes: 10, SyncedAt: 1},
			sa.Counters{OutSeq: 200, InSeq: 150, ReplayBitmap: []uint64{1}, InBytes: 10, SyncedAt: 1}},
		// Same InSeq: bitmaps ORed.
		{sa.Counters{OutSeq: 201, InSeq: 150, ReplayBitmap: []uint64{2, 4}},
			sa.Counters{OutSeq: 201, InSeq: 150, ReplayBitmap: []uint64{3, 4}}},
	}
	for i, st := range steps {
		if err := db.Update(func(tx *Tx) error { return tx.PutCounters(r.In.SPI, st.upd) }); err != nil {
			t.Fatal(err)
		}
		db.View(func(tx *Tx) error {
			got, err := tx.Child(r.In.SPI)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Counters, st.want) {
				t.Errorf("step %d: counters %+v, want %+v", i, got.Counters, st.want)
			}
			want := *r
			want.Counters = st.want
			if !reflect.DeepEqual(got, &want) {
				t.Errorf("step %d: other fields changed", i)
			}
			return nil
		})
	}
}

// A record written by a newer build (unknown keys at top level and inside
// Counters) keeps those keys when this build updates its counters.
func TestPutCountersKeepsUnknownKeys(t *testing.T) {
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	r := sampleChild(1)
	type futureCounters struct {
		sa.Counters
		Drops uint64 `cbor:"40,keyasint"`
	}
	type future struct {
		sa.ChildSA
		Counters futureCounters `cbor:"16,keyasint"`
		Extra    string         `cbor:"99,keyasint"`
	}
	f := future{ChildSA: *r, Counters: futureCounters{Counters: r.Counters, Drops: 7}, Extra: "from the future"}
	b, err := sa.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	k := childKey(r.In.SPI)
	if err := db.Update(func(tx *Tx) error {
		return tx.tx.Bucket(bucketChild).Put(k, s.Seal(b, recordAD(bucketChild, k)))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error {
		return tx.PutCounters(r.In.SPI, sa.Counters{OutSeq: 5000, InSeq: 4000})
	}); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *Tx) error {
		pt, err := s.Open(tx.tx.Bucket(bucketChild).Get(k), recordAD(bucketChild, k))
		if err != nil {
			t.Fatal(err)
		}
		var got future
		if err := cbor.Unmarshal(pt, &got); err != nil {
			t.Fatal(err)
		}
		if got.Extra != "from the future" || got.Counters.Drops != 7 {
			t.Errorf("unknown keys lost: Extra=%q Drops=%d", got.Extra, got.Counters.Drops)
		}
		if got.Counters.OutSeq != 5000 || got.Counters.InSeq != 4000 || got.Counters.ReplayBitmap != nil {
			t.Errorf("counters not updated: %+v", got.Counters.Counters)
		}
		if got.In.SPI != r.In.SPI || !bytes.Equal(got.In.EncrKey, r.In.EncrKey) {
			t.Errorf("known fields changed")
		}
		return nil
	})
}

func TestOpenWrongKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sa.db")
	db, err := Open(path, testSealer(t, testKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(path, testSealer(t, testKey(t)))
	if !errors.Is(err, ErrWrongKey) || !errors.Is(err, ErrSealed) {
		t.Fatalf("open with another key: %v, want ErrWrongKey and ErrSealed", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "cluster key") {
		t.Errorf("error does not name the path and the cause: %v", err)
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(path, bytes.Repeat([]byte("not bbolt"), 1000), 0o600)
	if _, err := Open(path, testSealer(t, testKey(t))); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("opening garbage: %v", err)
	}
	if _, err := Open(path, nil); err == nil {
		t.Fatal("nil sealer accepted")
	}
}

func TestOpenFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sa.db")
	s := testSealer(t, testKey(t))
	db, err := Open(path, s)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new database mode %v, %v; want 0600", fi.Mode(), err)
	}
	// A file made readable by others is set back to 0600 at the next open.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, s)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after reopen %v, %v; want 0600", fi.Mode(), err)
	}
}

func TestClosed(t *testing.T) {
	db := openTestDB(t, testSealer(t, testKey(t)))
	db.Close()
	if err := db.View(func(*Tx) error { return nil }); err == nil {
		t.Error("View on closed DB succeeded")
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Key rotation: a DB written under the old key opens with the new key as
// current and the old as previous; Reseal moves everything to the new key,
// after which the old key can be dropped.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testKey(t), testKey(t)
	path := filepath.Join(t.TempDir(), "sa.db")
	db, err := Open(path, testSealer(t, oldKey))
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *Tx) error {
		tx.PutIKE(sampleIKE(1))
		tx.PutSealedMeta("config", []byte("x"))
		return tx.PutChild(sampleChild(1))
	})
	db.Close()
	db, err = Open(path, testSealer(t, newKey, oldKey))
	if err != nil {
		t.Fatal(err)
	}
	n, err := db.Reseal()
	if err != nil || n != 4 {
		t.Fatalf("Reseal = %d, %v; want 4 (canary, ike, child, meta)", n, err)
	}
	if n, err := db.Reseal(); err != nil || n != 0 {
		t.Fatalf("second Reseal = %d, %v; want 0", n, err)
	}
	db.Close()
	db, err = Open(path, testSealer(t, newKey))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *Tx) error {
		if _, err := tx.Child(sampleChild(1).In.SPI); err != nil {
			t.Error(err)
		}
		if _, err := tx.IKE(sampleIKE(1).Cookies); err != nil {
			t.Error(err)
		}
		return nil
	})
}

func fillDB(t testing.TB, db *DB, n int) {
	t.Helper()
	if err := db.Update(func(tx *Tx) error {
		for i := range n {
			if err := tx.PutIKE(sampleIKE(uint64(i))); err != nil {
				return err
			}
			if err := tx.PutChild(sampleChild(uint64(i))); err != nil {
				return err
			}
		}
		if err := tx.PutMeta("applied", []byte{7}); err != nil {
			return err
		}
		return tx.PutSealedMeta("config", []byte("secret config"))
	}); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotRestore(t *testing.T) {
	s := testSealer(t, testKey(t))
	src := openTestDB(t, s)
	fillDB(t, src, 50)
	var snap bytes.Buffer
	if err := src.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	dst := openTestDB(t, s)
	// Content that the restore must remove.
	dst.Update(func(tx *Tx) error {
		tx.PutMeta("stale", []byte{1})
		return tx.PutChild(sampleChild(999))
	})
	if err := dst.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	dump := func(db *DB) (out []any) {
		db.View(func(tx *Tx) error {
			tx.ForEachIKE(func(r *sa.IKESA) error { out = append(out, r); return nil })
			tx.ForEachChild(func(r *sa.ChildSA) error { out = append(out, r); return nil })
			m, err := tx.Meta("applied")
			out = append(out, m, err)
			m, err = tx.Meta("stale")
			out = append(out, m, err)
			m, err = tx.SealedMeta("config")
			out = append(out, m, err)
			return nil
		})
		return out
	}
	a, b := dump(src), dump(dst)
	if len(a) != 50*2+6 || !reflect.DeepEqual(a, b) {
		t.Fatalf("restored content differs (%d vs %d items)", len(a), len(b))
	}
	if err := dst.Check(); err != nil {
		t.Fatal(err)
	}
	if ni, nc, err := dst.Counts(); err != nil || ni != 50 || nc != 50 {
		t.Fatalf("Counts after restore = %d, %d, %v; want 50, 50", ni, nc, err)
	}
	// The restored database still opens after a restart.
	path := dst.Path()
	dst.Close()
	re, err := Open(path, s)
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	if !reflect.DeepEqual(a, dump(re)) {
		t.Fatal("content differs after reopen")
	}
}

func TestRestoreRefused(t *testing.T) {
	s := testSealer(t, testKey(t))
	src := openTestDB(t, s)
	fillDB(t, src, 3)
	var snap bytes.Buffer
	if err := src.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	good := snap.Bytes()
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	badMagic := bytes.Clone(good)
	badMagic[0] = 'X'
	cases := []struct {
		name string
		s    *Sealer
		data []byte
		want error
	}{
		{"other key", testSealer(t, testKey(t)), good, ErrWrongKey},
		{"truncated", s, good[:len(good)-40], ErrBadSnapshot},
		{"short header", s, good[:5], ErrBadSnapshot},
		{"flipped bit", s, flipped, ErrBadSnapshot},
		{"bad magic", s, badMagic, ErrBadSnapshot},
		{"empty", s, nil, ErrBadSnapshot},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := openTestDB(t, c.s)
			dst.Update(func(tx *Tx) error { return tx.PutMeta("mine", []byte{1}) })
			err := dst.Restore(bytes.NewReader(c.data))
			if !errors.Is(err, c.want) {
				t.Fatalf("Restore: %v, want %v", err, c.want)
			}
			dst.View(func(tx *Tx) error {
				if _, err := tx.Meta("mine"); err != nil {
					t.Errorf("refused restore changed the database: %v", err)
				}
				return nil
			})
			ents, _ := os.ReadDir(filepath.Dir(dst.Path()))
			if len(ents) != 1 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

// The bytes of the database file never contain key material in clear.
func TestDataAtRestSealed(t *testing.T) {
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	fillDB(t, db, 20)
	secret := []byte("psk-0123456789abcdef-secret")
	db.Update(func(tx *Tx) error { return tx.PutSealedMeta("config", secret) })
	var snap bytes.Buffer
	if err := db.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	path := db.Path()
	db.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sanity: plaintext identifiers are there, so the search itself works.
	if !bytes.Contains(raw, []byte("canary")) {
		t.Fatal("file does not contain the canary key name; search is broken")
	}
	for name, data := range map[string][]byte{"database file": raw, "snapshot": snap.Bytes()} {
		for i := range 20 {
			var keys [][]byte
			keys = append(keys, keyBytesIKE(sampleIKE(uint64(i)))...)
			keys = append(keys, keyBytesChild(sampleChild(uint64(i)))...)
			for j, k := range keys {
				// 8 bytes of a random key are enough to identify it.
				for off := 0; off+8 <= len(k); off += 8 {
					if bytes.Contains(data, k[off:off+8]) {
						t.Fatalf("%s holds key %d of record %d in clear", name, j, i)
					}
				}
			}
		}
		if bytes.Contains(data, secret[4:20]) {
			t.Fatalf("%s holds the sealed meta in clear", name)
		}
	}
}
