package kernel

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"ikegw/ike/sa"
	"ikegw/xfrm"
	"ikegw/xfrm/xfrmtest"
)

// TestDataPlaneContract runs xfrm.DataPlane's and xfrm.Stager's contract
// tests, each data plane in a namespace of its own.
func TestDataPlaneContract(t *testing.T) {
	needESP(t)
	newNSDP := func(t *testing.T) xfrm.DataPlane {
		_, path := newNamedNS(t)
		return newDP(t, path)
	}
	xfrmtest.Run(t, newNSDP)
	t.Run("Stager", func(t *testing.T) { xfrmtest.RunStager(t, newNSDP) })
}

// TestStagedTakeover: a new active stages its pair with the counters last
// synced (no policy: nothing is encrypted, the peer answers nothing), then
// activates it with the jumped counters (NEWAE, then the policies); the
// peer accepts every packet, and the outbound sequence continues from the
// jump.
func TestStagedTakeover(t *testing.T) {
	needESP(t)
	tn := newTunnel(t, suites[9], true, 0xb0000030)
	ctx := ctxT(t)
	if got := tn.ping(t, 10); got != 10 {
		t.Fatalf("%d of 10 pings before the takeover", got)
	}
	cnt, err := tn.dA.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	synced := cloneChild(tn.cA)
	synced.Counters = cnt[tn.cA.In.SPI]
	if got := tn.ping(t, 3); got != 3 { // after the sync: the jump covers them
		t.Fatalf("%d of 3 pings after the sync", got)
	}
	if err := tn.dA.DeleteChild(ctx, tn.cA); err != nil {
		t.Fatal(err)
	}
	dA2 := newDP(t, tn.pathA)
	if err := dA2.StageChildren(ctx, []*sa.ChildSA{synced}); err != nil {
		t.Fatal(err)
	}
	if n, err := dA2.ourPolicies(ctx); err != nil || n != 0 {
		t.Fatalf("%d policies installed for a staged pair (%v), want none", n, err)
	}
	if got := tn.pingExpectNone(t, 2); got != 0 {
		t.Fatalf("%d pings answered through a staged pair", got)
	}
	if c, _ := dA2.Counters(ctx); c[tn.cA.In.SPI].OutSeq != synced.Counters.OutSeq {
		t.Fatalf("a staged pair sent: outbound sequence %d, staged at %d", c[tn.cA.In.SPI].OutSeq, synced.Counters.OutSeq)
	}
	jumped := cloneChild(synced)
	jumped.Counters.OutSeq += 20
	if err := dA2.ActivateChildren(ctx, []*sa.ChildSA{jumped}); err != nil {
		t.Fatal(err)
	}
	if n, err := dA2.ourPolicies(ctx); err != nil || n != 3 {
		t.Fatalf("%d policies after activation (%v), want 3", n, err)
	}
	if got := tn.ping(t, 5); got != 5 {
		t.Fatalf("%d of 5 pings after the activation", got)
	}
	wantNoDrops(t, tn.dB, saID{addrB, tn.cB.In.SPI}, "peer B dropped packets of the new active")
	wantOutSeq(t, dA2, tn.cA.In.SPI, jumped.Counters.OutSeq+5, "after activation")
	if err := dA2.DeleteChild(ctx, jumped); err != nil {
		t.Fatal(err)
	}
	if n, _ := dA2.ourPolicies(ctx); n != 0 {
		t.Errorf("%d policies left after deleting the pair", n)
	}
}

// TestAheadOnlyWhenRecordMoved: activation reads and writes the kernel's
// counters only for pairs whose record moved past what they were staged
// with (a takeover that stages the jumped counters and activates the same
// ones sends no NEWAE).
func TestAheadOnlyWhenRecordMoved(t *testing.T) {
	s := sa.Counters{OutSeq: 10, InSeq: 5, InBytes: 100, InPackets: 2, OutBytes: 200, OutPackets: 3}
	if ahead(&s, &s) {
		t.Error("equal counters reported ahead")
	}
	for name, mod := range map[string]func(*sa.Counters){
		"out seq": func(c *sa.Counters) { c.OutSeq++ }, "in seq": func(c *sa.Counters) { c.InSeq++ },
		"in bytes": func(c *sa.Counters) { c.InBytes++ }, "out packets": func(c *sa.Counters) { c.OutPackets++ },
	} {
		c := s
		mod(&c)
		if !ahead(&c, &s) {
			t.Errorf("%s moved: not reported ahead", name)
		}
		if ahead(&s, &c) {
			t.Errorf("%s behind: reported ahead", name)
		}
	}
	ev := aevent{}
	ev.replay.Seq, ev.replay.OSeq, ev.ltime.Bytes, ev.ltime.Packets = 7, 12, 150, 5
	if got, changed := forwardIn(ev, s); changed || got.replay.Seq != 7 {
		t.Errorf("forwardIn behind the live state changed it: %+v", got)
	}
	if got, changed := forwardOut(ev, s); !changed || got.replay.OSeq != 12 || got.ltime.Bytes != 200 {
		t.Errorf("forwardOut: %+v changed %v, want OSeq kept at 12 and bytes raised to 200", got, changed)
	}
}

