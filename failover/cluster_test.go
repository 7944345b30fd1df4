package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
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

// The cluster's defaults: lease 500ms, heartbeat and election timeout 1s.
const lease, heartbeat = 500 * time.Millisecond, time.Second

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
	id     string
	mac    string // of eth0
	role   cluster.Role
	nsPath string
	trans  *raft.InmemTransport
	node   *cluster.Node
	mgr    *vip.Manager
	hold   *holdLog
	lead   *lossLog
	m      *role.Machine
}

// gwCluster is a cluster of real Raft nodes over the in-memory transport,
// each with a role machine and real VIPs in a namespace of its own.
type gwCluster struct {
	t      *testing.T
	gws    []*gw
	peerNS string // the peer on the outside segment (bridge br0)

	smu                       sync.Mutex
	samples, skipped, overlap int
	bad                       []string
	holdersNow                []string
	stopSampling              context.CancelFunc
	sampled                   chan struct{}
}

// lockedBuf collects the logs of a test, printed only if it fails.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func failLog(t *testing.T) *slog.Logger {
	buf := &lockedBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			buf.mu.Lock()
			t.Logf("logs:\n%s", buf.b.String())
			buf.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newGWCluster(t *testing.T, roles []cluster.Role, cb func(*gw) role.Callbacks) *gwCluster {
	t.Helper()
	s := suffix(t)
	log := failLog(t)
	sealer, err := store.NewSealer(bytes.Repeat([]byte{9}, store.ClusterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	c := &gwCluster{t: t, peerNS: "ikfo-" + s + "-p"}
	// The outside segment: a bridge in the peer's namespace, every
	// gateway's eth0 plugged into it.
	newNS(t, c.peerNS)
	sh(t, "ip", "-n", c.peerNS, "link", "del", "eth0")
	sh(t, "ip", "-n", c.peerNS, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", c.peerNS, "addr", "add", "192.0.2.1/24", "dev", "br0")
	sh(t, "ip", "-n", c.peerNS, "addr", "add", "2001:db8::1/64", "dev", "br0", "nodad")
	sh(t, "ip", "-n", c.peerNS, "link", "set", "br0", "up")
	var peers []cluster.Peer
	for i, r := range roles {
		id := fmt.Sprintf("g%d", i+1)
		peers = append(peers, cluster.Peer{ID: id, Address: id, Role: r})
		name := fmt.Sprintf("ikfo-%s-%d", s, i+1)
		ns := newNS(t, name)
		port := "p" + id
		sh(t, "ip", "-n", name, "link", "set", "eth0p", "netns", c.peerNS, "name", port)
		sh(t, "ip", "-n", c.peerNS, "link", "set", port, "master", "br0")
		sh(t, "ip", "-n", c.peerNS, "link", "set", port, "up")
		nh, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatal(err)
		}
		link, err := nh.LinkByName("eth0")
		nh.Close()
		if err != nil {
			t.Fatal(err)
		}
		c.gws = append(c.gws, &gw{id: id, role: r, nsPath: "/var/run/netns/" + name, mac: link.Attrs().HardwareAddr.String()})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		runs.Wait()
		if c.sampled != nil {
			<-c.sampled
		}
		for _, g := range c.gws {
			if g.node != nil {
				g.node.Shutdown()
			}
			if g.mgr != nil {
				g.mgr.Close()
			}
		}
	})
	for _, g := range c.gws {
		_, g.trans = raft.NewInmemTransport(raft.ServerAddress(g.id))
		db, err := store.Open(filepath.Join(t.TempDir(), "sa.db"), sealer)
		if err != nil {
			t.Fatal(err)
		}
		ls := raft.NewInmemStore()
		g.node, err = cluster.New(cluster.Config{NodeID: g.id, Role: g.role, Peers: peers, Log: log.With("node", g.id), LeaderLeaseTimeout: lease, HeartbeatTimeout: heartbeat, ElectionTimeout: heartbeat},
			cluster.Deps{DB: db, Sealer: sealer, Logs: ls, Stable: ls, Snapshots: raft.NewInmemSnapshotStore(), Transport: g.trans, Close: db.Close})
		if err != nil {
			t.Fatal(err)
		}
		g.mgr, err = vip.New(vip.Config{VIPs: testVIPs, NetNS: g.nsPath, Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		g.hold = &holdLog{mgr: g.mgr}
		g.lead = &lossLog{Leadership: NewLeadership(g.node)}
		var callbacks role.Callbacks
		if cb != nil {
			callbacks = cb(g)
		}
		// A witness gets VIPs too, to show it never claims them.
		g.m, err = role.New(role.Config{Witness: g.role == cluster.RoleWitness, Lease: lease, Log: log.With("node", g.id)}, g.lead, g.hold, callbacks)
		if err != nil {
			t.Fatal(err)
		}
	}
	c.connect()
	for _, g := range c.gws {
		runs.Add(1)
		go func() { defer runs.Done(); g.m.Run(ctx) }()
	}
	c.startSampler(ctx)
	return c
}

func (c *gwCluster) connect() {
	for _, a := range c.gws {
		for _, b := range c.gws {
			if a != b {
				a.trans.Connect(raft.ServerAddress(b.id), b.trans)
			}
		}
	}
}

func (c *gwCluster) isolate(x *gw) {
	for _, o := range c.gws {
		if o != x {
			x.trans.Disconnect(raft.ServerAddress(o.id))
			o.trans.Disconnect(raft.ServerAddress(x.id))
		}
	}
}

// startSampler checks every 5 ms who holds a VIP. A sweep that took longer
// than 50 ms (the process was descheduled) proves nothing and is skipped;
// the hold intervals (checkDisjoint) cover that time.
func (c *gwCluster) startSampler(ctx context.Context) {
	sctx, stop := context.WithCancel(ctx)
	c.stopSampling = stop
	c.sampled = make(chan struct{})
	go func() {
		defer close(c.sampled)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tk.C:
			}
			t0 := time.Now()
			var hs []string
			for _, g := range c.gws {
				held, err := g.mgr.Held()
				if err == nil && len(held) > 0 {
					hs = append(hs, g.id)
				}
			}
			c.smu.Lock()
			if time.Since(t0) > 50*time.Millisecond {
				c.skipped++
			} else {
				c.samples++
				c.holdersNow = hs
				if len(hs) > 1 {
					c.overlap++
					c.bad = append(c.bad, fmt.Sprintf("%s: %v", t0.Format("15:04:05.000"), hs))
				}
			}
			c.smu.Unlock()
		}
	}()
}

func (c *gwCluster) holders() []string {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.holdersNow
}

func (c *gwCluster) active() *gw {
	for _, g := range c.gws {
		if g.m.State() == role.Active {
			return g
		}
	}
	return nil
}

func (c *gwCluster) waitFor(what string, d time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitActive waits for exactly one active node, seen holding the VIPs by
// the sampler, and returns it.
func (c *gwCluster) waitActive(what string, not *gw) *gw {
	c.t.Helper()
	c.waitFor(what, 20*time.Second, func() bool {
		a, h := c.active(), c.holders()
		return a != nil && a != not && len(h) == 1 && h[0] == a.id
	})
	return c.active()
}

// finish stops the sampler and checks: no sample with two holders, enough
// samples, disjoint hold intervals, no witness ever claimed.
func (c *gwCluster) finish() {
	t := c.t
	t.Helper()
	c.stopSampling()
	<-c.sampled
	c.smu.Lock()
	defer c.smu.Unlock()
	t.Logf("%d samples every 5 ms, %d skipped (slow sweep), %d with two holders", c.samples, c.skipped, c.overlap)
	if c.overlap > 0 {
		t.Fatalf("VIP ownership overlapped: %v", c.bad)
	}
	if c.samples < 100 {
		t.Fatalf("only %d samples: the sampler did not run", c.samples)
	}
	for i, a := range c.gws {
		if a.role == cluster.RoleWitness && len(a.hold.intervals()) > 0 {
			t.Errorf("witness %s claimed the VIPs: %v", a.id, a.hold.intervals())
		}
		for _, b := range c.gws[i+1:] {
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

// TestPartitionedLeaderNeverOverlaps cuts the active node off, twice, and
// samples VIP ownership on every node every 5 ms: never two holders at
// once, and the cut node drops its VIPs before any other node claims them
// and before the heartbeat timeout.
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
	c := newGWCluster(t, roles, nil)
	for round := 1; round <= 2; round++ {
		old := c.waitActive("one active node holding the VIPs", nil)
		if roles[2] == cluster.RoleWitness && old.id == "g1" {
			// Known cluster limitation (reported): without membership a
			// witness leader offers leadership to the gateways in
			// configuration order, retries the first (cut) one after each
			// transfer timeout, and never reaches the second. Cut g2 instead:
			// hand the active role to it first.
			if err := old.m.Handover(context.Background()); err != nil {
				t.Fatalf("round %d: handover from g1: %v", round, err)
			}
			old = c.waitActive("g2 active after the handover", old)
		}
		if !old.node.IsLeaderReady() {
			t.Fatalf("round %d: active node %s is not the Raft leader", round, old.id)
		}
		cut := time.Now()
		c.isolate(old)
		next := c.waitActive("another node to become active", old)
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
		c.connect()
		c.waitFor("the old node to follow", 20*time.Second, func() bool { return old.node.Stats().LeaderID == next.id })
		time.Sleep(200 * time.Millisecond)
	}
	c.finish()
}

// TestHandoverMovesActive: a planned handover (ikegwd SIGTERM) moves the
// active role to another gateway, never to the witness, without overlap.
func TestHandoverMovesActive(t *testing.T) {
	requireRoot(t)
	c := newGWCluster(t, []cluster.Role{cluster.RoleGateway, cluster.RoleWitness, cluster.RoleGateway}, nil)
	for range 2 {
		old := c.waitActive("one active node", nil)
		start := time.Now()
		if err := old.m.Handover(context.Background()); err != nil {
			t.Fatalf("handover from %s: %v", old.id, err)
		}
		next := c.waitActive("another gateway to become active", old)
		if next.role != cluster.RoleGateway {
			t.Fatalf("handover went to %s (%s)", next.id, next.role)
		}
		t.Logf("handover %s -> %s: active after %v", old.id, next.id, time.Since(start).Round(time.Millisecond))
	}
	c.finish()
}

// TestFailedTakeoverStepsDown: a gateway whose takeover callback fails
// hands leadership to the other gateway, which becomes active.
func TestFailedTakeoverStepsDown(t *testing.T) {
	requireRoot(t)
	var (
		mu     sync.Mutex
		broken string // the node whose takeover fails
		failed int
	)
	c := newGWCluster(t, []cluster.Role{cluster.RoleGateway, cluster.RoleGateway, cluster.RoleWitness}, func(g *gw) role.Callbacks {
		return role.Callbacks{OnActivate: func(ctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if broken == "" {
				broken = g.id // the first node to try
			}
			if g.id == broken {
				failed++
				return errors.New("install SAs: data plane unavailable")
			}
			return nil
		}}
	})
	a := c.waitActive("the healthy gateway to become active", nil)
	mu.Lock()
	bad, n := broken, failed
	mu.Unlock()
	if a.id == bad || n == 0 {
		t.Fatalf("active %s, broken %s, failed takeovers %d", a.id, bad, n)
	}
	if !a.node.IsLeaderReady() {
		t.Fatalf("active %s is not the leader", a.id)
	}
	c.finish()
}

func durOrNone(x, t0 time.Time) string {
	if x.IsZero() {
		return "none"
	}
	return x.Sub(t0).Round(time.Millisecond).String()
}

// peerNeigh is the peer's neighbour entry (MAC) for ip on br0.
func (c *gwCluster) peerNeigh(ip netip.Addr) string {
	c.t.Helper()
	ns, err := netns.GetFromName(c.peerNS)
	if err != nil {
		c.t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		c.t.Fatal(err)
	}
	defer h.Close()
	br, err := h.LinkByName("br0")
	if err != nil {
		c.t.Fatal(err)
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	list, err := h.NeighList(br.Attrs().Index, fam)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && n.HardwareAddr != nil {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

func (c *gwCluster) ping(ip netip.Addr) error {
	// Up to three echo requests; one reply is enough (ping exits 0). A
	// first request lost while the new node resolves the peer (seen once
	// on a loaded machine) is not what these tests are about.
	out, err := exec.Command("ip", "netns", "exec", c.peerNS, "ping", "-c", "3", "-i", "0.2", "-W", "2", ip.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from the peer: %v\n%s", ip, err, out)
	}
	return nil
}

// TestTakeoverReachesPeer is the point of the announcements, driven by the
// whole machinery: the peer talks to the active gateway's VIPs; the active
// is cut off from the cluster; once the next gateway takes over, the peer's
// ARP and neighbour entries name the new gateway's MAC and its pings reach
// it.
func TestTakeoverReachesPeer(t *testing.T) {
	requireRoot(t)
	c := newGWCluster(t, []cluster.Role{cluster.RoleGateway, cluster.RoleGateway, cluster.RoleGateway}, nil)
	old := c.waitActive("one active node", nil)
	for _, v := range testVIPs {
		if err := c.ping(v.Addr()); err != nil {
			t.Fatal(err)
		}
		if mac := c.peerNeigh(v.Addr()); mac != old.mac {
			t.Fatalf("peer's entry for %s is %q, want the active %s's %s", v.Addr(), mac, old.id, old.mac)
		}
	}
	c.isolate(old)
	next := c.waitActive("another node to become active", old)
	for _, v := range testVIPs {
		c.waitFor(fmt.Sprintf("peer's entry for %s to name %s", v.Addr(), next.id), 5*time.Second, func() bool {
			return c.peerNeigh(v.Addr()) == next.mac
		})
		if err := c.ping(v.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("peer's entries moved from %s (%s) to %s (%s)", old.id, old.mac, next.id, next.mac)
	c.finish()
}
