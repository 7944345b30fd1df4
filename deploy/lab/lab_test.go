package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newNS(t *testing.T, ctx context.Context, l *Lab, name string) *NS {
	t.Helper()
	ns, err := l.NewNS(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// Three namespaces on a bridge, IPv4 and IPv6, commands, routes through a
// router namespace.
func TestNamespacesBridgeAndPing(t *testing.T) {
	l := NewT(t)
	ctx := testCtx(t, 20*time.Second)
	br, err := l.NewBridge(ctx, "br")
	if err != nil {
		t.Fatal(err)
	}
	a, b, r := newNS(t, ctx, l, "a"), newNS(t, ctx, l, "b"), newNS(t, ctx, l, "r")
	for _, x := range []struct {
		ns   *NS
		v4   string
		v6   string
		port *string
	}{{a, "198.51.100.1/24", "fd00:100::1/64", nil}, {r, "198.51.100.254/24", "fd00:100::fe/64", nil}} {
		if _, err := br.Attach(ctx, x.ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		must(t, x.ns.AddAddr(ctx, "eth0", netip.MustParsePrefix(x.v4)))
		must(t, x.ns.AddAddr(ctx, "eth0", netip.MustParsePrefix(x.v6)))
	}
	// b sits behind router r on a direct veth.
	must(t, l.Veth(ctx, r, "to-b", b, "eth0"))
	must(t, r.AddAddr(ctx, "to-b", netip.MustParsePrefix("203.0.113.254/24")))
	must(t, b.AddAddr(ctx, "eth0", netip.MustParsePrefix("203.0.113.1/24")))
	must(t, r.Sysctl(ctx, "net.ipv4.ip_forward", "1"))
	must(t, a.AddRoute(ctx, netip.MustParsePrefix("203.0.113.0/24"), netip.MustParseAddr("198.51.100.254"), ""))
	must(t, b.AddRoute(ctx, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("203.0.113.254"), "eth0"))

	out, err := a.Run(ctx, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, "198.51.100.1/24") {
		t.Fatalf("ip addr in a: %v\n%s", err, out)
	}
	if fwd, err := r.Run(ctx, "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(fwd) != "1" {
		t.Errorf("ip_forward in r: %q %v", fwd, err)
	}
	if fwd, err := a.Run(ctx, "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(fwd) != "0" {
		t.Errorf("ip_forward leaked into a: %q %v", fwd, err)
	}
	// A failing command reports namespace, command and output.
	_, err = a.Run(ctx, "ip", "link", "show", "dev", "nosuchdev")
	var ce *CmdError
	if !errors.As(err, &ce) || ce.NS != a.Name() || !strings.Contains(err.Error(), "nosuchdev") {
		t.Errorf("failing command: %v", err)
	}

	for _, p := range []struct {
		from     *NS
		src, dst string
	}{
		{a, "", "198.51.100.254"},
		{a, "", "fd00:100::fe"},
		{a, "198.51.100.1", "203.0.113.1"}, // routed through r
		{b, "", "198.51.100.1"},
	} {
		var src netip.Addr
		if p.src != "" {
			src = netip.MustParseAddr(p.src)
		}
		rec, err := p.from.PingFrom(ctx, src, netip.MustParseAddr(p.dst), 3, 20*time.Millisecond)
		if err != nil {
			t.Fatalf("ping %s: %v", p.dst, err)
		}
		if rec.Received() != 3 || rec.Sent != 3 || len(rec.Lost()) != 0 {
			t.Errorf("ping %s: sent %d received %d lost %v", p.dst, rec.Sent, rec.Received(), rec.Lost())
		}
		for _, rp := range rec.Replies {
			if rp.RTT() <= 0 || rp.Received.Before(rec.Start) {
				t.Errorf("ping %s: bad reply times %+v", p.dst, rp)
			}
		}
	}
	// Nothing answers here: ErrNoReply, nothing received.
	rec, err := a.Ping(testCtx(t, 500*time.Millisecond), netip.MustParseAddr("198.51.100.77"), 2, 10*time.Millisecond)
	if !errors.Is(err, ErrNoReply) || rec.Received() != 0 || rec.Sent != 2 {
		t.Errorf("ping to nobody: %v, %+v", err, rec)
	}
}

// Faults: DropAll cuts one pair of addresses in both directions and heals
// on Remove; DropPercent loses some but not all; a pinger measures the gap
// of a cut link.
func TestFaultsAndPingerGap(t *testing.T) {
	l := NewT(t)
	ctx := testCtx(t, 25*time.Second)
	a, b := newNS(t, ctx, l, "a"), newNS(t, ctx, l, "b")
	must(t, l.Veth(ctx, a, "eth0", b, "eth0"))
	aIP, bIP := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	bIP2 := netip.MustParseAddr("192.0.2.3")
	must(t, a.AddAddr(ctx, "eth0", netip.PrefixFrom(aIP, 24)))
	must(t, b.AddAddr(ctx, "eth0", netip.PrefixFrom(bIP, 24)))
	must(t, b.AddAddr(ctx, "eth0", netip.PrefixFrom(bIP2, 24)))

	// A capture on b sees a's ping (and nothing of another host's).
	capture, pcap, err := b.Capture(ctx, "eth0", "icmp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PingFrom(ctx, aIP, bIP, 2, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// tcpdump may lag behind under load: wait for its file, then stop it.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n, _ := pcapCount(pcap); n >= 4 {
			break
		}
	}
	must(t, capture.Stop())
	if n, err := pcapCount(pcap); err != nil || n != 4 {
		t.Errorf("capture of 2 pings: %d packets (%v), want 4", n, err)
	}

	f, err := b.DropAll(ctx, aIP, bIP)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PingFrom(testCtx(t, 500*time.Millisecond), aIP, bIP, 2, 10*time.Millisecond); !errors.Is(err, ErrNoReply) {
		t.Errorf("ping across DropAll: %v, want ErrNoReply", err)
	}
	if _, err := a.PingFrom(ctx, aIP, bIP2, 2, 10*time.Millisecond); err != nil {
		t.Errorf("ping to an address the fault does not cover: %v", err)
	}
	if n, err := f.Dropped(ctx); err != nil || n < 2 {
		t.Errorf("dropped counter %d, %v; want >= 2", n, err)
	}
	must(t, f.Remove())
	must(t, f.Remove())
	if _, err := a.PingFrom(ctx, aIP, bIP, 2, 10*time.Millisecond); err != nil {
		t.Errorf("ping after healing: %v", err)
	}

	// 50% per packet, both directions: a reply survives with p = 1/4, so
	// 50+ requests get none back with p <= 0.75^50 < 1e-6 and all back with
	// p <= 0.25^50.
	f2, err := a.DropPercent(ctx, aIP, bIP, 50)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := a.PingFrom(testCtx(t, 2*time.Second), aIP, bIP, 100, 2*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Sent < 50 || rec.Received() == rec.Sent {
		t.Errorf("DropPercent 50: %d of %d replies", rec.Received(), rec.Sent)
	}
	must(t, f2.Remove())
	if _, err := a.DropPercent(ctx, aIP, bIP, 0); err == nil {
		t.Error("DropPercent 0 accepted")
	}
	if _, err := a.DropAll(ctx, aIP, netip.MustParseAddr("::1")); err == nil {
		t.Error("DropAll across families accepted")
	}

	// A cut link shows as a gap at least as long as the cut.
	p, err := a.StartPinger(aIP, bIP, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitReplies(t, p, 5)
	must(t, b.SetLink(ctx, "eth0", false))
	const cut = 300 * time.Millisecond
	time.Sleep(cut)
	must(t, b.SetLink(ctx, "eth0", true))
	before := p.Snapshot().Received()
	waitReplies(t, p, before+5)
	rec = p.Stop()
	if g := rec.MaxGap(); g < cut {
		t.Errorf("max gap %v across a %v cut", g, cut)
	}
	// (Requests sent during the cut may be queued and answered late rather
	// than lost, so only the gap is certain.)
	if again := p.Stop(); again.Sent != rec.Sent {
		t.Error("second Stop changed the record")
	}
}

func waitReplies(t *testing.T, p *Pinger, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Snapshot().Received() < n {
		if time.Now().After(deadline) {
			t.Fatalf("pinger: %d replies, waited for %d (send error %v)", p.Snapshot().Received(), n, p.SendError())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPingRecordMaxGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name string
		rec  PingRecord
		gap  time.Duration
		lost []int
	}{
		{"steady", PingRecord{Start: at(0), End: at(45), Sent: 5, Replies: []Reply{{0, at(0), at(1)}, {1, at(10), at(11)}, {2, at(20), at(21)}, {3, at(30), at(31)}, {4, at(40), at(41)}}}, 10 * time.Millisecond, nil},
		{"outage", PingRecord{Start: at(0), End: at(100), Sent: 10, Replies: []Reply{{0, at(0), at(1)}, {8, at(80), at(81)}, {9, at(90), at(91)}}}, 80 * time.Millisecond, []int{1, 2, 3, 4, 5, 6, 7}},
		{"dark at the end", PingRecord{Start: at(0), End: at(500), Sent: 3, Replies: []Reply{{0, at(0), at(2)}}}, 498 * time.Millisecond, []int{1, 2}},
		{"nothing", PingRecord{Start: at(0), End: at(70), Sent: 2}, 70 * time.Millisecond, []int{0, 1}},
	}
	for _, tt := range tests {
		if g := tt.rec.MaxGap(); g != tt.gap {
			t.Errorf("%s: MaxGap %v, want %v", tt.name, g, tt.gap)
		}
		if l := tt.rec.Lost(); !equalInts(l, tt.lost) {
			t.Errorf("%s: Lost %v, want %v", tt.name, l, tt.lost)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProcLifecycle(t *testing.T) {
	l := NewT(t)
	ctx := testCtx(t, 20*time.Second)
	ns := newNS(t, ctx, l, "p")

	// Output is captured; exit status reported; the process ran inside ns.
	cfg, err := l.WriteFile("greeting.conf", []byte("hello from a config\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ns.StartSpec(ProcSpec{Argv: []string{"sh", "-c", `cat "$1"; readlink /proc/self/ns/net; echo "$LABVAR"; exit 3`, "sh", cfg}, Env: []string{"LABVAR=env-ok"}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Wait(ctx)
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit: %v, want status 3", err)
	}
	nsIno, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(os.Getpid()), "ns/net"))
	if err != nil {
		t.Fatal(err)
	}
	out := p.Output()
	if !strings.Contains(out, "hello from a config") || !strings.Contains(out, "env-ok") || strings.Contains(out, nsIno) || !strings.Contains(out, "net:[") {
		t.Errorf("output %q (host netns %s)", out, nsIno)
	}

	// Stop: SIGTERM is enough for a cooperative process.
	p2, err := ns.Start("sleeper", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if p2.Exited() {
		t.Fatal("sleep exited at once")
	}
	must(t, p2.Stop())
	if !p2.Exited() {
		t.Error("not exited after Stop")
	}
	must(t, p2.Stop()) // idempotent
	if err := p2.Signal(syscall.SIGTERM); !errors.Is(err, ErrProcExited) {
		t.Errorf("signal after exit: %v", err)
	}

	// A process ignoring SIGTERM is killed after the stop timeout.
	l.stopTO = 200 * time.Millisecond
	p3, err := ns.Start("stubborn", "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	if err != nil {
		t.Fatal(err)
	}
	must(t, p3.WaitOutput(ctx, "ready"))
	p3.stopTO = l.stopTO
	must(t, p3.Stop())
	if err := p3.Wait(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stubborn process: %v, want killed", err)
	}

	p4, err := ns.Start("killme", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	must(t, p4.Kill())
	if err := p4.WaitOutput(ctx, "never printed"); err == nil || !strings.Contains(err.Error(), "exited before") {
		t.Errorf("WaitOutput on a dead process: %v", err)
	}
	if _, err := ns.Start("", ""); err == nil {
		t.Error("empty command accepted")
	}
	if _, err := l.WriteFile("../escape", nil); !errors.Is(err, ErrBadName) {
		t.Errorf("WriteFile ../escape: %v", err)
	}
}

// Close removes namespaces and their processes; Cleanup removes leftovers
// of dead runs only.
func TestCloseAndCleanup(t *testing.T) {
	RequireRoot(t)
	ctx := testCtx(t, 20*time.Second)
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	prefix := "ikgwlabt" + hex.EncodeToString(rb[:]) + "-"
	t.Cleanup(func() { // whatever the outcome, remove every namespace of this test
		ents, _ := os.ReadDir(netnsDir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				_ = deleteNS(e.Name())
			}
		}
	})

	l, err := New(Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.NewNS(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ns.Start("sleeper", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	dir := l.Dir()
	must(t, l.Close())
	must(t, l.Close())
	if ns.exists() {
		t.Error("namespace left after Close")
	}
	if !p.Exited() {
		t.Error("process left after Close")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work dir %s left after Close: %v", dir, err)
	}
	if _, err := l.NewNS(ctx, "y"); !errors.Is(err, ErrClosed) {
		t.Errorf("NewNS after Close: %v", err)
	}

	// A leftover of a dead run (a pid that does not exist) with a process
	// inside, and a namespace of a live run (ours).
	deadPid := 4194303 // the largest pid Linux allows; make sure it is free
	for processAlive(deadPid) {
		deadPid--
	}
	stale := prefix + strconv.Itoa(deadPid) + "-abcdef-old"
	live := prefix + strconv.Itoa(os.Getpid()) + "-abcdef-live"
	for _, n := range []string{stale, live} {
		if _, err := runCmd(ctx, "", nil, "ip", "netns", "add", n); err != nil {
			t.Fatal(err)
		}
	}
	orphan, err := (&NS{lab: &Lab{dir: t.TempDir(), log: l.log, stopTO: time.Second}, short: "o", name: stale}).Start("orphan", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	// Start returns once `ip netns exec` is forked, maybe before it entered
	// the namespace: wait until the namespace holds the process, or
	// Cleanup cannot see it (a race of the test, not of Cleanup).
	for {
		if pids, err := nsPids(stale); err == nil && len(pids) > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the orphan never appeared in its namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(t, Cleanup(prefix))
	if _, err := os.Stat(filepath.Join(netnsDir, stale)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s not removed: %v", stale, err)
	}
	select {
	case <-orphan.Done():
	case <-time.After(5 * time.Second):
		t.Error("process in the stale namespace still running")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, live)); err != nil {
		t.Errorf("live run's namespace removed: %v", err)
	}
	if err := Cleanup(""); !errors.Is(err, ErrBadName) {
		t.Errorf("Cleanup(\"\"): %v", err)
	}
}

func TestNameChecks(t *testing.T) {
	l := NewT(t)
	ctx := testCtx(t, 10*time.Second)
	for _, n := range []string{"", "a b", "x/y", strings.Repeat("n", 33)} {
		if _, err := l.NewNS(ctx, n); !errors.Is(err, ErrBadName) {
			t.Errorf("NewNS(%q): %v", n, err)
		}
	}
	a, b := newNS(t, ctx, l, "a"), newNS(t, ctx, l, "b")
	if err := l.Veth(ctx, a, "this-name-is-too-long", b, "eth0"); !errors.Is(err, ErrBadName) {
		t.Errorf("long interface name: %v", err)
	}
}

// pcapCount counts the complete packets of a classic pcap file.
func pcapCount(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if len(b) < 24 {
		return 0, fmt.Errorf("%s: %d bytes, no pcap header", path, len(b))
	}
	var order binary.ByteOrder = binary.LittleEndian
	if m := binary.BigEndian.Uint32(b); m == 0xa1b2c3d4 || m == 0xa1b23c4d {
		order = binary.BigEndian
	}
	n := 0
	for off := 24; off < len(b); n++ {
		if off+16 > len(b) {
			return n, fmt.Errorf("%s: truncated record header at %d", path, off)
		}
		off += 16 + int(order.Uint32(b[off+8:]))
		if off > len(b) {
			return n, fmt.Errorf("%s: truncated record at %d", path, off)
		}
	}
	return n, nil
}
