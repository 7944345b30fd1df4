package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// startTLSCluster starts three in-process nodes over loopback TCP + mutual
// TLS, with bbolt stores (fsync on) and memberlist bootstrap, and returns
// them with the ready leader first.
func startTLSCluster(tb testing.TB, tune ...func(*Config)) []*Node {
	tb.Helper()
	dir := tb.TempDir()
	labFiles(tb, dir, "n1", "n2", "n3")
	var nodes []*Node
	join := ""
	for _, name := range []string{"n1", "n2", "n3"} {
		n, err := openTLSNode(dir, name, join, "127.0.0.1:0", 3, benchLog, tune...)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = n.Shutdown() })
		nodes = append(nodes, n)
		join = nodes[0].GossipAddr()
	}
	waitFor(tb, 20*time.Second, "a ready leader", func() bool {
		for i, n := range nodes {
			if n.IsLeaderReady() {
				nodes[0], nodes[i] = nodes[i], nodes[0]
				return true
			}
		}
		return false
	})
	return nodes
}

// BenchmarkCommitTLS measures Commit latency (p50, p99) and throughput with
// 1, 16 and 256 concurrent committers on a 3-node cluster over loopback TLS
// with fsync on. Each commit is one UpsertIKE of a full ISAKMP SA.
func BenchmarkCommitTLS(b *testing.B) { benchCommit(b, 1) }

// BenchmarkCommitTLSInflight2 is the same with two Batch entries in flight.
func BenchmarkCommitTLSInflight2(b *testing.B) { benchCommit(b, 2) }

func benchCommit(b *testing.B, inflight int) {
	nodes := startTLSCluster(b, func(c *Config) { c.MaxInflight = inflight })
	var seq atomic.Int64
	var flaps atomic.Int64
	// commit retries on the new leader after a leadership change (counted:
	// on a CPU-starved machine a leader can miss its lease).
	commit := func(cmd Command) error {
		for {
			var l *Node
			for _, n := range nodes {
				if n.IsLeaderReady() {
					l = n
				}
			}
			if l == nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			err := l.Commit(context.Background(), cmd)
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrLeadershipLost) {
				return err
			}
			flaps.Add(1)
		}
	}
	for _, c := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("committers=%d", c), func(b *testing.B) {
			lat := make([]time.Duration, b.N)
			starts := make([]time.Time, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			start := time.Now()
			for range c {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						rec := ikeN(int(seq.Add(1)))
						t0 := time.Now()
						if err := commit(UpsertIKE(rec)); err != nil {
							failed.Store(err)
							return
						}
						lat[i] = time.Since(t0)
						starts[i] = t0
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			traceCommits(b, c, starts, lat)
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(b.N)/el.Seconds(), "commits/s")
			b.ReportMetric(float64(flaps.Swap(0)), "retries")
		})
	}
}

// traceCommits appends one line per commit (start in Unix ns, latency in
// ns, committers) to the file named by IKEGW_COMMIT_TRACE, if set: to line
// slow commits up with a syscall trace (strace -ttt) of the same run.
func traceCommits(b *testing.B, committers int, starts []time.Time, lat []time.Duration) {
	path := os.Getenv("IKEGW_COMMIT_TRACE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range lat {
		fmt.Fprintf(w, "%d %d %d\n", starts[i].UnixNano(), lat[i].Nanoseconds(), committers)
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		b.Fatal(err)
	}
}

var benchLog = quietLog()

// BenchmarkEncodeBatch measures what the committer does per Raft entry:
// encode 64 commits of one UpsertIKE each and seal the batch.
func BenchmarkEncodeBatch(b *testing.B) {
	s := testSealer(b)
	rec := UpsertIKE(testIKE(1))
	b.ReportAllocs()
	for b.Loop() {
		groups := make([][][]byte, 64)
		for i := range groups {
			c, err := encodeCommand(rec)
			if err != nil {
				b.Fatal(err)
			}
			groups[i] = [][]byte{c}
		}
		if _, err := encodeBatch(s, groups); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFSMApplyBatch measures applying a 64-commit Batch entry: open,
// decode, and write to the SA database (bbolt, fsync on) in one transaction.
func BenchmarkFSMApplyBatch(b *testing.B) {
	s := testSealer(b)
	f := NewFSM(DBBackend(testDB(b, s)), s, quietLog())
	var groups [][]Command
	for i := range 64 {
		groups = append(groups, []Command{UpsertIKE(ikeN(i))})
	}
	e := batchEntry(b, s, groups...)
	b.ReportAllocs()
	for b.Loop() {
		if br, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Data: e}).(*BatchResult); !ok || br.Errs[0] != nil {
			b.Fatal("apply failed")
		}
	}
}
