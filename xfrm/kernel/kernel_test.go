package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

var (
	addrA = netip.MustParseAddr("192.0.2.1")
	addrB = netip.MustParseAddr("192.0.2.2")
	tsA   = netip.MustParsePrefix("10.1.0.0/24")
	tsB   = netip.MustParsePrefix("10.2.0.0/24")
)

func TestProbe(t *testing.T) {
	needRoot(t)
	err := Probe(context.Background())
	switch {
	case err == nil:
		t.Log("kernel holds ESP states")
	case inVM:
		t.Fatalf("in the VM the kernel must hold ESP states: %v", err)
	default:
		var ke *KernelError
		if !errors.As(err, &ke) {
			t.Fatalf("probe failed without a kernel answer: %v", err)
		}
		t.Skipf("host kernel has no ESP, as expected on this machine: %v", err)
	}
}

func TestAlgorithmsRoundTrip(t *testing.T) {
	needESP(t)
	_, path := newNamedNS(t)
	d := newDP(t, path)
	ctx := ctxT(t)
	for i, s := range suites {
		t.Run(s.name, func(t *testing.T) {
			spiA := 0xc0000100 + uint32(i)*2
			c, _ := mirrored(s, spiA, spiA+1, addrA, addrB, tsA, tsB, uint32(i+1))
			c.Counters = sa.Counters{OutSeq: 1000, InSeq: 500, ReplayBitmap: []uint64{0b1011}, InBytes: 7000, InPackets: 70, OutBytes: 9000, OutPackets: 90}
			c.Lifetime = sa.Lifetime{SoftBytes: 1 << 30, HardBytes: 1 << 31, SoftSeconds: 3000, HardSeconds: 3600}
			encap := i%2 == 1
			if encap {
				c.EncapLocalPort, c.EncapRemotePort = 4500, 4501
			}
			if err := d.InstallChild(ctx, c); err != nil {
				t.Fatal(err)
			}
			in, err := d.getSA(ctx, saID{addrA, spiA})
			if err != nil {
				t.Fatal(err)
			}
			out, err := d.getSA(ctx, saID{addrB, spiA + 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range []struct {
				name string
				st   *stateInfo
				dir  *sa.SADir
			}{{"in", in, &c.In}, {"out", out, &c.Out}} {
				st := x.st
				if st.encr != x.dir.Encr || string(st.key) != string(x.dir.EncrKey) || st.integ != x.dir.Integ || st.trunc != uint32(s.bits) {
					t.Errorf("%s SA: algorithms %q/%q trunc %d (key equal %v), want %q/%q trunc %d",
						x.name, st.encr, st.integ, st.trunc, string(st.key) == string(x.dir.EncrKey), x.dir.Encr, x.dir.Integ, s.bits)
				}
				if st.reqid != DefaultReqidBase+uint32(i+1) || st.src != x.dir.Src || st.mode != modeTunnel {
					t.Errorf("%s SA: reqid %d src %s mode %d", x.name, st.reqid, st.src, st.mode)
				}
				if st.lft.HardByteLimit != 1<<31 || st.lft.HardAddExpiresSeconds != 3600 {
					t.Errorf("%s SA: lifetime %+v", x.name, st.lft)
				}
				if (st.encap != nil) != encap {
					t.Errorf("%s SA: encap %v, want %v", x.name, st.encap != nil, encap)
				}
			}
			if in.replay == nil || in.replay.Seq != 500 || in.replay.BitMap != 0b1011 || in.window != DefaultReplayWindow {
				t.Errorf("inbound replay %+v window %d, want seq 500 bitmap 0b1011 window 32", in.replay, in.window)
			}
			if out.replay == nil || out.replay.OSeq != 1000 {
				t.Errorf("outbound replay %+v, want oseq 1000", out.replay)
			}
			if in.curlft.Bytes != 7000 || in.curlft.Packets != 70 || out.curlft.Bytes != 9000 {
				t.Errorf("lifetime counters in %+v out %+v", in.curlft, out.curlft)
			}
			if encap {
				if sp, dp := nl.Swap16(in.encap.EncapSport), nl.Swap16(in.encap.EncapDport); sp != 4501 || dp != 4500 {
					t.Errorf("inbound encap ports %d -> %d, want 4501 -> 4500", sp, dp)
				}
				if sp, dp := nl.Swap16(out.encap.EncapSport), nl.Swap16(out.encap.EncapDport); sp != 4500 || dp != 4501 {
					t.Errorf("outbound encap ports %d -> %d, want 4500 -> 4501", sp, dp)
				}
			}
			cnt, err := d.Counters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := sa.Counters{OutSeq: 1000, InSeq: 500, ReplayBitmap: []uint64{0xffffffff0000000b}, InBytes: 7000, InPackets: 70, OutBytes: 9000, OutPackets: 90}
			if got := cnt[spiA]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Counters = %+v, want %+v", got, want)
			}
			if ids, _ := d.Installed(ctx); !slices.Equal(ids, []uint32{spiA}) {
				t.Errorf("Installed = %x", ids)
			}
			if n, err := d.ourPolicies(ctx); err != nil || n != 3 {
				t.Errorf("our policies: %d (%v), want 3 (in, out, fwd)", n, err)
			}

			// Update: the same pair again raises the outbound sequence
			// number, never lowers it.
			up := cloneChild(c)
			up.Counters.OutSeq = 5000
			if err := d.InstallChild(ctx, up); err != nil {
				t.Fatal(err)
			}
			up.Counters.OutSeq = 10
			if err := d.InstallChild(ctx, up); err != nil {
				t.Fatal(err)
			}
			if ev, err := d.getAE(ctx, saID{addrB, spiA + 1}, addrA); err != nil || ev.replay.OSeq != 5000 {
				t.Errorf("after update: oseq %d (%v), want 5000", ev.replay.OSeq, err)
			}
			bad := cloneChild(c)
			bad.In.EncrKey[0] ^= 1
			if err := d.InstallChild(ctx, bad); !errors.Is(err, xfrm.ErrConflict) {
				t.Errorf("different keys under an installed SPI: %v, want ErrConflict", err)
			}

			if err := d.DeleteChild(ctx, c); err != nil {
				t.Fatal(err)
			}
			if _, err := d.getSA(ctx, saID{addrA, spiA}); !notFound(err) {
				t.Errorf("inbound SA after delete: %v, want not found", err)
			}
			if _, err := d.getSA(ctx, saID{addrB, spiA + 1}); !notFound(err) {
				t.Errorf("outbound SA after delete: %v, want not found", err)
			}
			if n, _ := d.ourPolicies(ctx); n != 0 {
				t.Errorf("%d policies left after delete", n)
			}
			if err := d.DeleteChild(ctx, c); err != nil {
				t.Errorf("second delete: %v", err)
			}
			if ids, _ := d.Installed(ctx); len(ids) != 0 {
				t.Errorf("Installed after delete = %x", ids)
			}
		})
	}
}

// tunnel is two namespaces joined by a veth, A (192.0.2.1 or 2001:db8::1,
// inner 10.1.0.1) and B (192.0.2.2 or 2001:db8::2, inner 10.2.0.1), with
// kernel ESP between them.
type tunnel struct {
	nsA, nsB     string
	pathA, pathB string
	dA, dB       *DataPlane
	cA, cB       *sa.ChildSA
	from, to     string // ping source and destination
}

type tunnelOpts struct {
	s         suite
	encap     bool
	spiA      uint32
	transport bool // transport mode between the outer addresses
	v6        bool // IPv6 outer addresses (IPv4 inner in tunnel mode)
}

func newTunnel(t *testing.T, s suite, encap bool, spiA uint32) *tunnel {
	return newTunnelOpts(t, tunnelOpts{s: s, encap: encap, spiA: spiA})
}

func newTunnelOpts(t *testing.T, o tunnelOpts) *tunnel {
	t.Helper()
	tn := &tunnel{from: "10.1.0.1", to: "10.2.0.1"}
	tn.nsA, tn.pathA, tn.nsB, tn.pathB = newVethPair(t)
	for _, x := range []struct{ ns, dev, inner, peer, remote, src string }{
		{tn.nsA, "vA", "10.1.0.1/32", "192.0.2.2", tsB.String(), "10.1.0.1"},
		{tn.nsB, "vB", "10.2.0.1/32", "192.0.2.1", tsA.String(), "10.2.0.1"},
	} {
		run(t, "ip", "-n", x.ns, "addr", "add", x.inner, "dev", "lo")
		if o.v6 {
			run(t, "ip", "-n", x.ns, "route", "add", x.remote, "dev", x.dev, "src", x.src)
		} else {
			run(t, "ip", "-n", x.ns, "route", "add", x.remote, "via", x.peer, "src", x.src)
		}
	}
	a, b, la, lb := addrA, addrB, tsA, tsB
	if o.v6 {
		a, b = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	}
	if o.transport {
		la, lb = netip.PrefixFrom(a, a.BitLen()), netip.PrefixFrom(b, b.BitLen())
		tn.from, tn.to = a.String(), b.String()
	}
	tn.cA, tn.cB = mirrored(o.s, o.spiA, o.spiA+1, a, b, la, lb, 1)
	if o.transport {
		tn.cA.Mode, tn.cB.Mode = sa.Transport, sa.Transport
	}
	if o.encap {
		tn.cA.EncapLocalPort, tn.cA.EncapRemotePort = 4500, 4500
		tn.cB.EncapLocalPort, tn.cB.EncapRemotePort = 4500, 4500
		network := "udp4"
		if o.v6 {
			network = "udp6"
		}
		for _, p := range []string{tn.pathA, tn.pathB} {
			inNS(t, p, func() {
				conn, err := net.ListenUDP(network, &net.UDPAddr{Port: 4500})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				if err := EnableESPInUDP(conn); err != nil {
					t.Fatal(err)
				}
				if err := BypassPolicy(conn); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	tn.dA, tn.dB = newDP(t, tn.pathA), newDP(t, tn.pathB)
	ctx := ctxT(t)
	if err := tn.dA.InstallChild(ctx, tn.cA); err != nil {
		t.Fatal(err)
	}
	if err := tn.dB.InstallChild(ctx, tn.cB); err != nil {
		t.Fatal(err)
	}
	return tn
}

var receivedRE = regexp.MustCompile(`(\d+) received`)

// ping sends n echo requests from A to B (inner addresses in tunnel
// mode) and returns how many replies came back, waiting up to 5 s for the
// last one (a loaded CI host runs the VM slowly).
func (tn *tunnel) ping(t *testing.T, n int) int { return tn.pingWait(t, n, 5) }

// pingExpectNone is ping for a check that nothing gets through: it waits
// 1 s for replies (a late reply would still be counted).
func (tn *tunnel) pingExpectNone(t *testing.T, n int) int { return tn.pingWait(t, n, 1) }

func (tn *tunnel) pingWait(t *testing.T, n, wait int) int {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", tn.nsA, "ping", "-n", "-q", "-c", strconv.Itoa(n), "-i", "0.1", "-W", strconv.Itoa(wait),
		"-I", tn.from, tn.to).CombinedOutput()
	m := receivedRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("ping output without a count:\n%s", out)
	}
	got, _ := strconv.Atoi(string(m[1]))
	return got
}

// drops returns the replay, replay-window and integrity failure counters of
// an SA.
// wantNoDrops fails the test when the SA id of d dropped a packet as a
// replay, outside the window or for its integrity check (what names them).
func wantNoDrops(t *testing.T, d *DataPlane, id saID, what string) {
	t.Helper()
	if r, w, i := drops(t, d, id); r != 0 || w != 0 || i != 0 {
		t.Errorf("%s: replay %d, replay-window %d, integrity %d", what, r, w, i)
	}
}

// wantOutSeq fails the test unless the pair inSPI of d has used outbound
// sequence numbers up to want (when names the moment).
func wantOutSeq(t *testing.T, d *DataPlane, inSPI uint32, want uint64, when string) {
	t.Helper()
	c, err := d.Counters(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := c[inSPI].OutSeq; got != want {
		t.Errorf("outbound sequence %s = %d, want %d", when, got, want)
	}
}

func drops(t *testing.T, d *DataPlane, id saID) (replay, window, integrity uint32) {
	t.Helper()
	st, err := d.getSA(ctxT(t), id)
	if err != nil {
		t.Fatalf("get SA %s: %v", id, err)
	}
	return st.stats.Replay, st.stats.ReplayWindow, st.stats.IntegrityFailed
}

func TestTunnelPing(t *testing.T) {
	needESP(t)
	for _, tc := range []struct {
		name string
		o    tunnelOpts
	}{
		{"esp-aes256-sha256", tunnelOpts{s: suites[5]}},
		{"udp-encap-aes128-gcm", tunnelOpts{s: suites[8], encap: true}},
		{"transport-aes128-sha512", tunnelOpts{s: suites[3], transport: true}},
		{"ipv4-in-ipv6-aes256-gcm", tunnelOpts{s: suites[9], v6: true}},
		{"ipv6-udp-encap-aes256-sha384", tunnelOpts{s: suites[6], v6: true, encap: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.spiA = 0xa0000010
			tn := newTunnelOpts(t, tc.o)
			if got := tn.ping(t, 5); got != 5 {
				t.Fatalf("%d of 5 pings answered through the tunnel", got)
			}
			ctx := ctxT(t)
			for _, x := range []struct {
				name string
				d    *DataPlane
				spi  uint32
			}{{"A", tn.dA, tn.cA.In.SPI}, {"B", tn.dB, tn.cB.In.SPI}} {
				cnt, err := x.d.Counters(ctx)
				if err != nil {
					t.Fatal(err)
				}
				c := cnt[x.spi]
				// Bytes: 84-byte echo packets in tunnel mode; the kernel
				// counts 64 (no IP header) in transport mode.
				if c.OutSeq < 5 || c.InSeq < 5 || c.OutPackets < 5 || c.InPackets < 5 || c.InBytes < 5*64 || c.OutBytes < 5*64 {
					t.Errorf("%s counters after 5 pings: %+v", x.name, c)
				}
				if c.ReplayBitmap[0]&0x1f != 0x1f {
					t.Errorf("%s replay bitmap %#x: the last 5 numbers should be marked", x.name, c.ReplayBitmap[0])
				}
			}
			st, err := tn.dB.getSA(ctx, saID{tn.cB.In.Dst, tn.cB.In.SPI})
			if err != nil {
				t.Fatal(err)
			}
			if (st.encap != nil) != tc.o.encap {
				t.Errorf("B inbound SA encap = %v, want %v", st.encap != nil, tc.o.encap)
			}
		})
	}
}

// TestTakeoverRestoresSequence deletes A's pair, as if its node died, and
// installs it again from the replicated record with the synced counters:
// OutSeq + margin and the inbound replay state. Traffic resumes with no
// replay drops on either side. The control case installs with zero
// counters and shows the peer dropping everything as replays.
func TestTakeoverRestoresSequence(t *testing.T) {
	needESP(t)
	for _, tc := range []struct {
		name  string
		s     suite
		encap bool
	}{
		{"esp", suites[1], false},
		{"udp-encap", suites[9], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTunnel(t, tc.s, tc.encap, 0xb0000010)
			ctx := ctxT(t)
			if got := tn.ping(t, 10); got != 10 {
				t.Fatalf("%d of 10 pings before the takeover", got)
			}
			cnt, err := tn.dA.Counters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			saved := cloneChild(tn.cA)
			saved.Counters = cnt[tn.cA.In.SPI]
			saved.Counters.OutSeq += 20 // margin: traffic after the last sync
			// Traffic after the sync (fewer packets than the margin).
			if got := tn.ping(t, 3); got != 3 {
				t.Fatalf("%d of 3 pings after the sync", got)
			}
			if err := tn.dA.DeleteChild(ctx, tn.cA); err != nil {
				t.Fatal(err)
			}
			if got := tn.pingExpectNone(t, 1); got != 0 {
				t.Fatalf("a ping got through with A's SAs deleted")
			}
			// The new active: a fresh data plane with the saved record.
			dA2 := newDP(t, tn.pathA)
			if err := dA2.InstallChild(ctx, saved); err != nil {
				t.Fatal(err)
			}
			if got := tn.ping(t, 5); got != 5 {
				t.Fatalf("%d of 5 pings after the takeover", got)
			}
			wantNoDrops(t, tn.dB, saID{addrB, tn.cB.In.SPI}, "peer B dropped packets of the new active")
			wantNoDrops(t, dA2, saID{addrA, tn.cA.In.SPI}, "new active dropped packets of B")
			wantOutSeq(t, dA2, tn.cA.In.SPI, saved.Counters.OutSeq+5, "after takeover")

			// Control: without the saved counters the peer drops it all.
			if err := dA2.DeleteChild(ctx, saved); err != nil {
				t.Fatal(err)
			}
			zero := cloneChild(tn.cA)
			if err := dA2.InstallChild(ctx, zero); err != nil {
				t.Fatal(err)
			}
			if got := tn.pingExpectNone(t, 3); got != 0 {
				t.Errorf("%d pings answered with the sequence numbers restarted at 1; the peer should drop them", got)
			}
			r, w, _ := drops(t, tn.dB, saID{addrB, tn.cB.In.SPI})
			if r+w == 0 {
				t.Errorf("peer B counted no replay drops for restarted sequence numbers")
			}
		})
	}
}

func waitExpiry(t *testing.T, d *DataPlane, timeout time.Duration) xfrm.Expiry {
	t.Helper()
	select {
	case e, ok := <-d.Expiries():
		if !ok {
			t.Fatal("Expiries closed")
		}
		return e
	case <-time.After(timeout):
		t.Fatalf("no expiry event within %v", timeout)
	}
	return xfrm.Expiry{}
}

func TestExpiryBytes(t *testing.T) {
	needESP(t)
	tn := newTunnel(t, suites[1], false, 0xd0000010)
	ctx := ctxT(t)
	// Reinstall A's pair with byte limits: soft after ~4 packets, hard
	// after ~10 (84-byte echo packets).
	if err := tn.dA.DeleteChild(ctx, tn.cA); err != nil {
		t.Fatal(err)
	}
	c := cloneChild(tn.cA)
	c.Lifetime = sa.Lifetime{SoftBytes: 4 * 84, HardBytes: 10 * 84}
	if err := tn.dA.InstallChild(ctx, c); err != nil {
		t.Fatal(err)
	}
	tn.ping(t, 15)
	soft := waitExpiry(t, tn.dA, 10*time.Second)
	if soft != (xfrm.Expiry{SPI: c.In.SPI, Bytes: true}) {
		t.Errorf("first event %v, want soft bytes expiry of 0x%08x", soft, c.In.SPI)
	}
	hard := waitExpiry(t, tn.dA, 10*time.Second)
	if hard != (xfrm.Expiry{SPI: c.In.SPI, Hard: true, Bytes: true}) {
		t.Errorf("second event %v, want hard bytes expiry of 0x%08x", hard, c.In.SPI)
	}
	// Both SAs are gone (the kernel removed one, the data plane the other),
	// the pair is still listed, and traffic stops.
	for _, id := range []saID{{addrA, c.In.SPI}, {addrB, c.Out.SPI}} {
		if _, err := tn.dA.getSA(ctx, id); !notFound(err) {
			t.Errorf("SA %s after hard expiry: %v, want not found", id, err)
		}
	}
	if ids, _ := tn.dA.Installed(ctx); !slices.Equal(ids, []uint32{c.In.SPI}) {
		t.Errorf("Installed after hard expiry = %x", ids)
	}
	if _, err := tn.dA.Counters(ctx); err != nil {
		t.Errorf("Counters after hard expiry: %v", err)
	}
	if got := tn.pingExpectNone(t, 2); got != 0 {
		t.Errorf("%d pings answered after the hard expiry", got)
	}
}

func TestExpiryTimeCountsFromEstablished(t *testing.T) {
	needESP(t)
	_, path := newNamedNS(t)
	d := newDP(t, path)
	c, _ := mirrored(suites[0], 0xe0000010, 0xe0000011, addrA, addrB, tsA, tsB, 3)
	// Established 100 s ago with a 50 s hard lifetime: already over.
	c.Established = time.Now().Add(-100 * time.Second).UnixNano()
	c.Lifetime = sa.Lifetime{SoftSeconds: 40, HardSeconds: 50}
	if err := d.InstallChild(ctxT(t), c); err != nil {
		t.Fatal(err)
	}
	e := waitExpiry(t, d, 15*time.Second)
	if e != (xfrm.Expiry{SPI: c.In.SPI, Hard: true}) {
		t.Errorf("event %v, want hard time expiry of 0x%08x", e, c.In.SPI)
	}
}

// TestFlushOwnership: Flush removes this node's policies (and SAs where the
// kernel has ESP) and leaves foreign ones alone. The policy half runs on
// the host kernel too.
func TestFlushOwnership(t *testing.T) {
	needRoot(t)
	ns, path := newNamedNS(t)
	d := newDP(t, path)
	ctx := ctxT(t)
	ours := strconv.Itoa(DefaultReqidBase + 7)
	run(t, "ip", "-n", ns, "xfrm", "policy", "add", "src", "10.9.0.0/24", "dst", "10.8.0.0/24", "dir", "out",
		"tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "reqid", ours, "mode", "tunnel")
	run(t, "ip", "-n", ns, "xfrm", "policy", "add", "src", "10.7.0.0/24", "dst", "10.6.0.0/24", "dir", "out",
		"tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "reqid", "7", "mode", "tunnel")
	haveESP := Probe(ctx) == nil
	if haveESP {
		run(t, "ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "spi", "0x7777",
			"reqid", "7", "mode", "tunnel", "enc", "cbc(aes)", "0x000102030405060708090a0b0c0d0e0f", "auth-trunc", "hmac(sha1)", "0x0102030405060708091011121314151617181920", "96")
		c, _ := mirrored(suites[0], 0xf0000010, 0xf0000011, addrA, addrB, tsA, tsB, 4)
		if err := d.InstallChild(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	pol := run(t, "ip", "-n", ns, "xfrm", "policy", "list")
	if !regexp.MustCompile(`reqid 7 `).MatchString(pol) {
		t.Errorf("foreign policy removed by Flush:\n%s", pol)
	}
	if regexp.MustCompile("reqid "+ours).MatchString(pol) || regexp.MustCompile(`10\.1\.0\.0`).MatchString(pol) {
		t.Errorf("policy of ours left by Flush:\n%s", pol)
	}
	if ids, _ := d.Installed(ctx); len(ids) != 0 {
		t.Errorf("Installed after Flush = %x", ids)
	}
	if haveESP {
		st := run(t, "ip", "-n", ns, "xfrm", "state", "list")
		if !regexp.MustCompile(`spi 0x00007777`).MatchString(st) {
			t.Errorf("foreign SA removed by Flush:\n%s", st)
		}
		if regexp.MustCompile(`spi 0xf000001`).MatchString(st) {
			t.Errorf("SA of ours left by Flush:\n%s", st)
		}
	}
}

// TestConflictWithForeign: a foreign policy on our selector or a foreign SA
// on our SPI refuses the install, leaves the foreign object as it was and
// leaves nothing of ours behind.
func TestConflictWithForeign(t *testing.T) {
	needESP(t)
	ns, path := newNamedNS(t)
	d := newDP(t, path)
	ctx := ctxT(t)
	run(t, "ip", "-n", ns, "xfrm", "policy", "add", "src", tsB.String(), "dst", tsA.String(), "dir", "in",
		"tmpl", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "reqid", "9", "mode", "tunnel")
	c, _ := mirrored(suites[0], 0xf1000010, 0xf1000011, addrA, addrB, tsA, tsB, 5)
	if err := d.InstallChild(ctx, c); !errors.Is(err, xfrm.ErrConflict) {
		t.Fatalf("install over a foreign policy: %v, want ErrConflict", err)
	}
	if _, err := d.getSA(ctx, saID{addrA, c.In.SPI}); !notFound(err) {
		t.Errorf("inbound SA left after a refused install: %v", err)
	}
	if n, _ := d.ourPolicies(ctx); n != 0 {
		t.Errorf("%d policies of ours left after a refused install", n)
	}
	if pol := run(t, "ip", "-n", ns, "xfrm", "policy", "list"); !regexp.MustCompile(`reqid 9 `).MatchString(pol) {
		t.Errorf("foreign policy changed:\n%s", pol)
	}
	run(t, "ip", "-n", ns, "xfrm", "policy", "flush")

	run(t, "ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "spi", "0xf1000010",
		"reqid", "9", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x0102030405060708091011121314151617181920", "128")
	if err := d.InstallChild(ctx, c); !errors.Is(err, xfrm.ErrConflict) {
		t.Fatalf("install over a foreign SA: %v, want ErrConflict", err)
	}
	st, err := d.getSA(ctx, saID{addrA, c.In.SPI})
	if err != nil || st.reqid != 9 {
		t.Errorf("foreign SA after a refused install: reqid %v, err %v", st, err)
	}
	if _, err := d.getSA(ctx, saID{addrB, c.Out.SPI}); !notFound(err) {
		t.Errorf("outbound SA left after a refused install: %v", err)
	}
}

func TestClosed(t *testing.T) {
	needRoot(t)
	_, path := newNamedNS(t)
	d, err := New(context.Background(), Config{NetNS: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := <-d.Expiries(); ok {
		t.Error("Expiries not closed")
	}
	if _, err := d.Installed(context.Background()); !errors.Is(err, xfrm.ErrClosed) {
		t.Errorf("Installed after Close: %v", err)
	}
	c, _ := mirrored(suites[0], 0x1000, 0x1001, addrA, addrB, tsA, tsB, 1)
	if err := d.InstallChild(context.Background(), c); !errors.Is(err, xfrm.ErrClosed) {
		t.Errorf("InstallChild after Close: %v", err)
	}
}

func TestInstallCancelled(t *testing.T) {
	needRoot(t)
	_, path := newNamedNS(t)
	d := newDP(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, _ := mirrored(suites[0], 0x50000010, 0x50000011, addrA, addrB, tsA, tsB, 1)
	if err := d.InstallChild(ctx, c); !errors.Is(err, context.Canceled) {
		t.Errorf("InstallChild with a cancelled context: %v, want context.Canceled", err)
	}
	if ids, _ := d.Installed(context.Background()); len(ids) != 0 {
		t.Errorf("Installed after a cancelled install = %x", ids)
	}
	if n, _ := d.ourPolicies(context.Background()); n != 0 {
		t.Errorf("%d policies after a cancelled install", n)
	}
}

// TestTakeOverLeftovers: SAs and policies of ours left by an earlier
// process (same reqid range) are taken over by a new data plane installing
// the same pair, and the outbound sequence number never goes back.
func TestTakeOverLeftovers(t *testing.T) {
	needESP(t)
	_, path := newNamedNS(t)
	ctx := ctxT(t)
	c, _ := mirrored(suites[8], 0x60000010, 0x60000011, addrA, addrB, tsA, tsB, 2)
	c.Counters.OutSeq, c.Counters.InSeq, c.Counters.ReplayBitmap = 5000, 90, []uint64{0b101}
	old := newDP(t, path)
	if err := old.InstallChild(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil { // the old process dies; its SAs stay
		t.Fatal(err)
	}
	d := newDP(t, path)
	stale := cloneChild(c)
	stale.Counters.OutSeq = 100 // an older sync
	stale.Counters.InSeq = 40
	stale.Counters.ReplayBitmap = nil
	if err := d.InstallChild(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if ev, err := d.getAE(ctx, saID{addrB, c.Out.SPI}, addrA); err != nil || ev.replay.OSeq != 5000 {
		t.Errorf("outbound sequence after the takeover: %d (%v), want the leftover's 5000", ev.replay.OSeq, err)
	}
	if ev, err := d.getAE(ctx, saID{addrA, c.In.SPI}, addrB); err != nil || ev.replay.Seq != 90 || ev.replay.BitMap != 0b101 {
		t.Errorf("inbound replay after the takeover: seq %d bitmap %#b (%v), want the leftover's 90 and 0b101", ev.replay.Seq, ev.replay.BitMap, err)
	}
	if n, _ := d.ourPolicies(ctx); n != 3 {
		t.Errorf("%d policies, want 3", n)
	}
	if err := d.DeleteChild(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.ourPolicies(ctx); n != 0 {
		t.Errorf("%d policies after delete", n)
	}
}
