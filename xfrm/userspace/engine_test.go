package userspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"ikegw/ike/sa"
	"ikegw/xfrm"
	"ikegw/xfrm/esp"
)

var (
	outerA = netip.MustParseAddr("192.0.2.1")
	outerB = netip.MustParseAddr("192.0.2.2")
	netA   = netip.MustParsePrefix("10.1.0.0/24")
	netB   = netip.MustParsePrefix("10.2.0.0/24")
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func key(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)*7
	}
	return b
}

// pairFor returns the two mirrored ChildSA records of one Quick Mode: A's
// (A->B outbound) and B's.
func pairFor(gcm bool) (a, b *sa.ChildSA) {
	ab := sa.SADir{SPI: 0xc0000ab1, Src: outerA, Dst: outerB}
	ba := sa.SADir{SPI: 0xc0000ba2, Src: outerB, Dst: outerA}
	if gcm {
		ab.Encr, ab.EncrKey, ab.TruncBits = sa.EncrAESGCM, key(36, 1), 128
		ba.Encr, ba.EncrKey, ba.TruncBits = sa.EncrAESGCM, key(36, 2), 128
	} else {
		ab.Encr, ab.EncrKey, ab.Integ, ab.IntegKey, ab.TruncBits = sa.EncrAESCBC, key(32, 3), sa.IntegSHA256, key(32, 4), 128
		ba.Encr, ba.EncrKey, ba.Integ, ba.IntegKey, ba.TruncBits = sa.EncrAESCBC, key(16, 5), sa.IntegSHA1, key(20, 6), 96
	}
	base := sa.ChildSA{Version: sa.RecordVersion, Connection: "lab", Child: "net", State: sa.ChildInstalled,
		Reqid: 1, Mode: sa.Tunnel, Protocol: xfrm.ProtoESP, EncapLocalPort: 4500, EncapRemotePort: 4500}
	a, b = new(sa.ChildSA), new(sa.ChildSA)
	*a, *b = base, base
	a.Out, a.In = ab, ba
	a.LocalTS, a.RemoteTS = []sa.TrafficSelector{{Prefix: netA}}, []sa.TrafficSelector{{Prefix: netB}}
	b.Out, b.In = ba, ab
	b.LocalTS, b.RemoteTS = []sa.TrafficSelector{{Prefix: netB}}, []sa.TrafficSelector{{Prefix: netA}}
	return a, b
}

type side struct {
	e   *Engine
	dev *chanDevice
	w   *wire
}

func newSide(t *testing.T, name string, from netip.Addr, mod func(*Config)) *side {
	t.Helper()
	s := &side{dev: newChanDevice(name), w: &wire{from: netip.AddrPortFrom(from, 4500)}}
	cfg := Config{Sender: s.w, Device: s.dev, Logger: quiet()}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.e = e
	t.Cleanup(func() { e.Close() })
	return s
}

// connected builds two engines wired to each other with the pair installed.
func connected(t *testing.T, gcm bool) (a, b *side, ca, cb *sa.ChildSA) {
	t.Helper()
	ca, cb = pairFor(gcm)
	a, b = newSide(t, "tunA", outerA, nil), newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	b.w.setPeer(a.e)
	ctx := context.Background()
	if err := a.e.InstallChild(ctx, ca); err != nil {
		t.Fatal(err)
	}
	if err := b.e.InstallChild(ctx, cb); err != nil {
		t.Fatal(err)
	}
	return a, b, ca, cb
}

func ping(t *testing.T, from, to *side, src, dst string, n int, id0 uint16) {
	t.Helper()
	for i := 0; i < n; i++ {
		p := ipv4(src, dst, 1, 8+(i*37)%1300, id0+uint16(i))
		from.dev.in <- p
		if got := recv(t, to.dev); !bytes.Equal(got, p) {
			t.Fatalf("packet %d altered in transit", i)
		}
	}
}

