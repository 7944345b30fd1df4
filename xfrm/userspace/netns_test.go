package userspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"ikegw/ike/sa"
)

// udpSender is what the IKE runtime's socket on 4500 does for the engine.
type udpSender struct{ c *net.UDPConn }

func (s udpSender) SendESP(b []byte, dst netip.AddrPort) error {
	_, err := s.c.WriteToUDPAddrPort(b, dst)
	return err
}

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// nsNode is one side of the lab: a network namespace with a veth to the
// other side, a protected address on lo, a UDP socket on 4500 and a
// userspace engine whose inbound ESP comes from that socket.
type nsNode struct {
	name   string // namespace name
	outer  netip.Addr
	inner  netip.Addr
	veth   string
	conn   *net.UDPConn
	engine atomic.Pointer[Engine]
	wg     sync.WaitGroup

	capMu    sync.Mutex
	captured [][]byte // the first ESP datagrams received, when capture > 0
	capture  int
}

func (n *nsNode) path() string { return "/var/run/netns/" + n.name }

func (n *nsNode) listen(t *testing.T) {
	t.Helper()
	ns, err := netns.GetFromPath(n.path())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	err = inNetNS(ns, func() error {
		var err error
		n.conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 4500})
		return err
	})
	if err != nil {
		t.Fatalf("%s: listen on 4500: %v", n.name, err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		buf := make([]byte, 65536)
		for {
			k, from, err := n.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			n.capMu.Lock()
			if len(n.captured) < n.capture && IsESP(buf[:k]) {
				n.captured = append(n.captured, append([]byte(nil), buf[:k]...))
			}
			n.capMu.Unlock()
			if e := n.engine.Load(); e != nil && IsESP(buf[:k]) {
				e.HandleInbound(buf[:k], from)
			}
		}
	}()
	t.Cleanup(func() { n.conn.Close(); n.wg.Wait() })
}

func (n *nsNode) start(t *testing.T, c *sa.ChildSA) *Engine {
	t.Helper()
	e, err := New(Config{Sender: udpSender{n.conn}, NetNSPath: n.path(), Logger: quiet()})
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.InstallChild(context.Background(), c); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	n.engine.Store(e)
	return e
}

var received = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// ping sends count echo requests from n's protected address to dst and
// returns how many replies came back, waiting up to wait seconds for late
// ones (generous on a loaded CI machine: a lost reply only costs the wait).
func (n *nsNode) ping(t *testing.T, dst netip.Addr, count, wait int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.name, "ping", "-n", "-q",
		"-c", strconv.Itoa(count), "-i", "0.01", "-W", strconv.Itoa(wait), "-I", n.inner.String(), dst.String()).CombinedOutput()
	m := received.FindSubmatch(out)
	if m == nil {
		t.Fatalf("ping from %s: %v\n%s", n.name, err, out)
	}
	got, _ := strconv.Atoi(string(m[2]))
	return got
}

// TestNetNSPingAndTakeover runs two engines in two network namespaces with
// ESP-in-UDP between real sockets on 4500, pings through them, then replaces
// one engine by a new one built from its last synced counters.
func TestNetNSPingAndTakeover(t *testing.T) {
	for _, gcm := range []bool{true, false} {
		name := map[bool]string{true: "aes256-gcm16", false: "aes-cbc-sha2"}[gcm]
		t.Run(name, func(t *testing.T) { netnsPingAndTakeover(t, gcm) })
	}
}

