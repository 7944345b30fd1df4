package userspace

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
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

// TestNetNSStagedRoutes (root): a staged pair's routes are installed at
// staging, kept through activation and removed with the pair, shared
// routes counted across staged and active pairs.
func TestNetNSStagedRoutes(t *testing.T) {
	_, b := newLab(t, false)
	routes := func() string {
		out, err := exec.Command("ip", "-n", b.name, "route", "show", "table", strconv.Itoa(DefaultRouteTable)).CombinedOutput()
		if err != nil {
			t.Fatalf("ip route show: %v\n%s", err, out)
		}
		return string(out)
	}
	e, err := New(Config{Sender: &wire{}, NetNSPath: b.path(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx := context.Background()
	cs := takeoverChildren(3, false)
	shared := takeoverChildren(2, true)
	for _, c := range shared {
		c.In.SPI, c.Out.SPI = c.In.SPI+0x100, c.Out.SPI+0x100
		c.LocalTS[0].Prefix = netip.MustParsePrefix("10.63.0.1/32")
	}
	if err := e.StageChildren(ctx, append(cs[:2:2], shared[0])); err != nil {
		t.Fatal(err)
	}
	if err := e.InstallChild(ctx, shared[1]); err != nil {
		t.Fatal(err)
	}
	got := routes()
	for _, want := range []string{"10.128.0.0 dev", "10.128.0.1 dev", "10.99.0.0/24 dev", "throw " + outerB.String()} {
		if !strings.Contains(got, want) {
			t.Fatalf("after staging: no %q in table %d:\n%s", want, DefaultRouteTable, got)
		}
	}
	if err := e.ActivateChildren(ctx, cs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteChild(ctx, cs[1]); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteChild(ctx, shared[0]); err != nil {
		t.Fatal(err)
	}
	got = routes()
	if strings.Contains(got, "10.128.0.1 ") || !strings.Contains(got, "10.128.0.0 dev") || !strings.Contains(got, "10.99.0.0/24 dev") {
		t.Fatalf("after deleting a staged pair and one of two sharing a route:\n%s", got)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := routes(); strings.TrimSpace(got) != "" {
		t.Fatalf("routes left after Flush:\n%s", got)
	}
}