func TestRoundTripAndCounters(t *testing.T) {
	for _, gcm := range []bool{false, true} {
		name := map[bool]string{false: "cbc-sha2", true: "gcm"}[gcm]
		t.Run(name, func(t *testing.T) {
			a, b, ca, cb := connected(t, gcm)
			ping(t, a, b, "10.1.0.1", "10.2.0.1", 150, 0)
			ping(t, b, a, "10.2.0.7", "10.1.0.9", 120, 1000)
			ctx := context.Background()
			ma, _ := a.e.Counters(ctx)
			mb, _ := b.e.Counters(ctx)
			ka, kb := ma[ca.ID()], mb[cb.ID()]
			if ka.OutSeq != 150 || kb.InSeq != 150 || kb.OutSeq != 120 || ka.InSeq != 120 {
				t.Fatalf("sequence numbers: A out %d in %d, B out %d in %d", ka.OutSeq, ka.InSeq, kb.OutSeq, kb.InSeq)
			}
			if ka.OutPackets != kb.InPackets || ka.OutBytes != kb.InBytes || kb.OutBytes != ka.InBytes || kb.OutPackets != ka.InPackets {
				t.Fatalf("counters disagree: A %+v B %+v", ka, kb)
			}
			if kb.ReplayBitmap[0]&1 == 0 || len(kb.ReplayBitmap) == 0 {
				t.Fatal("replay bitmap does not show the last packet")
			}
			sa, _ := a.e.Stats(ca.ID())
			if sa.ReplayDrops+sa.AuthFailures+sa.PolicyDrops+sa.SendErrors != 0 {
				t.Fatalf("drops on A: %+v", sa)
			}
			if all := a.e.AllStats(); len(all) != 1 || all[ca.ID()] != sa {
				t.Fatalf("AllStats %+v", all)
			}
		})
	}
}

func TestReplayTamperAndPolicy(t *testing.T) {
	a, b, _, cb := connected(t, false)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 3, 0)
	pkt := a.w.last()
	b.e.HandleInbound(append([]byte(nil), pkt...), netip.AddrPort{})
	noRecv(t, b)
	st, _ := b.e.Stats(cb.ID())
	if st.ReplayDrops != 1 {
		t.Fatalf("replayed packet: %+v", st)
	}
	// A tampered packet with a fresh sequence number fails the ICV.
	bad := append([]byte(nil), pkt...)
	bad[7]++ // seq 4, not yet seen
	bad[len(bad)-1] ^= 0x40
	b.e.HandleInbound(bad, netip.AddrPort{})
	noRecv(t, b)
	if st, _ = b.e.Stats(cb.ID()); st.AuthFailures != 1 {
		t.Fatalf("tampered packet: %+v", st)
	}
	// ... and does not consume its sequence number.
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 1, 50)

	// An authentic packet whose inner source is outside B's remote
	// selector (10.1.0.0/24) is dropped by the inbound policy check.
	ca, _ := pairFor(false)
	s, err := esp.New(&ca.Out)
	if err != nil {
		t.Fatal(err)
	}
	inner := ipv4("10.9.9.9", "10.2.0.1", 1, 40, 1)
	buf := make([]byte, esp.MaxHeadroom+len(inner)+esp.MaxTailroom)
	copy(buf[s.PayloadOffset():], inner)
	sealed, _ := s.Seal(buf[:0], len(inner), 1000, esp.NextIPv4)
	b.e.HandleInbound(sealed, netip.AddrPort{})
	noRecv(t, b)
	if st, _ = b.e.Stats(cb.ID()); st.PolicyDrops != 1 {
		t.Fatalf("inner packet outside the selectors: %+v", st)
	}
	// Unknown SPI and garbage.
	b.e.HandleInbound([]byte{0, 0, 1, 0, 0, 0, 0, 1, 9, 9}, netip.AddrPort{})
	b.e.HandleInbound([]byte{1, 2}, netip.AddrPort{})
	if es := b.e.EngineStats(); es.NoSA != 1 || es.Malformed != 1 {
		t.Fatalf("engine stats %+v", es)
	}
	// A packet on the TUN that no policy covers is dropped, not sent.
	before := len(a.w.sent)
	a.dev.in <- ipv4("10.1.0.1", "10.3.0.1", 1, 20, 1)
	waitFor(t, "no-policy drop", func() bool { return a.e.EngineStats().NoPolicy == 1 })
	a.w.mu.Lock()
	after := len(a.w.sent)
	a.w.mu.Unlock()
	if after != before {
		t.Fatal("packet without policy was sent")
	}
}

