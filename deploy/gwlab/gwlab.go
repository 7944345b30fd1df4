// Package gwlab builds the ikegw cluster lab of issue 5 in network
// namespaces on one host: two gateways and a witness (or three gateways),
// an outside segment with the peer and the outside VIP, a cluster segment,
// an inside segment with a protected host behind the inside VIP, a
// strongSwan peer (IKEv1 PSK Main Mode, kernel-libipsec) initiating to the
// outside VIP, and a ping every 10 ms from the protected host through the
// tunnel. It kills the active node in the two ways DESIGN.md names (the
// daemon alone, the whole node) and reports what the peer saw.
//
// It is what `ikegw-lab run` / `make run` and the failover acceptance test
// use. It owns nothing but the namespaces, files and processes it creates
// (through deploy/lab), never touches the host's own network namespace, and
// never writes a PSK or key anywhere but the 0600 files its nodes read.
//
// Each gateway runs `ikegwd supervise -c FILE` when the binary has that
// subcommand (the supervisor removes a dead daemon's VIPs and data plane),
// otherwise `ikegwd run -c FILE` directly (Supervised reports which).
package gwlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ikegw/cluster/certs"
	"ikegw/cmd/api"
	"ikegw/deploy/lab"
	"ikegw/store"
)

// Errors callers may test for with errors.Is.
var (
	// ErrOptions wraps every error about Options.
	ErrOptions = errors.New("gwlab: bad options")
	// ErrUnknownNode is returned for a node name the lab does not have.
	ErrUnknownNode = errors.New("gwlab: unknown node")
	// ErrNoActive is returned when no gateway reports the active role.
	ErrNoActive = errors.New("gwlab: no active gateway")
	// ErrSplitBrain is returned when more than one gateway reports active.
	ErrSplitBrain = errors.New("gwlab: more than one active gateway")
)

// Options configure Build.
type Options struct {
	// Gateways is the number of gateway nodes, 2 (default) to 8.
	Gateways int
	// Witness adds a witness node. Gateways plus the witness must be at
	// least 3 (two voters cannot survive a loss).
	Witness bool
	// Dataplane is the gateways' dataplane.kind: userspace (default; the
	// host kernel has no ESP), kernel or auto.
	Dataplane string
	// Dir holds configs, keys, certificates, state and logs; a new
	// temporary directory (removed by Close) if empty. Its paths must stay
	// short: admin sockets live in it (108-byte limit).
	Dir string
	// Bin is the ikegwd binary (required).
	Bin string
	// Ctl is the ikegwctl binary, needed only for PlannedCLI failovers.
	Ctl string
	// LoadTunnels > 0 adds a load namespace on the outside segment
	// (LoadOutside, with LoadTunnels source addresses from LoadNet on its
	// lo) and a second connection "load" on the gateways (PSK, any remote,
	// no DPD); SetupLoad then sets up that many tunnels with Ikeload.
	LoadTunnels int
	// Ikeload is the cmd/ikeload binary (required with LoadTunnels).
	Ikeload string
	// NoSupervisor runs `ikegwd run` even when `ikegwd supervise` exists.
	NoSupervisor bool
	// Logger gets one line per lab event; slog.Default() if nil.
	Logger *slog.Logger
	// LogLevel is ikegwd's log.level; info if empty.
	LogLevel string
	// PingInterval is the protected host's ping interval; 10 ms if zero.
	PingInterval time.Duration
	// DPDDelay is the DPD delay on both sides; 10 s if zero.
	DPDDelay time.Duration
	// StartTimeout bounds waiting for the cluster, the tunnel and the
	// first ping reply; 60 s if zero.
	StartTimeout time.Duration
	// StopTimeout is how long a process gets after SIGTERM; 5 s if zero.
	StopTimeout time.Duration
	// WaitTimeout bounds each wait of a failover (for a settled active
	// before, for the new active and the ping after); 20 s if zero.
	WaitTimeout time.Duration
	// HeartbeatTimeout, ElectionTimeout and LeaderLease are the members'
	// Raft timings; 200 ms, 200 ms and 100 ms if zero (one fast host).
	// Slow hosts (the TCG VM) need longer ones.
	HeartbeatTimeout, ElectionTimeout, LeaderLease time.Duration
	// CounterSync is the gateways' dataplane.counter_sync; 200 ms if zero
	// (fresh sequence numbers for the failover tests; ikegwd's default is
	// 1 s).
	CounterSync time.Duration
}

