package cluster

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
	"ikegw/store"
)

// TestFSMHandover: a Handover is stored as the last one applied (a cancel,
// To empty, replaces it), and one without proposer or ID is refused.
func TestFSMHandover(t *testing.T) {
	s := testSealer(t)
	db := testDB(t, s)
	f := NewFSM(DBBackend(db), s, quietLog())
	if _, ok, err := ReadHandover(db); err != nil || ok {
		t.Fatalf("empty store: ok %v err %v", ok, err)
	}
	want := HandoverBody{ID: 7, From: "gw1", To: "gw2", Term: 4}
	if err := applyErr(f, 1, entry(t, s, Handover(want))); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadHandover(db)
	if err != nil || !ok || got != want {
		t.Fatalf("ReadHandover = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	cancel := HandoverBody{ID: 8, From: "gw1", Term: 4}
	if err := applyErr(f, 2, entry(t, s, Handover(cancel))); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := ReadHandover(db); got != cancel {
		t.Fatalf("after the cancel: %+v", got)
	}
	for i, bad := range []HandoverBody{{ID: 9, To: "gw2", Term: 1}, {From: "gw1", To: "gw2", Term: 1}} {
		if err := applyErr(f, uint64(3+i), entry(t, s, Handover(bad))); !errors.Is(err, ErrMalformedEntry) {
			t.Errorf("%+v: got %v, want ErrMalformedEntry", bad, err)
		}
	}
	if got, _, _ := ReadHandover(db); got != cancel {
		t.Fatalf("a refused handover changed the stored one: %+v", got)
	}
	if TypeHandover.String() != "Handover" || MaxCommandType < TypeHandover {
		t.Fatalf("type %v, max %d", TypeHandover, MaxCommandType)
	}
}

// TestPriorTermsApplied: after a leadership transfer to a follower that had
// applied everything, the new leader reports every entry of earlier terms
// applied (at the latest once its Barrier is done).
func TestPriorTermsApplied(t *testing.T) {
	c := newCluster(t, []Role{RoleGateway, RoleGateway, RoleGateway}, false, nil)
	c.commit(UpsertIKE(testIKE(1)))
	leader := c.leader()
	var to *tnode
	for _, tn := range c.nodes {
		if tn != leader {
			to = tn
			break
		}
	}
	waitFor(t, 10*time.Second, to.id+" applying the leader's log", func() bool {
		return to.n.Raft().AppliedIndex() >= leader.n.Raft().LastIndex()
	})
	if err := leader.n.TransferLeadership(to.id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, to.id+" leading", func() bool { return to.n.Raft().State() == raft.Leader })
	waitFor(t, 10*time.Second, to.id+" with every earlier-term entry applied", to.n.PriorTermsApplied)
	if to.n.Raft().AppliedIndex() < leader.n.Raft().AppliedIndex() {
		t.Fatalf("new leader applied %d, the old one %d", to.n.Raft().AppliedIndex(), leader.n.Raft().AppliedIndex())
	}
}

// TestChangesNothingNew: only non-command entries and Batches of Handover
// commands may stay unapplied on a leader that acts before its Barrier.
func TestChangesNothingNew(t *testing.T) {
	s := testSealer(t)
	f := NewFSM(DBBackend(testDB(t, s)), s, quietLog())
	h := Handover(HandoverBody{ID: 1, From: "gw1", To: "gw2", Term: 3})
	cases := []struct {
		name string
		l    raft.Log
		want bool
	}{
		{"no-op", raft.Log{Type: raft.LogNoop}, true},
		{"barrier", raft.Log{Type: raft.LogBarrier}, true},
		{"handover only", raft.Log{Type: raft.LogCommand, Data: batchEntry(t, s, []Command{h})}, true},
		{"two handover groups", raft.Log{Type: raft.LogCommand, Data: batchEntry(t, s, []Command{h}, []Command{h})}, true},
		{"counters and handover", raft.Log{Type: raft.LogCommand, Data: batchEntry(t, s, []Command{CountersBatch(map[uint32]sa.Counters{1: {OutSeq: 9}}), h})}, false},
		{"an SA", raft.Log{Type: raft.LogCommand, Data: batchEntry(t, s, []Command{UpsertIKE(testIKE(1))})}, false},
		{"plain handover entry", raft.Log{Type: raft.LogCommand, Data: entry(t, s, h)}, false},
		{"garbage", raft.Log{Type: raft.LogCommand, Data: []byte{byte(TypeBatch), 0, 1, 9, 9}}, false},
	}
	for _, c := range cases {
		if got := f.changesNothingNew(&c.l); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// gatedBackend blocks every Update while its gate is closed: an FSM that
// lags behind raft (a node catching up, or starved of CPU).
type gatedBackend struct {
	Backend
	mu   sync.Mutex
	open chan struct{} // closed: Updates run
}

func (g *gatedBackend) Update(fn func(Writer) error) error {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	<-ch
	return g.Backend.Update(fn)
}

func (g *gatedBackend) close() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedBackend) release() {
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

// TestPriorTermsAppliedWaitsForTheFSM: raft counts an entry applied once it
// is queued for the FSM. A follower whose FSM lags (here: blocked) and that
// then becomes leader must not report its earlier-term entries applied
// while its store lacks them: a takeover would read stale sequence numbers
// and the peer would see them replayed (issue 5, found at 1,000 tunnels).
func TestPriorTermsAppliedWaitsForTheFSM(t *testing.T) {
	roles := []Role{RoleGateway, RoleGateway, RoleGateway}
	c := &tcluster{t: t, roles: roles, sealer: testSealer(t)}
	gates := make([]*gatedBackend, len(roles))
	c.backend = func(i int, b Backend) Backend {
		gates[i] = &gatedBackend{Backend: b, open: make(chan struct{})}
		close(gates[i].open)
		return gates[i]
	}
	for i := range roles {
		c.nodes = append(c.nodes, &tnode{id: "n" + strconv.Itoa(i+1), dir: t.TempDir()})
	}
	c.startAll()
	t.Cleanup(c.stopAll)
	c.commit(UpsertIKE(testIKE(1)))
	leader := c.leader()
	var to *tnode
	var gate *gatedBackend
	for i, tn := range c.nodes {
		if tn != leader {
			to, gate = tn, gates[i]
			break
		}
	}
	waitFor(t, 10*time.Second, to.id+" applying the leader's log", func() bool {
		return to.n.FSMAppliedIndex() >= leader.n.Raft().AppliedIndex()
	})
	t.Cleanup(gate.release) // never leave a node blocked
	gate.close()
	c.commit(UpsertIKE(testIKE(2)))
	idx := leader.n.Raft().LastIndex()
	waitFor(t, 10*time.Second, to.id+" queueing the new entry for its FSM", func() bool {
		return to.n.Raft().AppliedIndex() >= idx
	})
	if got := to.n.FSMAppliedIndex(); got >= idx {
		t.Fatalf("FSMAppliedIndex %d with the FSM blocked before index %d", got, idx)
	}
	if err := leader.n.TransferLeadership(to.id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, to.id+" leading", func() bool { return to.n.Raft().State() == raft.Leader })
	if to.n.PriorTermsApplied() {
		t.Fatalf("%s reports every earlier-term entry applied while its FSM has applied %d of %d", to.id, to.n.FSMAppliedIndex(), idx)
	}
	if err := to.db.View(func(tx *store.Tx) error { _, err := tx.IKE(testIKE(2).Cookies); return err }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("with its FSM blocked, %s's store should lack the new IKE SA: %v", to.id, err)
	}
	gate.release()
	waitFor(t, 10*time.Second, to.id+" with every earlier-term entry applied", to.n.PriorTermsApplied)
	if err := to.db.View(func(tx *store.Tx) error { _, err := tx.IKE(testIKE(2).Cookies); return err }); err != nil {
		t.Fatalf("after PriorTermsApplied, %s's store lacks the committed IKE SA: %v", to.id, err)
	}
}