func TestPortSelectors(t *testing.T) {
	ca, cb := pairFor(true)
	ca.RemoteTS = []sa.TrafficSelector{{Prefix: netB, Protocol: 17, Port: 53}}
	cb.LocalTS = ca.RemoteTS
	a, b := newSide(t, "tunA", outerA, nil), newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	ctx := context.Background()
	if err := a.e.InstallChild(ctx, ca); err != nil {
		t.Fatal(err)
	}
	if err := b.e.InstallChild(ctx, cb); err != nil {
		t.Fatal(err)
	}
	dns := ipv4("10.1.0.1", "10.2.0.1", 17, 30, 1)
	dns[22], dns[23] = 0, 53
	a.dev.in <- dns
	if got := recv(t, b.dev); !bytes.Equal(got, dns) {
		t.Fatal("UDP/53 altered")
	}
	other := ipv4("10.1.0.1", "10.2.0.1", 17, 30, 2)
	other[22], other[23] = 0, 54
	a.dev.in <- other
	waitFor(t, "no-policy drop", func() bool { return a.e.EngineStats().NoPolicy == 1 })
}

func TestTakeoverInMiniature(t *testing.T) {
	a, b, ca, cb := connected(t, true)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 100, 0)
	ping(t, b, a, "10.2.0.1", "10.1.0.1", 100, 0)
	old := a.w.last() // a packet B accepted: must stay refused after takeover

	// The last sync before B dies.
	synced, err := b.e.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Traffic after the sync that the standby never hears about.
	ping(t, b, a, "10.2.0.1", "10.1.0.1", 30, 500)
	b.e.Close()

	const margin = 1000
	nb := *cb
	nb.Counters = synced[cb.ID()]
	nb.Counters.OutSeq += margin
	b2 := newSide(t, "tunB2", outerB, nil)
	b2.w.setPeer(a.e)
	a.w.setPeer(b2.e)
	if err := b2.e.InstallChild(context.Background(), &nb); err != nil {
		t.Fatal(err)
	}
	b2.e.HandleInbound(old, netip.AddrPort{})
	noRecv(t, b2)
	if st, _ := b2.e.Stats(cb.ID()); st.ReplayDrops != 1 {
		t.Fatalf("restored window accepted a replay: %+v", st)
	}
	ping(t, a, b2, "10.1.0.1", "10.2.0.1", 100, 2000)
	ping(t, b2, a, "10.2.0.1", "10.1.0.1", 100, 2000)
	st, _ := a.e.Stats(ca.ID())
	if st.ReplayDrops != 0 || st.AuthFailures != 0 {
		t.Fatalf("peer dropped packets after takeover: %+v", st)
	}
	if st.InSeq != 100+margin+100 {
		t.Fatalf("peer's highest inbound seq %d, want %d", st.InSeq, 100+margin+100)
	}
	if st2, _ := b2.e.Stats(cb.ID()); st2.InSeq != 200 || st2.OutSeq != 1200 {
		t.Fatalf("new B: %+v", st2)
	}
}