func (o *Options) setDefaults() error {
	if o.Gateways == 0 {
		o.Gateways = 2
	}
	if o.Gateways < 2 || o.Gateways > 8 {
		return fmt.Errorf("%w: Gateways %d: want 2..8", ErrOptions, o.Gateways)
	}
	voters := o.Gateways
	if o.Witness {
		voters++
	}
	if voters < 3 {
		return fmt.Errorf("%w: %d gateways without a witness: two voters cannot survive the loss of either; add a witness or a third gateway", ErrOptions, o.Gateways)
	}
	switch o.Dataplane {
	case "":
		o.Dataplane = "userspace"
	case "userspace", "kernel", "auto":
	default:
		return fmt.Errorf("%w: Dataplane %q: want userspace, kernel or auto", ErrOptions, o.Dataplane)
	}
	if o.Bin == "" {
		return fmt.Errorf("%w: Bin (the ikegwd binary) is required", ErrOptions)
	}
	if fi, err := os.Stat(o.Bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: Bin %q: not an executable file (%v)", ErrOptions, o.Bin, err)
	}
	switch o.LogLevel {
	case "":
		o.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%w: LogLevel %q: want debug, info, warn or error", ErrOptions, o.LogLevel)
	}
	if o.PingInterval == 0 {
		o.PingInterval = 10 * time.Millisecond
	}
	if o.PingInterval < time.Millisecond {
		return fmt.Errorf("%w: PingInterval %v: want at least 1ms", ErrOptions, o.PingInterval)
	}
	if o.DPDDelay == 0 {
		o.DPDDelay = 10 * time.Second
	}
	if o.DPDDelay < time.Second {
		return fmt.Errorf("%w: DPDDelay %v: want at least 1s", ErrOptions, o.DPDDelay)
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 5 * time.Second
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = 20 * time.Second
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&o.HeartbeatTimeout, 200 * time.Millisecond}, {&o.ElectionTimeout, 200 * time.Millisecond}, {&o.LeaderLease, 100 * time.Millisecond}} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 5*time.Millisecond {
			return fmt.Errorf("%w: Raft timing %v: want at least 5ms", ErrOptions, *d.v)
		}
	}
	if o.CounterSync == 0 {
		o.CounterSync = 200 * time.Millisecond
	}
	if o.CounterSync < 10*time.Millisecond {
		return fmt.Errorf("%w: CounterSync %v: want at least 10ms (ikegwd's minimum)", ErrOptions, o.CounterSync)
	}
	if o.LoadTunnels < 0 || o.LoadTunnels > maxLoadTunnels {
		return fmt.Errorf("%w: LoadTunnels %d: want 0..%d", ErrOptions, o.LoadTunnels, maxLoadTunnels)
	}
	if o.LoadTunnels > 0 && o.Ikeload == "" {
		return fmt.Errorf("%w: LoadTunnels %d needs Ikeload (the ikeload binary)", ErrOptions, o.LoadTunnels)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// maxSocketPath is the longest admin socket path accepted (sun_path is 108
// bytes with the terminating NUL).
const maxSocketPath = 107

// Node is one cluster member.
type Node struct {
	Name    string
	Witness bool
	// NS is the node's namespace.
	NS *lab.NS
	// ClusterAddr is its address on the cluster segment; OutsideAddr and
	// InsideAddr its own addresses on the other two (gateways only).
	ClusterAddr netip.Addr
	OutsideAddr netip.Prefix
	InsideAddr  netip.Prefix
	// ConfigPath and Socket are its config file and admin socket.
	ConfigPath string
	Socket     string

	ports []bridgePort // its cables, as the bridges see them

	mu   sync.Mutex
	proc *lab.Proc // the supervisor, or the daemon when unsupervised
	cut  bool      // links down (KillNode)
}

type bridgePort struct {
	br   *lab.Bridge
	port string
}

// Proc is the node's current top process (the supervisor, or ikegwd run).
func (n *Node) Proc() *lab.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// Lab is a running cluster lab. Its methods are safe for concurrent use;
// Failover, KillDaemon, KillNode and Restart of the same node should not
// run at the same time.
type Lab struct {
	opts       Options
	log        *slog.Logger
	dir        string
	ownDir     bool
	base       *lab.Lab
	nodes      []*Node
	supervised bool

	Peer *lab.NS
	Host *lab.NS
	// Load is the load generator's namespace (nil without LoadTunnels).
	Load   *lab.NS
	swan   *lab.Swan
	pinger *lab.Pinger

	closeOnce sync.Once
	closeErr  error
}

// Build creates the whole lab and returns once one gateway reports the
// active role, the peer's tunnel is up and a ping reply came back through
// it. On error everything created so far is removed again.
func Build(ctx context.Context, o Options) (l *Lab, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, lab.ErrNotRoot
	}
	l = &Lab{opts: o, log: o.Logger, dir: o.Dir}
	if l.dir == "" {
		d, err := os.MkdirTemp("", "gwlab-")
		if err != nil {
			return nil, fmt.Errorf("gwlab: work directory: %w", err)
		}
		l.dir, l.ownDir = d, true
	}
	if l.dir, err = filepath.Abs(l.dir); err != nil {
		return nil, fmt.Errorf("gwlab: work directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = l.Close()
			l = nil
		}
	}()
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return l, fmt.Errorf("gwlab: work directory %s: %w", l.dir, err)
	}
	if s := filepath.Join(l.dir, "witness", "admin.sock"); len(s) > maxSocketPath {
		return l, fmt.Errorf("%w: Dir %q is too long for the admin sockets inside it (%d > %d bytes)", ErrOptions, l.dir, len(s), maxSocketPath)
	}
	l.supervised = !o.NoSupervisor && hasSupervise(ctx, o.Bin)
	if !l.supervised {
		l.log.Warn("gwlab: running `ikegwd run` without a supervisor: a killed daemon's VIPs stay behind", "bin", o.Bin, "no_supervisor_option", o.NoSupervisor)
	}
	l.base, err = lab.New(lab.Options{Dir: filepath.Join(l.dir, "logs"), Logger: l.log, StopTimeout: o.StopTimeout})
	if err != nil {
		return l, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	members := plan(l.dir, o.Gateways, o.Witness)
	if err := l.writeFiles(ctx, members); err != nil {
		return l, err
	}
	if err := l.buildNetwork(ctx, members); err != nil {
		return l, err
	}
	for _, n := range l.nodes {
		if err := l.start(n); err != nil {
			return l, err
		}
	}
	active, err := l.waitActive(ctx, "")
	if err != nil {
		return l, err
	}
	if err := l.startPeer(ctx); err != nil {
		return l, err
	}
	if err := l.swan.Initiate(ctx, "net"); err != nil {
		return l, fmt.Errorf("gwlab: the peer could not establish the tunnel to %s (active: %s): %w", OutsideVIP.Addr(), active, err)
	}
	if _, err := l.peerState(ctx); err != nil {
		return l, err
	}
	l.pinger, err = l.Host.StartPinger(HostInside.Addr(), PeerProtected, o.PingInterval)
	if err != nil {
		return l, err
	}
	if err := l.waitReply(ctx, time.Time{}); err != nil {
		return l, fmt.Errorf("gwlab: no ping reply through the tunnel from %s to %s: %w", HostInside.Addr(), PeerProtected, err)
	}
	l.log.Info("gwlab: lab ready", "active", active, "gateways", o.Gateways, "witness", o.Witness, "dir", l.dir, "supervised", l.supervised)
	return l, nil
}

