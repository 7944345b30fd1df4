package vip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"ikegw/xfrm/userspace"
)

// TestForwardRoutes checks standby forwarding in a namespace: Release
// routes the prefixes via the VIP (and drops a stale neighbour entry for
// it), Claim removes the routes, SetForward swaps them while not claimed,
// and nothing else in the routing table is touched.
func TestForwardRoutes(t *testing.T) {
	requireRoot(t)
	ns := fwdNS(t, "ikfw-")
	sh(t, "ip", "-n", ns, "addr", "add", "fd00:9::2/64", "dev", "in0", "nodad")
	// An administrator's route to a forwarded prefix in the main table: it
	// must survive everything, and lose to forwarding while not holding.
	sh(t, "ip", "-n", ns, "route", "add", "10.51.0.0/16", "via", "10.9.0.254", "dev", "in0")
	// The userspace data plane's table (a route through its TUN device,
	// here a veth) and rule, as a node that still has its pairs after the
	// release has them: forwarding must win over it too.
	dp := fmt.Sprint(userspace.DefaultRouteTable)
	sh(t, "ip", "-n", ns, "link", "add", "tun9", "type", "veth", "peer", "name", "tun9p")
	sh(t, "ip", "-n", ns, "link", "set", "tun9", "up")
	sh(t, "ip", "-n", ns, "route", "add", "10.50.0.0/16", "dev", "tun9", "table", dp)
	sh(t, "ip", "-n", ns, "rule", "add", "priority", fmt.Sprint(userspace.DefaultRulePriority), "lookup", dp)
	// A rule an older release left at the old priority is removed.
	sh(t, "ip", "-n", ns, "rule", "add", "priority", "4501", "lookup", "4501")
	v4 := VIP{Interface: "in0", Prefix: netip.MustParsePrefix("10.9.0.1/16")}
	v6 := VIP{Interface: "in0", Prefix: netip.MustParsePrefix("fd00:9::1/64")}
	fwd := map[netip.Addr][]netip.Prefix{
		v4.Addr(): {netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("10.51.0.0/16")},
		v6.Addr(): {netip.MustParsePrefix("fd00:50::/48")},
	}
	m := newManager(t, Config{VIPs: []VIP{v4, v6}, NetNS: nsPath(ns), Announce: Announce{Count: -1}, Forward: fwd})
	ctx := context.Background()
	routes := func() string {
		t.Helper()
		return sh(t, "ip", "-n", ns, "route", "show", "table", "4501") + sh(t, "ip", "-n", ns, "-6", "route", "show", "table", "4501")
	}
	want := []string{"10.50.0.0/16 via 10.9.0.1 dev in0 proto 245", "10.51.0.0/16 via 10.9.0.1 dev in0 proto 245", "fd00:50::/48 via fd00:9::1 dev in0 proto 245"}
	has := func(label, out string, lines []string, present bool) {
		t.Helper()
		for _, w := range lines {
			if strings.Contains(out, w) != present {
				t.Errorf("%s: route %q present=%v, want %v in:\n%s", label, w, !present, present, out)
			}
		}
	}
	sh(t, "ip", "-n", ns, "neigh", "replace", "10.9.0.1", "lladdr", "02:00:00:00:00:01", "dev", "in0", "nud", "stale")
	must(t, m.Release(ctx))
	has("after release", routes(), want, true)
	if out := sh(t, "ip", "-n", ns, "neigh", "show", "10.9.0.1", "dev", "in0"); strings.Contains(out, "02:00:00:00:00:01") {
		t.Errorf("stale neighbour entry for the VIP kept after release: %s", out)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := sh(t, "ip", "-n", ns, fam, "rule", "show", "priority", "4499"); !strings.Contains(out, "lookup 4501") {
			t.Errorf("no %s rule consulting table 4501 before main: %q", fam, out)
		}
	}
	if out := sh(t, "ip", "-n", ns, "rule", "show", "priority", "4501"); strings.TrimSpace(out) != "" {
		t.Errorf("the older release's rule is left: %q", out)
	}
	// Neither the administrator's route in main nor the data plane's
	// table wins over forwarding.
	if out := sh(t, "ip", "-n", ns, "route", "get", "10.51.1.1"); !strings.Contains(out, "via 10.9.0.1") {
		t.Errorf("a standby routes a forwarded prefix elsewhere: %q", out)
	}
	if out := sh(t, "ip", "-n", ns, "route", "get", "10.50.1.1"); !strings.Contains(out, "via 10.9.0.1") {
		t.Errorf("a standby routes a forwarded prefix into its data plane's table: %q", out)
	}
	must(t, m.Release(ctx)) // idempotent
	has("after a second release", routes(), want, true)
	// The forwarding routes go before the VIP is added: in between,
	// packets that waited for the VIP's owner would follow them back to
	// this node's own address instead of into its data plane.
	mon := startMonitor(t, ns)
	must(t, m.Claim(ctx))
	// A marker route after the claim: once the monitor shows it, it has
	// shown everything the claim did.
	sh(t, "ip", "-n", ns, "route", "add", "10.77.0.0/16", "dev", "in0", "table", "77")
	events := mon.until(t, "10.77.0.0/16")
	fwdGone := strings.Index(events, "Deleted 10.50.0.0/16 via 10.9.0.1")
	vipAdded := strings.Index(events, "inet 10.9.0.1/16")
	if fwdGone < 0 || vipAdded < 0 || fwdGone > vipAdded {
		t.Errorf("claim: the forwarding route must go (at %d) before the VIP comes (at %d):\n%s", fwdGone, vipAdded, events)
	}
	has("after claim", routes(), want, false)
	if out := sh(t, "ip", "-n", ns, "route", "get", "10.51.1.1"); !strings.Contains(out, "via 10.9.0.254") {
		t.Errorf("the holder does not use the main table's route: %q", out)
	}
	if out := sh(t, "ip", "-n", ns, "route", "get", "10.50.1.1"); !strings.Contains(out, "dev tun9") {
		t.Errorf("the holder does not use its data plane's table: %q", out)
	}
	if out := sh(t, "ip", "-n", ns, "route", "show", "10.51.0.0/16"); !strings.Contains(out, "via 10.9.0.254") {
		t.Errorf("the administrator's route is gone: %q", out)
	}
	// While claimed, a change is only remembered.
	must(t, m.SetForward(map[netip.Addr][]netip.Prefix{v4.Addr(): {netip.MustParsePrefix("10.60.0.0/16")}}))
	if out := routes(); strings.TrimSpace(out) != "" {
		t.Errorf("SetForward while claimed added routes:\n%s", out)
	}
	must(t, m.Release(ctx))
	has("after release with the new set", routes(), []string{"10.60.0.0/16 via 10.9.0.1 dev in0 proto 245"}, true)
	has("after release with the new set", routes(), want, false)
	// While released, a change applies at once.
	must(t, m.SetForward(fwd))
	has("after SetForward back", routes(), want, true)
	has("after SetForward back", routes(), []string{"10.60.0.0/16"}, false)
	if out := sh(t, "ip", "-n", ns, "route", "show", "10.51.0.0/16"); !strings.Contains(out, "via 10.9.0.254") {
		t.Errorf("the administrator's route is gone: %q", out)
	}
}

