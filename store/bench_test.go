package store

import (
	"bytes"
	"path/filepath"
	"testing"

	"ikegw/ike/sa"
)

// One PutChild per fsynced transaction, on the test's temporary directory.
func BenchmarkPutChild(b *testing.B) {
	s := testSealer(b, testKey(b))
	db, err := Open(filepath.Join(b.TempDir(), "sa.db"), s)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	recs := make([]*sa.ChildSA, 1024)
	for i := range recs {
		recs[i] = sampleChild(uint64(i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := recs[i%len(recs)]
		if err := db.Update(func(tx *Tx) error { return tx.PutChild(r) }); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// One fsynced transaction merging the counters of 1,000 children: a
// periodic counters sync of a busy gateway.
func BenchmarkPutCounters1000(b *testing.B) {
	s := testSealer(b, testKey(b))
	db, err := Open(filepath.Join(b.TempDir(), "sa.db"), s)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const n = 1000
	spis := make([]uint32, n)
	if err := db.Update(func(tx *Tx) error {
		for i := range spis {
			r := sampleChild(uint64(i))
			spis[i] = r.In.SPI
			if err := tx.PutChild(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	seq := uint64(2000)
	for b.Loop() {
		seq += 100
		err := db.Update(func(tx *Tx) error {
			for _, spi := range spis {
				c := sa.Counters{OutSeq: seq, InSeq: seq - 3, ReplayBitmap: []uint64{^uint64(0)}, InBytes: seq * 1400, OutBytes: seq * 1400}
				if err := tx.PutCounters(spi, c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiB(b *testing.B) {
	s := testSealer(b, testKey(b))
	pt := seededBytes(1, 1024)
	ad := []byte("child\x00\xc0\x00\x00\x01")
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		s.Seal(pt, ad)
	}
}

func BenchmarkOpen1KiB(b *testing.B) {
	s := testSealer(b, testKey(b))
	ad := []byte("child\x00\xc0\x00\x00\x01")
	blob := s.Seal(seededBytes(1, 1024), ad)
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(blob, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// Open of a blob sealed under the previous key (after a rotation): one
// failed authentication first.
func BenchmarkOpen1KiBPreviousKey(b *testing.B) {
	oldKey := testKey(b)
	s := testSealer(b, testKey(b), oldKey)
	ad := []byte("child\x00\xc0\x00\x00\x01")
	blob := testSealer(b, oldKey).Seal(seededBytes(1, 1024), ad)
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(blob, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDB returns a database holding n IKE and n child records.
func benchDB(b *testing.B, s *Sealer, n int) *DB {
	db, err := Open(filepath.Join(b.TempDir(), "sa.db"), s)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *Tx) error {
		for i := range n {
			if err := tx.PutIKE(sampleIKE(uint64(i))); err != nil {
				return err
			}
			if err := tx.PutChild(sampleChild(uint64(i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return db
}

// Reading every child SA of a 10,000-tunnel gateway: what a takeover does
// before installing SAs.
func BenchmarkForEachChild10k(b *testing.B) {
	db := benchDB(b, testSealer(b, testKey(b)), 10000)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		if err := db.View(func(tx *Tx) error {
			return tx.ForEachChild(func(*sa.ChildSA) error { n++; return nil })
		}); err != nil || n != 10000 {
			b.Fatal(n, err)
		}
	}
}

// Counting the SAs of a 10,000-tunnel gateway, as the admin status on a
// standby does (it used to read every record, as ForEachChild10k above
// plus the IKE SAs).
func BenchmarkCounts10k(b *testing.B) {
	db := benchDB(b, testSealer(b, testKey(b)), 10000)
	b.ReportAllocs()
	for b.Loop() {
		if ike, child, err := db.Counts(); err != nil || ike != 10000 || child != 10000 {
			b.Fatal(ike, child, err)
		}
	}
}

// WriteSnapshot and Restore of 10,000 IKE + 10,000 child records (Raft FSM
// snapshot and install on a lagging node).
func BenchmarkSnapshotRestore10k(b *testing.B) {
	s := testSealer(b, testKey(b))
	src := benchDB(b, s, 10000)
	dst := benchDB(b, s, 0)
	var buf bytes.Buffer
	size := 0
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := src.WriteSnapshot(&buf); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
		if err := dst.Restore(&buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size)/1e6, "MB-snapshot")
}