// hasSupervise reports whether the binary knows `supervise`.
func hasSupervise(ctx context.Context, bin string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "supervise", "--help").CombinedOutput()
	return err == nil && !strings.Contains(string(out), "unknown command")
}

// writeFiles generates the keys, PSK, certificates and configs, and checks
// every config with `ikegwd check-config`.
func (l *Lab) writeFiles(ctx context.Context, members []nodePlan) error {
	for _, k := range []string{"cluster.key", "gossip.key"} {
		if err := store.GenerateClusterKey(filepath.Join(l.dir, k)); err != nil {
			return fmt.Errorf("gwlab: %w", err)
		}
	}
	psk, err := randomPSK()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.dir, "psk"), []byte(psk), 0o600); err != nil {
		return fmt.Errorf("gwlab: writing the PSK file: %w", err)
	}
	certDir := filepath.Join(l.dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return fmt.Errorf("gwlab: %w", err)
	}
	ca, err := certs.GenerateCA(certDir, "ikegw lab CA")
	if err != nil {
		return fmt.Errorf("gwlab: %w", err)
	}
	p := configParams{Dir: l.dir, Dataplane: l.opts.Dataplane, DPDDelay: l.opts.DPDDelay, LogLevel: l.opts.LogLevel, Members: members,
		Heartbeat: l.opts.HeartbeatTimeout, Election: l.opts.ElectionTimeout, Lease: l.opts.LeaderLease, Load: l.opts.LoadTunnels > 0,
		CounterSync: l.opts.CounterSync}
	for _, m := range members {
		if err := ca.IssueNode(certDir, m.Name, nil, []net.IP{m.Cluster.AsSlice()}); err != nil {
			return fmt.Errorf("gwlab: %w", err)
		}
		if err := os.MkdirAll(m.Dir, 0o700); err != nil {
			return fmt.Errorf("gwlab: %w", err)
		}
		if err := os.WriteFile(m.Config, []byte(nodeConfig(p, m)), 0o600); err != nil {
			return fmt.Errorf("gwlab: writing %s: %w", m.Config, err)
		}
		if err := CheckConfig(ctx, l.opts.Bin, m.Config); err != nil {
			return err
		}
	}
	return nil
}

