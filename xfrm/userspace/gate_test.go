package userspace

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// switchGate is a Gate a test opens and closes.
type switchGate struct{ open atomic.Bool }

func (g *switchGate) MaySend() bool { return g.open.Load() }

// TestSendGate: a closed gate drops what the TUN device hands the engine
// before it is sealed (no ESP leaves, no sequence number is used) and
// counts it; open again, traffic flows on with the next sequence number.
func TestSendGate(t *testing.T) {
	ca, cb := pairFor(true)
	g := &switchGate{}
	g.open.Store(true)
	a := newSide(t, "tunA", outerA, func(c *Config) { c.Gate = g })
	b := newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	b.w.setPeer(a.e)
	ctx := context.Background()
	if err := a.e.InstallChild(ctx, ca); err != nil {
		t.Fatal(err)
	}
	if err := b.e.InstallChild(ctx, cb); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 3, 0)

	g.open.Store(false)
	for i := 0; i < 5; i++ {
		a.dev.in <- ipv4("10.1.0.1", "10.2.0.1", 1, 64, uint16(100+i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.e.EngineStats().GateDrops < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("GateDrops %d after 5 packets through a closed gate, want 5", a.e.EngineStats().GateDrops)
		}
		time.Sleep(2 * time.Millisecond)
	}
	a.w.mu.Lock()
	sent := len(a.w.sent)
	a.w.mu.Unlock()
	if sent != 3 {
		t.Fatalf("%d ESP packets sent, want the 3 before the gate closed", sent)
	}
	select {
	case p := <-b.dev.out:
		t.Fatalf("a %d-byte packet crossed a closed gate", len(p))
	default:
	}

	g.open.Store(true)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 2, 200)
	m, _ := a.e.Counters(ctx)
	if got := m[ca.ID()].OutSeq; got != 5 {
		t.Fatalf("outbound sequence number %d after 3+2 packets sent, want 5 (dropped packets use none)", got)
	}
	if got := a.e.EngineStats().GateDrops; got != 5 {
		t.Fatalf("GateDrops %d after reopening, want 5", got)
	}
}
