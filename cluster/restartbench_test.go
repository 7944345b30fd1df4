package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
	"ikegw/store"
)

// benchNode is one node of BenchmarkRestartReady's cluster: inmem
// transport, SA database and Raft stores on disk (the database without
// fsync, as cluster.Open runs it).
type benchNode struct {
	id, dir string
	trans   *raft.InmemTransport
	db      *store.DB
	n       *Node
}

func startBenchNode(b *testing.B, bn *benchNode, s *store.Sealer, peers []Peer) {
	b.Helper()
	_, bn.trans = raft.NewInmemTransport(raft.ServerAddress(bn.id))
	db, err := store.Open(filepath.Join(bn.dir, SADBFile), s)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.SetNoSync(true); err != nil {
		b.Fatal(err)
	}
	rs, err := store.OpenRaftStores(filepath.Join(bn.dir, RaftDir), nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{NodeID: bn.id, Peers: peers, Log: quietLog(), SnapshotThreshold: 1 << 30, SnapshotInterval: time.Hour}
	fastConfig(&cfg)
	n, err := New(cfg, Deps{DB: db, Sealer: s, Transport: bn.trans, Logs: rs.Log, Stable: rs.Stable, Snapshots: rs.Snapshots,
		Close: func() error { return errors.Join(rs.Close(), db.Close()) }})
	if err != nil {
		b.Fatal(err)
	}
	bn.db, bn.n = db, n
}

func connectBench(nodes []*benchNode) {
	for _, a := range nodes {
		for _, o := range nodes {
			if a != o {
				a.trans.Connect(raft.ServerAddress(o.id), o.trans)
			}
		}
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// BenchmarkRestartReady measures how long a follower restarted with
// IKEGW_RESTART_ENTRIES (default 2,000) counters syncs of 1,000 pairs in
// its log since the last snapshot takes from New to ready (its FSM applied
// index at the leader's last command), alternating:
//
//   - kept: the SA database as the node left it (this build);
//   - replay: the same node with the database's applied index removed, so
//     it restores the snapshot and applies every entry after it, as every
//     restart did before (and as a database of the previous release does
//     once).
//
// Setup (the cluster, the pairs, the entries) is not timed. Reported:
// ms-kept and ms-replay, the mean time to ready, and ms-kept-done, the
// mean time until raft has handed the kept node every entry (skipped);
// each round is logged with the load average.
//
//	IKEGW_RESTART_ENTRIES=8000 go test -run '^$' -bench RestartReady -benchtime 3x -v ./cluster/
func BenchmarkRestartReady(b *testing.B) {
	entries := 2000
	if v := os.Getenv("IKEGW_RESTART_ENTRIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("IKEGW_RESTART_ENTRIES=%q: want a positive count", v)
		}
		entries = n
	}
	const pairs = 1000
	s := testSealer(b)
	nodes := []*benchNode{{id: "n1"}, {id: "n2"}, {id: "n3"}}
	var peers []Peer
	for _, bn := range nodes {
		bn.dir = b.TempDir()
		peers = append(peers, Peer{ID: bn.id, Address: bn.id, Role: RoleGateway})
	}
	for _, bn := range nodes {
		startBenchNode(b, bn, s, peers)
	}
	connectBench(nodes)
	b.Cleanup(func() {
		for _, bn := range nodes {
			if bn.n != nil {
				bn.n.Shutdown()
			}
		}
	})
	leader := func() *benchNode {
		var l *benchNode
		waitFor(b, 30*time.Second, "a ready leader", func() bool {
			for _, bn := range nodes {
				if bn.n != nil && bn.n.IsLeaderReady() {
					l = bn
					return true
				}
			}
			return false
		})
		return l
	}
	commit := func(cmds ...Command) {
		for try := 0; ; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := leader().n.Commit(ctx, cmds...)
			cancel()
			if err == nil {
				return
			}
			if !leadershipErr(err) || try > 10 {
				b.Fatal(err)
			}
		}
	}
	setup := time.Now()
	for i := 0; i < pairs; i += 100 {
		var cmds []Command
		for j := i; j < i+100; j++ {
			cmds = append(cmds, UpsertChild(testChild(uint32(j+1)<<8)))
		}
		commit(cmds...)
	}
	for _, bn := range nodes {
		if err := bn.n.raft.Snapshot().Error(); err != nil {
			b.Fatal(err)
		}
	}
	for e := range entries {
		seq := uint64(e+1) * 100
		m := make(map[uint32]sa.Counters, pairs)
		for i := range pairs {
			m[uint32(i+1)<<8] = sa.Counters{OutSeq: seq, InSeq: seq, ReplayBitmap: []uint64{^uint64(0)}, OutPackets: seq, SyncedAt: int64(seq)}
		}
		commit(CountersBatch(m))
	}
	commit(UpsertIKE(testIKE(1)))
	l := leader()
	target := l.n.FSMAppliedIndex()
	var f *benchNode
	for _, bn := range nodes {
		if bn != l {
			f = bn
			break
		}
	}
	waitFor(b, 10*time.Minute, f.id+" applying the log", func() bool { return f.n.FSMAppliedIndex() >= target })
	b.Logf("setup: %d entries of %d pairs after the snapshot, %s, load %s", entries, pairs, time.Since(setup).Round(time.Millisecond), loadavg())

	// restart restarts f and returns the time to ready (its FSM applied
	// index at target) and to done (raft has handed every entry to the
	// FSM: the kept database's skipping is over too).
	restart := func(strip bool) (ready, done time.Duration, skipped uint64) {
		if err := f.n.Shutdown(); err != nil {
			b.Fatal(err)
		}
		f.n = nil
		if strip {
			db, err := store.Open(filepath.Join(f.dir, SADBFile), s)
			if err != nil {
				b.Fatal(err)
			}
			if err := db.Update(func(tx *store.Tx) error { return tx.DeleteMeta(metaApplied) }); err != nil {
				b.Fatal(err)
			}
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		startBenchNode(b, f, s, peers)
		connectBench(nodes)
		waitFor(b, 10*time.Minute, f.id+" ready", func() bool { return f.n.FSMAppliedIndex() >= target })
		ready = time.Since(start)
		waitFor(b, 10*time.Minute, f.id+" done", func() bool { return f.n.raft.AppliedIndex() >= target })
		return ready, time.Since(start), f.n.RestartSkipped()
	}
	var kept, keptDone, replay time.Duration
	rounds := 0
	for b.Loop() {
		k, kd, skipped := restart(false)
		r, _, _ := restart(true)
		kept += k
		keptDone += kd
		replay += r
		rounds++
		b.Logf("round %d: kept ready %s, done %s (skipped %d entries); replay ready %s; load %s",
			rounds, k.Round(time.Microsecond), kd.Round(time.Microsecond), skipped, r.Round(time.Millisecond), loadavg())
	}
	b.ReportMetric(float64(kept.Microseconds())/1000/float64(rounds), "ms-kept")
	b.ReportMetric(float64(keptDone.Microseconds())/1000/float64(rounds), "ms-kept-done")
	b.ReportMetric(float64(replay.Microseconds())/1000/float64(rounds), "ms-replay")
}
