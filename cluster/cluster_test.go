package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
	"ikegw/store"
)

// tnode is one node of an in-memory test cluster: inmem transport, and
// either inmem Raft stores (fast) or real ones on disk.
type tnode struct {
	logs  raft.LogStore
	id    string
	dir   string
	trans *raft.InmemTransport
	n     *Node
	db    *store.DB
}

type tcluster struct {
	t      *testing.T
	nodes  []*tnode
	roles  []Role
	disk   bool
	sealer *store.Sealer
	tune   func(*Config)
	// backend, if set, wraps node i's FSM backend.
	backend func(i int, b Backend) Backend
	// logs, if set, wraps node i's Raft log store.
	logs func(i int, l raft.LogStore) raft.LogStore
}

func fastConfig(c *Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.BarrierTimeout = 5 * time.Second
	c.HandoffInterval = 100 * time.Millisecond
}

func newCluster(t *testing.T, roles []Role, disk bool, tune func(*Config)) *tcluster {
	t.Helper()
	c := &tcluster{t: t, roles: roles, disk: disk, sealer: testSealer(t), tune: tune}
	for i := range roles {
		c.nodes = append(c.nodes, &tnode{id: "n" + strconv.Itoa(i+1), dir: t.TempDir()})
	}
	c.startAll()
	t.Cleanup(c.stopAll)
	return c
}

func (c *tcluster) peers() []Peer {
	var ps []Peer
	for i, tn := range c.nodes {
		ps = append(ps, Peer{ID: tn.id, Address: tn.id, Role: c.roles[i]})
	}
	return ps
}

func (c *tcluster) startAll() {
	for i := range c.nodes {
		c.start(i)
	}
	c.connectAll()
}

func (c *tcluster) start(i int) {
	t := c.t
	t.Helper()
	tn := c.nodes[i]
	_, tn.trans = raft.NewInmemTransport(raft.ServerAddress(tn.id))
	db, err := store.Open(filepath.Join(tn.dir, SADBFile), c.sealer)
	if err != nil {
		t.Fatal(err)
	}
	tn.db = db
	deps := Deps{DB: db, Sealer: c.sealer, Transport: tn.trans}
	if c.backend != nil {
		deps.Backend = c.backend(i, DBBackend(db))
	}
	if c.disk {
		rs, err := store.OpenRaftStores(filepath.Join(tn.dir, RaftDir), nil)
		if err != nil {
			t.Fatal(err)
		}
		deps.Logs, deps.Stable, deps.Snapshots = rs.Log, rs.Stable, rs.Snapshots
		deps.Close = func() error { return errors.Join(rs.Close(), db.Close()) }
	} else {
		ls := raft.NewInmemStore()
		deps.Logs, deps.Stable, deps.Snapshots = ls, ls, raft.NewInmemSnapshotStore()
		deps.Close = db.Close
	}
	if c.logs != nil {
		deps.Logs = c.logs(i, deps.Logs)
	}
	tn.logs = deps.Logs
	cfg := Config{NodeID: tn.id, Role: c.roles[i], Peers: c.peers(), Log: quietLog()}
	fastConfig(&cfg)
	if c.tune != nil {
		c.tune(&cfg)
	}
	n, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	tn.n = n
}

func (c *tcluster) connectAll() {
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b && a.n != nil && b.n != nil {
				a.trans.Connect(raft.ServerAddress(b.id), b.trans)
			}
		}
	}
}

func (c *tcluster) isolate(x *tnode) {
	for _, o := range c.nodes {
		if o != x {
			x.trans.Disconnect(raft.ServerAddress(o.id))
			o.trans.Disconnect(raft.ServerAddress(x.id))
		}
	}
}

func (c *tcluster) stop(tn *tnode) {
	if tn.n != nil {
		if err := tn.n.Shutdown(); err != nil {
			c.t.Errorf("shutdown %s: %v", tn.id, err)
		}
		tn.n = nil
	}
}