// BenchmarkTakeover compares what a takeover asks of the kernel for n
// pairs (one namespace per mode, the pairs' counters jumped as at a
// takeover):
//
//   - per-pair: InstallChild for each pair (the daemon's takeover before
//     the Stager);
//   - batched: InstallChildren of all of them (pipelined);
//   - activate: the pairs were staged with the last synced counters
//     beforehand (a standby keeping them pre-installed); ActivateChildren
//     with the jumped counters (GETAE and NEWAE of both SAs, then the
//     policies);
//   - activate-same: the pairs were staged with the jumped counters (the
//     takeover staged them while its commit was in flight); ActivateChildren
//     installs only the policies;
//   - stage: StageChildren (what the previous two paid earlier; for a
//     standby keeping pairs installed, the cost of following the store).
//     It reports the kernel slab memory each staged pair holds.
//
// Shapes: "host" (/32 selectors both sides: hashed policies) and "lab"
// (local /32 per pair, one remote /24 for all, as the lab's tunnels: the
// kernel keeps such "inexact" policies on a list).
//
//	scripts/vm/test-kernel.sh -test.run '^$' -test.bench Takeover -test.benchtime 1x
func BenchmarkTakeover(b *testing.B) {
	needESP(b)
	for _, shape := range []struct {
		name string
		n    int
		lab  bool
	}{
		{"host", 1000, false}, {"lab", 1000, true}, {"host", 10000, false},
	} {
		local := netip.MustParsePrefix("10.1.0.1/32")
		cs := manyPairs(shape.n, 0x50000000, local)
		for i, c := range cs {
			if shape.lab {
				l := netip.AddrFrom4([4]byte{10, 64 + byte(i>>16), byte(i >> 8), byte(i)})
				c.LocalTS = []sa.TrafficSelector{{Prefix: netip.PrefixFrom(l, 32)}}
				c.RemoteTS = []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.99.0.0/24")}}
			}
			c.Counters = sa.Counters{OutSeq: 1000, InSeq: 900, ReplayBitmap: []uint64{^uint64(0)}}
		}
		jumped := make([]*sa.ChildSA, len(cs))
		for i, c := range cs {
			j := cloneChild(c)
			j.Counters.OutSeq += 11_000_000
			jumped[i] = j
		}
		for _, mode := range []string{"per-pair", "batched", "activate", "activate-same", "stage"} {
			b.Run(fmt.Sprintf("%s-%d/%s", shape.name, shape.n, mode), func(b *testing.B) {
				benchTakeover(b, mode, cs, jumped)
			})
		}
	}
}

func benchTakeover(b *testing.B, mode string, cs, jumped []*sa.ChildSA) {
	_, path := newNamedNS(b)
	d, err := New(context.Background(), Config{NetNS: path})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	var slab int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := d.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		switch mode {
		case "activate":
			err = d.StageChildren(ctx, cs)
		case "activate-same":
			err = d.StageChildren(ctx, jumped)
		}
		if err != nil {
			b.Fatal(err)
		}
		before := slabKB(b)
		b.StartTimer()
		switch mode {
		case "per-pair":
			for _, c := range jumped {
				if err = d.InstallChild(ctx, c); err != nil {
					break
				}
			}
		case "batched":
			err = d.InstallChildren(ctx, jumped)
		case "activate", "activate-same":
			err = d.ActivateChildren(ctx, jumped)
		case "stage":
			err = d.StageChildren(ctx, cs)
		}
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		slab = slabKB(b) - before
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/takeover")
	if mode == "stage" {
		b.ReportMetric(float64(slab)*1024/float64(len(cs)), "slabB/pair")
	}
	if n, err := d.ourPolicies(ctx); err != nil || (mode == "stage") != (n == 0) {
		b.Fatalf("%s: %d policies (%v)", mode, n, err)
	}
	if err := d.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// slabKB reads the kernel's slab memory (Slab in /proc/meminfo), in KiB.
func slabKB(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Slab:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no Slab line in /proc/meminfo")
	return 0
}