// CheckConfig runs `bin check-config path`.
func CheckConfig(ctx context.Context, bin, path string) error {
	out, err := exec.CommandContext(ctx, bin, "check-config", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("gwlab: ikegwd check-config %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func randomPSK() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("gwlab: random PSK: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// peerSecret reads the PSK back for strongSwan's config.
func (l *Lab) peerSecret() (lab.Secret, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "psk"))
	if err != nil {
		return "", fmt.Errorf("gwlab: reading the PSK file: %w", err)
	}
	return lab.Secret(strings.TrimSpace(string(b))), nil
}

// buildNetwork creates the three bridges, the node, peer and host
// namespaces, and their addresses and routes.
func (l *Lab) buildNetwork(ctx context.Context, members []nodePlan) error {
	b := l.base
	outside, err := b.NewBridge(ctx, "outside")
	if err != nil {
		return err
	}
	clus, err := b.NewBridge(ctx, "cluster")
	if err != nil {
		return err
	}
	inside, err := b.NewBridge(ctx, "inside")
	if err != nil {
		return err
	}
	for _, m := range members {
		ns, err := b.NewNS(ctx, m.Name)
		if err != nil {
			return err
		}
		n := &Node{Name: m.Name, Witness: m.Witness, NS: ns, ClusterAddr: m.Cluster, OutsideAddr: m.Outside,
			InsideAddr: m.Inside, ConfigPath: m.Config, Socket: m.Socket}
		links := []struct {
			br   *lab.Bridge
			ifn  string
			addr netip.Prefix
		}{{clus, IfCluster, netip.PrefixFrom(m.Cluster, 24)}}
		if !m.Witness {
			links = append(links, struct {
				br   *lab.Bridge
				ifn  string
				addr netip.Prefix
			}{outside, IfOutside, m.Outside}, struct {
				br   *lab.Bridge
				ifn  string
				addr netip.Prefix
			}{inside, IfInside, m.Inside})
		}
		for _, lk := range links {
			port, err := lk.br.Attach(ctx, ns, lk.ifn)
			if err != nil {
				return err
			}
			n.ports = append(n.ports, bridgePort{lk.br, port})
			if err := ns.AddAddr(ctx, lk.ifn, lk.addr); err != nil {
				return err
			}
		}
		if err := l.addRoutes(ctx, n); err != nil {
			return err
		}
		if !m.Witness {
			for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
				if err := ns.Sysctl(ctx, kv[0], kv[1]); err != nil {
					return err
				}
			}
		}
		l.nodes = append(l.nodes, n)
	}
	if l.Peer, err = b.NewNS(ctx, "peer"); err != nil {
		return err
	}
	if _, err := outside.Attach(ctx, l.Peer, "eth0"); err != nil {
		return err
	}
	if err := l.Peer.AddAddr(ctx, "eth0", PeerOutside); err != nil {
		return err
	}
	if _, err := l.Peer.AddLoopbackAddr(ctx, PeerNet); err != nil {
		return err
	}
	if l.opts.LoadTunnels > 0 {
		if err := l.buildLoad(ctx, outside); err != nil {
			return err
		}
	}
	if l.Host, err = b.NewNS(ctx, "host"); err != nil {
		return err
	}
	if _, err := inside.Attach(ctx, l.Host, "eth0"); err != nil {
		return err
	}
	if err := l.Host.AddAddr(ctx, "eth0", HostInside); err != nil {
		return err
	}
	return l.Host.AddRoute(ctx, netip.MustParsePrefix("0.0.0.0/0"), InsideVIP.Addr(), "")
}