func TestInstallContract(t *testing.T) {
	ctx := context.Background()
	s := newSide(t, "tunC", outerA, nil)
	e := s.e
	ca, _ := pairFor(false)
	if e.Kind() != xfrm.KindUserspace {
		t.Fatal(e.Kind())
	}
	if err := e.InstallChild(ctx, ca); err != nil {
		t.Fatal(err)
	}
	// Identical again: fine, and OutSeq only goes up.
	again := *ca
	again.Counters.OutSeq = 500
	if err := e.InstallChild(ctx, &again); err != nil {
		t.Fatal(err)
	}
	again.Counters.OutSeq = 10
	if err := e.InstallChild(ctx, &again); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.Stats(ca.ID()); st.OutSeq != 500 {
		t.Fatalf("OutSeq %d after re-installs with 500 then 10", st.OutSeq)
	}
	conflict := *ca
	conflict.Out.EncrKey = key(32, 99)
	if err := e.InstallChild(ctx, &conflict); !errors.Is(err, xfrm.ErrConflict) {
		t.Fatalf("different pair under the same SPI: %v", err)
	}
	dupOut := *ca
	dupOut.In.SPI = 0xc0000fff
	if err := e.InstallChild(ctx, &dupOut); !errors.Is(err, xfrm.ErrConflict) {
		t.Fatalf("outbound SPI reused: %v", err)
	}
	tr := *ca
	tr.In.SPI, tr.Out.SPI, tr.Mode = 0xd0000001, 0xd0000002, sa.Transport
	tr.LocalTS = []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("192.0.2.1/32")}}
	tr.RemoteTS = []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("192.0.2.2/32")}}
	if err := e.InstallChild(ctx, &tr); !errors.Is(err, xfrm.ErrUnsupported) {
		t.Fatalf("transport mode: %v", err)
	}
	plain := *ca
	plain.In.SPI, plain.Out.SPI, plain.EncapLocalPort, plain.EncapRemotePort = 0xd0000003, 0xd0000004, 0, 0
	if err := e.InstallChild(ctx, &plain); !errors.Is(err, xfrm.ErrUnsupported) {
		t.Fatalf("no UDP encapsulation: %v", err)
	}
	des := *ca
	des.In.SPI, des.Out.SPI = 0xd0000005, 0xd0000006
	des.Out.Encr, des.Out.EncrKey = sa.Encr3DES, key(24, 1)
	if err := e.InstallChild(ctx, &des); !errors.Is(err, xfrm.ErrUnsupported) {
		t.Fatalf("3DES: %v", err)
	}
	invalid := *ca
	invalid.In.SPI = 5
	if err := e.InstallChild(ctx, &invalid); !errors.Is(err, xfrm.ErrInvalidChild) {
		t.Fatalf("reserved SPI: %v", err)
	}
	second := *ca
	second.In.SPI, second.Out.SPI = 0x100, 0x101
	if err := e.InstallChild(ctx, &second); err != nil {
		t.Fatal(err)
	}
	got, _ := e.Installed(ctx)
	if len(got) != 2 || got[0] != 0x100 || got[1] != ca.ID() {
		t.Fatalf("Installed %x", got)
	}
	if err := e.DeleteChild(ctx, &second); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteChild(ctx, &second); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ = e.Installed(ctx); len(got) != 0 {
		t.Fatalf("after Flush: %x", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.InstallChild(cctx, ca); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, ok := <-e.Expiries(); ok {
		t.Fatal("Expiries not closed")
	}
	for _, err := range []error{e.InstallChild(ctx, ca), e.DeleteChild(ctx, ca), e.Flush(ctx),
		func() error { _, err := e.Counters(ctx); return err }(),
		func() error { _, err := e.Installed(ctx); return err }()} {
		if !errors.Is(err, xfrm.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	}
}

// fakeClock is a settable clock for lifetimes.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func nextExpiry(t *testing.T, e *Engine) xfrm.Expiry {
	t.Helper()
	select {
	case ev := <-e.Expiries():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no expiry event")
		return xfrm.Expiry{}
	}
}

func TestTimeLifetimes(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	ca, cb := pairFor(true)
	ca.Established = clk.now().UnixNano()
	ca.Lifetime = sa.Lifetime{SoftSeconds: 60, HardSeconds: 100}
	a := newSide(t, "tunA", outerA, func(c *Config) { c.Now, c.LifetimeTick = clk.now, time.Millisecond })
	b := newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	ctx := context.Background()
	if err := a.e.InstallChild(ctx, ca); err != nil {
		t.Fatal(err)
	}
	if err := b.e.InstallChild(ctx, cb); err != nil {
		t.Fatal(err)
	}
	clk.add(61 * time.Second)
	if ev := nextExpiry(t, a.e); ev != (xfrm.Expiry{SPI: ca.ID()}) {
		t.Fatalf("soft: %v", ev)
	}
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 1, 0) // soft: still carries traffic
	clk.add(40 * time.Second)
	if ev := nextExpiry(t, a.e); ev != (xfrm.Expiry{SPI: ca.ID(), Hard: true}) {
		t.Fatalf("hard: %v", ev)
	}
	a.dev.in <- ipv4("10.1.0.1", "10.2.0.1", 1, 20, 9)
	waitFor(t, "drop after hard expiry", func() bool { return a.e.EngineStats().NoPolicy == 1 })
	if st, _ := a.e.Stats(ca.ID()); !st.Expired {
		t.Fatalf("stats after hard expiry: %+v", st)
	}
	if got, _ := a.e.Installed(ctx); len(got) != 1 {
		t.Fatal("hard-expired pair must stay listed until deleted")
	}
}

