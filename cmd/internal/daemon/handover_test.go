package daemon

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"ikegw/cluster"
	"ikegw/failover/role"
	"ikegw/ike/sa"
	"ikegw/xfrm"
	"ikegw/xfrm/userspace"
)

// transferLead is a role.Leadership that is leader and ready in term 1
// until StepDown, which runs atTransfer first (what the old active does
// while the target is being elected) and then loses the leadership.
type transferLead struct {
	mu         sync.Mutex
	leader     bool
	events     chan role.Event
	atTransfer func()
}

func (l *transferLead) Subscribe(context.Context) <-chan role.Event { return l.events }

func (l *transferLead) LeaderReady() (bool, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leader, 1
}

func (l *transferLead) VerifyQuorum(ctx context.Context) error { return ctx.Err() }

func (l *transferLead) StepDown() error {
	l.atTransfer()
	l.mu.Lock()
	l.leader = false
	l.mu.Unlock()
	return nil
}

type noVIPs struct{}

func (noVIPs) Claim(context.Context) error   { return nil }
func (noVIPs) Release(context.Context) error { return nil }

// TestHandoverFlushesAfterTheTransfer: in a planned handover with the
// userspace data plane, the member's hooks leave the data plane's pairs in
// place while leadership is transferred (their flush, 34-42 ms at 1,000
// tunnels, used to lie between the VIP release and the target's claim) and
// yet send nothing from the release on: the lease ended, so the send gate
// drops what the engine reads. The pairs are flushed once the store
// records another node as active in a later term (the target claimed),
// and at once when this node installs pairs again before that.
func TestHandoverFlushesAfterTheTransfer(t *testing.T) {
	n := oneNodeCluster(t)
	dev := &chanTUN{in: make(chan []byte, 8), done: make(chan struct{})}
	out := &sentESP{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &fence{}
	e, err := userspace.New(userspace.Config{Sender: out, Device: dev, Logger: log, Gate: &f.gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx := context.Background()
	mem := &member{cfg: &Config{}, node: n, dp: e, log: log, sender: &lateSender{}, sendGate: &f.gate}
	mem.cfg.Node.Name = "n1"
	mem.flushWait = time.Hour // only the target's claim flushes
	life, endLife := context.WithCancel(ctx)
	t.Cleanup(endLife)
	mem.life = life
	live := []*sa.ChildSA{stageTestChild(100)}

	var atTransfer struct {
		pairs     int
		sent      int
		gateDrops uint64
	}
	lead := &transferLead{leader: true, events: make(chan role.Event, 4)}
	lead.atTransfer = func() {
		ids, _ := e.Installed(ctx)
		atTransfer.pairs = len(ids)
		drops := e.EngineStats().GateDrops
		dev.in <- icmpPacket(2)
		// On the machine's goroutine: no t.Fatal here.
		for deadline := time.Now().Add(10 * time.Second); e.EngineStats().GateDrops == drops && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		atTransfer.sent, atTransfer.gateDrops = len(out.sent()), e.EngineStats().GateDrops-drops
	}
	m := runActiveRole(t, mem, f, lead, live, log)
	dev.in <- icmpPacket(1)
	waitUntil(t, "a packet sent while active", func() bool { return len(out.sent()) == 1 })
	if err := m.Handover(ctx); err != nil {
		t.Fatal(err)
	}
	if atTransfer.pairs != len(live) {
		t.Errorf("%d pairs installed during the transfer, want %d: the flush ran before it", atTransfer.pairs, len(live))
	}
	if atTransfer.sent != 1 || atTransfer.gateDrops != 1 {
		t.Errorf("during the transfer: %d packets sent in all (want the 1 before), %d dropped by the gate (want 1)", atTransfer.sent, atTransfer.gateDrops)
	}
	// Not before the target claimed.
	time.Sleep(50 * time.Millisecond)
	if ids, _ := e.Installed(ctx); len(ids) != len(live) {
		t.Errorf("%d pairs installed before the target claimed, want %d", len(ids), len(live))
	}
	term := n.Raft().CurrentTerm()
	if err := n.Commit(ctx, cluster.SetActive("n1", term)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if ids, _ := e.Installed(ctx); len(ids) != len(live) {
		t.Errorf("%d pairs installed after this node was recorded active again, want %d", len(ids), len(live))
	}
	if err := n.Commit(ctx, cluster.SetActive("n2", term+1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the flush after the target's claim", func() bool { ids, _ := e.Installed(ctx); return len(ids) == 0 })

	// A flush still pending when this node installs pairs again (an
	// activation, a staging) runs first.
	mem.mu.Lock()
	mem.install(ctx, live)
	mem.deferFlush(term + 1)
	mem.settleFlushLocked()
	mem.mu.Unlock()
	if ids, _ := e.Installed(ctx); len(ids) != 0 {
		t.Errorf("%d pairs left after settling the pending flush, want them flushed", len(ids))
	}
}

// TestStageGraceFor: the fixed grace, unless this node's own last staging
// (times one and a half) is longer, never beyond stageGraceMax.
func TestStageGraceFor(t *testing.T) {
	for _, c := range []struct {
		pairs  int
		staged time.Duration
		want   time.Duration
	}{
		{1000, 0, 110 * time.Millisecond},                      // no staging measured yet
		{1000, 50 * time.Millisecond, 110 * time.Millisecond},  // faster than the estimate
		{1000, 166 * time.Millisecond, 249 * time.Millisecond}, // the lab's slow staging at load 4-5
		{1000, 2 * time.Second, stageGraceMax},                 // bounded
		{10000, 2 * time.Second, 560 * time.Millisecond},       // the fixed estimate may exceed the bound
		{0, 0, stageGrace},
	} {
		if got := stageGraceFor(c.pairs, c.staged); got != c.want {
			t.Errorf("stageGraceFor(%d, %v) = %v, want %v", c.pairs, c.staged, got, c.want)
		}
	}
}

// kernelKind is a data plane that says it is the kernel's: its SAs would
// encrypt without the send gate.
type kernelKind struct{ *userspace.Engine }

func (kernelKind) Kind() string { return xfrm.KindKernel }

// TestHandoverKernelFlushesBeforeTheTransfer: the kernel data plane's SAs
// encrypt whatever is routed to them, with no send gate, so its pairs are
// still flushed before leadership is transferred.
func TestHandoverKernelFlushesBeforeTheTransfer(t *testing.T) {
	dev := &chanTUN{in: make(chan []byte, 8), done: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &fence{}
	e, err := userspace.New(userspace.Config{Sender: &sentESP{}, Device: dev, Logger: log, Gate: &f.gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx := context.Background()
	mem := &member{cfg: &Config{}, dp: kernelKind{e}, log: log, sender: &lateSender{}, sendGate: &f.gate}
	live := []*sa.ChildSA{stageTestChild(100)}
	pairsAtTransfer := -1
	lead := &transferLead{leader: true, events: make(chan role.Event, 4)}
	lead.atTransfer = func() { ids, _ := e.Installed(ctx); pairsAtTransfer = len(ids) }
	m := runActiveRole(t, mem, f, lead, live, log)
	if ids, _ := e.Installed(ctx); len(ids) != len(live) {
		t.Fatalf("%d pairs installed while active, want %d", len(ids), len(live))
	}
	if err := m.Handover(ctx); err != nil {
		t.Fatal(err)
	}
	if pairsAtTransfer != 0 {
		t.Errorf("%d pairs installed during the transfer, want the kernel's flushed before it", pairsAtTransfer)
	}
}

// runActiveRole runs a role machine with mem's callbacks (its activation
// installs live) under lead until the test ends, and returns it active.
func runActiveRole(t *testing.T, mem *member, f *fence, lead *transferLead, live []*sa.ChildSA, log *slog.Logger) *role.Machine {
	t.Helper()
	cb := memberCallbacks(mem, f)
	cb.OnActivate = func(ctx context.Context) error { mem.install(ctx, live); return nil }
	m, err := role.New(role.Config{Lease: 2 * time.Second, Log: log}, lead, noVIPs{}, cb)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, "active", func() bool { return m.State() == role.Active })
	return m
}