// addRoutes adds a gateway's static routes. The kernel data plane only
// adds XFRM policies: a forwarded packet needs a route before the policy
// lookup (the userspace one routes the peer's net into its TUN itself). A
// real gateway has its upstream route; here the peer is the upstream.
func (l *Lab) addRoutes(ctx context.Context, n *Node) error {
	if n.Witness {
		return nil
	}
	if l.opts.LoadTunnels > 0 {
		// IKE answers to the load generator's source addresses.
		if err := n.NS.AddRoute(ctx, LoadNet, LoadOutside.Addr(), IfOutside); err != nil {
			return err
		}
	}
	if l.opts.Dataplane == "userspace" {
		return nil
	}
	return n.NS.AddRoute(ctx, PeerNet, PeerOutside.Addr(), IfOutside)
}

// start starts the node's ikegwd (under the supervisor when available).
func (l *Lab) start(n *Node) error {
	cmd := "run"
	if l.supervised && !n.Witness {
		cmd = "supervise"
	}
	p, err := n.NS.StartSpec(lab.ProcSpec{Label: "ikegwd-" + cmd, Argv: []string{l.opts.Bin, cmd, "-c", n.ConfigPath}})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return nil
}

// startPeer starts strongSwan on the peer.
func (l *Lab) startPeer(ctx context.Context) error {
	psk, err := l.peerSecret()
	if err != nil {
		return err
	}
	l.swan, err = l.Peer.StartStrongSwan(ctx, lab.SwanConfig{
		RetransmitTries: 5, RetransmitTimeout: time.Second,
		Conns: []lab.SwanConn{{
			Name: "gw", Version: 1,
			LocalAddrs: []string{PeerOutside.Addr().String()}, RemoteAddrs: []string{OutsideVIP.Addr().String()},
			PSK: psk, Proposals: []string{IKEProposal}, DPDDelay: l.opts.DPDDelay, RekeyTime: 4 * time.Hour,
			Children: []lab.SwanChild{{Name: "net", LocalTS: []string{PeerNet.String()}, RemoteTS: []string{InsideNet.String()},
				ESPProposals: []string{ESPProposal}, RekeyTime: time.Hour}},
		}},
	})
	return err
}

// Dir is the lab's work directory.
func (l *Lab) Dir() string { return l.dir }

// Tag starts the name of every namespace of the lab.
func (l *Lab) Tag() string { return l.base.Tag() }

// Supervised reports whether the gateways run under `ikegwd supervise`.
func (l *Lab) Supervised() bool { return l.supervised }

// Swan is the strongSwan peer.
func (l *Lab) Swan() *lab.Swan { return l.swan }

// Pinger is the protected host's ping through the tunnel.
func (l *Lab) Pinger() *lab.Pinger { return l.pinger }

// Nodes returns the members: the gateways, then the witness.
func (l *Lab) Nodes() []*Node { return slices.Clone(l.nodes) }

// Node returns the member called name.
func (l *Lab) Node(name string) (*Node, error) {
	for _, n := range l.nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownNode, name)
}

// NodeStatus is one member as the lab sees it.
type NodeStatus struct {
	Name    string
	Witness bool
	Running bool   // its top process is alive
	Cut     bool   // its links are down (KillNode)
	Role    string // from /v1/status; "" when it does not answer
	Status  Status
	Err     error // why the admin API did not answer
}

// Status asks every member's admin API for its status.
func (l *Lab) Status(ctx context.Context) []NodeStatus {
	out := make([]NodeStatus, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.mu.Lock()
			s := NodeStatus{Name: n.Name, Witness: n.Witness, Running: n.proc != nil && !n.proc.Exited(), Cut: n.cut}
			n.mu.Unlock()
			if err := adminGet(ctx, n.Socket, "/v1/status", &s.Status); err != nil {
				s.Err = err
			} else {
				s.Role = s.Status.Role
			}
			out[i] = s
		}()
	}
	wg.Wait()
	return out
}

// Active returns the gateway that reports the active role; ErrNoActive if
// none does, ErrSplitBrain if several do.
func (l *Lab) Active(ctx context.Context) (string, error) {
	var act []string
	for _, s := range l.Status(ctx) {
		if s.Err == nil && isActive(s.Status) {
			act = append(act, s.Name)
		}
	}
	switch len(act) {
	case 0:
		return "", ErrNoActive
	case 1:
		return act[0], nil
	}
	return "", fmt.Errorf("%w: %s", ErrSplitBrain, strings.Join(act, ", "))
}

