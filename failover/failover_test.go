package failover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/failover/vip"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and interfaces")
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func suffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNS makes a namespace with a veth pair eth0/eth0p, both up, removed
// when the test ends.
func newNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	sh(t, "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	sh(t, "ip", "-n", name, "link", "set", "eth0p", "up")
	sh(t, "ip", "-n", name, "link", "set", "eth0", "up")
	return h
}

func addrs(t *testing.T, ns netns.NsHandle) map[string]bool {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	list, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, a := range list {
		out[a.IPNet.String()] = true
	}
	return out
}

var testVIPs = []vip.VIP{
	{Interface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.100/24")},
	{Interface: "eth0", Prefix: netip.MustParsePrefix("2001:db8::100/64")},
}

func TestCleanup(t *testing.T) {
	requireRoot(t)
	name := "ikfo-" + suffix(t)
	ns := newNS(t, name)
	// What a dead daemon left, and the node's own address.
	sh(t, "ip", "-n", name, "addr", "add", "192.0.2.2/24", "dev", "eth0")
	sh(t, "ip", "-n", name, "addr", "add", "192.0.2.100/24", "dev", "eth0")
	sh(t, "ip", "-n", name, "addr", "add", "2001:db8::100/64", "dev", "eth0", "nodad")
	flushed := 0
	flush := func(context.Context) error { flushed++; return nil }
	ctx := context.Background()
	if err := cleanup(ctx, vip.Config{VIPs: testVIPs, NetNS: "/var/run/netns/" + name, Log: quiet()}, flush); err != nil {
		t.Fatal(err)
	}
	a := addrs(t, ns)
	if a["192.0.2.100/24"] || a["2001:db8::100/64"] || !a["192.0.2.2/24"] || flushed != 1 {
		t.Fatalf("after cleanup: addresses %v, flushes %d", a, flushed)
	}
	// Nothing left: still fine (every start runs it).
	if err := cleanup(ctx, vip.Config{VIPs: testVIPs, NetNS: "/var/run/netns/" + name, Log: quiet()}, flush); err != nil || flushed != 2 {
		t.Fatalf("second cleanup: %v, flushes %d", err, flushed)
	}
	// A failing flush is reported, and the VIPs are removed anyway.
	sh(t, "ip", "-n", name, "addr", "add", "192.0.2.100/24", "dev", "eth0")
	err := cleanup(ctx, vip.Config{VIPs: testVIPs, NetNS: "/var/run/netns/" + name, Log: quiet()}, func(context.Context) error { return errors.New("xfrm: permission denied") })
	if err == nil || !strings.Contains(err.Error(), "flush data plane: xfrm: permission denied") {
		t.Fatalf("cleanup with failing flush: %v", err)
	}
	if addrs(t, ns)["192.0.2.100/24"] {
		t.Fatal("VIP left behind when the flush failed")
	}
	// A bad VIP list is reported, and the flush still runs.
	flushed = 0
	err = Cleanup(ctx, []vip.VIP{{Interface: "", Prefix: netip.MustParsePrefix("192.0.2.1/24")}}, flush)
	if !errors.Is(err, vip.ErrBadVIP) || flushed != 1 {
		t.Fatalf("cleanup with a bad VIP: %v, flushes %d", err, flushed)
	}
}

// TestCleanupAfterSIGKILL models a daemon-only death: a process claims the
// VIPs and is killed with SIGKILL; the addresses stay behind (the kernel
// keeps them, the node would still answer ARP for them) until Cleanup.
func TestCleanupAfterSIGKILL(t *testing.T) {
	requireRoot(t)
	name := "ikfo-" + suffix(t)
	ns := newNS(t, name)
	cmd := exec.Command("ip", "netns", "exec", name, os.Args[0], "-test.run=^TestHelperClaimAndWait$")
	cmd.Env = append(os.Environ(), "IKFO_HELPER_NS="+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make([]byte, 8)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "claimed\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	a := addrs(t, ns)
	if !a["192.0.2.100/24"] || !a["2001:db8::100/64"] {
		t.Fatalf("the killed process's VIPs are gone already (%v): the test would prove nothing", a)
	}
	// What `ikegwd cleanup` does, run in the node's namespace.
	start := time.Now()
	c := exec.Command("ip", "netns", "exec", name, os.Args[0], "-test.run=^TestHelperClaimAndWait$")
	c.Env = append(os.Environ(), "IKFO_HELPER_NS="+name, "IKFO_HELPER_CLEANUP=1")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("cleanup process: %v\n%s", err, out)
	}
	t.Logf("cleanup process took %v", time.Since(start).Round(time.Millisecond))
	a = addrs(t, ns)
	if a["192.0.2.100/24"] || a["2001:db8::100/64"] {
		t.Fatalf("VIPs left after cleanup: %v", a)
	}
}

// TestHelperClaimAndWait is the "daemon" of TestCleanupAfterSIGKILL (and
// its cleanup command); it does nothing unless run by it.
func TestHelperClaimAndWait(t *testing.T) {
	name := os.Getenv("IKFO_HELPER_NS")
	if name == "" {
		t.Skip("helper process for TestCleanupAfterSIGKILL")
	}
	// Started by `ip netns exec`, like ikegwd in the lab: the process's own
	// namespace (Config.NetNS empty).
	if os.Getenv("IKFO_HELPER_CLEANUP") != "" {
		if err := Cleanup(context.Background(), testVIPs, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
		return
	}
	m, err := vip.New(vip.Config{VIPs: testVIPs, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("claimed\n")
	time.Sleep(time.Minute) // killed long before
}