func TestByteLifetimes(t *testing.T) {
	ca, cb := pairFor(false)
	ca.Lifetime = sa.Lifetime{SoftBytes: 1000, HardBytes: 3000}
	ca.Counters.OutBytes = 500 // carried before this install: counts
	a, b := newSide(t, "tunA", outerA, nil), newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	ctx := context.Background()
	a.e.InstallChild(ctx, ca)
	b.e.InstallChild(ctx, cb)
	a.dev.in <- ipv4("10.1.0.1", "10.2.0.1", 1, 580, 1) // 600 bytes: 1100 total
	recv(t, b.dev)
	if ev := nextExpiry(t, a.e); ev != (xfrm.Expiry{SPI: ca.ID(), Bytes: true}) {
		t.Fatalf("soft: %v", ev)
	}
	for i := 0; i < 4; i++ {
		a.dev.in <- ipv4("10.1.0.1", "10.2.0.1", 1, 580, uint16(2+i))
		recv(t, b.dev)
	}
	if ev := nextExpiry(t, a.e); ev != (xfrm.Expiry{SPI: ca.ID(), Hard: true, Bytes: true}) {
		t.Fatalf("hard: %v", ev)
	}
	if st, _ := a.e.Stats(ca.ID()); st.OutBytes != 500+5*600 || !st.Expired {
		t.Fatalf("stats %+v", st)
	}
}

func TestSequenceExhaustion(t *testing.T) {
	ca, cb := pairFor(true)
	ca.Counters.OutSeq = math.MaxUint32 - 1
	a, b := newSide(t, "tunA", outerA, nil), newSide(t, "tunB", outerB, nil)
	a.w.setPeer(b.e)
	ctx := context.Background()
	a.e.InstallChild(ctx, ca)
	b.e.InstallChild(ctx, cb)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 1, 0) // seq 2^32-1, the last
	a.dev.in <- ipv4("10.1.0.1", "10.2.0.1", 1, 20, 2)
	if ev := nextExpiry(t, a.e); ev != (xfrm.Expiry{SPI: ca.ID(), Hard: true}) {
		t.Fatalf("exhaustion: %v", ev)
	}
	m, _ := a.e.Counters(ctx)
	if m[ca.ID()].OutSeq != math.MaxUint32 {
		t.Fatalf("OutSeq %d", m[ca.ID()].OutSeq)
	}
	full := *ca
	full.In.SPI, full.Out.SPI, full.Counters.OutSeq = 0x300, 0x301, math.MaxUint32
	if err := a.e.InstallChild(ctx, &full); err == nil {
		t.Fatal("installed a pair with no sequence numbers left")
	}
}