// largeLab is the number of load tunnels from which the lab stops asking
// every member's /v1/status in a loop while it waits: a status opens every
// sealed record in the member's store (or copies every SA out of the
// active's engine) to count them (0.3 s for one answer of the witness at
// 10,000 tunnels and load 20), and a loop of them would load the nodes
// whose failover is being measured (the new active reads the same records
// to take over).
const largeLab = 2000

// waitActive polls until one gateway other than not is active.
func (l *Lab) waitActive(ctx context.Context, not string) (string, error) {
	if l.opts.LoadTunnels >= largeLab {
		return l.waitActiveRecorded(ctx, not)
	}
	var last error
	for {
		a, err := l.Active(ctx)
		if err == nil && a != not {
			for _, n := range l.nodes {
				if n.Name == a && n.Witness {
					return "", fmt.Errorf("gwlab: the witness %s reports the active role", a)
				}
			}
			return a, nil
		}
		if err != nil {
			last = err
		}
		if errors.Is(err, ErrSplitBrain) {
			return "", err
		}
		if err := l.waitTick(ctx, not, last); err != nil {
			return "", err
		}
	}
}

// waitTick ends one round of a wait for an active gateway other than not:
// an error when every gateway's ikegwd has exited or ctx ends (last is the
// newest failure of a round), otherwise nil after 10 ms.
func (l *Lab) waitTick(ctx context.Context, not string, last error) error {
	if !l.anyGatewayRunning(not) {
		return fmt.Errorf("gwlab: waiting for an active gateway (not %q): every gateway's ikegwd process has exited (nodes: %s)", not, l.describe(context.Background()))
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("gwlab: waiting for an active gateway (not %q): %w (last: %v; nodes: %s)", not, ctx.Err(), last, l.describe(context.Background()))
	case <-time.After(10 * time.Millisecond):
		return nil
	}
}

// waitActiveRecorded is waitActive for large labs: it asks the running
// members' /v1/members (cheap: membership and one meta record) for the
// active the cluster recorded (committed by a node once it claimed the
// VIPs) and confirms that node's own status, once; every second it also
// asks every member's status, as waitActive does, in case the record's
// commit failed. It detects two actives only in that slower check.
func (l *Lab) waitActiveRecorded(ctx context.Context, not string) (string, error) {
	var last error
	full := time.Now()
	for {
		a, err := l.recordedActive(ctx, not)
		if err == nil && a == "" && time.Since(full) >= time.Second {
			full = time.Now()
			a, err = l.Active(ctx)
			if errors.Is(err, ErrSplitBrain) {
				return "", err
			}
			if a == not {
				a = ""
			}
		}
		if err == nil && a != "" {
			n, nerr := l.Node(a)
			if nerr != nil {
				return "", fmt.Errorf("gwlab: the cluster records %q as active: %w", a, nerr)
			}
			if n.Witness {
				return "", fmt.Errorf("gwlab: the witness %s reports the active role", a)
			}
			var st Status
			if err = adminGet(ctx, n.Socket, "/v1/status", &st); err == nil {
				if isActive(st) {
					return a, nil
				}
				err = fmt.Errorf("gwlab: the cluster records %s as active, but it reports %q", a, st.Role)
			}
		}
		if err != nil {
			last = err
		}
		if err := l.waitTick(ctx, not, last); err != nil {
			return "", err
		}
	}
}

// recordedActive returns the active other than not that a running member's
// /v1/members names (members lag: any one naming a new active will do);
// "" when none does yet.
func (l *Lab) recordedActive(ctx context.Context, not string) (string, error) {
	var socks []string
	for _, n := range l.nodes {
		if p := n.Proc(); p != nil && !p.Exited() {
			socks = append(socks, n.Socket)
		}
	}
	return recordedActiveOf(ctx, socks, not)
}

// recordedActiveOf asks each admin socket's /v1/members in turn for an
// active other than not; an error only when every socket failed.
func recordedActiveOf(ctx context.Context, socks []string, not string) (string, error) {
	var errs []error
	for _, sock := range socks {
		var m api.Members
		if err := adminGet(ctx, sock, "/v1/members", &m); err != nil {
			errs = append(errs, err)
			continue
		}
		if m.Active != "" && m.Active != not {
			return m.Active, nil
		}
	}
	if len(socks) > 0 && len(errs) == len(socks) {
		return "", errors.Join(errs...)
	}
	return "", nil
}

