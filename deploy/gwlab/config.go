package gwlab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// The lab's fixed addressing (TEST-NET-1 outside, private inside).
var (
	// OutsideVIP is the virtual IP the peer talks IKE and ESP to.
	OutsideVIP = netip.MustParsePrefix("192.0.2.10/24")
	// InsideVIP is the protected host's default gateway.
	InsideVIP = netip.MustParsePrefix("10.1.0.1/24")
	// PeerOutside is the strongSwan peer's public address.
	PeerOutside = netip.MustParsePrefix("192.0.2.100/24")
	// HostInside is the protected host behind the gateways.
	HostInside = netip.MustParsePrefix("10.1.0.100/24")
	// InsideNet and PeerNet are the tunnel's traffic selectors.
	InsideNet = netip.MustParsePrefix("10.1.0.0/24")
	PeerNet   = netip.MustParsePrefix("10.2.0.0/24")
	// PeerProtected is the address on the peer's lo the ping goes to.
	PeerProtected = netip.MustParseAddr("10.2.0.1")
	// LoadOutside is the load generator's address on the outside segment;
	// LoadNet holds its source addresses (one per tunnel, on its lo), and
	// LoadTS the traffic selectors its tunnels propose (one /32 each).
	LoadOutside = netip.MustParsePrefix("192.0.2.200/24")
	LoadNet     = netip.MustParsePrefix("198.18.0.0/16")
	LoadTS      = netip.MustParsePrefix("10.200.0.0/16")
)

// maxLoadTunnels bounds Options.LoadTunnels (addresses in LoadNet).
const maxLoadTunnels = 60000

// Load tunnels' proposals (the handshake benchmark's).
const (
	LoadIKEProposal = "aes128-sha256-ecp256"
	LoadESPProposal = "aes128-sha256"
)

// Ports of the cluster links.
const (
	RaftPort   = 7400
	GossipPort = 7401
)

// Interface names inside a gateway namespace.
const (
	IfOutside = "out0"
	IfInside  = "in0"
	IfCluster = "cl0"
)

// IKE and ESP proposals on both sides.
const (
	IKEProposal = "aes256-sha256-modp2048"
	ESPProposal = "aes256-sha256"
)

// nodePlan is one cluster member's addresses and files.
type nodePlan struct {
	Name    string
	Witness bool
	Index   int        // 1-based
	Cluster netip.Addr // 10.99.0.N
	Outside netip.Prefix
	Inside  netip.Prefix
	Dir     string // state dir
	Config  string // config file
	Socket  string // admin socket
}

// plan returns the members: gw1..gwN, then the witness.
func plan(dir string, gateways int, witness bool) []nodePlan {
	var out []nodePlan
	add := func(name string, w bool) {
		i := len(out) + 1
		p := nodePlan{Name: name, Witness: w, Index: i,
			Cluster: netip.AddrFrom4([4]byte{10, 99, 0, byte(i)}),
			Dir:     filepath.Join(dir, name), Config: filepath.Join(dir, name+".yaml"),
		}
		p.Socket = filepath.Join(p.Dir, "admin.sock")
		if !w {
			p.Outside = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), 24)
			p.Inside = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(10 + i)}), 24)
		}
		out = append(out, p)
	}
	for i := 1; i <= gateways; i++ {
		add(fmt.Sprintf("gw%d", i), false)
	}
	if witness {
		add("witness", true)
	}
	return out
}

// configParams are the lab-wide inputs of a node's configuration file.
type configParams struct {
	Dir       string // lab directory: certs/, cluster.key, gossip.key, psk
	Dataplane string
	DPDDelay  time.Duration
	LogLevel  string
	Members   []nodePlan
	// Raft timings (cluster.heartbeat_timeout, election_timeout,
	// leader_lease).
	Heartbeat, Election, Lease time.Duration
	// Load adds the "load" connection for the load generator.
	Load bool
	// CounterSync is dataplane.counter_sync; 200 ms if zero.
	CounterSync time.Duration
}

// nodeConfig renders the ikegwd configuration file of member self.
func nodeConfig(p configParams, self nodePlan) string {
	var b strings.Builder
	q := func(s string) string { return fmt.Sprintf("%q", s) } // YAML accepts JSON-style quoted strings
	fmt.Fprintf(&b, "node:\n  name: %s\n  state_dir: %s\n  cluster_key_file: %s\n",
		self.Name, q(self.Dir), q(filepath.Join(p.Dir, "cluster.key")))
	if !self.Witness {
		fmt.Fprintf(&b, "ike:\n  listen: [%s]\n", OutsideVIP.Addr())
		cs := p.CounterSync
		if cs == 0 {
			cs = 200 * time.Millisecond
		}
		fmt.Fprintf(&b, "dataplane:\n  kind: %s\n  counter_sync: %s\n", p.Dataplane, cs)
	}
	fmt.Fprintf(&b, "log:\n  level: %s\n", p.LogLevel)
	fmt.Fprintf(&b, "admin:\n  socket: %s\n", q(self.Socket))
	role := "gateway"
	if self.Witness {
		role = "witness"
	}
	var join []string
	for _, m := range p.Members {
		if m.Name != self.Name {
			join = append(join, fmt.Sprintf("%s:%d", m.Cluster, GossipPort))
		}
	}
	certs := filepath.Join(p.Dir, "certs")
	fmt.Fprintf(&b, `cluster:
  role: %s
  raft_bind: %s:%d
  gossip_bind: %s:%d
  gossip_key_file: %s
  join: [%s]
  bootstrap_expect: %d
  tls: {ca: %s, cert: %s, key: %s}
  local_timings: true
  heartbeat_timeout: %s
  election_timeout: %s
  leader_lease: %s
`, role, self.Cluster, RaftPort, self.Cluster, GossipPort, q(filepath.Join(p.Dir, "gossip.key")),
		strings.Join(join, ", "), len(p.Members),
		q(filepath.Join(certs, "ca.pem")), q(filepath.Join(certs, self.Name+".pem")), q(filepath.Join(certs, self.Name+"-key.pem")),
		p.Heartbeat, p.Election, p.Lease)
	if self.Witness {
		return b.String()
	}
	fmt.Fprintf(&b, `failover:
  vips:
    - {interface: %s, address: %s}
    - {interface: %s, address: %s}
  announce: {count: 3, interval: 50ms}
connections:
  - name: peer
    local_addrs: %s
    remote_addrs: %s
    psk_file: %s
    proposals: [%s]
    dpd_delay: %s
    children:
      - {name: net, local_ts: [%s], remote_ts: [%s], esp_proposals: [%s]}
`, IfOutside, OutsideVIP, IfInside, InsideVIP, OutsideVIP.Addr(), PeerOutside.Addr(), q(filepath.Join(p.Dir, "psk")),
		IKEProposal, p.DPDDelay, InsideNet, PeerNet, ESPProposal)
	if p.Load {
		fmt.Fprintf(&b, `  - name: load
    local_addrs: %s
    remote_addrs: "%%any"
    remote_id: "%%any"
    psk_file: %s
    proposals: [%s]
    dpd_delay: 0s
    children:
      - {name: net, local_ts: [%s], remote_ts: [%s], esp_proposals: [%s]}
`, OutsideVIP.Addr(), q(filepath.Join(p.Dir, "psk")), LoadIKEProposal, InsideNet, LoadTS, LoadESPProposal)
	}
	return b.String()
}
