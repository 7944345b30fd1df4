package store

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of the Raft log's cache (LogCache), as OpenRaftStores sets them.
const (
	// RaftCacheEntries is how many of the newest entries the cache can
	// hold. With one Batch entry in flight a follower in step is one or
	// two entries behind the leader; the rest covers a short stall.
	RaftCacheEntries = 256
	// RaftCacheBytes bounds the payload (Data and Extensions) the cache
	// holds in all: a counters sync at 10,000 tunnels is an entry of about
	// 600 KB, so a bound in entries alone could hold 150 MB.
	RaftCacheBytes = 8 << 20
	// RaftCacheEntryBytes is the largest entry the cache keeps; larger ones
	// are read back from bbolt when needed.
	RaftCacheEntryBytes = 1 << 20
)

// LogCache keeps the newest Raft log entries in memory, bounded in entries
// and in bytes, in front of a LogStore. The leader's replication reads
// every entry it sends back from the log store, and a follower reads every
// entry it applies: without the cache each is a bbolt read and a decode of
// an entry written moments before.
//
// An entry is cached only once the store has it; a read the cache cannot
// answer goes to the store. An entry larger than the per-entry bound, or
// one that would take the cache over its byte bound, is not cached (and
// frees its slot). DeleteRange empties the cache first, so no deleted or
// replaced entry is ever answered from it. Safe for concurrent use.
type LogCache struct {
	raft.LogStore

	maxBytes, maxEntry int

	mu    sync.Mutex
	slots []*raft.Log // by index modulo len(slots); nil when empty
	bytes int         // payload bytes held in slots
}

// NewLogCache returns a LogCache of at most entries entries and maxBytes
// payload bytes in front of s; entries above maxEntry bytes are not
// cached.
func NewLogCache(s raft.LogStore, entries, maxBytes, maxEntry int) (*LogCache, error) {
	if entries <= 0 || maxBytes <= 0 || maxEntry <= 0 {
		return nil, fmt.Errorf("store: raft log cache: entries (%d), byte bound (%d) and entry bound (%d) must be positive", entries, maxBytes, maxEntry)
	}
	return &LogCache{LogStore: s, maxBytes: maxBytes, maxEntry: maxEntry, slots: make([]*raft.Log, entries)}, nil
}

func logSize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) }

// GetLog answers from the cache when it holds index, else from the store.
func (c *LogCache) GetLog(index uint64, log *raft.Log) error {
	c.mu.Lock()
	l := c.slots[index%uint64(len(c.slots))]
	if l != nil && l.Index == index {
		*log = *l
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.LogStore.GetLog(index, log)
}

// StoreLog stores one entry.
func (c *LogCache) StoreLog(log *raft.Log) error {
	return c.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores logs, then caches those within the bounds.
func (c *LogCache) StoreLogs(logs []*raft.Log) error {
	if err := c.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		i := l.Index % uint64(len(c.slots))
		if old := c.slots[i]; old != nil {
			c.bytes -= logSize(old)
			c.slots[i] = nil
		}
		if n := logSize(l); n <= c.maxEntry && c.bytes+n <= c.maxBytes {
			c.slots[i] = l
			c.bytes += n
		}
	}
	return nil
}

// DeleteRange empties the cache, then deletes the entries from the store.
func (c *LogCache) DeleteRange(from, to uint64) error {
	c.mu.Lock()
	clear(c.slots)
	c.bytes = 0
	c.mu.Unlock()
	return c.LogStore.DeleteRange(from, to)
}

// CachedBytes returns the payload bytes the cache holds.
func (c *LogCache) CachedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