// anyGatewayRunning reports whether a gateway other than not still has
// its top process (supervisor or daemon) running.
func (l *Lab) anyGatewayRunning(not string) bool {
	for _, n := range l.nodes {
		if n.Witness || n.Name == not {
			continue
		}
		if p := n.Proc(); p != nil && !p.Exited() {
			return true
		}
	}
	return false
}

// describe is a one-line summary of every member, for errors.
func (l *Lab) describe(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var parts []string
	for _, s := range l.Status(ctx) {
		d := fmt.Sprintf("%s running=%v role=%q", s.Name, s.Running, s.Role)
		if s.Err != nil {
			d += fmt.Sprintf(" admin: %v", s.Err)
		}
		parts = append(parts, d)
	}
	return strings.Join(parts, "; ")
}

// daemonPid returns the pid of the node's `ikegwd run`: the supervisor's
// child, or the top process itself when unsupervised; 0 if none runs.
func (l *Lab) daemonPid(n *Node) (int, error) {
	p := n.Proc()
	if p == nil || p.Exited() {
		return 0, nil
	}
	if !l.supervised || n.Witness {
		return p.Pid(), nil
	}
	kids, err := childPids(p.Pid())
	if err != nil {
		return 0, err
	}
	if len(kids) == 0 {
		return 0, nil
	}
	return kids[0], nil
}

// childPids lists the processes whose parent is pid (from /proc/*/stat).
func childPids(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("gwlab: listing /proc: %w", err)
	}
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil && pp == pid {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}

// KillDaemon SIGKILLs the node's ikegwd only; its supervisor (if any)
// stays and cleans up after it. It returns when the daemon is gone.
func (l *Lab) KillDaemon(name string) error {
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	pid, err := l.daemonPid(n)
	if err != nil {
		return err
	}
	if pid == 0 {
		return fmt.Errorf("gwlab: %s: no ikegwd is running", name)
	}
	return killWait(pid, n.Name)
}