func TestConcurrentTraffic(t *testing.T) {
	a, b, _, cb := connected(t, true)
	pkt := ipv4("10.1.0.1", "10.2.0.1", 1, 100, 1)
	// Many senders into A's device, and readers of Counters at the same
	// time: for the race detector.
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				a.dev.in <- pkt
				b.e.Counters(context.Background())
			}
		}()
	}
	for i := 0; i < 400; i++ {
		recv(t, b.dev)
	}
	wg.Wait()
	if st, _ := b.e.Stats(cb.ID()); st.InPackets != 400 || st.InSeq != 400 {
		t.Fatalf("%+v", st)
	}
}

func TestParseFlowAndIsESP(t *testing.T) {
	p := ipv4("10.1.0.1", "10.2.0.1", 6, 20, 1)
	p[20], p[21], p[22], p[23] = 0x12, 0x34, 0, 80
	f, ok := parseFlow(p)
	if !ok || f.version != 4 || f.proto != 6 || f.sport != 0x1234 || f.dport != 80 || f.src.String() != "10.1.0.1" {
		t.Fatalf("%+v", f)
	}
	p[6] = 0x20 // a later fragment: no ports
	p[7] = 0x01
	if f, _ = parseFlow(p); f.hasPorts {
		t.Fatal("ports read from a non-first fragment")
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x60, 0}, {0x15, 0, 0, 0}, ipv4("1.1.1.1", "2.2.2.2", 1, 8, 1)[:20]} {
		if _, ok := parseFlow(bad); ok {
			t.Fatalf("parsed %x", bad)
		}
	}
	v6 := make([]byte, 48)
	v6[0], v6[5], v6[6] = 0x60, 8, 17
	v6[23], v6[39] = 1, 2
	v6[42], v6[43] = 0x01, 0xf4
	if f, ok = parseFlow(v6); !ok || f.version != 6 || f.dport != 500 || !f.dst.Is6() {
		t.Fatalf("v6 %+v", f)
	}
	if IsESP([]byte{0xff}) || IsESP([]byte{0, 0, 0, 0, 1, 2, 3, 4, 5}) || !IsESP([]byte{0, 0, 1, 0, 0, 0, 0, 1}) {
		t.Fatal("IsESP")
	}
}

// discardDevice never yields packets and drops what is written.
type discardDevice struct{ done chan struct{} }

func (d *discardDevice) Read([]byte) (int, error)    { <-d.done; return 0, io.EOF }
func (d *discardDevice) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardDevice) Name() string                { return "discard" }
func (d *discardDevice) Close() error                { close(d.done); return nil }

// directWire hands each sealed packet straight to the peer, as the IKE
// socket's reader would (HandleInbound decrypts in place: the packet is
// the sender's buffer, which the engine reuses only after SendESP returns).
type directWire struct{ peer *Engine }

func (w *directWire) SendESP(b []byte, _ netip.AddrPort) error {
	w.peer.HandleInbound(b, netip.AddrPort{})
	return nil
}

