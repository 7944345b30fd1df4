package daemon

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"ikegw/failover/role"
	"ikegw/ike/sa"
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
// drops what the engine reads. After the transfer the pairs are flushed.
func TestHandoverFlushesAfterTheTransfer(t *testing.T) {
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
	mem := &member{cfg: &Config{}, dp: e, log: log, sender: &lateSender{}, sendGate: &f.gate}
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
	cb := memberCallbacks(mem, f)
	cb.OnActivate = func(ctx context.Context) error { mem.install(ctx, live); return nil }
	m, err := role.New(role.Config{Lease: 2 * time.Second, Log: log}, lead, noVIPs{}, cb)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	waitUntil(t, "active", func() bool { return m.State() == role.Active })
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
	if ids, _ := e.Installed(ctx); len(ids) != 0 {
		t.Errorf("%d pairs left after the handover, want them flushed", len(ids))
	}
}
