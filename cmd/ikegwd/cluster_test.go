package main

// Cluster tests: two ikegwd gateways and a witness in network namespaces,
// a strongSwan peer with a tunnel to the VIP, pings through the tunnel to
// the inside VIP (held by the active gateway), and the active killed.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/cluster/certs"
	"ikegw/cmd/api"
	"ikegw/deploy/lab"
	"ikegw/store"
)

var (
	vipOut  = netip.MustParsePrefix("192.0.2.10/24")
	vipIn   = netip.MustParsePrefix("10.1.0.1/24")
	peerOut = netip.MustParsePrefix("192.0.2.100/24")
)

type gwNode struct {
	name   string
	ns     *lab.NS
	addr   netip.Prefix // outside and cluster address
	cfg    string
	sock   string
	proc   *lab.Proc
	client *bed // for get/post on its admin socket
}

type clusterBed struct {
	t     *testing.T
	lab   *lab.Lab
	dir   string
	nodes []*gwNode // gateways first, witness last
	peer  *lab.NS
	swan  *lab.Swan
	pprot netip.Addr
	out   *lab.Bridge
}

func newClusterBed(t *testing.T) *clusterBed {
	lab.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := lab.NewT(t)
	cb := &clusterBed{t: t, lab: l, dir: t.TempDir()}
	br, err := l.NewBridge(ctx, "out")
	must(t, err)
	cb.out = br
	in, err := l.NewBridge(ctx, "in")
	must(t, err)
	if cb.peer, err = l.NewNS(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	_, err = br.Attach(ctx, cb.peer, "eth0")
	must(t, err)
	must(t, cb.peer.AddAddr(ctx, "eth0", peerOut))
	if cb.pprot, err = cb.peer.AddLoopbackAddr(ctx, peerNet); err != nil {
		t.Fatal(err)
	}
	must(t, os.MkdirAll(filepath.Join(cb.dir, "certs"), 0o700))
	ca, err := certs.GenerateCA(filepath.Join(cb.dir, "certs"), "ikegw test CA")
	must(t, err)
	must(t, store.GenerateClusterKey(filepath.Join(cb.dir, "cluster.key")))
	must(t, store.GenerateClusterKey(filepath.Join(cb.dir, "gossip.key")))
	must(t, os.WriteFile(filepath.Join(cb.dir, "psk"), []byte(interopPSK), 0o600))
	names := []string{"gw1", "gw2", "wit"}
	for i, name := range names {
		ns, err := l.NewNS(ctx, name)
		must(t, err)
		_, err = br.Attach(ctx, ns, "out0")
		must(t, err)
		addr := netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/24", 11+i))
		must(t, ns.AddAddr(ctx, "out0", addr))
		_, err = in.Attach(ctx, ns, "in0")
		must(t, err)
		must(t, ca.IssueNode(filepath.Join(cb.dir, "certs"), name, []string{name}, []net.IP{addr.Addr().AsSlice()}))
		cb.nodes = append(cb.nodes, &gwNode{name: name, ns: ns, addr: addr})
	}
	for i, n := range cb.nodes {
		role := "gateway"
		if i == len(cb.nodes)-1 {
			role = "witness"
		}
		var join []string
		for _, o := range cb.nodes {
			if o != n {
				join = append(join, fmt.Sprintf("%s:7401", o.addr.Addr()))
			}
		}
		tls := certs.NodeFiles(filepath.Join(cb.dir, "certs"), n.name)
		n.sock = filepath.Join(cb.dir, n.name+".sock")
		cfg := fmt.Sprintf(`node:
  name: %[1]s
  state_dir: %[2]s/%[1]s
  cluster_key_file: %[2]s/cluster.key
ike:
  listen: [%[3]s]
dataplane:
  kind: userspace
  counter_sync: 200ms
log:
  level: debug
admin:
  socket: %[4]s
cluster:
  role: %[5]s
  raft_bind: %[6]s:7400
  gossip_bind: %[6]s:7401
  gossip_key_file: %[2]s/gossip.key
  join: [%[7]s]
  bootstrap_expect: 3
  tls: {ca: %[8]s, cert: %[9]s, key: %[10]s}
  local_timings: true
  heartbeat_timeout: 300ms
  election_timeout: 300ms
  leader_lease: 150ms
failover:
  vips:
    - {interface: out0, address: %[11]s}
    - {interface: in0, address: %[12]s}
  announce: {count: 3, interval: 50ms}
connections:
  - name: peer
    local_addrs: %[3]s
    remote_addrs: %[13]s
    psk_file: %[2]s/psk
    proposals: [aes256-sha256-modp2048]
    dpd_delay: 10s
    children:
      - {name: net, local_ts: [%[14]s], remote_ts: [%[15]s], esp_proposals: [aes256-sha256]}
  - name: load
    local_addrs: %[3]s
    psk_file: %[2]s/psk
    proposals: [aes128-sha256-ecp256]
    dpd_delay: 0s
    children:
      - {name: net, local_ts: [%[14]s], remote_ts: [10.200.0.0/16], esp_proposals: [aes128-sha256]}
`, n.name, cb.dir, vipOut.Addr(), n.sock, role, n.addr.Addr(), strings.Join(join, ", "), tls.CA, tls.Cert, tls.Key,
			vipOut, vipIn, peerOut.Addr(), gwNet, peerNet)
		n.cfg = filepath.Join(cb.dir, n.name+".yaml")
		must(t, os.WriteFile(n.cfg, []byte(cfg), 0o600))
		if out, err := exec.Command(ikegwdBin, "check-config", n.cfg).CombinedOutput(); err != nil {
			t.Fatalf("check-config %s: %v: %s", n.name, err, out)
		}
		n.client = &bed{t: t, sock: n.sock}
	}
	for _, n := range cb.nodes {
		cb.start(n)
	}
	cb.swan = lab.StartStrongSwan(t, cb.peer, lab.SwanConfig{
		RetransmitTries: 5, RetransmitTimeout: time.Second,
		Conns: []lab.SwanConn{{
			Name: "gw", Version: 1,
			LocalAddrs: []string{peerOut.Addr().String()}, RemoteAddrs: []string{vipOut.Addr().String()},
			PSK: lab.Secret(interopPSK), Proposals: []string{"aes256-sha256-modp2048"}, DPDDelay: 10 * time.Second,
			Children: []lab.SwanChild{{Name: "net", LocalTS: []string{peerNet.String()}, RemoteTS: []string{gwNet.String()},
				ESPProposals: []string{"aes256-sha256"}}},
		}},
	})
	return cb
}

func (cb *clusterBed) start(n *gwNode) {
	p, err := n.ns.Start(n.name, ikegwdBin, "supervise", "-c", n.cfg)
	if err != nil {
		cb.t.Fatal(err)
	}
	n.proc = p
	n.client.gw = p
}

// status returns a node's status, or false if it does not answer.
func (cb *clusterBed) status(n *gwNode) (api.Status, bool) {
	var st api.Status
	err := n.client.get(api.PathStatus, &st)
	return st, err == nil
}

// waitActive waits until exactly one gateway reports active and returns it.
func (cb *clusterBed) waitActive(ctx context.Context, not *gwNode) *gwNode {
	cb.t.Helper()
	for {
		var act []*gwNode
		for _, n := range cb.nodes {
			if n == not {
				continue
			}
			if st, ok := cb.status(n); ok && st.Role == api.RoleActive {
				act = append(act, n)
			}
		}
		if len(act) == 1 {
			return act[0]
		}
		select {
		case <-ctx.Done():
			cb.dump()
			cb.t.Fatalf("no single active gateway (%d active)", len(act))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (cb *clusterBed) dump() {
	for _, n := range cb.nodes {
		if n.proc != nil {
			cb.t.Logf("--- %s output (tail) ---\n%s", n.name, tailLines(n.proc.Output(), 40))
		}
	}
	if cb.swan != nil {
		cb.t.Logf("--- charon log (tail) ---\n%s", tailLines(cb.swan.Log(), 40))
	}
}

// TestClusterFailover: the peer's tunnel survives the death of the active
// gateway (daemon death, then node death) with the same IKE SA and SPIs,
// no replayed sequence numbers, and traffic resumes.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	cb := newClusterBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	act := cb.waitActive(ctx, nil)
	t.Logf("active: %s", act.name)
	must(t, cb.swan.Initiate(ctx, "net"))
	sas, err := cb.swan.WaitFor(ctx, swanUp)
	if err != nil {
		cb.dump()
		t.Fatal(err)
	}
	first := sas[0]
	k1, _ := first.Child("net", "INSTALLED")
	pinger, err := cb.peer.StartPinger(cb.pprot, vipIn.Addr(), 10*time.Millisecond)
	must(t, err)
	defer pinger.Stop()
	time.Sleep(1500 * time.Millisecond)
	if rec := pinger.Snapshot(); rec.Received() == 0 {
		cb.dump()
		t.Fatal("no ping reply through the tunnel before the failover")
	}
	for round, kind := range []string{"daemon", "node"} {
		if cur := cb.waitActive(ctx, nil); cur != act {
			t.Logf("round %d: the active role moved from %s to %s while the dead node rejoined", round, act.name, cur.name)
			act = cur
		}
		for _, n := range cb.nodes {
			if st, ok := cb.status(n); ok {
				t.Logf("before round %d: %s role=%s leader=%v", round, n.name, st.Role, st.Cluster)
			}
		}
		before := pinger.Snapshot()
		killedAt := time.Now()
		switch kind {
		case "daemon":
			// SIGKILL of ikegwd only: its supervisor removes the VIPs.
			must(t, killChild(act.proc.Pid()))
		case "node":
			// The machine dies: its links go down and every process in it
			// dies at once (no supervisor cleans up).
			must(t, act.ns.SetLink(ctx, "out0", false))
			must(t, act.ns.SetLink(ctx, "in0", false))
			must(t, killAll(ctx, act.ns))
		}
		if kind == "daemon" {
			// The supervisor removes what the dead daemon left: within a
			// second the node holds no VIP and no SA (its TUN is gone).
			deadline := time.Now().Add(time.Second)
			for {
				out, _ := act.ns.Run(ctx, "ip", "-o", "addr", "show")
				links, _ := act.ns.Run(ctx, "ip", "-o", "link", "show")
				if !strings.Contains(out, vipOut.Addr().String()+"/") && !strings.Contains(out, vipIn.Addr().String()+"/") && !strings.Contains(links, "ikegw") {
					break
				}
				if time.Now().After(deadline) {
					cb.dump()
					t.Fatalf("1 s after the daemon died, %s still holds a VIP or its data plane:\n%s\n%s", act.name, out, links)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		next := cb.waitActive(ctx, act)
		// Wait for traffic to resume.
		deadline := time.Now().Add(10 * time.Second)
		for pinger.Snapshot().Received() <= before.Received()+20 {
			if time.Now().After(deadline) {
				cb.dump()
				t.Fatalf("round %d (%s death of %s): traffic did not resume via %s", round, kind, act.name, next.name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		rec := pinger.Snapshot()
		gap := outage(rec, killedAt)
		t.Logf("round %d: %s death of %s -> %s active; outage %v (replies %d -> %d)", round, kind, act.name, next.name, gap, before.Received(), rec.Received())
		now, err := cb.swan.ListSAs(ctx)
		must(t, err)
		if len(now) != 1 || now[0].UniqueID != first.UniqueID || now[0].InitiatorSPI != first.InitiatorSPI || now[0].ResponderSPI != first.ResponderSPI {
			cb.dump()
			t.Fatalf("round %d: the peer's IKE SA changed: %+v", round, now)
		}
		if k, ok := now[0].Child("net", "INSTALLED"); !ok || k.SPIIn != k1.SPIIn || k.SPIOut != k1.SPIOut {
			cb.dump()
			t.Fatalf("round %d: the peer's child SPIs changed", round)
		}
		if strings.Contains(cb.swan.Log(), "ESP sequence number verification failed") {
			cb.dump()
			t.Fatalf("round %d: the peer saw replayed ESP sequence numbers", round)
		}
		// The new active holds the peer's IKE SA and runs DPD on it.
		var sasNow api.SAs
		must(t, next.client.get(api.PathSAs, &sasNow))
		if len(sasNow.IKE) != 1 || sasNow.IKE[0].ICookie != first.InitiatorSPI {
			cb.dump()
			t.Fatalf("round %d: the new active's IKE SAs: %+v", round, sasNow.IKE)
		}
		must(t, next.client.post(api.PathDPD, "ike="+sasNow.IKE[0].ICookie+"_"+sasNow.IKE[0].RCookie))
		dpdDeadline := time.Now().Add(5 * time.Second)
		for {
			st, _ := cb.status(next)
			if st.Engine["dpd_acked"] > 0 {
				break
			}
			if time.Now().After(dpdDeadline) {
				cb.dump()
				t.Fatalf("round %d: DPD from the new active not acknowledged: %+v", round, st.Engine)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Bring the dead node back as a standby.
		if kind == "node" {
			// A rebooted machine has none of the dead daemon's addresses.
			for _, v := range []netip.Prefix{vipOut, vipIn} {
				ifc := "out0"
				if v == vipIn {
					ifc = "in0"
				}
				act.ns.DelAddr(ctx, ifc, v)
			}
			must(t, act.ns.SetLink(ctx, "out0", true))
			must(t, act.ns.SetLink(ctx, "in0", true))
		}
		cb.start(act)
		act = next
		time.Sleep(2 * time.Second)
	}
}

// outage is the time without traffic around a failure at kill: the
// largest gap between consecutive replies received from shortly before the
// kill on (a reply already in flight at the kill does not end it: the
// largest gap is taken, not the first).
func outage(r lab.PingRecord, kill time.Time) time.Duration {
	var times []time.Time
	for _, rp := range r.Replies {
		if rp.Received.After(kill.Add(-time.Second)) {
			times = append(times, rp.Received)
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(times); i++ {
		gap = max(gap, times[i].Sub(times[i-1]))
	}
	return gap
}

// killAll SIGKILLs every process in a namespace.
func killAll(ctx context.Context, ns *lab.NS) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns.Name()).Output()
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(out)) {
		var pid int
		fmt.Sscan(f, &pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}

// killChild SIGKILLs the ikegwd run by a supervisor (its only child).
func killChild(supervisor int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", supervisor, supervisor))
	if err != nil {
		return err
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		return fmt.Errorf("supervisor %d has children %q", supervisor, f)
	}
	var pid int
	fmt.Sscan(f[0], &pid)
	return syscall.Kill(pid, syscall.SIGKILL)
}

// vipSampler reads, in each gateway's namespace, whether it holds the
// outside VIP, through a netlink socket opened inside that namespace.
type vipSampler struct {
	names []string
	hs    []*netlink.Handle
}

func newVIPSampler(t *testing.T, nodes []*gwNode) *vipSampler {
	s := &vipSampler{}
	for _, n := range nodes {
		h, err := netns.GetFromName(n.ns.Name())
		must(t, err)
		nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		h.Close()
		must(t, err)
		t.Cleanup(nh.Close)
		s.names = append(s.names, n.name)
		s.hs = append(s.hs, nh)
	}
	return s
}

// holders returns the nodes holding addr now.
func (s *vipSampler) holders(addr netip.Addr) []string {
	var out []string
	for i, h := range s.hs {
		as, err := h.AddrList(nil, unix.AF_INET)
		if err != nil {
			continue
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				out = append(out, s.names[i])
			}
		}
	}
	return out
}

// TestClusterPartition: the active is cut off from the other nodes. VIP
// ownership sampled every 5 ms never overlaps, the cut node holds no VIP
// once its lease is over, and another gateway takes over.
func TestClusterPartition(t *testing.T) {
	t.Parallel()
	cb := newClusterBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	act := cb.waitActive(ctx, nil)
	must(t, cb.swan.Initiate(ctx, "net"))
	if _, err := cb.swan.WaitFor(ctx, swanUp); err != nil {
		cb.dump()
		t.Fatal(err)
	}
	s := newVIPSampler(t, cb.nodes[:2])
	stop := make(chan struct{})
	overlaps := make(chan string, 1)
	samples := 0
	var cutSince time.Time
	var cutHeldAfterLease time.Duration
	var mu sync.Mutex
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				close(overlaps)
				return
			case <-tick.C:
			}
			h := s.holders(vipOut.Addr())
			mu.Lock()
			samples++
			if len(h) > 1 {
				select {
				case overlaps <- fmt.Sprintf("%v hold %s at once", h, vipOut.Addr()):
				default:
				}
			}
			if !cutSince.IsZero() && slices.Contains(h, act.name) {
				cutHeldAfterLease = time.Since(cutSince)
			}
			mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	// Cut the active from both other nodes (Raft and gossip), in its own
	// namespace; the peer still reaches it.
	var faults []*lab.Fault
	for _, o := range cb.nodes {
		if o == act {
			continue
		}
		f, err := act.ns.DropAll(ctx, act.addr.Addr(), o.addr.Addr())
		must(t, err)
		faults = append(faults, f)
	}
	mu.Lock()
	cutSince = time.Now()
	mu.Unlock()
	next := cb.waitActive(ctx, act)
	t.Logf("%s active %v after the cut", next.name, time.Since(cutSince))
	if os.Getenv("IKEGW_TEST_DUMP") != "" {
		cb.dump()
	}
	time.Sleep(2 * time.Second)
	close(stop)
	if msg, ok := <-overlaps; ok && msg != "" {
		cb.dump()
		t.Fatalf("VIP overlap: %s", msg)
	}
	mu.Lock()
	held, n := cutHeldAfterLease, samples
	mu.Unlock()
	// Lease 150 ms plus one check interval and the release itself, before
	// the others can elect a leader (heartbeat timeout 300 ms).
	if held > 300*time.Millisecond {
		cb.dump()
		t.Fatalf("the cut node still held the VIP %v after the cut (lease 150 ms)", held)
	}
	t.Logf("partition: %s cut, %s took over; %d samples, the cut node dropped the VIP within %v, no overlap", act.name, next.name, n, held)
	for _, f := range faults {
		f.Remove()
	}
	// Healed: the old active rejoins as standby, still one active.
	time.Sleep(2 * time.Second)
	if a := cb.waitActive(ctx, nil); a != next {
		t.Fatalf("after healing %s is active, want %s", a.name, next.name)
	}
}