func (c *tcluster) stopAll() {
	for _, tn := range c.nodes {
		c.stop(tn)
	}
}

// leader waits for a ready leader among the running nodes (except skip).
func (c *tcluster) leader(skip ...*tnode) *tnode {
	c.t.Helper()
	var found *tnode
	waitFor(c.t, 15*time.Second, "a ready leader", func() bool {
		for _, tn := range c.nodes {
			if tn.n != nil && tn.n.IsLeaderReady() && !contains(skip, tn) {
				found = tn
				return true
			}
		}
		return false
	})
	return found
}

func contains(s []*tnode, x *tnode) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leadershipErr reports errors after which a commit is retried on the
// (new) leader: the machine is shared and a leader may be starved of CPU
// long enough to lose its lease. Upserts are idempotent, so a retry is safe.
func leadershipErr(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrLeadershipLost)
}

// commit commits on whichever node is the ready leader, retrying after a
// leadership change.
func (c *tcluster) commit(cmds ...Command) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := l.n.Commit(ctx, cmds...)
		cancel()
		if err == nil {
			return
		}
		if !leadershipErr(err) || time.Now().After(deadline) {
			c.t.Fatalf("commit on %s: %v", l.id, err)
		}
		c.t.Logf("commit on %s: %v; retrying on the new leader", l.id, err)
	}
}

func hasIKE(db *store.DB, i byte) bool {
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.IKE(testIKE(i).Cookies)
		return err
	})
	return err == nil
}

