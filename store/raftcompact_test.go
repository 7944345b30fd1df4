package store

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// deleteRecorder records the DeleteRange calls reaching the store.
type deleteRecorder struct {
	raft.LogStore
	calls [][2]uint64
}

func (d *deleteRecorder) DeleteRange(from, to uint64) error {
	d.calls = append(d.calls, [2]uint64{from, to})
	return d.LogStore.DeleteRange(from, to)
}

func storeN(t testing.TB, l raft.LogStore, from, n uint64, size int) {
	t.Helper()
	data := bytes.Repeat([]byte{0xa5}, size)
	var batch []*raft.Log
	for i := from; i < from+n; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data})
		if len(batch) == 512 || i == from+n-1 {
			if err := l.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
}

func checkRange(t *testing.T, l raft.LogStore, first, last uint64) {
	t.Helper()
	f, err1 := l.FirstIndex()
	g, err2 := l.LastIndex()
	if err1 != nil || err2 != nil || f != first || g != last {
		t.Fatalf("log holds %d..%d (%v, %v), want %d..%d", f, g, err1, err2, first, last)
	}
	var e raft.Log
	for i := first; i <= last; i++ {
		if err := l.GetLog(i, &e); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}

// A compaction (DeleteRange from the first entry) runs in transactions of
// RaftCompactChunk entries, lowest first, and stops at the last entry even
// when asked for more; any other DeleteRange is one transaction.
func TestRaftLogCompactsInChunks(t *testing.T) {
	bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(t.TempDir(), RaftDBFile), BoltOptions: &bolt.Options{Timeout: openTimeout}})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	rec := &deleteRecorder{LogStore: bs}
	l := chunkedLog{rec}
	if err := l.DeleteRange(1, 10); err != nil || len(rec.calls) != 0 {
		t.Fatalf("empty log: %v, calls %v", err, rec.calls)
	}
	storeN(t, l, 1, 5000, 64)

	if err := l.DeleteRange(1, 3000); err != nil {
		t.Fatal(err)
	}
	want := [][2]uint64{{1, 1024}, {1025, 2048}, {2049, 3000}}
	if !slices.Equal(rec.calls, want) {
		t.Fatalf("compaction 1..3000 ran as %v, want %v", rec.calls, want)
	}
	checkRange(t, l, 3001, 5000)

	rec.calls = nil // a follower dropping a conflicting suffix: one transaction
	if err := l.DeleteRange(4500, 5000); err != nil {
		t.Fatal(err)
	}
	if want := [][2]uint64{{4500, 5000}}; !slices.Equal(rec.calls, want) {
		t.Fatalf("suffix 4500..5000 ran as %v, want %v", rec.calls, want)
	}
	checkRange(t, l, 3001, 4499)

	rec.calls = nil // a bound past the last entry ends at the last entry
	if err := l.DeleteRange(3001, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	if want := [][2]uint64{{3001, 4024}, {4025, 4499}}; !slices.Equal(rec.calls, want) {
		t.Fatalf("compaction 3001..max ran as %v, want %v", rec.calls, want)
	}
	if last, err := l.LastIndex(); err != nil || last != 0 {
		t.Fatalf("last index %d, %v after deleting everything", last, err)
	}
}

