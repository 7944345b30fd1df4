package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	cl := newCommitLoad(startTLSCluster(b, func(c *Config) { c.MaxInflight = inflight }))
	for _, c := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("committers=%d", c), func(b *testing.B) {
			b.ResetTimer()
			start := time.Now()
			lat, starts, err := cl.run(c, b.N)
			el := time.Since(start)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			traceCommits(b, c, starts, lat)
			p50, p99 := percentiles(lat)
			b.ReportMetric(p50, "p50-ms")
			b.ReportMetric(p99, "p99-ms")
			b.ReportMetric(float64(b.N)/el.Seconds(), "commits/s")
			b.ReportMetric(float64(cl.flaps.Swap(0)), "retries")
		})
	}
}

// BenchmarkCommitTLSInflightAB compares one and two Batch entries in flight
// (Config.MaxInflight) at 16 committers on two 3-node clusters, in
// alternating blocks of 100 commits, so that both see the same machine
// load; b.N commits each. The clusters idle while the other runs.
func BenchmarkCommitTLSInflightAB(b *testing.B) {
	variants := []int{1, 2}
	loads := make([]*commitLoad, len(variants))
	for i, v := range variants {
		loads[i] = newCommitLoad(startTLSCluster(b, func(c *Config) { c.MaxInflight = v }))
	}
	lats := make([][]time.Duration, len(variants))
	entries := make([]uint64, len(variants))
	for i, cl := range loads {
		entries[i], _ = cl.proposed()
	}
	const block = 100
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		n := min(block, b.N-done)
		for i, cl := range loads {
			lat, _, err := cl.run(16, n)
			if err != nil {
				b.Fatal(err)
			}
			lats[i] = append(lats[i], lat...)
		}
	}
	b.StopTimer()
	for i, v := range variants {
		p50, p99 := percentiles(lats[i])
		b.ReportMetric(p50, fmt.Sprintf("inflight%d-p50-ms", v))
		b.ReportMetric(p99, fmt.Sprintf("inflight%d-p99-ms", v))
		b.ReportMetric(float64(loads[i].flaps.Load()), fmt.Sprintf("inflight%d-retries", v))
		e, _ := loads[i].proposed()
		b.ReportMetric(float64(len(lats[i]))/float64(e-entries[i]), fmt.Sprintf("inflight%d-commits/entry", v))
	}
}

// commitLoad commits UpsertIKE records on whichever node of a cluster is the
// ready leader.
type commitLoad struct {
	nodes []*Node
	seq   atomic.Int64
	// flaps counts commits retried on a new leader after a leadership
	// change (on a CPU-starved machine a leader can miss its lease).
	flaps atomic.Int64
}

func newCommitLoad(nodes []*Node) *commitLoad { return &commitLoad{nodes: nodes} }

// proposed sums the Batch entries (and bytes) the nodes proposed as leader.
func (cl *commitLoad) proposed() (entries, bytes uint64) {
	for _, n := range cl.nodes {
		e, b := n.Proposed()
		entries += e
		bytes += b
	}
	return entries, bytes
}

func (cl *commitLoad) commit(cmd Command) error {
	for {
		var l *Node
		for _, n := range cl.nodes {
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
		cl.flaps.Add(1)
	}
}

// run makes n commits from c concurrent committers and returns each
// commit's latency and start.
func (cl *commitLoad) run(c, n int) ([]time.Duration, []time.Time, error) {
	lat := make([]time.Duration, n)
	starts := make([]time.Time, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				rec := ikeN(int(cl.seq.Add(1)))
				t0 := time.Now()
				if err := cl.commit(UpsertIKE(rec)); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
				starts[i] = t0
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return nil, nil, err
	}
	return lat, starts, nil
}

// percentiles returns the p50 and p99 of lat in milliseconds (sorting lat).
func percentiles(lat []time.Duration) (p50, p99 float64) {
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ms(lat[len(lat)/2]), ms(lat[min(len(lat)-1, len(lat)*99/100)])
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

// abVariant is one configuration BenchmarkCommitTLSAB compares.
type abVariant struct {
	name string
	tune func(*Config)
}

// abVariants are the configurations BenchmarkCommitTLSAB compares: the
// node as it is against the node as it was before a change.
var abVariants = []abVariant{
	{"nogather", func(c *Config) { c.CommitGather = -1 }},
	{"gather", func(*Config) {}},
}

// BenchmarkCommitTLSAB compares abVariants at 16 committers on one 3-node
// cluster each, in alternating blocks of 100 commits, so that all see the
// same machine load; b.N commits each. The clusters idle while another runs.
func BenchmarkCommitTLSAB(b *testing.B) {
	loads := make([]*commitLoad, len(abVariants))
	for i, v := range abVariants {
		loads[i] = newCommitLoad(startTLSCluster(b, v.tune))
	}
	lats := make([][]time.Duration, len(abVariants))
	elapsed := make([]time.Duration, len(abVariants))
	const block = 100
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		n := min(block, b.N-done)
		for i, cl := range loads {
			t0 := time.Now()
			lat, _, err := cl.run(16, n)
			elapsed[i] += time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			lats[i] = append(lats[i], lat...)
		}
	}
	b.StopTimer()
	reportAB(b, lats, elapsed)
}

// BenchmarkCommitTLSOpenAB is BenchmarkCommitTLSAB with commits that do
// not wait for each other: they arrive at random (exponential gaps) at
// 2,000 per second, each from its own goroutine, as handshakes from many
// peers would; b.N commits each, in alternating blocks of 200.
func BenchmarkCommitTLSOpenAB(b *testing.B) {
	const rate, block = 2000, 200
	loads := make([]*commitLoad, len(abVariants))
	for i, v := range abVariants {
		loads[i] = newCommitLoad(startTLSCluster(b, v.tune))
	}
	lats := make([][]time.Duration, len(abVariants))
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for done := 0; done < b.N; done += block {
		n := min(block, b.N-done)
		for i, cl := range loads {
			lat := make([]time.Duration, n)
			var wg sync.WaitGroup
			var failed atomic.Value
			next := time.Now()
			for j := range n {
				next = next.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
				time.Sleep(time.Until(next))
				wg.Add(1)
				go func() {
					defer wg.Done()
					rec := ikeN(int(cl.seq.Add(1)))
					t0 := time.Now()
					if err := cl.commit(UpsertIKE(rec)); err != nil {
						failed.Store(err)
						return
					}
					lat[j] = time.Since(t0)
				}()
			}
			wg.Wait()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			lats[i] = append(lats[i], lat...)
		}
	}
	b.StopTimer()
	reportAB(b, lats, nil)
}

// reportAB reports each variant's p50 and p99 latency and, when elapsed
// is given, its commits per second.
func reportAB(b *testing.B, lats [][]time.Duration, elapsed []time.Duration) {
	for i, v := range abVariants {
		p50, p99 := percentiles(lats[i])
		b.ReportMetric(p50, v.name+"-p50-ms")
		b.ReportMetric(p99, v.name+"-p99-ms")
		if elapsed != nil {
			b.ReportMetric(float64(len(lats[i]))/elapsed[i].Seconds(), v.name+"-commits/s")
		}
	}
}