func countIKE(t testing.TB, db *store.DB) int {
	n := 0
	if err := db.View(func(tx *store.Tx) error {
		return tx.ForEachIKE(func(*sa.IKESA) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitIKE(t testing.TB, tn *tnode, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d IKE SAs on %s", want, tn.id), func() bool { return countIKE(t, tn.db) == want })
}

var three = []Role{RoleGateway, RoleGateway, RoleGateway}

func TestCommitReplicatesAndFollowerRefuses(t *testing.T) {
	c := newCluster(t, three, false, nil)
	c.commit(UpsertIKE(testIKE(1)), UpsertChild(testChild(0x100)))
	l := c.leader()
	// Applied locally when Commit returns.
	if !hasIKE(l.db, 1) {
		t.Fatal("leader does not hold the record Commit returned for")
	}
	for _, tn := range c.nodes {
		waitIKE(t, tn, 1)
		if tn != l {
			err := tn.n.Commit(context.Background(), UpsertIKE(testIKE(2)))
			if !errors.Is(err, ErrNotLeader) {
				t.Errorf("commit on follower %s: got %v, want ErrNotLeader", tn.id, err)
			}
		}
	}
	st := l.n.Stats()
	if st.State != "Leader" || st.LeaderID != l.id || st.CommitIndex == 0 || st.AppliedIndex < st.CommitIndex || !st.LeaderReady {
		t.Errorf("leader stats %+v", st)
	}
	ms, err := l.n.Members()
	if err != nil || len(ms) != 3 {
		t.Fatalf("members %v %v", ms, err)
	}
	for _, m := range ms {
		if !m.Voter || m.Leader != (m.ID == l.id) {
			t.Errorf("member %+v", m)
		}
	}
	if err := l.n.Commit(context.Background(), Command{Type: TypeBatch, Version: 1}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("caller-built Batch: got %v", err)
	}
}

// TestRaftLogSealed checks DESIGN invariant 6: key material never appears
// in clear in the Raft log.
func TestRaftLogSealed(t *testing.T) {
	c := newCluster(t, three, false, nil)
	rec := testIKE(1)
	ch := testChild(0x77)
	ch.In.EncrKey = bytes.Repeat([]byte{0xE1}, 32)
	c.commit(UpsertIKE(rec), UpsertChild(ch), ConfigApply(1, []byte("psk-secret-xyz")))
	secrets := [][]byte{rec.SKEYID, rec.EncKey, ch.In.EncrKey, []byte("psk-secret-xyz")}
	for _, tn := range c.nodes {
		waitIKE(t, tn, 1)
		first, _ := tn.logs.FirstIndex()
		last, _ := tn.logs.LastIndex()
		for i := first; i <= last; i++ {
			var l raft.Log
			if err := tn.logs.GetLog(i, &l); err != nil {
				t.Fatal(err)
			}
			for _, sec := range secrets {
				if bytes.Contains(l.Data, sec) {
					t.Fatalf("%s: raft log entry %d holds key material in clear", tn.id, i)
				}
			}
		}
	}
}

func TestCommitContextAndShutdown(t *testing.T) {
	c := newCluster(t, three, false, nil)
	l := c.leader()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.n.Commit(ctx, UpsertIKE(testIKE(1))); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if err := l.n.Commit(context.Background()); err != nil {
		t.Errorf("empty commit: %v", err)
	}
	// Committers running while the leader shuts down all return (no
	// context deadline: a lost answer would hang them).
	var wg sync.WaitGroup
	ln := l.n
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if err := ln.Commit(context.Background(), UpsertIKE(ikeN(i*1000+j))); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	c.stop(l)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("committers still blocked 20s after the leader shut down")
	}
	for _, tn := range c.nodes {
		if tn.n == nil {
			continue
		}
		if err := tn.n.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := tn.n.Commit(context.Background(), UpsertIKE(testIKE(2))); !errors.Is(err, ErrShutdown) {
			t.Errorf("commit after shutdown: got %v, want ErrShutdown", err)
		}
		if err := tn.n.Shutdown(); err != nil {
			t.Errorf("second shutdown: %v", err)
		}
		tn.n = nil
	}
}

func TestConcurrentCommitsCoalesce(t *testing.T) {
	c := newCluster(t, three, false, nil)
	l := c.leader()
	before := l.n.raft.LastIndex()
	pe0, pb0 := l.n.Proposed()
	const N = 200
	var wg sync.WaitGroup
	errs := make([]error, N)
	for i := range N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.n.Commit(context.Background(), UpsertIKE(testIKE(byte(i))))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if leadershipErr(err) {
			c.commit(UpsertIKE(testIKE(byte(i))))
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if c.leader() != l {
		t.Skip("leadership changed during the run (CPU starvation); coalescing not measurable")
	}
	entries := l.n.raft.LastIndex() - before
	t.Logf("%d commits in %d raft entries", N, entries)
	if entries >= N/2 {
		t.Errorf("%d commits took %d raft entries: not coalesced", N, entries)
	}
	// Proposed counts every Batch entry the leader appended, with its
	// sealed size: at least the records' own size.
	pe, pb := l.n.Proposed()
	pe, pb = pe-pe0, pb-pb0
	if pe == 0 || pe > entries || pb < N*uint64(len(mustMarshal(t, testIKE(1)))) {
		t.Errorf("Proposed() = %d entries, %d bytes for %d entries of %d records", pe, pb, entries, N)
	}
	for _, tn := range c.nodes {
		waitIKE(t, tn, N)
	}
}

func TestMixedVersionCommands(t *testing.T) {
	c := newCluster(t, three, false, nil)
	l := c.leader()
	ctx := context.Background()
	// A newer node's ignorable command is skipped, with the rest of the group applied.
	if err := l.n.Commit(ctx, Command{Type: 150, Flags: FlagIgnorable, Version: 1, Body: "future"}, UpsertIKE(testIKE(1))); err != nil {
		t.Fatalf("ignorable unknown: %v", err)
	}
	// A non-ignorable type this build (or an older member) cannot apply is
	// refused before it reaches Raft.
	err := l.n.Commit(ctx, UpsertIKE(testIKE(2)), Command{Type: 150, Version: 1, Body: "future"})
	if !errors.Is(err, ErrUnsupportedByCluster) {
		t.Fatalf("unknown via Commit: got %v, want ErrUnsupportedByCluster", err)
	}
	// An entry from a newer leader that this build cannot apply is refused
	// by every FSM, its whole group with it; the other group applies.
	f := l.n.raft.Apply(batchEntry(t, c.sealer,
		[]Command{UpsertIKE(testIKE(2)), {Type: 150, Version: 1, Body: "future"}},
		[]Command{UpsertIKE(testIKE(4))}), 5*time.Second)
	if f.Error() != nil {
		t.Fatal(f.Error())
	}
	br, ok := f.Response().(*BatchResult)
	if !ok || !errors.Is(br.Errs[0], ErrUnknownCommand) || br.Errs[1] != nil {
		t.Fatalf("batch from a newer leader: response %v", f.Response())
	}
	// Single entries behave the same.
	f = l.n.raft.Apply(entry(t, c.sealer, Command{Type: 151, Version: 1, Body: 1}), 5*time.Second)
	if f.Error() != nil {
		t.Fatal(f.Error())
	}
	if r, _ := f.Response().(error); !errors.Is(r, ErrUnknownCommand) {
		t.Errorf("raw unknown entry: response %v", f.Response())
	}
	c.commit(UpsertIKE(testIKE(3)))
	for _, tn := range c.nodes {
		waitIKE(t, tn, 3)
		if hasIKE(tn.db, 2) {
			t.Errorf("%s holds the record of a refused group", tn.id)
		}
	}
}

func TestPartitionedLeaderLosesAndCatchesUp(t *testing.T) {
	c := newCluster(t, three, false, nil)
	c.commit(UpsertIKE(testIKE(1)))
	old := c.leader()
	c.isolate(old)
	// The isolated leader can no longer commit.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := old.n.Commit(ctx, UpsertIKE(testIKE(99)))
	cancel()
	if err == nil {
		t.Fatal("isolated leader committed")
	}
	nl := c.leader(old)
	_ = nl
	c.commit(UpsertIKE(testIKE(2)), UpsertIKE(testIKE(3)))
	waitFor(t, 5*time.Second, "old leader to step down", func() bool { return old.n.raft.State() != raft.Leader })
	// Its leadership events: elected, ready, ..., lost (last).
	var evs []LeadershipEvent
	waitFor(t, 5*time.Second, "the lost-leadership event", func() bool {
		for {
			select {
			case ev := <-old.n.LeadershipChanges():
				evs = append(evs, ev)
				continue
			default:
			}
			return len(evs) > 0 && !evs[len(evs)-1].Leader
		}
	})
	pair := false // an "elected" followed by "ready" of the same term
	for i := 0; i+1 < len(evs); i++ {
		if evs[i].Leader && !evs[i].Ready && evs[i+1].Leader && evs[i+1].Ready && evs[i+1].Term == evs[i].Term {
			pair = true
		}
	}
	if !pair {
		t.Errorf("old leader's events %+v, want elected, ready, ..., lost", evs)
	}
	if !errors.Is(old.n.Commit(context.Background(), UpsertIKE(testIKE(98))), ErrNotLeader) {
		t.Error("stepped-down leader did not answer ErrNotLeader")
	}
	c.connectAll()
	for _, tn := range c.nodes {
		waitFor(t, 10*time.Second, "catch-up on "+tn.id, func() bool {
			return hasIKE(tn.db, 1) && hasIKE(tn.db, 2) && hasIKE(tn.db, 3)
		})
		if hasIKE(tn.db, 99) {
			// The isolated leader's entry may only survive if a quorum had it, which it never did.
			t.Errorf("%s holds an entry only the isolated leader had", tn.id)
		}
	}
}

func TestSnapshotInstallOnLaggingNode(t *testing.T) {
	c := newCluster(t, three, false, func(cfg *Config) {
		cfg.TrailingLogs = 5
		cfg.SnapshotThreshold = 1 << 30 // only explicit snapshots
	})
	l := c.leader()
	var lag *tnode
	for _, tn := range c.nodes {
		if tn != l {
			lag = tn
			break
		}
	}
	c.isolate(lag)
	for i := range 60 {
		c.commit(UpsertIKE(testIKE(byte(i))))
	}
	// Snapshot (and compact) every connected node, so whichever leads must
	// send the lagging node a snapshot.
	for _, tn := range c.nodes {
		if tn != lag {
			if err := tn.n.raft.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.commit(UpsertIKE(testIKE(200)))
	c.connectAll()
	waitIKE(t, lag, 61)
	if lag.n.raft.Stats()["last_snapshot_index"] == "0" {
		t.Error("lagging node caught up without installing a snapshot")
	}
}

func TestRestartFromDisk(t *testing.T) {
	c := newCluster(t, three, true, nil)
	for i := range 10 {
		c.commit(UpsertIKE(testIKE(byte(i))))
	}
	if err := c.leader().n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.commit(UpsertIKE(testIKE(100)), CountersBatch(nil))
	for _, tn := range c.nodes {
		waitIKE(t, tn, 11)
	}
	c.stopAll()
	c.startAll()
	c.commit(UpsertIKE(testIKE(101)))
	for _, tn := range c.nodes {
		waitIKE(t, tn, 12)
	}
}

func TestWitnessHandsOffLeadership(t *testing.T) {
	c := newCluster(t, []Role{RoleGateway, RoleGateway, RoleWitness}, false, nil)
	w := c.nodes[2]
	// Make the witness leader; it then hands leadership to a gateway.
	sawReady := false
	waitFor(t, 20*time.Second, "witness to lead", func() bool {
		if l := c.leader(); l != w && !sawReady {
			if err := l.n.TransferLeadership(w.id); err != nil {
				t.Logf("transfer to witness: %v (retrying)", err)
			}
		}
		for {
			select {
			case ev := <-w.n.LeadershipChanges():
				if ev.Leader && ev.Ready {
					sawReady = true
				}
				continue
			default:
			}
			return sawReady
		}
	})
	gl := c.leader(w)
	if gl.n.Role() != RoleGateway {
		t.Fatalf("leader %s is a %s", gl.id, gl.n.Role())
	}
	waitFor(t, 5*time.Second, "witness to step down", func() bool { return w.n.raft.State() != raft.Leader })
	c.commit(UpsertIKE(testIKE(1)))
	if err := c.leader().n.TransferLeadership("nobody"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("transfer to unknown node: %v", err)
	}
}

func TestTwoNodeClusterRefused(t *testing.T) {
	s := testSealer(t)
	ls := raft.NewInmemStore()
	_, tr := raft.NewInmemTransport("")
	deps := Deps{DB: testDB(t, s), Sealer: s, Logs: ls, Stable: ls, Snapshots: raft.NewInmemSnapshotStore(), Transport: tr}
	_, err := New(Config{NodeID: "a", Peers: []Peer{{"a", "a", RoleGateway}, {"b", "b", RoleGateway}}, Log: quietLog()}, deps)
	if !errors.Is(err, ErrTwoNodes) {
		t.Errorf("two gateways: got %v, want ErrTwoNodes", err)
	}
	_, err = New(Config{NodeID: "a", Log: quietLog(), Gossip: &GossipConfig{BindAddr: "127.0.0.1", SecretKey: make([]byte, 32), BootstrapExpect: 2}}, deps)
	if !errors.Is(err, ErrTwoNodes) {
		t.Errorf("bootstrap_expect 2: got %v, want ErrTwoNodes", err)
	}
	_, err = New(Config{NodeID: "a", Role: "router", Log: quietLog()}, deps)
	if err == nil {
		t.Error("unknown role accepted")
	}
	_, err = New(Config{NodeID: "a", Log: quietLog()}, Deps{})
	if err == nil {
		t.Error("missing deps accepted")
	}
}