// killWait SIGKILLs pid and waits until it is gone (or reaped).
func killWait(pid int, where string) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("gwlab: %s: SIGKILL to pid %d: %w", where, pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if s := string(b); strings.LastIndexByte(s, ')') > 0 {
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
				return nil // dead, waiting to be reaped
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("gwlab: %s: pid %d still alive 5 s after SIGKILL", where, pid)
}

// KillNode models the death of the whole machine: the node's cables are
// cut (its bridge ports go down), every process in its namespace gets
// SIGKILL and its own links go down too (a dead kernel sends nothing more:
// downing them drops what its neighbour queues still held). Restart brings
// it back.
func (l *Lab) KillNode(name string) error {
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, p := range n.ports {
		if err := p.br.NS.SetLink(ctx, p.port, false); err != nil {
			errs = append(errs, err)
		}
	}
	n.mu.Lock()
	n.cut = true
	n.mu.Unlock()
	pids, err := nsPids(ctx, n.NS.Name())
	if err != nil {
		errs = append(errs, err)
	}
	for _, pid := range pids {
		if err := killWait(pid, n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ifn := range n.ifaces() {
		if err := n.NS.SetLink(ctx, ifn, false); err != nil {
			errs = append(errs, err)
		}
	}
	if p := n.Proc(); p != nil {
		select {
		case <-p.Done():
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("gwlab: %s: ikegwd (pid %d) did not exit after SIGKILL", name, p.Pid()))
		}
	}
	return errors.Join(errs...)
}

// HeldVIPs returns the VIPs (outside, inside) configured on the node's
// interfaces right now, and any TUN device left in its namespace (the
// userspace data plane's). A dead daemon's node must hold neither.
func (n *Node) HeldVIPs(ctx context.Context) (vips []netip.Prefix, tuns []string, err error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", n.NS.Name(), "-o", "addr", "show").CombinedOutput()
	if err != nil {
		return nil, nil, fmt.Errorf("gwlab: %s: ip addr show: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" && f[i] != "inet6" {
				continue
			}
			if p, err := netip.ParsePrefix(f[i+1]); err == nil && (p == OutsideVIP || p == InsideVIP) {
				vips = append(vips, p)
			}
		}
	}
	out, err = exec.CommandContext(ctx, "ip", "-n", n.NS.Name(), "-o", "link", "show", "type", "tun").CombinedOutput()
	if err != nil {
		return nil, nil, fmt.Errorf("gwlab: %s: ip link show type tun: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			tuns = append(tuns, strings.TrimSuffix(f[1], ":"))
		}
	}
	return vips, tuns, nil
}

// ifaces are the node's own interfaces on the segments.
func (n *Node) ifaces() []string {
	if n.Witness {
		return []string{IfCluster}
	}
	return []string{IfCluster, IfOutside, IfInside}
}

func nsPids(ctx context.Context, ns string) ([]int, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("gwlab: ip netns pids %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("gwlab: ip netns pids %s: unexpected output %q", ns, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Restart brings a dead (or planned-stopped) node back: what is left of
// its processes is stopped; after KillNode the machine "reboots" (the VIP
// addresses the dead kernel held are gone, like after a real reboot, and
// its links come up again) and its cables are plugged back in; then ikegwd
// starts again. It returns once the
// node answers on its admin socket and reports a role (a gateway: not
// active, i.e. it rejoined as standby).
func (l *Lab) Restart(ctx context.Context, name string) error {
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	if p := n.Proc(); p != nil && !p.Exited() {
		if err := p.Stop(); err != nil {
			return err
		}
	}
	n.mu.Lock()
	cut := n.cut
	n.mu.Unlock()
	if cut {
		if !n.Witness {
			for _, v := range []struct {
				ifn  string
				addr netip.Prefix
			}{{IfOutside, OutsideVIP}, {IfInside, InsideVIP}} {
				// Absent when it was released in time: only that is fine.
				if err := n.NS.DelAddr(ctx, v.ifn, v.addr); err != nil && !strings.Contains(err.Error(), "Address not found") &&
					!strings.Contains(err.Error(), "Cannot assign requested address") {
					return err
				}
			}
		}
		for _, ifn := range n.ifaces() {
			if err := n.NS.SetLink(ctx, ifn, true); err != nil {
				return err
			}
		}
		if err := l.addRoutes(ctx, n); err != nil {
			return err
		}
		for _, p := range n.ports {
			if err := p.br.NS.SetLink(ctx, p.port, true); err != nil {
				return err
			}
		}
		n.mu.Lock()
		n.cut = false
		n.mu.Unlock()
	}
	if err := l.start(n); err != nil {
		return err
	}
	return l.waitRejoined(ctx, n)
}

// waitRejoined waits until n answers with a role (a gateway: not active),
// knows the leader, and has applied every entry the cluster had committed
// when the wait began (it caught up and could take over).
func (l *Lab) waitRejoined(ctx context.Context, n *Node) error {
	var target uint64
	for _, s := range l.Status(ctx) {
		if s.Err == nil && s.Name != n.Name && s.Status.Cluster != nil {
			target = max(target, s.Status.Cluster.CommitIndex)
		}
	}
	var last string
	for {
		var st Status
		err := adminGet(ctx, n.Socket, "/v1/status", &st)
		switch {
		case err != nil:
			last = err.Error()
		case st.Cluster == nil:
			last = "role " + st.Role + ", no cluster status"
		case st.Role == "" || (!n.Witness && isActive(st)):
			last = "role " + st.Role
		case st.Cluster.Leader == "" || st.Cluster.AppliedIndex < target:
			last = fmt.Sprintf("role %s, leader %q, applied index %d < %d", st.Role, st.Cluster.Leader, st.Cluster.AppliedIndex, target)
		default:
			return nil
		}
		p := n.Proc()
		select {
		case <-ctx.Done():
			return fmt.Errorf("gwlab: %s did not rejoin: %w (last: %s)", n.Name, ctx.Err(), last)
		case <-p.Done():
			return fmt.Errorf("gwlab: %s: ikegwd exited while rejoining:\n%s", n.Name, tail(p.Output(), 3000))
		case <-time.After(rejoinPoll(l.opts.LoadTunnels)):
		}
	}
}

// rejoinPoll is how often waitRejoined asks the restarted node's status
// (which opens every record of its store): more rarely in large labs, so
// the polling does not slow down the replay it waits for.
func rejoinPoll(loadTunnels int) time.Duration {
	if loadTunnels >= largeLab {
		return 500 * time.Millisecond
	}
	return 20 * time.Millisecond
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Close stops the pinger, strongSwan and every node, and removes every
// namespace (and Dir when the lab created it). It is idempotent.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		if l.pinger != nil {
			l.pinger.Stop()
		}
		if l.base != nil {
			errs = append(errs, l.base.Close())
		}
		if l.ownDir {
			if err := os.RemoveAll(l.dir); err != nil {
				errs = append(errs, fmt.Errorf("gwlab: removing %s: %w", l.dir, err))
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}
