// Package hacompare measures the same failover with strongSwan's ha plugin
// and with ikegw, side by side, inside the VM (issue 7 item 3): a
// strongSwan peer, two gateways behind an outside VIP, a protected host
// pinging the peer's subnet through the tunnel, and the active gateway's
// node killed (SIGKILL of every process, links down). It reports the
// outage (the largest gap between ping replies, as deploy/gwlab measures
// it) and how many ESP packets the peer dropped for their sequence number.
//
// The strongSwan side (HALab) is built here: two charon 5.9.8 gateways with
// the kernel-netlink data plane and the ha plugin (segment_count 2, a
// separate sync link, monitor), the outside VIP on both behind an
// iptables-legacy CLUSTERIP rule (hashmode sourceip), segment N activated
// on node N through the plugin's FIFO. The ikegw side is deploy/gwlab with
// the kernel data plane (RunIkegw). Both use the same peer configuration
// (gwlab's: IKEv1 PSK Main Mode aes256-sha256-modp2048, ESP aes256-sha256,
// kernel-libipsec unless HAOptions.PeerKernel), the same addresses, the
// same ping interval and the same kill.
//
// Stock CLUSTERIP (Debian's 6.1 kernel; removed upstream in 6.3) only acts
// on packets addressed to the VIP itself (INPUT): the ha plugin's authors
// used an extended ClusterIP for forwarded traffic. So the inside default
// gateway here is a plain address that follows the node holding the
// peer's segment (a watcher adds it there with a gratuitous ARP within
// FollowInterval of the ha plugin's segment change), as keepalived or an
// updown script would.
//
// Everything needs root and a kernel with ESP and CLUSTERIP: it runs in the
// VM (scripts/vm/run.sh; bench/hacompare.sh loads the modules).
package hacompare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
	"ikegw/failover/vip"
)

// Addresses of the HA lab beyond gwlab's (which it shares: OutsideVIP,
// PeerOutside, HostInside, InsideVIP, InsideNet, PeerNet).
var (
	// GatewayOutside and GatewayInside are the gateways' own addresses.
	GatewayOutside = [2]netip.Prefix{netip.MustParsePrefix("192.0.2.11/24"), netip.MustParsePrefix("192.0.2.12/24")}
	GatewayInside  = [2]netip.Prefix{netip.MustParsePrefix("10.1.0.11/24"), netip.MustParsePrefix("10.1.0.12/24")}
	// GatewaySync are the ends of the separate sync link.
	GatewaySync = [2]netip.Prefix{netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("10.99.0.2/24")}
)

// ClusterMAC is the CLUSTERIP multicast MAC of the outside VIP.
const ClusterMAC = "01:00:5e:00:00:20"

// Interface names inside a gateway namespace.
const (
	ifOutside = "out0"
	ifInside  = "in0"
	ifSync    = "sync0"
)

// HAOptions configure BuildHA.
type HAOptions struct {
	// PingInterval is the protected host's ping interval (50 ms if zero).
	PingInterval time.Duration
	// HeartbeatDelay and HeartbeatTimeout are the ha plugin's
	// heartbeat_delay and heartbeat_timeout (its defaults, 1 s and 2.1 s,
	// if zero).
	HeartbeatDelay, HeartbeatTimeout time.Duration
	// DPDDelay is the DPD delay on every side (10 s if zero, as gwlab).
	DPDDelay time.Duration
	// PeerKernel makes the peer use kernel ESP (kernel-netlink) instead of
	// kernel-libipsec (gwlab's peer); replay drops are then counted by the
	// kernel (XfrmInStateSeqError, the SA's replay counter).
	PeerKernel bool
	// FollowInterval is how often the inside gateway address is moved to
	// the node holding the peer's segment (25 ms if zero).
	FollowInterval time.Duration
	// StartTimeout bounds building the lab, the tunnel and the first ping
	// reply (3 min if zero: the VM is slow).
	StartTimeout time.Duration
	// WaitTimeout bounds waiting for the ping to resume after the kill
	// (120 s if zero).
	WaitTimeout time.Duration
	// Dir holds configs and logs; a temporary directory if empty.
	Dir    string
	Logger *slog.Logger
}