// BenchmarkRaftCompaction appends to a log of 18,432 entries of 2 KiB
// (TrailingLogs plus SnapshotThreshold, Raft's steady state) while the
// first 8,192 are deleted, as Raft compacts after a snapshot: "whole" in
// one transaction (raft-boltdb's DeleteRange), "chunked" as OpenRaftStores'
// log does (both on prewritten files); the two run in turn each iteration. Reports the longest append
// during the compaction and the compaction's duration.
func BenchmarkRaftCompaction(b *testing.B) {
	type variant struct {
		name string
		log  raft.LogStore
		next uint64
		wait []time.Duration
		took []time.Duration
	}
	open := func() *raftboltdb.BoltStore { // prewritten, as OpenRaftStores does
		path := filepath.Join(b.TempDir(), RaftDBFile)
		if err := prewriteLog(path, RaftLogPrewrite); err != nil {
			b.Fatal(err)
		}
		bs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{Timeout: openTimeout}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { bs.Close() })
		return bs
	}
	vs := []*variant{{name: "whole", log: open(), next: 1}, {name: "chunked", log: chunkedLog{open()}, next: 1}}
	const keep, compact = 10240, 8192
	for _, v := range vs {
		storeN(b, v.log, v.next, keep, 2048)
		v.next += keep
	}
	data := bytes.Repeat([]byte{0x5a}, 2048)
	for b.Loop() {
		for _, v := range vs {
			storeN(b, v.log, v.next, compact, 2048)
			v.next += compact
			first, err := v.log.FirstIndex()
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			done := make(chan struct{})
			var longest time.Duration
			var appendErr error
			wg.Add(1)
			go func() { // the leader appending while the snapshot goroutine compacts
				defer wg.Done()
				for {
					select {
					case <-done:
						return
					default:
					}
					t0 := time.Now()
					if err := v.log.StoreLogs([]*raft.Log{{Index: v.next, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
						appendErr = err
						return
					}
					v.next++
					longest = max(longest, time.Since(t0))
				}
			}()
			time.Sleep(2 * time.Millisecond)
			t0 := time.Now()
			if err := v.log.DeleteRange(first, first+compact-1); err != nil {
				b.Fatal(err)
			}
			v.took = append(v.took, time.Since(t0))
			close(done)
			wg.Wait()
			if appendErr != nil {
				b.Fatal(appendErr)
			}
			v.wait = append(v.wait, longest)
		}
	}
	for _, v := range vs {
		slices.Sort(v.wait)
		slices.Sort(v.took)
		b.ReportMetric(float64(v.wait[len(v.wait)/2].Microseconds())/1000, fmt.Sprintf("%s-longest-append-ms", v.name))
		b.ReportMetric(float64(v.took[len(v.took)/2].Microseconds())/1000, fmt.Sprintf("%s-compaction-ms", v.name))
	}
}

// BenchmarkRaftAppendAfterCompaction appends 2 KiB entries, in turn, to two
// prewritten logs of 18,432 entries from which the first 8,192 were
// compacted (Raft's steady state): "synced-freelist" with bbolt's default
// options, "no-freelist-sync" with raftBoltOptions. Reports p50, p90 and
// p99 of one append.
func BenchmarkRaftAppendAfterCompaction(b *testing.B) {
	open := func(o *bolt.Options) raft.LogStore {
		path := filepath.Join(b.TempDir(), RaftDBFile)
		if err := prewriteLog(path, RaftLogPrewrite); err != nil {
			b.Fatal(err)
		}
		bs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: o})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { bs.Close() })
		l := chunkedLog{bs}
		storeN(b, l, 1, 18432, 2048)
		if err := l.DeleteRange(1, 8192); err != nil {
			b.Fatal(err)
		}
		return l
	}
	names := []string{"synced-freelist", "no-freelist-sync"}
	logs := []raft.LogStore{open(&bolt.Options{Timeout: openTimeout}), open(raftBoltOptions())}
	lat := [2][]time.Duration{}
	data := bytes.Repeat([]byte{0x5a}, 2048)
	next := uint64(18433)
	for b.Loop() {
		for k := range 2 {
			k = (k + int(next)) % 2
			t0 := time.Now()
			if err := logs[k].StoreLogs([]*raft.Log{{Index: next, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
				b.Fatal(err)
			}
			lat[k] = append(lat[k], time.Since(t0))
		}
		next++
	}
	for k, name := range names {
		l := lat[k]
		slices.Sort(l)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(l[len(l)/2]), name+"-p50-ms")
		b.ReportMetric(ms(l[len(l)*9/10]), name+"-p90-ms")
		b.ReportMetric(ms(l[min(len(l)-1, len(l)*99/100)]), name+"-p99-ms")
	}
}

// Reopening the Raft stores of a compacted log (18,432 entries of 2 KiB,
// 8,192 compacted: thousands of free pages, no synced freelist), as every
// start of ikegwd does.
func BenchmarkReopenRaftStores(b *testing.B) {
	dir := b.TempDir()
	rs, err := OpenRaftStores(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	l := rs.Log
	storeN(b, l, 1, 18432, 2048)
	if err := l.DeleteRange(1, 8192); err != nil {
		b.Fatal(err)
	}
	if err := rs.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		rs, err := OpenRaftStores(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := rs.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
