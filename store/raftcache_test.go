package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// countingLog counts the reads that reach the store behind the cache.
type countingLog struct {
	raft.LogStore
	reads int
}

func (c *countingLog) GetLog(index uint64, log *raft.Log) error {
	c.reads++
	return c.LogStore.GetLog(index, log)
}

func cacheEntry(index uint64, size int) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(index)}, size)}
}

func mustGet(t *testing.T, c *LogCache, index uint64, want *raft.Log) {
	t.Helper()
	var got raft.Log
	if err := c.GetLog(index, &got); err != nil {
		t.Fatalf("GetLog(%d): %v", index, err)
	}
	if got.Index != want.Index || got.Term != want.Term || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("GetLog(%d) = index %d term %d %d bytes, want index %d term %d %d bytes", index, got.Index, got.Term, len(got.Data), want.Index, want.Term, len(want.Data))
	}
}

func TestLogCacheBounds(t *testing.T) {
	back := &countingLog{LogStore: raft.NewInmemStore()}
	c, err := NewLogCache(back, 4, 300, 150)
	if err != nil {
		t.Fatal(err)
	}
	small := []*raft.Log{cacheEntry(1, 100), cacheEntry(2, 100), cacheEntry(3, 200)}
	if err := c.StoreLogs(small); err != nil {
		t.Fatal(err)
	}
	// 3 is above the per-entry bound: read from the store.
	for _, l := range small {
		mustGet(t, c, l.Index, l)
	}
	if back.reads != 1 {
		t.Fatalf("store reads = %d, want 1 (only the entry above the per-entry bound)", back.reads)
	}
	if got := c.CachedBytes(); got != 200 {
		t.Fatalf("cached bytes = %d, want 200", got)
	}
	// Four slots, 300 bytes: 4 fills the byte bound; 5, 6 and 8 replace
	// 1, 2 and 4 in their slots; 7 finds its slot empty and the bound
	// reached, so it is not cached.
	for i := uint64(4); i <= 8; i++ {
		if err := c.StoreLog(cacheEntry(i, 100)); err != nil {
			t.Fatal(err)
		}
		if got := c.CachedBytes(); got > 300 {
			t.Fatalf("after entry %d: cached bytes = %d, above the 300-byte bound", i, got)
		}
	}
	back.reads = 0
	for i := uint64(1); i <= 8; i++ {
		mustGet(t, c, i, cacheEntry(i, map[bool]int{true: 200, false: 100}[i == 3]))
	}
	if back.reads != 5 {
		t.Fatalf("store reads = %d, want 5 (1, 2, 4 evicted, 3 too large, 7 over the byte bound)", back.reads)
	}
}

func TestLogCacheDeleteRange(t *testing.T) {
	back := &countingLog{LogStore: raft.NewInmemStore()}
	c, err := NewLogCache(back, 16, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		if err := c.StoreLog(cacheEntry(i, 10)); err != nil {
			t.Fatal(err)
		}
	}
	// A follower drops a conflicting suffix and appends other entries at
	// the same indexes: reads must see the new ones, never the cached old.
	if err := c.DeleteRange(4, 5); err != nil {
		t.Fatal(err)
	}
	if c.CachedBytes() != 0 {
		t.Fatalf("cached bytes after DeleteRange = %d, want 0", c.CachedBytes())
	}
	var l raft.Log
	if err := c.GetLog(4, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog of a deleted entry: %v, want ErrLogNotFound", err)
	}
	repl := &raft.Log{Index: 4, Term: 2, Type: raft.LogCommand, Data: []byte("term 2")}
	if err := c.StoreLog(repl); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, 4, repl)
	mustGet(t, c, 3, cacheEntry(3, 10))
}

// failingLog refuses every append.
type failingLog struct{ raft.LogStore }

func (failingLog) StoreLogs([]*raft.Log) error { return errors.New("disk full") }

func TestLogCacheStoreFailureCachesNothing(t *testing.T) {
	c, err := NewLogCache(failingLog{raft.NewInmemStore()}, 16, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StoreLog(cacheEntry(1, 10)); err == nil {
		t.Fatal("StoreLog succeeded on a failing store")
	}
	var l raft.Log
	if err := c.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog after a failed append: %v, want ErrLogNotFound", err)
	}
}

func TestNewLogCacheRefusesZeroBounds(t *testing.T) {
	for _, b := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}} {
		if _, err := NewLogCache(raft.NewInmemStore(), b[0], b[1], b[2]); err == nil {
			t.Errorf("NewLogCache(%v) accepted a zero bound", b)
		}
	}
}
