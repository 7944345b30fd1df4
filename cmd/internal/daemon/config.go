// Package daemon wires ikegwd: the node configuration file, persistence,
// the data plane, the IKE runtime and the admin API. It holds no protocol
// logic of its own.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"ikegw/failover"
	"ikegw/ike/config"
)

// Config is ikegwd's configuration file.
type Config struct {
	Node      NodeConfig      `yaml:"node"`
	IKE       IKEConfig       `yaml:"ike"`
	Dataplane DataplaneConfig `yaml:"dataplane"`
	Log       LogConfig       `yaml:"log"`
	Admin     AdminConfig     `yaml:"admin"`
	Metrics   MetricsConfig   `yaml:"metrics"`
	// Cluster, when present, makes the node a cluster member; without it
	// ikegwd runs standalone (persisting to its own SA database).
	Cluster  *ClusterConfig `yaml:"cluster"`
	Failover FailoverConfig `yaml:"failover"`
	// Connections is parsed by ike/config.
	Connections []*config.Connection `yaml:"-"`
	// Raw is the file as read.
	Raw []byte `yaml:"-"`
	// baseDir is the file's directory: relative psk_file paths, also of
	// replicated connections, are relative to it ("" = working directory).
	baseDir string

	connMu sync.Mutex // guards Connections after start (reload)
	// refresh, when set (cluster nodes), loads a newer replicated
	// connection set before connections returns (so that a takeover uses
	// the latest). It must not call into the IKE runtime.
	refresh func()
}

// connections returns the current connection set, brought up to date with
// the replicated configuration on a cluster node.
func (c *Config) connections() []*config.Connection {
	if c.refresh != nil {
		c.refresh()
	}
	return c.connectionsOnly()
}

// connectionsOnly returns the current connection set as it is.
func (c *Config) connectionsOnly() []*config.Connection {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	return c.Connections
}

// setConnectionsOnly is setConnections, for the replicated configuration.
func (c *Config) setConnectionsOnly(conns []*config.Connection) { c.setConnections(conns) }

func (c *Config) setConnections(conns []*config.Connection) {
	c.connMu.Lock()
	c.Connections = conns
	c.connMu.Unlock()
}

// NodeConfig names the node and where it keeps its state.
type NodeConfig struct {
	Name           string `yaml:"name"`
	StateDir       string `yaml:"state_dir"`
	ClusterKeyFile string `yaml:"cluster_key_file"`
	// PreviousClusterKeyFiles are keys that open sealed data but never
	// seal: during a rotation the new key (step 1) or the old one (step 2)
	// of deploy/OPERATIONS.md "Rotating certificates and keys". At start
	// the SA database is resealed under cluster_key_file.
	PreviousClusterKeyFiles []string `yaml:"previous_cluster_key_files"`
}

// IKEConfig says where IKE listens.
type IKEConfig struct {
	Listen   []string `yaml:"listen"`
	Port     uint16   `yaml:"port"`
	NATTPort uint16   `yaml:"natt_port"`
	FreeBind bool     `yaml:"freebind"`
}

