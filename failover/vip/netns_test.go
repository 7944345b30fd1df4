package vip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func isRoot() bool { return os.Geteuid() == 0 }

func requireRoot(t *testing.T) {
	t.Helper()
	if !isRoot() {
		t.Skip("needs root: creates network namespaces and interfaces")
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// suffix is a random tag that keeps names of concurrent runs apart.
func suffix(t testing.TB) string { return suffixB(t) }

func suffixB(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNS creates a named network namespace, removed (with everything in it)
// when the test ends.
func newNS(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	return h
}

// nsPath is where `ip netns add` puts a namespace.
func nsPath(name string) string { return "/var/run/netns/" + name }

func nlIn(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = quiet()
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func addrsOf(t *testing.T, h *netlink.Handle, iface string) map[string]netlink.Addr {
	t.Helper()
	l, err := h.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]netlink.Addr{}
	for _, a := range list {
		out[a.IPNet.String()] = a
	}
	return out
}

func TestManagerAddHeldRelease(t *testing.T) {
	requireRoot(t)
	ns := "ikfo-" + suffix(t)
	h := newNS(t, ns)
	// This host's kernel has no dummy driver: veth pairs instead.
	for _, ifc := range []string{"out0", "in0"} {
		sh(t, "ip", "-n", ns, "link", "add", ifc, "type", "veth", "peer", "name", ifc+"p")
		sh(t, "ip", "-n", ns, "link", "set", ifc+"p", "up")
		sh(t, "ip", "-n", ns, "link", "set", ifc, "up")
	}
	// The node's own addresses, which the manager must never touch.
	sh(t, "ip", "-n", ns, "addr", "add", "192.0.2.2/24", "dev", "out0")
	sh(t, "ip", "-n", ns, "addr", "add", "2001:db8::2/64", "dev", "out0", "nodad")

	vips := []VIP{
		{Interface: "out0", Prefix: netip.MustParsePrefix("192.0.2.10/24")},
		{Interface: "out0", Prefix: netip.MustParsePrefix("192.0.2.11/24")},
		{Interface: "out0", Prefix: netip.MustParsePrefix("2001:db8::10/64")},
		{Interface: "in0", Prefix: netip.MustParsePrefix("10.9.0.1/16")},
		{Interface: "in0", Prefix: netip.MustParsePrefix("fd00:9::1/64")},
	}
	m := newManager(t, Config{VIPs: vips, NetNS: nsPath(ns), Announce: Announce{Count: 2, Interval: 10 * time.Millisecond}})
	nh := nlIn(t, h)

	held, err := m.Held()
	must(t, err)
	if len(held) != 0 {
		t.Fatalf("held before claim: %v", held)
	}
	ctx := context.Background()
	// 2 rounds x (2 ARP per IPv4 VIP on out0 + 1 NA) = 10 on out0,
	// 2 x (2 + 1) = 6 on in0, per claim.
	waitSent := func(out0, in0 int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			s := m.Sent()
			if s["out0"] == out0 && s["in0"] == in0 {
				return
			}
			if time.Now().After(deadline) || s["out0"] > out0 || s["in0"] > in0 {
				t.Fatalf("announcements sent %v, want out0:%d in0:%d", s, out0, in0)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	must(t, m.Claim(ctx))
	waitSent(10, 6)
	must(t, m.Claim(ctx)) // again: idempotent, announces again
	waitSent(20, 12)
	held, err = m.Held()
	must(t, err)
	if !slices.Equal(held, vips) {
		t.Fatalf("held after claim = %v, want %v", held, vips)
	}
	out := addrsOf(t, nh, "out0")
	for _, p := range []string{"192.0.2.2/24", "192.0.2.10/24", "192.0.2.11/24", "2001:db8::2/64", "2001:db8::10/64"} {
		if _, ok := out[p]; !ok {
			t.Errorf("out0 lacks %s: %v", p, out)
		}
	}
	a6 := out["2001:db8::10/64"]
	if a6.Flags&unix.IFA_F_NODAD == 0 || a6.Flags&unix.IFA_F_TENTATIVE != 0 {
		t.Errorf("IPv6 VIP flags %#x: want NODAD and not tentative", a6.Flags)
	}
	// Usable at once: a socket can bind to the IPv6 VIP (a tentative
	// address refuses with EADDRNOTAVAIL).
	err = inNS(h, func() error {
		c, err := net.ListenPacket("udp6", "[2001:db8::10]:0")
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Errorf("bind to the IPv6 VIP right after claim: %v", err)
	}

	must(t, m.Release(ctx))
	held, err = m.Held()
	must(t, err)
	if len(held) != 0 {
		t.Fatalf("held after release: %v", held)
	}
	out = addrsOf(t, nh, "out0")
	for _, p := range []string{"192.0.2.2/24", "2001:db8::2/64"} {
		if _, ok := out[p]; !ok {
			t.Errorf("release removed the node's own %s: %v", p, out)
		}
	}
	for _, v := range vips {
		if _, ok := addrsOf(t, nh, v.Interface)[v.Prefix.String()]; ok {
			t.Errorf("%s still present after release", v)
		}
	}
	must(t, m.Release(ctx)) // idempotent

	// An interface that disappeared: release is still fine, claim fails
	// naming the VIP.
	sh(t, "ip", "-n", ns, "link", "del", "in0")
	must(t, m.Release(ctx))
	err = m.Claim(ctx)
	if err == nil || !strings.Contains(err.Error(), "10.9.0.1/16 on in0") {
		t.Fatalf("claim with a missing interface: %v", err)
	}
	must(t, m.Release(ctx))
	must(t, m.Close())
	if err := m.Claim(ctx); err != ErrClosed {
		t.Fatalf("claim after close: %v", err)
	}
}

// lan is a peer namespace with a bridge, and two gateway namespaces
// plugged into it with veth pairs.
type lan struct {
	peer, a, b    string
	peerH, aH, bH netns.NsHandle
	macA, macB    net.HardwareAddr
	peerNL        *netlink.Handle
	bridgeIdx     int
	aMgr, bMgr    *Manager
}

func newLAN(t *testing.T, vips func(iface string) []VIP, ann Announce) *lan {
	t.Helper()
	s := suffix(t)
	l := &lan{peer: "ikfo-" + s + "-p", a: "ikfo-" + s + "-a", b: "ikfo-" + s + "-b"}
	l.peerH = newNS(t, l.peer)
	l.aH = newNS(t, l.a)
	l.bH = newNS(t, l.b)
	sh(t, "ip", "-n", l.peer, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", l.peer, "addr", "add", "192.0.2.1/24", "dev", "br0")
	sh(t, "ip", "-n", l.peer, "addr", "add", "2001:db8::1/64", "dev", "br0", "nodad")
	sh(t, "ip", "-n", l.peer, "link", "set", "br0", "up")
	for _, g := range []struct{ ns, own4, own6 string }{{l.a, "192.0.2.2/24", "2001:db8::2/64"}, {l.b, "192.0.2.3/24", "2001:db8::3/64"}} {
		port := "p" + g.ns[len(g.ns)-1:]
		sh(t, "ip", "-n", l.peer, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
		sh(t, "ip", "-n", l.peer, "link", "set", port, "master", "br0")
		sh(t, "ip", "-n", l.peer, "link", "set", port, "up")
		sh(t, "ip", "-n", g.ns, "addr", "add", g.own4, "dev", "eth0")
		sh(t, "ip", "-n", g.ns, "addr", "add", g.own6, "dev", "eth0", "nodad")
		sh(t, "ip", "-n", g.ns, "link", "set", "eth0", "up")
	}
	l.peerNL = nlIn(t, l.peerH)
	br, err := l.peerNL.LinkByName("br0")
	must(t, err)
	l.bridgeIdx = br.Attrs().Index
	for _, x := range []struct {
		name string
		h    netns.NsHandle
		mac  *net.HardwareAddr
		m    **Manager
	}{{l.a, l.aH, &l.macA, &l.aMgr}, {l.b, l.bH, &l.macB, &l.bMgr}} {
		nh := nlIn(t, x.h)
		link, err := nh.LinkByName("eth0")
		must(t, err)
		*x.mac = link.Attrs().HardwareAddr
		*x.m = newManager(t, Config{VIPs: vips("eth0"), NetNS: nsPath(x.name), Announce: ann})
	}
	return l
}

// neighMAC is the peer's neighbour-cache entry for ip (nil when none).
func (l *lan) neighMAC(t *testing.T, ip netip.Addr) (net.HardwareAddr, int) {
	t.Helper()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	list, err := l.peerNL.NeighList(l.bridgeIdx, fam)
	must(t, err)
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr, n.State
		}
	}
	return nil, 0
}

func (l *lan) ping(t *testing.T, ip netip.Addr) error {
	t.Helper()
	// Up to three echo requests; one reply is enough (ping exits 0). A
	// first request lost while the new node resolves the peer (seen once
	// on a loaded machine) is not what these tests are about.
	out, err := exec.Command("ip", "netns", "exec", l.peer, "ping", "-c", "3", "-i", "0.2", "-W", "2", ip.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from the peer: %v\n%s", ip, err, out)
	}
	return nil
}

// takeover checks that after A held vip and the peer reached it, B's claim
// moves the peer's neighbour entry to B's MAC, and the peer reaches B.
func takeover(t *testing.T, l *lan, vip netip.Addr) {
	ctx := context.Background()
	must(t, l.aMgr.Claim(ctx))
	if err := l.ping(t, vip); err != nil {
		t.Fatal(err)
	}
	if mac, _ := l.neighMAC(t, vip); mac.String() != l.macA.String() {
		t.Fatalf("peer's entry for %s is %v before takeover, want A's %v", vip, mac, l.macA)
	}
	must(t, l.aMgr.Release(ctx))
	must(t, l.bMgr.Claim(ctx))
	deadline := time.Now().Add(5 * time.Second)
	for {
		mac, state := l.neighMAC(t, vip)
		if mac.String() == l.macB.String() {
			t.Logf("peer's entry for %s moved to B's MAC %v (state %#x)", vip, mac, state)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer's entry for %s is %v (state %#x) after B's claim, want B's %v", vip, mac, state, l.macB)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The peer's traffic now reaches B: with A's copy gone, only B can
	// answer.
	if err := l.ping(t, vip); err != nil {
		o1, _ := exec.Command("ip", "-n", l.peer, "neigh").CombinedOutput()
		o2, _ := exec.Command("ip", "-n", l.b, "neigh").CombinedOutput()
		o3, _ := exec.Command("ip", "-n", l.b, "addr").CombinedOutput()
		o4, _ := exec.Command("ip", "-n", l.a, "addr").CombinedOutput()
		err2 := l.ping(t, vip)
		t.Fatalf("%v\npeer neigh:\n%s\nB neigh:\n%s\nB addr:\n%s\nA addr:\n%s\nsecond ping: %v", err, o1, o2, o3, o4, err2)
	}
}

func TestTakeoverGratuitousARP(t *testing.T) {
	requireRoot(t)
	for _, mode := range []ARPMode{ARPRequest, ARPReply} {
		t.Run(mode.String(), func(t *testing.T) {
			vip := netip.MustParsePrefix("192.0.2.100/24")
			l := newLAN(t, func(ifc string) []VIP { return []VIP{{ifc, vip}} }, Announce{Count: 3, Interval: 50 * time.Millisecond, ARP: mode})
			takeover(t, l, vip.Addr())
		})
	}
}

func TestTakeoverUnsolicitedNA(t *testing.T) {
	requireRoot(t)
	vip := netip.MustParsePrefix("2001:db8::100/64")
	l := newLAN(t, func(ifc string) []VIP { return []VIP{{ifc, vip}} }, Announce{Count: 3, Interval: 50 * time.Millisecond})
	takeover(t, l, vip.Addr())
}

// Without announcements the peer keeps the old MAC: the control for the
// two tests above (they would pass vacuously if the peer re-resolved on
// its own within the wait).
func TestNoAnnouncementKeepsStaleEntry(t *testing.T) {
	requireRoot(t)
	vip := netip.MustParsePrefix("192.0.2.100/24")
	l := newLAN(t, func(ifc string) []VIP { return []VIP{{ifc, vip}} }, Announce{Count: -1})
	ctx := context.Background()
	must(t, l.aMgr.Claim(ctx))
	if err := l.ping(t, vip.Addr()); err != nil {
		t.Fatal(err)
	}
	must(t, l.aMgr.Release(ctx))
	must(t, l.bMgr.Claim(ctx))
	time.Sleep(500 * time.Millisecond)
	if mac, _ := l.neighMAC(t, vip.Addr()); mac.String() != l.macA.String() {
		t.Fatalf("without announcements the peer's entry is %v, want still A's %v", mac, l.macA)
	}
}

// newNSB is newNS with a veth pair eth0/eth0p, both up.
func newNSB(t testing.TB, name string) netns.NsHandle {
	h := newNS(t, name)
	sh(t, "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	sh(t, "ip", "-n", name, "link", "set", "eth0p", "up")
	sh(t, "ip", "-n", name, "link", "set", "eth0", "up")
	return h
}
