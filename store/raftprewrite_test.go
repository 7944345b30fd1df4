package store

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

func prewriteLogs(first, n int) []*raft.Log {
	var logs []*raft.Log
	for i := first; i < first+n; i++ {
		logs = append(logs, &raft.Log{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, 2048)})
	}
	return logs
}

func checkPrewriteLogs(t *testing.T, l raft.LogStore, first, n int) {
	t.Helper()
	for _, want := range prewriteLogs(first, n) {
		var got raft.Log
		if err := l.GetLog(want.Index, &got); err != nil {
			t.Fatalf("log %d: %v", want.Index, err)
		}
		if !bytes.Equal(got.Data, want.Data) || got.Term != want.Term {
			t.Fatalf("log %d: term %d, %d data bytes differ from what was stored", want.Index, got.Term, len(got.Data))
		}
	}
}

// highWater is bbolt's high-water mark of the file (pages at or above it
// belong to no committed transaction).
func highWater(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: openTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var hwm int64
	if err := db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return hwm
}

// checkWritten fails unless path is at least size long and has no hole
// from offset from to its end.
func checkWritten(t *testing.T, path string, from, size int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < size {
		t.Fatalf("%s is %d bytes, want at least %d", path, fi.Size(), size)
	}
	hole, err := unix.Seek(int(f.Fd()), from, unix.SEEK_HOLE)
	if err != nil {
		t.Fatal(err)
	}
	if hole != fi.Size() {
		t.Fatalf("%s has a hole at offset %d (file size %d): bbolt would write into unallocated blocks", path, hole, fi.Size())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 < fi.Size()-from {
		t.Fatalf("%s: %d bytes allocated for %d bytes from offset %d", path, st.Blocks*512, fi.Size()-from, from)
	}
}

// A new Raft log file is written (not sparse) up to RaftLogPrewrite, and
// logs stored in it read back after a reopen.
func TestRaftLogPrewritten(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, RaftDBFile)
	r := openTestRaft(t, dir)
	checkWritten(t, path, 0, RaftLogPrewrite)
	if err := r.Log.StoreLogs(prewriteLogs(1, 300)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTestRaft(t, dir)
	checkPrewriteLogs(t, r.Log, 1, 300)
	checkWritten(t, path, 0, RaftLogPrewrite)
}

// A log file written before prewriting existed, that bbolt grew with
// ftruncate (holes above its high-water mark), gets its holes filled and
// keeps every log; one already larger than RaftLogPrewrite keeps its size.
func TestRaftLogPrewriteFillsHoles(t *testing.T) {
	for _, grown := range []int64{4 << 20, RaftLogPrewrite + 4<<20} {
		dir := t.TempDir()
		path := filepath.Join(dir, RaftDBFile)
		bs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{Timeout: openTimeout}})
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.StoreLogs(prewriteLogs(1, 200)); err != nil {
			t.Fatal(err)
		}
		if err := bs.Close(); err != nil {
			t.Fatal(err)
		}
		hwm := highWater(t, path)
		if err := os.Truncate(path, hwm+grown); err != nil {
			t.Fatal(err)
		}
		r := openTestRaft(t, dir)
		checkPrewriteLogs(t, r.Log, 1, 200)
		checkWritten(t, path, hwm, max(RaftLogPrewrite, hwm+grown))
		if fi, err := os.Stat(path); err != nil || fi.Size() != max(RaftLogPrewrite, hwm+grown) {
			t.Fatalf("file size after prewrite: %v, %v; want %d", fi.Size(), err, max(RaftLogPrewrite, hwm+grown))
		}
		if err := r.Log.StoreLogs(prewriteLogs(201, 50)); err != nil {
			t.Fatal(err)
		}
		checkPrewriteLogs(t, r.Log, 1, 250)
	}
}

// BenchmarkRaftStoreLogs appends one 2 KiB entry per StoreLogs (the size
// of a Batch entry of 8 commits, the median at 16 committers) to two new
// Raft logs in turn, so both see the same disk and load: "sparse", a file
// as bbolt grows it (ftruncate, holes), and "prewritten", one opened by
// OpenRaftStores. Reports the p50 and p99 of one append (two fdatasyncs)
// of each.
func BenchmarkRaftStoreLogs(b *testing.B) {
	sparse, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), RaftDBFile), BoltOptions: &bolt.Options{Timeout: openTimeout}})
	if err != nil {
		b.Fatal(err)
	}
	defer sparse.Close()
	pre, err := OpenRaftStores(filepath.Join(b.TempDir(), "raft"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pre.Close()
	logs := []raft.LogStore{sparse, pre.Log}
	lat := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
	data := bytes.Repeat([]byte{0x5a}, 2048)
	i := uint64(0)
	for b.Loop() {
		i++
		for k := range 2 {
			k = (k + int(i)) % 2 // alternate which goes first
			t0 := time.Now()
			if err := logs[k].StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
				b.Fatal(err)
			}
			lat[k] = append(lat[k], time.Since(t0))
		}
	}
	for k, name := range []string{"sparse", "prewritten"} {
		l := lat[k]
		slices.Sort(l)
		b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(l[len(l)*9/10].Microseconds())/1000, name+"-p90-ms")
		b.ReportMetric(float64(l[min(len(l)-1, len(l)*99/100)].Microseconds())/1000, name+"-p99-ms")
	}
}
