package failover

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/cluster"
	"ikegw/failover/role"
	"ikegw/failover/vip"
	"ikegw/store"
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
	if err := cleanup(ctx, vip.Config{VIPs: testVIPs, NetNS: ns, Log: quiet()}, flush); err != nil {
		t.Fatal(err)
	}
	a := addrs(t, ns)
	if a["192.0.2.100/24"] || a["2001:db8::100/64"] || !a["192.0.2.2/24"] || flushed != 1 {
		t.Fatalf("after cleanup: addresses %v, flushes %d", a, flushed)
	}
	// Nothing left: still fine (every start runs it).
	if err := cleanup(ctx, vip.Config{VIPs: testVIPs, NetNS: ns, Log: quiet()}, flush); err != nil || flushed != 2 {
		t.Fatalf("second cleanup: %v, flushes %d", err, flushed)
	}
	// A failing flush is reported, and the VIPs are removed anyway.
	sh(t, "ip", "-n", name, "addr", "add", "192.0.2.100/24", "dev", "eth0")
	err := cleanup(ctx, vip.Config{VIPs: testVIPs, NetNS: ns, Log: quiet()}, func(context.Context) error { return errors.New("xfrm: permission denied") })
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

// holdLog wraps a VIP manager and records, conservatively, when this node
// may have held the VIPs: from the start of a Claim to the end of the
// Release that follows.
type holdLog struct {
	mgr *vip.Manager
	mu  sync.Mutex
	on  bool
	iv  [][2]time.Time
}

func (h *holdLog) Claim(ctx context.Context) error {
	h.mu.Lock()
	if !h.on {
		h.on = true
		h.iv = append(h.iv, [2]time.Time{time.Now()})
	}
	h.mu.Unlock()
	return h.mgr.Claim(ctx)
}

func (h *holdLog) Release(ctx context.Context) error {
	err := h.mgr.Release(ctx)
	h.mu.Lock()
	if h.on && err == nil {
		h.on = false
		h.iv[len(h.iv)-1][1] = time.Now()
	}
	h.mu.Unlock()
	return err
}

func (h *holdLog) intervals() [][2]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([][2]time.Time, len(h.iv))
	copy(out, h.iv)
	return out
}

// lossLog wraps the cluster adapter and timestamps leadership-loss events.
type lossLog struct {
	*Leadership
	mu   sync.Mutex
	lost []time.Time
}