// newLab makes two namespaces joined by a veth (outer addresses
// 192.0.2.1/24 and .2), each with its protected address on lo (10.1.0.1,
// 10.2.0.1) and a UDP socket on 4500 feeding its engine. Everything is
// removed on cleanup. It skips when not root.
func newLab(t *testing.T, listen bool) (a, b *nsNode) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth and TUN devices")
	}
	if err := Probe(); err != nil {
		t.Fatalf("TUN unusable as root: %v", err)
	}
	for _, tool := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (scripts/deps.sh installs iproute2 and ping): %v", tool, err)
		}
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	a = &nsNode{name: "ikegw-ua-" + id, outer: outerA, inner: netip.MustParseAddr("10.1.0.1"), veth: "vua" + id}
	b = &nsNode{name: "ikegw-ub-" + id, outer: outerB, inner: netip.MustParseAddr("10.2.0.1"), veth: "vub" + id}
	for _, n := range []*nsNode{a, b} {
		run(t, "ip", "netns", "add", n.name)
		name := n.name
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	}
	run(t, "ip", "link", "add", a.veth, "netns", a.name, "type", "veth", "peer", "name", b.veth, "netns", b.name)
	for _, n := range []*nsNode{a, b} {
		ns := []string{"ip", "-n", n.name}
		run(t, append(ns, "link", "set", "lo", "up")...)
		run(t, append(ns, "link", "set", n.veth, "up")...)
		run(t, append(ns, "addr", "add", n.outer.String()+"/24", "dev", n.veth)...)
		run(t, append(ns, "addr", "add", n.inner.String()+"/32", "dev", "lo")...)
		if listen {
			n.listen(t)
		}
	}
	return a, b
}

func netnsPingAndTakeover(t *testing.T, gcm bool) {
	a, b := newLab(t, true)
	ca, cb := pairFor(gcm)
	ea := a.start(t, ca)
	eb := b.start(t, cb)

	if got := a.ping(t, b.inner, 100, 10); got != 100 {
		t.Fatalf("%d of 100 replies through the tunnel", got)
	}
	sa, _ := ea.Stats(ca.ID())
	sb, _ := eb.Stats(cb.ID())
	t.Logf("A %+v", sa)
	t.Logf("B %+v", sb)
	if sa.OutPackets < 100 || sa.OutPackets != sb.InPackets || sb.OutPackets != sa.InPackets ||
		sa.OutBytes != sb.InBytes || sb.OutBytes != sa.InBytes || sa.OutSeq != sb.InSeq || sb.OutSeq != sa.InSeq {
		t.Fatalf("counters disagree:\nA %+v\nB %+v", sa, sb)
	}

	// Takeover in miniature: B's last sync, B's engine dies, a new engine
	// starts from the synced record with OutSeq + margin.
	synced, err := eb.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b.engine.Store(nil)
	if err := eb.Close(); err != nil {
		t.Fatal(err)
	}
	const margin = 1000
	nb := *cb
	nb.Counters = synced[cb.ID()]
	nb.Counters.OutSeq += margin
	eb2 := b.start(t, &nb)

	if got := a.ping(t, b.inner, 100, 10); got != 100 {
		t.Fatalf("after takeover: %d of 100 replies", got)
	}
	sa2, _ := ea.Stats(ca.ID())
	sb2, _ := eb2.Stats(cb.ID())
	t.Logf("A after takeover %+v", sa2)
	t.Logf("B' %+v", sb2)
	if sa2.ReplayDrops != 0 || sa2.AuthFailures != 0 || sb2.ReplayDrops != 0 || sb2.AuthFailures != 0 {
		t.Fatalf("drops after takeover: A %+v B' %+v", sa2, sb2)
	}
	k := synced[cb.ID()]
	if want := k.OutSeq + margin + (sb2.OutPackets - k.OutPackets); sa2.InSeq != want || sb2.OutSeq != want {
		t.Fatalf("A's inbound seq %d, B' outbound %d, want %d (synced %d + margin %d + sent since)", sa2.InSeq, sb2.OutSeq, want, k.OutSeq, margin)
	}
	if sb2.InSeq != sa2.OutSeq || sb2.InPackets != sa2.OutPackets {
		t.Fatalf("B' inbound seq %d / packets %d, A outbound %d / %d", sb2.InSeq, sb2.InPackets, sa2.OutSeq, sa2.OutPackets)
	}
	if e := ea.EngineStats(); e.DeviceErrors != 0 {
		t.Fatalf("A engine %+v", e)
	}
}

