package userspace

import (
	"context"
	"encoding/binary"
	"testing"

	"ikegw/ike/sa"
)

// TestStagedPairSendsNothing: a staged pair is never chosen for a packet
// read from the device (nothing is sealed, no sequence number used);
// activated with jumped counters, it sends from the jump and the peer
// accepts.
func TestStagedPairSendsNothing(t *testing.T) {
	ca, cb := pairFor(true)
	a, b := newSide(t, "tunA", outerA, nil), newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	b.w.setPeer(a.e)
	ctx := context.Background()
	if err := b.e.InstallChild(ctx, cb); err != nil {
		t.Fatal(err)
	}
	ca.Counters.OutSeq = 40
	if err := a.e.StageChildren(ctx, []*sa.ChildSA{ca}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		a.dev.in <- ipv4("10.1.0.1", "10.2.0.1", 1, 64, uint16(i))
	}
	waitFor(t, "three packets refused by A", func() bool { return a.e.EngineStats().NoPolicy == 3 })
	a.w.mu.Lock()
	sent := len(a.w.sent)
	a.w.mu.Unlock()
	if sent != 0 {
		t.Fatalf("a staged pair sent %d packets", sent)
	}
	if st, _ := a.e.Stats(ca.ID()); st.OutSeq != 40 || st.OutPackets != 0 {
		t.Fatalf("staged pair used sequence numbers: %+v", st)
	}
	jumped := *ca
	jumped.Counters.OutSeq = 1 << 20
	if err := a.e.ActivateChildren(ctx, []*sa.ChildSA{&jumped}); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 2, 100)
	if seq := binary.BigEndian.Uint32(a.w.last()[4:8]); seq != 1<<20+2 {
		t.Fatalf("second packet after activation carries sequence number %d, want %d", seq, 1<<20+2)
	}
	// Inbound works on a staged pair as on an active one (the kernel's
	// inbound SA does too): B's packets reach A.
	ping(t, b, a, "10.2.0.1", "10.1.0.1", 2, 200)
}