func TestForwardRefused(t *testing.T) {
	v4 := VIP{Interface: "in0", Prefix: netip.MustParsePrefix("10.9.0.1/16")}
	for _, tc := range []struct {
		fwd  map[netip.Addr][]netip.Prefix
		want string
	}{
		{map[netip.Addr][]netip.Prefix{v4.Addr(): {netip.MustParsePrefix("0.0.0.0/0")}}, "default route"},
		{map[netip.Addr][]netip.Prefix{v4.Addr(): {netip.MustParsePrefix("fd00::/8")}}, "address family"},
		{map[netip.Addr][]netip.Prefix{v4.Addr(): {netip.MustParsePrefix("10.0.0.0/8")}}, "contains the VIP"},
		{map[netip.Addr][]netip.Prefix{v4.Addr(): {{}}}, "invalid prefix"},
		{map[netip.Addr][]netip.Prefix{netip.MustParseAddr("10.9.0.7"): {netip.MustParsePrefix("10.50.0.0/16")}}, "not a configured VIP"},
	} {
		_, err := New(Config{VIPs: []VIP{v4}, Forward: tc.fwd, Log: quiet()})
		if !errors.Is(err, ErrBadVIP) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("forward %v: err %v, want ErrBadVIP mentioning %q", tc.fwd, err, tc.want)
		}
	}
}

// TestForwardRuleAlone: on a node that never ran an older release (no rule
// at the old priority) the release adds the forwarding rule and keeps it
// (removing the older release's rule must not remove it).
func TestForwardRuleAlone(t *testing.T) {
	requireRoot(t)
	ns := fwdNS(t, "ikfr-")
	v4 := VIP{Interface: "in0", Prefix: netip.MustParsePrefix("10.9.0.1/16")}
	m := newManager(t, Config{VIPs: []VIP{v4}, NetNS: nsPath(ns), Announce: Announce{Count: -1},
		Forward: map[netip.Addr][]netip.Prefix{v4.Addr(): {netip.MustParsePrefix("10.50.0.0/16")}}})
	must(t, m.Release(context.Background()))
	if out := sh(t, "ip", "-n", ns, "rule", "show", "priority", fmt.Sprint(ForwardRulePriority)); !strings.Contains(out, "lookup 4501") {
		t.Errorf("no rule consulting table 4501 after the release: %q (all: %s)", out, sh(t, "ip", "-n", ns, "rule"))
	}
	if out := sh(t, "ip", "-n", ns, "route", "get", "10.50.1.1"); !strings.Contains(out, "via 10.9.0.1") {
		t.Errorf("a standby does not forward: %q", out)
	}
}

// monitor is `ip monitor route address` in a namespace, read as it goes.
type monitor struct {
	mu  sync.Mutex
	out strings.Builder
}

// startMonitor starts the monitor and returns once it reports events (a
// marker route in table 76 seen).
func startMonitor(t *testing.T, ns string) *monitor {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-4", "monitor", "route", "address")
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &monitor{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			m.mu.Lock()
			m.out.WriteString(sc.Text() + "\n")
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done; _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		sh(t, "ip", "-n", ns, "route", "replace", fmt.Sprintf("10.76.%d.0/24", i%250), "dev", "lo", "table", "76")
		if strings.Contains(m.text(), "table 76") {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatal("ip monitor reports nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *monitor) text() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.String()
}

// until waits for marker in the events and returns them all.
func (m *monitor) until(t *testing.T, marker string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := m.text(); strings.Contains(s, marker) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("ip monitor did not report %q:\n%s", marker, m.text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fwdNS is a new namespace (named prefix + a random suffix) with an
// interface in0 (a veth, up) holding 10.9.0.2/16.
func fwdNS(t *testing.T, prefix string) string {
	t.Helper()
	ns := prefix + suffix(t)
	newNS(t, ns)
	sh(t, "ip", "-n", ns, "link", "add", "in0", "type", "veth", "peer", "name", "in0p")
	sh(t, "ip", "-n", ns, "link", "set", "in0p", "up")
	sh(t, "ip", "-n", ns, "link", "set", "in0", "up")
	sh(t, "ip", "-n", ns, "addr", "add", "10.9.0.2/16", "dev", "in0")
	return ns
}