// TestNetNSFullTunnel covers a remote selector of 0.0.0.0/0: the engine's
// routes live in its own table (the main table is left exactly as it was),
// the peer's address is thrown back to the main table so ESP does not loop
// into the TUN device, and Close removes the policy rules and throw routes.
func TestNetNSFullTunnel(t *testing.T) {
	a, b := newLab(t, true)
	ca, cb := pairFor(true)
	ca.LocalTS = []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("0.0.0.0/0")}}
	cb.RemoteTS = ca.LocalTS
	ip := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"-n", b.name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	mainBefore := ip("route", "show", "table", "main")
	a.start(t, ca)
	eb := b.start(t, cb)
	table := strconv.Itoa(DefaultRouteTable)
	if got := ip("route", "show", "table", table); !strings.Contains(got, "default dev "+eb.DeviceName()) ||
		!strings.Contains(got, "throw "+outerA.String()) {
		t.Fatalf("table %s:\n%s", table, got)
	}
	if got := ip("route", "show", "table", "main"); got != mainBefore {
		t.Fatalf("main table changed:\nbefore\n%s\nafter\n%s", mainBefore, got)
	}
	if got := a.ping(t, b.inner, 20, 10); got != 20 {
		t.Fatalf("%d of 20 replies through a full tunnel", got)
	}
	if err := eb.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ip("rule", "show"); strings.Contains(got, "lookup "+table) {
		t.Fatalf("policy rule left after Close:\n%s", got)
	}
	if got := ip("route", "show", "table", table); strings.TrimSpace(got) != "" {
		t.Fatalf("routes left in table %s after Close:\n%s", table, got)
	}
	if got := ip("route", "show", "table", "main"); got != mainBefore {
		t.Fatalf("main table changed after Close:\n%s", got)
	}
}

// TestNetNSCleanup leaves what a killed engine leaves (rules, throw routes,
// routes in the engine's table) and checks that Cleanup and New remove it,
// and only it.
func TestNetNSCleanup(t *testing.T) {
	_, b := newLab(t, false)
	table := strconv.Itoa(DefaultRouteTable)
	ip := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"-n", b.name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	leave := func() {
		ip("rule", "add", "priority", strconv.Itoa(DefaultRulePriority), "lookup", table)
		ip("route", "add", "throw", "203.0.113.9", "table", table)
		ip("route", "add", "198.51.100.0/24", "dev", "lo", "table", table)
	}
	// Someone else's rule and table: never touched.
	ip("rule", "add", "priority", "4600", "lookup", "4600")
	ip("route", "add", "192.0.2.128/25", "dev", "lo", "table", "4600")
	mainBefore := ip("route", "show", "table", "main")

	gone := func(when string) {
		t.Helper()
		if got := ip("rule", "show"); strings.Contains(got, "lookup "+table) || !strings.Contains(got, "lookup 4600") {
			t.Fatalf("%s: rules:\n%s", when, got)
		}
		if got := ip("route", "show", "table", table); strings.TrimSpace(got) != "" {
			t.Fatalf("%s: table %s:\n%s", when, table, got)
		}
		if got := ip("route", "show", "table", "4600"); !strings.Contains(got, "192.0.2.128/25") {
			t.Fatalf("%s: another table was touched:\n%s", when, got)
		}
		if got := ip("route", "show", "table", "main"); got != mainBefore {
			t.Fatalf("%s: main table changed:\n%s", when, got)
		}
	}
	leave()
	if err := Cleanup(Config{NetNSPath: b.path()}); err != nil {
		t.Fatal(err)
	}
	gone("after Cleanup")
	if err := Cleanup(Config{NetNSPath: b.path()}); err != nil {
		t.Fatalf("Cleanup with nothing to do: %v", err)
	}

	leave()
	e, err := New(Config{Sender: &wire{}, NetNSPath: b.path(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if got := ip("route", "show", "table", table); strings.TrimSpace(got) != "" {
		t.Fatalf("New kept a dead engine's routes:\n%s", got)
	}
	if got := ip("rule", "show"); strings.Count(got, "lookup "+table) != 1 {
		t.Fatalf("want exactly our one IPv4 rule:\n%s", got)
	}
	e.Close()
	gone("after Close")
}