// BenchmarkEnginePath is one 1400-byte inner packet through the whole
// engine: policy lookup, seal and counters on A, then SA lookup, replay
// window, open, inner policy and device write on B.
func BenchmarkEnginePath(b *testing.B) {
	for _, gcm := range []bool{false, true} {
		name := map[bool]string{false: "aes256-cbc-sha256", true: "aes256-gcm16"}[gcm]
		b.Run(name, func(b *testing.B) {
			ca, cb := pairFor(gcm)
			w := &directWire{}
			ea, err := New(Config{Sender: w, Device: &discardDevice{done: make(chan struct{})}, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer ea.Close()
			eb, err := New(Config{Sender: &directWire{peer: ea}, Device: &discardDevice{done: make(chan struct{})}, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer eb.Close()
			w.peer = eb
			ea.InstallChild(context.Background(), ca)
			eb.InstallChild(context.Background(), cb)
			pkt := ipv4("10.1.0.1", "10.2.0.1", 17, 1380, 1)
			buf := make([]byte, esp.MaxHeadroom+1400+esp.MaxTailroom)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			var ob outBatch
			for i := 0; i < b.N; i++ {
				copy(buf[esp.MaxHeadroom:], pkt)
				ob.reset()
				ea.outbound(&ob, buf, len(pkt))
				ea.send(nil, &ob)
			}
			b.StopTimer()
			if st, _ := eb.Stats(cb.ID()); st.InPackets != uint64(b.N) {
				b.Fatalf("%d of %d packets arrived: %+v", st.InPackets, b.N, st)
			}
		})
	}
}

func TestRekeyOutboundUsesNewestPair(t *testing.T) {
	a, b, ca, cb := connected(t, true)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 2, 0)
	// Quick Mode rekey: a new pair with the same selectors.
	na, nb := pairFor(false)
	na.In.SPI, na.Out.SPI = 0xc1000001, 0xc1000002
	nb.In.SPI, nb.Out.SPI = 0xc1000002, 0xc1000001
	ctx := context.Background()
	if err := b.e.InstallChild(ctx, nb); err != nil {
		t.Fatal(err)
	}
	if err := a.e.InstallChild(ctx, na); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 3, 10)
	if st, _ := b.e.Stats(nb.ID()); st.InPackets != 3 {
		t.Fatalf("new pair carried %d packets, want 3", st.InPackets)
	}
	if st, _ := b.e.Stats(cb.ID()); st.InPackets != 2 {
		t.Fatalf("old pair carried %d packets after the rekey", st.InPackets)
	}
	// The old pair still decrypts in flight packets until deleted.
	ping(t, b, a, "10.2.0.1", "10.1.0.1", 1, 20) // B's newest is nb too
	if st, _ := a.e.Stats(na.ID()); st.InPackets != 1 {
		t.Fatalf("%+v", st)
	}
	// Deleting the new pair falls back to the old one.
	a.e.DeleteChild(ctx, na)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 1, 30)
	if st, _ := b.e.Stats(cb.ID()); st.InPackets != 3 {
		t.Fatalf("old pair after deleting the new: %+v", st)
	}
	// A pair installed as already superseded never sends.
	old := *ca
	old.In.SPI, old.Out.SPI, old.State = 0xc2000001, 0xc2000002, sa.ChildRekeyed
	a.e.InstallChild(ctx, &old)
	ping(t, a, b, "10.1.0.1", "10.2.0.1", 1, 40)
	if st, _ := a.e.Stats(old.ID()); st.OutPackets != 0 {
		t.Fatalf("superseded pair sent: %+v", st)
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 5; i++ {
		e, err := New(Config{Sender: &wire{}, Device: newChanDevice("x"), Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		e.Close()
	}
	waitFor(t, "engine goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestIPv6InnerAndOuter(t *testing.T) {
	ca, cb := pairFor(true)
	a6, b6 := netip.MustParseAddr("2001:db8::a"), netip.MustParseAddr("2001:db8::b")
	ca.Out.Src, ca.Out.Dst, ca.In.Src, ca.In.Dst = a6, b6, b6, a6
	cb.Out.Src, cb.Out.Dst, cb.In.Src, cb.In.Dst = b6, a6, a6, b6
	la, lb := netip.MustParsePrefix("2001:db8:1::/48"), netip.MustParsePrefix("2001:db8:2::/48")
	ca.LocalTS, ca.RemoteTS = []sa.TrafficSelector{{Prefix: la}}, []sa.TrafficSelector{{Prefix: lb}}
	cb.LocalTS, cb.RemoteTS = ca.RemoteTS, ca.LocalTS
	a, b := newSide(t, "tunA", a6, nil), newSide(t, "tunB", b6, nil)
	a.w.setPeer(b.e)
	ctx := context.Background()
	if err := a.e.InstallChild(ctx, ca); err != nil {
		t.Fatal(err)
	}
	if err := b.e.InstallChild(ctx, cb); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 40+16)
	p[0], p[5], p[6], p[7] = 0x60, 16, 58, 64 // ICMPv6
	s, d := netip.MustParseAddr("2001:db8:1::1").As16(), netip.MustParseAddr("2001:db8:2::1").As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	a.dev.in <- p
	if got := recv(t, b.dev); !bytes.Equal(got, p) {
		t.Fatal("IPv6 packet altered")
	}
	// The peer really got it on its v6 address.
	if st, _ := b.e.Stats(cb.ID()); st.InPackets != 1 {
		t.Fatalf("%+v", st)
	}
}

// The read loop's flow cache answers repeated flows without a scan, and
// never outlives a change of the installed pairs: a pair installed later
// for the same selectors takes over, a removed one stops matching.
func TestOutboundFlowCache(t *testing.T) {
	a := newSide(t, "tunA", outerA, nil)
	ctx := context.Background()
	var pairs []*sa.ChildSA
	for i := 0; i < 300; i++ {
		c, _ := pairFor(true)
		c.In.SPI, c.Out.SPI = 0xd0000000+uint32(i), 0xe0000000+uint32(i)
		c.RemoteTS = []sa.TrafficSelector{{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 32)}}
		if err := a.e.InstallChild(ctx, c); err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, c)
	}
	f, ok := parseFlow(ipv4("10.1.0.1", "10.2.1.2", 17, 40, 1)) // pair 258
	if !ok {
		t.Fatal("flow not parsed")
	}
	var c outCache
	if ch := a.e.lookupCached(&c, &f); ch == nil || ch.rec.ID() != pairs[258].ID() {
		t.Fatalf("first lookup: %v", ch)
	}
	if len(c.m) != 1 {
		t.Fatalf("cache holds %d flows", len(c.m))
	}
	if ch := a.e.lookupCached(&c, &f); ch == nil || ch.rec.ID() != pairs[258].ID() {
		t.Fatal("cached lookup differs")
	}
	// A newer pair with the same selectors (a rekey) takes the flow.
	n, _ := pairFor(true)
	n.In.SPI, n.Out.SPI = 0xd1000000, 0xe1000000
	n.RemoteTS = pairs[258].RemoteTS
	if err := a.e.InstallChild(ctx, n); err != nil {
		t.Fatal(err)
	}
	if ch := a.e.lookupCached(&c, &f); ch == nil || ch.rec.ID() != n.ID() {
		t.Fatalf("after the rekey the flow leaves on %v, want the new pair", ch)
	}
	// Both gone: no pair (and the miss is cached until the next change).
	for _, x := range []*sa.ChildSA{n, pairs[258]} {
		if err := a.e.DeleteChild(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if ch := a.e.lookupCached(&c, &f); ch != nil {
		t.Fatalf("deleted pair %08x still matches", ch.rec.ID())
	}
	if err := a.e.InstallChild(ctx, pairs[258]); err != nil {
		t.Fatal(err)
	}
	if ch := a.e.lookupCached(&c, &f); ch == nil {
		t.Fatal("a cached miss outlived the install of a matching pair")
	}
}

func BenchmarkOutboundLookup(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("pairs=%d", n), func(b *testing.B) {
			e, err := New(Config{Sender: &directWire{}, Device: &discardDevice{done: make(chan struct{})}, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			for i := 0; i < n; i++ {
				c, _ := pairFor(true)
				c.In.SPI, c.Out.SPI = 0xd0000000+uint32(i), 0xe0000000+uint32(i)
				c.RemoteTS = []sa.TrafficSelector{{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 32)}}
				if err := e.InstallChild(context.Background(), c); err != nil {
					b.Fatal(err)
				}
			}
			f, _ := parseFlow(ipv4("10.1.0.1", "10.2.0.0", 17, 40, 1)) // the first pair: the scan's worst case
			b.Run("scan", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if e.lookupOut(&f) == nil {
						b.Fatal("no pair")
					}
				}
			})
			b.Run("cached", func(b *testing.B) {
				var c outCache
				for i := 0; i < b.N; i++ {
					if e.lookupCached(&c, &f) == nil {
						b.Fatal("no pair")
					}
				}
			})
		})
	}
}