// DataplaneConfig selects and tunes the data plane.
type DataplaneConfig struct {
	Kind string `yaml:"kind"` // auto | kernel | userspace
	TUN  string `yaml:"tun"`
	MTU  int    `yaml:"mtu"`
	// SeqMargin is the smallest jump of the outbound sequence number when
	// pairs are re-installed (restart, takeover). The jump itself is
	// derived from a bound: max_pps x (time since the counters were last
	// synced + max_clock_skew) (failover.SeqBound, DESIGN.md invariant 3).
	SeqMargin   uint64        `yaml:"seq_margin"`
	CounterSync time.Duration `yaml:"counter_sync"`
	// MaxPPS is the most ESP packets per second one IPsec SA pair can
	// send (default: 10 GbE line rate in minimum-size frames).
	MaxPPS uint64 `yaml:"max_pps"`
	// MaxClockSkew is the most two members' wall clocks may differ
	// (default 250ms; keep them NTP-synchronised).
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

// LogConfig sets up log/slog.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// AdminConfig places the admin API: the root-only unix socket, and
// optionally TCP with the cluster's mutual TLS (role by client
// certificate).
type AdminConfig struct {
	Socket string `yaml:"socket"`
	Listen string `yaml:"listen"` // host:port; empty = no TCP listener
}

// MetricsConfig places the Prometheus endpoint.
type MetricsConfig struct {
	Listen string `yaml:"listen"` // host:port; empty = /v1/metrics on the admin API only
}

// ClusterConfig makes the node a member of an ikegw cluster.
type ClusterConfig struct {
	Role          string `yaml:"role"`      // gateway | witness
	RaftBind      string `yaml:"raft_bind"` // host:port
	RaftAdvertise string `yaml:"raft_advertise"`
	GossipBind    string `yaml:"gossip_bind"` // host:port
	GossipKeyFile string `yaml:"gossip_key_file"`
	// PreviousGossipKeyFiles are memberlist keys accepted for incoming
	// gossip but not used to send (key rotation, as for the cluster key).
	PreviousGossipKeyFiles []string `yaml:"previous_gossip_key_files"`
	Join                   []string `yaml:"join"`
	BootstrapExpect        int      `yaml:"bootstrap_expect"`
	TLS                    struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	// LocalTimings uses fast failure detection (one host, the lab).
	LocalTimings     bool          `yaml:"local_timings"`
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout  time.Duration `yaml:"election_timeout"`
	LeaderLease      time.Duration `yaml:"leader_lease"`
}

// VIPConfig is one virtual IP address.
type VIPConfig struct {
	Interface string `yaml:"interface"`
	Address   string `yaml:"address"` // prefix, e.g. 192.0.2.10/24
}

// FailoverConfig lists the virtual IPs the active node holds.
type FailoverConfig struct {
	VIPs     []VIPConfig `yaml:"vips"`
	Announce struct {
		Count    int           `yaml:"count"`
		Interval time.Duration `yaml:"interval"`
	} `yaml:"announce"`
}

// Defaults.
const (
	DefaultStateDir    = "/var/lib/ikegw"
	DefaultSocket      = "/run/ikegw/admin.sock"
	DefaultSeqMargin   = 1 << 20
	DefaultCounterSync = time.Second
)

// ParseConfig parses and validates a configuration file's contents. Every
// error names the field. Relative psk_file paths are relative to the
// working directory.
func ParseConfig(data []byte) (*Config, error) { return parseConfig(data, "") }

func parseConfig(data []byte, baseDir string) (*Config, error) {
	var doc struct {
		Config      `yaml:",inline"`
		Connections yaml.Node `yaml:"connections"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c := &doc.Config
	c.Raw = data
	c.baseDir = baseDir
	if doc.Connections.Kind != 0 {
		cc, err := config.DecodeConnections(&doc.Connections, baseDir)
		if err != nil {
			return nil, err
		}
		c.Connections = cc.Connections
	}
	if err := c.setDefaults(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadConfig reads and parses a configuration file; relative psk_file
// paths are relative to the file's directory.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parseConfig(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func (c *Config) setDefaults() error {
	if c.Node.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return errors.New("config: node.name: not set and no hostname")
		}
		c.Node.Name = h
	}
	if c.Node.StateDir == "" {
		c.Node.StateDir = DefaultStateDir
	}
	if !filepath.IsAbs(c.Node.StateDir) {
		return fmt.Errorf("config: node.state_dir %q: must be an absolute path", c.Node.StateDir)
	}
	if c.Node.ClusterKeyFile == "" {
		c.Node.ClusterKeyFile = filepath.Join(c.Node.StateDir, "cluster.key")
	}
	if err := checkPreviousKeys("node.previous_cluster_key_files", c.Node.ClusterKeyFile, c.Node.PreviousClusterKeyFiles); err != nil {
		return err
	}
	if c.IKE.Port == 0 {
		c.IKE.Port = 500
	}
	if c.IKE.NATTPort == 0 {
		c.IKE.NATTPort = 4500
	}
	if c.IKE.Port == c.IKE.NATTPort {
		return fmt.Errorf("config: ike.port and ike.natt_port are both %d", c.IKE.Port)
	}
	for i, s := range c.IKE.Listen {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("config: ike.listen[%d] %q: not an IP address", i, s)
		}
	}
	switch c.Dataplane.Kind {
	case "":
		c.Dataplane.Kind = "auto"
	case "auto", "kernel", "userspace":
	default:
		return fmt.Errorf("config: dataplane.kind %q: want auto, kernel or userspace", c.Dataplane.Kind)
	}
	if c.Dataplane.TUN == "" {
		c.Dataplane.TUN = "ikegw%d"
	}
	if c.Dataplane.MTU == 0 {
		c.Dataplane.MTU = 1400
	}
	if c.Dataplane.MTU < 576 || c.Dataplane.MTU > 9000 {
		return fmt.Errorf("config: dataplane.mtu %d: want 576..9000", c.Dataplane.MTU)
	}
	if c.Dataplane.SeqMargin == 0 {
		c.Dataplane.SeqMargin = DefaultSeqMargin
	}
	if c.Dataplane.CounterSync == 0 {
		c.Dataplane.CounterSync = DefaultCounterSync
	}
	if c.Dataplane.MaxPPS == 0 {
		c.Dataplane.MaxPPS = failover.DefaultMaxPPS
	}
	if c.Dataplane.MaxClockSkew == 0 {
		c.Dataplane.MaxClockSkew = failover.DefaultClockSkew
	}
	if c.Dataplane.MaxClockSkew < 0 || c.Dataplane.MaxClockSkew >= failover.HandoverWindow {
		return fmt.Errorf("config: dataplane.max_clock_skew %s: want 0..%s", c.Dataplane.MaxClockSkew, failover.HandoverWindow)
	}
	if c.Dataplane.CounterSync < 10*time.Millisecond {
		return fmt.Errorf("config: dataplane.counter_sync %s: too short", c.Dataplane.CounterSync)
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "text"
	case "text", "json":
	default:
		return fmt.Errorf("config: log.format %q: want text or json", c.Log.Format)
	}
	if c.Admin.Socket == "" {
		c.Admin.Socket = DefaultSocket
	}
	for what, a := range map[string]string{"admin.listen": c.Admin.Listen, "metrics.listen": c.Metrics.Listen} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("config: %s %q: want host:port", what, a)
		}
	}
	if c.Admin.Listen != "" && c.Cluster == nil {
		return errors.New("config: admin.listen needs the cluster section (the TCP admin API uses the cluster's mutual TLS)")
	}
	if err := c.Cluster.check(); err != nil {
		return err
	}
	for i, v := range c.Failover.VIPs {
		if v.Interface == "" {
			return fmt.Errorf("config: failover.vips[%d]: interface is required", i)
		}
		if _, err := netip.ParsePrefix(v.Address); err != nil {
			return fmt.Errorf("config: failover.vips[%d].address %q: want a prefix such as 192.0.2.10/24", i, v.Address)
		}
	}
	if len(c.Failover.VIPs) > 0 && c.Cluster == nil {
		return errors.New("config: failover.vips needs a cluster section (a standalone node has no standby to fail over to)")
	}
	if c.Failover.Announce.Count == 0 {
		c.Failover.Announce.Count = 3
	}
	if c.Failover.Announce.Interval == 0 {
		c.Failover.Announce.Interval = 100 * time.Millisecond
	}
	return nil
}

func (cc *ClusterConfig) check() error {
	if cc == nil {
		return nil
	}
	switch cc.Role {
	case "":
		cc.Role = "gateway"
	case "gateway", "witness":
	default:
		return fmt.Errorf("config: cluster.role %q: want gateway or witness", cc.Role)
	}
	if _, _, err := net.SplitHostPort(cc.RaftBind); err != nil {
		return fmt.Errorf("config: cluster.raft_bind %q: want host:port", cc.RaftBind)
	}
	if _, _, err := net.SplitHostPort(cc.GossipBind); err != nil {
		return fmt.Errorf("config: cluster.gossip_bind %q: want host:port", cc.GossipBind)
	}
	if cc.GossipKeyFile == "" {
		return errors.New("config: cluster.gossip_key_file is required (memberlist traffic is encrypted)")
	}
	if err := checkPreviousKeys("cluster.previous_gossip_key_files", cc.GossipKeyFile, cc.PreviousGossipKeyFiles); err != nil {
		return err
	}
	if cc.TLS.CA == "" || cc.TLS.Cert == "" || cc.TLS.Key == "" {
		return errors.New("config: cluster.tls.ca, cert and key are required (Raft traffic uses mutual TLS)")
	}
	if cc.BootstrapExpect == 2 {
		return errors.New("config: cluster.bootstrap_expect 2: two voters without a witness cannot survive the loss of either node; add a third gateway or a witness (bootstrap_expect: 3)")
	}
	if cc.BootstrapExpect < 0 {
		return fmt.Errorf("config: cluster.bootstrap_expect %d is negative", cc.BootstrapExpect)
	}
	return nil
}

// ListenAddrs returns the parsed listen addresses.
func (c *Config) ListenAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range c.IKE.Listen {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// checkPreviousKeys refuses empty names, duplicates and the current key
// file in a list of previous key files.
func checkPreviousKeys(field, current string, files []string) error {
	seen := map[string]bool{filepath.Clean(current): true}
	for i, f := range files {
		switch {
		case f == "":
			return fmt.Errorf("config: %s[%d]: empty file name", field, i)
		case filepath.Clean(f) == filepath.Clean(current):
			return fmt.Errorf("config: %s[%d] %q: is the current key file itself", field, i, f)
		case seen[filepath.Clean(f)]:
			return fmt.Errorf("config: %s[%d] %q: listed twice", field, i, f)
		}
		seen[filepath.Clean(f)] = true
	}
	return nil
}