func (o *HAOptions) setDefaults() {
	if o.PingInterval <= 0 {
		o.PingInterval = 50 * time.Millisecond
	}
	if o.DPDDelay <= 0 {
		o.DPDDelay = 10 * time.Second
	}
	if o.FollowInterval <= 0 {
		o.FollowInterval = 25 * time.Millisecond
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 120 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// haNode is one strongSwan gateway.
type haNode struct {
	idx   int // 0 or 1; it owns segment idx+1 at start
	name  string
	ns    *lab.NS
	swan  *lab.Swan
	ports []bridgePort
	vips  *vip.Manager // the inside gateway address
	dead  bool
}

type bridgePort struct {
	br   *lab.Bridge
	port string
}

// HALab is a running strongSwan ha cluster with its peer and protected host.
type HALab struct {
	opts   HAOptions
	log    *slog.Logger
	base   *lab.Lab
	nodes  [2]*haNode
	Peer   *lab.NS
	Host   *lab.NS
	peer   *lab.Swan
	pinger *lab.Pinger
	// segment is the peer's ClusterIP segment (1 or 2).
	segment int

	followStop context.CancelFunc
	followDone chan struct{}
	mu         sync.Mutex
	holder     int       // node index holding the inside address, -1 none
	movedAt    time.Time // when it last moved
	followErr  error
}

// ErrHA is wrapped by errors about the ha cluster's state.
var ErrHA = errors.New("hacompare: strongSwan ha")

// gatewayPlugins is the gateways' charon plugin list: kernel ESP
// (kernel-netlink, no kernel-libipsec) and the ha plugin.
var gatewayPlugins = []string{
	"random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "kdf",
	"drbg", "gmp", "curve25519", "pem", "pkcs1", "x509", "pubkey",
	"constraints", "revocation", "kernel-netlink", "socket-default", "vici",
	"updown", "ha",
}

// peerKernelPlugins is the peer's plugin list with kernel ESP.
var peerKernelPlugins = []string{
	"random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "kdf",
	"drbg", "gmp", "curve25519", "pem", "pkcs1", "x509", "pubkey",
	"constraints", "revocation", "kernel-netlink", "socket-default", "vici",
	"updown",
}

// BuildHA builds the strongSwan ha lab and returns once the peer's tunnel
// is up, the passive node holds the synced IKE SA and a ping came back.
func BuildHA(ctx context.Context, o HAOptions) (h *HALab, err error) {
	o.setDefaults()
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	for _, tool := range []string{"iptables-legacy", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("hacompare: %s not found (Debian packages iptables, util-linux): %w", tool, err)
		}
	}
	base, err := lab.New(lab.Options{Dir: o.Dir, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	h = &HALab{opts: o, log: o.Logger, base: base, holder: -1}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, h.describe())
			_ = h.Close()
			h = nil
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	if err := h.buildNetwork(ctx); err != nil {
		return h, err
	}
	psk, err := randomPSK()
	if err != nil {
		return h, err
	}
	for _, n := range h.nodes {
		if err := h.startGateway(ctx, n, psk); err != nil {
			return h, err
		}
	}
	// Segment N on node N (ha_kernel deactivated every segment at start).
	for _, n := range h.nodes {
		if err := h.activate(ctx, n, n.idx+1); err != nil {
			return h, err
		}
	}
	for _, n := range h.nodes {
		if err := h.waitSegments(ctx, n, []int{n.idx + 1}); err != nil {
			return h, err
		}
	}
	if err := h.startPeer(ctx, psk); err != nil {
		return h, err
	}
	if err := h.peer.Initiate(ctx, "net"); err != nil {
		return h, fmt.Errorf("hacompare: the peer could not establish the tunnel to %s: %w", gwlab.OutsideVIP.Addr(), err)
	}
	if _, err := peerTunnel(ctx, h.peer); err != nil {
		return h, err
	}
	active, err := h.waitActive(ctx)
	if err != nil {
		return h, err
	}
	h.segment = active.idx + 1
	// The passive node must hold the synced IKE SA (state PASSIVE) with
	// its child before the failure, or there is nothing to fail over to.
	other := h.nodes[1-active.idx]
	if _, err := other.swan.WaitFor(ctx, func(sas []lab.IKESA) bool {
		for _, s := range sas {
			if s.State == "PASSIVE" && len(s.Children) > 0 {
				return true
			}
		}
		return false
	}); err != nil {
		return h, fmt.Errorf("%w: the passive node %s never got the synced IKE SA and child: %w", ErrHA, other.name, err)
	}
	h.startFollower()
	if err := h.waitHolder(ctx, active.idx); err != nil {
		return h, err
	}
	if h.pinger, err = h.Host.StartPinger(gwlab.HostInside.Addr(), gwlab.PeerProtected, o.PingInterval); err != nil {
		return h, err
	}
	if err := waitReply(ctx, h.pinger, time.Time{}); err != nil {
		return h, fmt.Errorf("hacompare: no ping reply through the strongSwan ha cluster: %w", err)
	}
	h.log.Info("hacompare: strongSwan ha lab ready", "active", active.name, "segment", h.segment)
	return h, nil
}

func (h *HALab) buildNetwork(ctx context.Context) error {
	b := h.base
	outside, err := b.NewBridge(ctx, "outside")
	if err != nil {
		return err
	}
	inside, err := b.NewBridge(ctx, "inside")
	if err != nil {
		return err
	}
	// The cluster MAC is a multicast MAC on unicast IP: without snooping
	// the bridge floods it to both gateways.
	for _, br := range []*lab.Bridge{outside, inside} {
		if _, err := br.NS.Run(ctx, "ip", "link", "set", br.Dev, "type", "bridge", "mcast_snooping", "0"); err != nil {
			return err
		}
	}
	for i := range h.nodes {
		name := fmt.Sprintf("gw%d", i+1)
		ns, err := b.NewNS(ctx, name)
		if err != nil {
			return err
		}
		n := &haNode{idx: i, name: name, ns: ns}
		h.nodes[i] = n
		for _, lk := range []struct {
			br   *lab.Bridge
			ifn  string
			addr netip.Prefix
		}{{outside, ifOutside, GatewayOutside[i]}, {inside, ifInside, GatewayInside[i]}} {
			port, err := lk.br.Attach(ctx, ns, lk.ifn)
			if err != nil {
				return err
			}
			n.ports = append(n.ports, bridgePort{lk.br, port})
			if err := ns.AddAddr(ctx, lk.ifn, lk.addr); err != nil {
				return err
			}
		}
		for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
			if err := ns.Sysctl(ctx, kv[0], kv[1]); err != nil {
				return err
			}
		}
		// The kernel data plane needs a route before the policy lookup.
		if err := ns.AddRoute(ctx, gwlab.PeerNet, gwlab.PeerOutside.Addr(), ifOutside); err != nil {
			return err
		}
		if err := ns.AddAddr(ctx, ifOutside, gwlab.OutsideVIP); err != nil {
			return err
		}
		if out, err := ns.Run(ctx, "iptables-legacy", "-A", "INPUT", "-i", ifOutside, "-d", gwlab.OutsideVIP.Addr().String(),
			"-j", "CLUSTERIP", "--new", "--hashmode", "sourceip", "--clustermac", ClusterMAC,
			"--total-nodes", "2", "--local-node", strconv.Itoa(i+1)); err != nil {
			return fmt.Errorf("hacompare: %s: CLUSTERIP rule (needs ipt_CLUSTERIP, Debian's 6.1 kernel): %w: %s", name, err, out)
		}
		if n.vips, err = vip.New(vip.Config{VIPs: []vip.VIP{{Interface: ifInside, Prefix: gwlab.InsideVIP}},
			NetNS: filepath.Join("/run/netns", ns.Name()), Log: h.log,
			Announce: vip.Announce{Count: 3, Interval: 50 * time.Millisecond}}); err != nil {
			return err
		}
	}
	if err := b.Veth(ctx, h.nodes[0].ns, ifSync, h.nodes[1].ns, ifSync); err != nil {
		return err
	}
	for i, n := range h.nodes {
		if err := n.ns.AddAddr(ctx, ifSync, GatewaySync[i]); err != nil {
			return err
		}
	}
	if h.Peer, err = b.NewNS(ctx, "peer"); err != nil {
		return err
	}
	if _, err := outside.Attach(ctx, h.Peer, "eth0"); err != nil {
		return err
	}
	if err := h.Peer.AddAddr(ctx, "eth0", gwlab.PeerOutside); err != nil {
		return err
	}
	if _, err := h.Peer.AddLoopbackAddr(ctx, gwlab.PeerNet); err != nil {
		return err
	}
	if h.Host, err = b.NewNS(ctx, "host"); err != nil {
		return err
	}
	if _, err := inside.Attach(ctx, h.Host, "eth0"); err != nil {
		return err
	}
	if err := h.Host.AddAddr(ctx, "eth0", gwlab.HostInside); err != nil {
		return err
	}
	return h.Host.AddRoute(ctx, netip.MustParsePrefix("0.0.0.0/0"), gwlab.InsideVIP.Addr(), "")
}

func dur(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// conn is the tunnel as both sides configure it (gwlab's peer config).
func conn(psk lab.Secret, local, remote netip.Addr, localTS, remoteTS netip.Prefix, dpd time.Duration) lab.SwanConn {
	return lab.SwanConn{
		Name: "gw", Version: 1,
		LocalAddrs: []string{local.String()}, RemoteAddrs: []string{remote.String()},
		PSK: psk, Proposals: []string{gwlab.IKEProposal}, DPDDelay: dpd, RekeyTime: 4 * time.Hour,
		Children: []lab.SwanChild{{Name: "net", LocalTS: []string{localTS.String()}, RemoteTS: []string{remoteTS.String()},
			ESPProposals: []string{gwlab.ESPProposal}, RekeyTime: time.Hour}},
	}
}

func (h *HALab) startGateway(ctx context.Context, n *haNode, psk lab.Secret) error {
	other := GatewaySync[1-n.idx].Addr()
	charon := map[string]string{
		"plugins.ha.local":          GatewaySync[n.idx].Addr().String(),
		"plugins.ha.remote":         other.String(),
		"plugins.ha.segment_count":  "2",
		"plugins.ha.fifo_interface": "yes",
		"plugins.ha.monitor":        "yes",
		"plugins.ha.resync":         "yes",
	}
	if h.opts.HeartbeatDelay > 0 {
		charon["plugins.ha.heartbeat_delay"] = dur(h.opts.HeartbeatDelay)
	}
	if h.opts.HeartbeatTimeout > 0 {
		charon["plugins.ha.heartbeat_timeout"] = dur(h.opts.HeartbeatTimeout)
	}
	var err error
	n.swan, err = n.ns.StartStrongSwan(ctx, lab.SwanConfig{
		Plugins: gatewayPlugins, Charon: charon,
		LogLevels:       map[string]int{"default": 1, "ike": 2, "cfg": 2, "knl": 1},
		RetransmitTries: 5, RetransmitTimeout: time.Second,
		Conns: []lab.SwanConn{conn(psk, gwlab.OutsideVIP.Addr(), gwlab.PeerOutside.Addr(), gwlab.InsideNet, gwlab.PeerNet, h.opts.DPDDelay)},
	})
	return err
}

func (h *HALab) startPeer(ctx context.Context, psk lab.Secret) error {
	cfg := lab.SwanConfig{
		RetransmitTries: 5, RetransmitTimeout: time.Second,
		Conns: []lab.SwanConn{conn(psk, gwlab.PeerOutside.Addr(), gwlab.OutsideVIP.Addr(), gwlab.PeerNet, gwlab.InsideNet, h.opts.DPDDelay)},
	}
	if h.opts.PeerKernel {
		cfg.Plugins = peerKernelPlugins
	}
	var err error
	h.peer, err = h.Peer.StartStrongSwan(ctx, cfg)
	return err
}

// activate writes "+seg" to the node's ha FIFO (in charon's mount
// namespace: its /run is private).
func (h *HALab) activate(ctx context.Context, n *haNode, seg int) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	pid := strconv.Itoa(n.swan.Proc().Pid())
	// The FIFO appears once the plugin's control thread runs; opening it
	// for writing blocks until the plugin reads. -r keeps charon's root
	// (entering a mount namespace resets it to the namespace's root mount,
	// which differs from charon's under the VM's chroot).
	script := fmt.Sprintf(`while [ ! -p /var/run/charon.ha ]; do sleep 0.1; done; echo +%d > /var/run/charon.ha`, seg)
	out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "-r", "sh", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s: activating segment %d through /var/run/charon.ha: %w: %s", ErrHA, n.name, seg, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Segments returns the CLUSTERIP segments node idx serves now.
func (h *HALab) Segments(idx int) ([]int, error) {
	n := h.nodes[idx]
	var text string
	err := n.ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/ipt_CLUSTERIP/" + gwlab.OutsideVIP.Addr().String())
		text = string(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hacompare: %s: CLUSTERIP segments: %w", n.name, err)
	}
	return ParseSegments(text)
}

func (h *HALab) waitSegments(ctx context.Context, n *haNode, want []int) error {
	var got []int
	var err error
	for {
		got, err = h.Segments(n.idx)
		if err == nil && equalInts(got, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: CLUSTERIP segments %v, want %v (last error %v): %w", ErrHA, n.name, got, want, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
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

// waitActive returns the node whose charon holds the peer's IKE SA as
// ESTABLISHED (the other one has it PASSIVE).
func (h *HALab) waitActive(ctx context.Context) (*haNode, error) {
	for {
		for _, n := range h.nodes {
			sas, err := n.swan.ListSAs(ctx)
			if err != nil {
				continue
			}
			for _, s := range sas {
				if s.State == "ESTABLISHED" {
					return n, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no gateway holds the peer's IKE SA as ESTABLISHED: %w", ErrHA, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startFollower moves the inside gateway address to whichever live node
// serves the peer's segment.
func (h *HALab) startFollower() {
	ctx, cancel := context.WithCancel(context.Background())
	h.followStop, h.followDone = cancel, make(chan struct{})
	go func() {
		defer close(h.followDone)
		t := time.NewTicker(h.opts.FollowInterval)
		defer t.Stop()
		for {
			h.followOnce(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (h *HALab) followOnce(ctx context.Context) {
	want := -1
	for _, n := range h.nodes {
		h.mu.Lock()
		dead := n.dead
		h.mu.Unlock()
		if dead {
			continue
		}
		segs, err := h.Segments(n.idx)
		if err != nil {
			continue
		}
		for _, s := range segs {
			if s == h.segment {
				want = n.idx
			}
		}
	}
	h.mu.Lock()
	cur := h.holder
	h.mu.Unlock()
	if want < 0 || want == cur {
		return
	}
	if cur >= 0 && !h.isDead(cur) {
		_ = h.nodes[cur].vips.Release(ctx)
	}
	err := h.nodes[want].vips.Claim(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.followErr = err
		return
	}
	h.holder, h.movedAt = want, time.Now()
	h.log.Info("hacompare: inside gateway address moved", "to", h.nodes[want].name, "segment", h.segment)
}

func (h *HALab) isDead(idx int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nodes[idx].dead
}

func (h *HALab) waitHolder(ctx context.Context, idx int) error {
	for {
		h.mu.Lock()
		cur, ferr := h.holder, h.followErr
		h.mu.Unlock()
		if cur == idx {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hacompare: the inside gateway address never reached %s (last error %v): %w", h.nodes[idx].name, ferr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Active returns the name of the node holding the peer's segment.
func (h *HALab) Active() (string, error) {
	for _, n := range h.nodes {
		if h.isDead(n.idx) {
			continue
		}
		segs, err := h.Segments(n.idx)
		if err != nil {
			return "", err
		}
		for _, s := range segs {
			if s == h.segment {
				return n.name, nil
			}
		}
	}
	return "", fmt.Errorf("%w: no live node serves segment %d", ErrHA, h.segment)
}

// PeerSwan is the peer's charon.
func (h *HALab) PeerSwan() *lab.Swan { return h.peer }

// Pinger is the protected host's pinger.
func (h *HALab) Pinger() *lab.Pinger { return h.pinger }

// KillNode kills node idx: its bridge ports and its sync link down (cut
// off from everything), then SIGKILL of every process in its namespace
// (charon among them), then its own links down. The kernel SAs a killed
// charon leaves behind die with the links. It returns when the node was cut
// off: under TCG each `ip` command takes a good part of a second, so that
// is later than the call.
func (h *HALab) KillNode(ctx context.Context, idx int) (cut time.Time, err error) {
	n := h.nodes[idx]
	var errs []error
	for _, p := range n.ports {
		if err := p.br.NS.SetLink(ctx, p.port, false); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.ns.SetLink(ctx, ifSync, false); err != nil {
		errs = append(errs, err)
	}
	cut = time.Now()
	h.mu.Lock()
	n.dead = true
	h.mu.Unlock()
	if err := killAll(ctx, n.ns); err != nil {
		errs = append(errs, err)
	}
	for _, ifn := range []string{ifOutside, ifInside} {
		if err := n.ns.SetLink(ctx, ifn, false); err != nil {
			errs = append(errs, err)
		}
	}
	select {
	case <-n.swan.Proc().Done():
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("hacompare: %s: charon did not exit after SIGKILL", n.name))
	}
	return cut, errors.Join(errs...)
}

// killAll sends SIGKILL to every process in ns.
func killAll(ctx context.Context, ns *lab.NS) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns.Name()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hacompare: ip netns pids %s: %w: %s", ns.Name(), err, out)
	}
	var errs []error
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("hacompare: %s: SIGKILL %d: %w", ns.Name(), pid, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (h *HALab) nodeByName(name string) (*haNode, error) {
	for _, n := range h.nodes {
		if n.name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("hacompare: no node %q", name)
}

// describe is a few lines about the nodes' state, for errors.
func (h *HALab) describe() string {
	var b strings.Builder
	for _, n := range h.nodes {
		if n == nil {
			continue
		}
		segs, err := h.Segments(n.idx)
		fmt.Fprintf(&b, "  %s: segments %v (err %v)", n.name, segs, err)
		if n.swan != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			sas, err := n.swan.ListSAs(ctx)
			cancel()
			for _, s := range sas {
				fmt.Fprintf(&b, " ike #%d %s children %d", s.UniqueID, s.State, len(s.Children))
			}
			if err != nil {
				fmt.Fprintf(&b, " list-sas: %v", err)
			}
			fmt.Fprintf(&b, "\n  %s charon log tail:\n%s", n.name, tail(n.swan.Log(), 2500))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Close stops the follower and removes everything.
func (h *HALab) Close() error {
	if h.followStop != nil {
		h.followStop()
		<-h.followDone
	}
	if h.pinger != nil {
		h.pinger.Stop()
	}
	var errs []error
	for _, n := range h.nodes {
		if n != nil && n.vips != nil {
			if err := n.vips.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, h.base.Close())
	return errors.Join(errs...)
}