func (l *lossLog) Subscribe(ctx context.Context) <-chan role.Event {
	in := l.Leadership.Subscribe(ctx)
	out := make(chan role.Event, 64)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-in:
				if !ev.Leader {
					l.mu.Lock()
					l.lost = append(l.lost, time.Now())
					l.mu.Unlock()
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func (l *lossLog) firstLossAfter(t0 time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lost {
		if x.After(t0) {
			return x
		}
	}
	return time.Time{}
}

type gw struct {
	id    string
	ns    netns.NsHandle
	trans *raft.InmemTransport
	node  *cluster.Node
	mgr   *vip.Manager
	hold  *holdLog
	lead  *lossLog
	m     *role.Machine
}

// TestPartitionedLeaderNeverOverlaps runs three gateways (real Raft over
// the in-memory transport, real VIPs in one namespace per node), cuts the
// active node off twice, and samples VIP ownership on every node every
// 5 ms: never two holders at once, and the cut node drops its VIPs before
// any other node claims them.
func TestPartitionedLeaderNeverOverlaps(t *testing.T) {
	requireRoot(t)
	t.Run("3 gateways", func(t *testing.T) {
		partitionTest(t, []cluster.Role{cluster.RoleGateway, cluster.RoleGateway, cluster.RoleGateway})
	})
	t.Run("2 gateways and a witness", func(t *testing.T) {
		partitionTest(t, []cluster.Role{cluster.RoleGateway, cluster.RoleGateway, cluster.RoleWitness})
	})
}

func partitionTest(t *testing.T, roles []cluster.Role) {
	s := suffix(t)
	sealer, err := store.NewSealer(bytes.Repeat([]byte{9}, store.ClusterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	// The cluster's defaults: lease 500ms, heartbeat and election timeout 1s.
	const lease, heartbeat = 500 * time.Millisecond, time.Second
	var gws []*gw
	var peers []cluster.Peer
	for i, r := range roles {
		id := fmt.Sprintf("g%d", i+1)
		peers = append(peers, cluster.Peer{ID: id, Address: id, Role: r})
		g := &gw{id: id, ns: newNS(t, fmt.Sprintf("ikfo-%s-%d", s, i+1))}
		gws = append(gws, g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		runs.Wait()
		for _, g := range gws {
			if g.node != nil {
				g.node.Shutdown()
			}
			if g.mgr != nil {
				g.mgr.Close()
			}
		}
	})
	for i, g := range gws {
		_, g.trans = raft.NewInmemTransport(raft.ServerAddress(g.id))
		db, err := store.Open(filepath.Join(t.TempDir(), "sa.db"), sealer)
		if err != nil {
			t.Fatal(err)
		}
		ls := raft.NewInmemStore()
		g.node, err = cluster.New(cluster.Config{NodeID: g.id, Role: roles[i], Peers: peers, Log: quiet(), LeaderLeaseTimeout: lease, HeartbeatTimeout: heartbeat, ElectionTimeout: heartbeat},
			cluster.Deps{DB: db, Sealer: sealer, Logs: ls, Stable: ls, Snapshots: raft.NewInmemSnapshotStore(), Transport: g.trans, Close: db.Close})
		if err != nil {
			t.Fatal(err)
		}
		g.mgr, err = vip.New(vip.Config{VIPs: testVIPs, NetNS: g.ns, Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		g.hold = &holdLog{mgr: g.mgr}
		g.lead = &lossLog{Leadership: NewLeadership(g.node)}
		// A witness gets VIPs too, to show it never claims them.
		g.m, err = role.New(role.Config{Witness: roles[i] == cluster.RoleWitness, Lease: lease, Log: quiet()}, g.lead, g.hold, role.Callbacks{})
		if err != nil {
			t.Fatal(err)
		}
	}
	connect := func() {
		for _, a := range gws {
			for _, b := range gws {
				if a != b {
					a.trans.Connect(raft.ServerAddress(b.id), b.trans)
				}
			}
		}
	}
	connect()
	for _, g := range gws {
		runs.Add(1)
		go func() { defer runs.Done(); g.m.Run(ctx) }()
	}

	// The sampler: every 5 ms, who holds a VIP. A sweep that took longer
	// than 50 ms (the process was descheduled) proves nothing and is
	// skipped; the hold intervals below cover it.
	type sample struct {
		at      time.Time
		holders []string
	}
	var (
		smu                       sync.Mutex
		samples, skipped, overlap int
		bad                       []sample
		holdersNow                []string
	)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-tk.C:
			}
			t0 := time.Now()
			var hs []string
			for _, g := range gws {
				held, err := g.mgr.Held()
				if err != nil {
					continue
				}
				if len(held) > 0 {
					hs = append(hs, g.id)
				}
			}
			smu.Lock()
			if time.Since(t0) > 50*time.Millisecond {
				skipped++
			} else {
				samples++
				holdersNow = hs
				if len(hs) > 1 {
					overlap++
					bad = append(bad, sample{t0, hs})
				}
			}
			smu.Unlock()
		}
	}()
	holder := func() []string {
		smu.Lock()
		defer smu.Unlock()
		return holdersNow
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s", d, what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	active := func() *gw {
		for _, g := range gws {
			if g.m.State() == role.Active {
				return g
			}
		}
		return nil
	}

	for round := 1; round <= 2; round++ {
		waitFor("one active node holding the VIPs", 20*time.Second, func() bool {
			h := holder()
			return active() != nil && len(h) == 1 && h[0] == active().id
		})
		old := active()
		if !old.node.IsLeaderReady() {
			t.Fatalf("round %d: active node %s is not the Raft leader", round, old.id)
		}
		// Cut the active node off from both others.
		cut := time.Now()
		for _, o := range gws {
			if o != old {
				old.trans.Disconnect(raft.ServerAddress(o.id))
				o.trans.Disconnect(raft.ServerAddress(old.id))
			}
		}
		waitFor("another node to become active", 20*time.Second, func() bool {
			a := active()
			return a != nil && a != old
		})
		next := active()
		oldIv, nextIv := old.hold.intervals(), next.hold.intervals()
		released := oldIv[len(oldIv)-1][1]
		claimed := nextIv[len(nextIv)-1][0]
		if released.IsZero() || !released.Before(claimed) {
			t.Fatalf("round %d: %s released at %v, %s claimed at %v", round, old.id, released, next.id, claimed)
		}
		// The bound that matters: gone before the earliest possible new
		// leader (heartbeat timeout after the last contact).
		if d := released.Sub(cut); d >= heartbeat {
			t.Errorf("round %d: the cut node released %v after the cut; lease %v, heartbeat timeout %v", round, d, lease, heartbeat)
		}
		lost := old.lead.firstLossAfter(cut)
		t.Logf("round %d: cut %s at 0; it released its VIPs at +%v (raft step-down event at +%v); %s claimed at +%v",
			round, old.id, released.Sub(cut).Round(time.Millisecond), durOrNone(lost, cut), next.id, claimed.Sub(cut).Round(time.Millisecond))
		if old.m.State() == role.Active {
			t.Fatalf("round %d: cut node still active", round)
		}
		// Heal; the old node comes back as a follower.
		connect()
		waitFor("the old node to follow", 20*time.Second, func() bool { return old.node.Stats().LeaderID == next.id })
		time.Sleep(200 * time.Millisecond)
	}
	stopSampling()
	<-sampled
	for i, g := range gws {
		if roles[i] == cluster.RoleWitness && len(g.hold.intervals()) > 0 {
			t.Errorf("witness %s claimed the VIPs: %v", g.id, g.hold.intervals())
		}
	}

	smu.Lock()
	defer smu.Unlock()
	t.Logf("%d samples every 5 ms, %d skipped (slow sweep), %d with two holders", samples, skipped, overlap)
	if overlap > 0 {
		t.Fatalf("VIP ownership overlapped: %v", bad)
	}
	if samples < 100 {
		t.Fatalf("only %d samples: the sampler did not run", samples)
	}
	// Every pair of hold intervals of different nodes is disjoint.
	for i, a := range gws {
		for _, b := range gws[i+1:] {
			for _, x := range a.hold.intervals() {
				for _, y := range b.hold.intervals() {
					xEnd, yEnd := x[1], y[1]
					if xEnd.IsZero() {
						xEnd = time.Now()
					}
					if yEnd.IsZero() {
						yEnd = time.Now()
					}
					if x[0].Before(yEnd) && y[0].Before(xEnd) {
						t.Errorf("%s held %v..%v and %s held %v..%v", a.id, x[0], x[1], b.id, y[0], y[1])
					}
				}
			}
		}
	}
}

func durOrNone(x, t0 time.Time) string {
	if x.IsZero() {
		return "none"
	}
	return x.Sub(t0).Round(time.Millisecond).String()
}
