package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"ikegw/cluster"
	"ikegw/cmd/api"
	"ikegw/failover/vip"
	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
	"ikegw/store"
	"ikegw/xfrm"
	"ikegw/xfrm/kernel"
	"ikegw/xfrm/userspace"
)

// Version is set at build time (-ldflags "-X ikegw/cmd/internal/daemon.Version=...").
var Version = "dev"

// Node is a running standalone ikegwd.
type Node struct {
	cfg     *Config
	log     *slog.Logger
	db      *store.DB // standalone: the node's own SA database
	dp      xfrm.DataPlane
	rt      *runtime.Runtime // standalone
	eng     *ikev1.Engine    // standalone
	admin   *adminServer
	started time.Time

	sockHook func(*net.UDPConn, bool) error // set by the kernel data plane

	cnode *cluster.Node               // clustered
	mem   *member                     // clustered gateway
	roles *roles                      // clustered gateway
	vips  atomic.Pointer[vip.Manager] // clustered gateway, once the roles start

	fence     *fence        // clustered gateway: send gate and supervisor heartbeat (fence.go)
	failovers atomic.Uint64 // planned failovers accepted (admin API)
	sync      *configSync   // clustered gateway: the replicated connections
}

// runtime returns the running IKE runtime: always for a standalone node,
// only while active for a cluster gateway.
func (n *Node) runtime() *runtime.Runtime {
	if n.mem != nil {
		return n.mem.runtime()
	}
	return n.rt
}

// role names what this node is doing now.
func (n *Node) role() string {
	switch {
	case n.cnode == nil:
		return api.RoleStandalone
	case n.mem == nil:
		return api.RoleWitness
	case n.roles != nil && n.roles.active():
		return api.RoleActive
	}
	return api.RoleStandby
}

// Handover moves the active role to another gateway before this node stops
// (planned failover, SIGTERM). A standby or standalone node has nothing to
// hand over. No DELETE is sent to any peer.
func (n *Node) Handover() error { return n.HandoverTo("") }

// HandoverTo is Handover to a named gateway (planned failover --to): the
// VIPs are released first, then leadership goes to that node only. After
// a transfer it returns once the target recorded itself as the active
// node, or a second after the transfer (roles.handover).
func (n *Node) HandoverTo(to string) error {
	if n.roles == nil {
		return nil
	}
	return n.roles.handover(to)
}

// store returns the SA database (replicated when clustered).
func (n *Node) store() *store.DB {
	if n.cnode != nil {
		return n.cnode.Store()
	}
	return n.db
}

// lateSender lets the userspace data plane send through the runtime that
// is created after it.
type lateSender struct {
	rt atomic.Pointer[runtime.Runtime]
}

func (s *lateSender) SendESP(b []byte, dst netip.AddrPort) error {
	rt := s.rt.Load()
	if rt == nil {
		return errors.New("daemon: runtime not started")
	}
	return rt.SendESP(b, dst)
}

func (s *lateSender) SendESPBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error) {
	rt := s.rt.Load()
	if rt == nil {
		return 0, errors.New("daemon: runtime not started")
	}
	return rt.SendESPBatch(pkts, dsts)
}

// NewLogger builds the slog logger the configuration asks for.
func NewLogger(c LogConfig) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// Start opens the state, starts the data plane, the IKE runtime (standalone)
// or the cluster membership and role machine (clustered), and the admin API.
// Stop undoes it.
func Start(ctx context.Context, cfg *Config, log *slog.Logger) (_ *Node, err error) {
	n := &Node{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	if err := os.MkdirAll(cfg.Node.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if cfg.Cluster != nil {
		err = n.startClustered(ctx)
	} else {
		err = n.startStandalone(ctx)
	}
	if err != nil {
		return nil, err
	}
	n.admin, err = startAdmin(cfg.Admin.Socket, n, log.With("component", "admin"))
	if err != nil {
		return nil, err
	}
	notifyReady(log)
	kind := "none"
	if n.dp != nil {
		kind = n.dp.Kind()
	}
	log.Info("ikegwd started", "node", cfg.Node.Name, "version", Version, "dataplane", kind,
		"clustered", cfg.Cluster != nil, "connections", len(cfg.Connections))
	return n, nil
}

// newDataplane builds the configured data plane and flushes what a previous
// run of this node left in it (DESIGN.md "Daemon death is not node death").
// With the kernel data plane it also sets n.sockHook, which makes the IKE
// sockets bypass IPsec policies and the NAT-T socket decapsulate ESP.
func (n *Node) newDataplane(ctx context.Context, sender *lateSender) (xfrm.DataPlane, runtime.ESPReceiver, error) {
	cfg, log := n.cfg, n.log
	kind := cfg.Dataplane.Kind
	if kind == "auto" {
		if err := kernel.Probe(ctx); err != nil {
			kind = "userspace"
			log.Info("data plane selected", "kind", kind, "reason", "the kernel cannot hold an ESP state", "probe", err.Error())
		} else {
			kind = "kernel"
			log.Info("data plane selected", "kind", kind, "reason", "the kernel holds ESP states")
		}
	}
	switch kind {
	case "kernel":
		if err := kernel.Probe(ctx); err != nil {
			return nil, nil, fmt.Errorf("kernel data plane: %w", err)
		}
		k, err := kernel.New(ctx, kernel.Config{Logger: log.With("component", "dataplane")})
		if err != nil {
			return nil, nil, fmt.Errorf("kernel data plane: %w", err)
		}
		if err := k.Flush(ctx); err != nil {
			k.Close()
			return nil, nil, fmt.Errorf("data plane flush at start: %w", err)
		}
		n.sockHook = func(conn *net.UDPConn, natt bool) error {
			if natt {
				if err := kernel.EnableESPInUDP(conn); err != nil {
					return err
				}
			}
			return kernel.BypassPolicy(conn)
		}
		return k, nil, nil
	case "userspace":
		if err := userspace.Probe(); err != nil {
			return nil, nil, fmt.Errorf("userspace data plane: %w", err)
		}
		var gate userspace.Gate
		if n.fence != nil {
			gate = &n.fence.gate
		}
		u, err := userspace.New(userspace.Config{Sender: sender, Name: cfg.Dataplane.TUN, MTU: cfg.Dataplane.MTU,
			Logger: log.With("component", "dataplane"), Gate: gate})
		if err != nil {
			return nil, nil, fmt.Errorf("userspace data plane: %w", err)
		}
		if err := u.Flush(ctx); err != nil {
			u.Close()
			return nil, nil, fmt.Errorf("data plane flush at start: %w", err)
		}
		// The userspace data plane carries ESP only inside UDP (RFC 3948),
		// so every connection encapsulates, as strongSwan's kernel-libipsec
		// does.
		for _, c := range cfg.Connections {
			if !c.ForceEncap {
				c.ForceEncap = true
				log.Info("connection forced to UDP-encapsulate ESP (userspace data plane)", "conn", c.Name)
			}
		}
		return u, u, nil
	}
	return nil, nil, fmt.Errorf("dataplane.kind %q: want auto, kernel or userspace", kind)
}

func (n *Node) startStandalone(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	key, err := store.LoadClusterKey(cfg.Node.ClusterKeyFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w (create one with `ikegwd keygen --out %s`)", err, cfg.Node.ClusterKeyFile)
		}
		return err
	}
	previous, err := loadPreviousKeys("node.previous_cluster_key_files", cfg.Node.PreviousClusterKeyFiles)
	if err != nil {
		return err
	}
	sealer, err := store.NewSealer(key, previous...)
	for _, k := range previous {
		clear(k)
	}
	if err != nil {
		return err
	}
	n.db, err = store.Open(filepath.Join(cfg.Node.StateDir, "sa.db"), sealer)
	if err != nil {
		return err
	}
	if len(previous) > 0 {
		c, err := n.db.Reseal()
		if err != nil {
			return fmt.Errorf("reseal the SA database under the current cluster key: %w", err)
		}
		log.Info("SA database resealed under the current cluster key", "values", c, "previous_keys", len(previous))
	}
	sender := &lateSender{}
	var esp runtime.ESPReceiver
	if n.dp, esp, err = n.newDataplane(ctx, sender); err != nil {
		return err
	}
	n.eng, err = ikev1.New(ikev1.Config{Connections: cfg.Connections, Log: log.With("component", "ike")})
	if err != nil {
		return err
	}
	n.rt, err = runtime.New(runtime.Config{
		Engine: n.eng, Listen: cfg.ListenAddrs(), Port: cfg.IKE.Port, NATTPort: cfg.IKE.NATTPort, FreeBind: cfg.IKE.FreeBind,
		Persister: storePersister{n.db}, DataPlane: n.dp, ESP: esp, CounterSync: cfg.Dataplane.CounterSync, SocketHook: n.sockHook,
		Log: log.With("component", "runtime"),
	})
	if err != nil {
		return err
	}
	sender.rt.Store(n.rt)
	go func() {
		if err := n.rt.Run(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("runtime stopped", "err", err)
		}
	}()
	go n.forwardExpiries()
	if err := n.restore(ctx); err != nil {
		return err
	}
	for _, c := range cfg.Connections {
		if c.Initiate {
			if err := n.rt.Initiate(ctx, c.Name); err != nil {
				log.Warn("initiate failed", "conn", c.Name, "err", err)
			}
		}
	}
	return nil
}

// forwardExpiries feeds the data plane's lifetime events to whichever
// runtime is running.
func (n *Node) forwardExpiries() {
	for ev := range n.dp.Expiries() {
		if rt := n.runtime(); rt != nil {
			rt.HandleExpiry(ev.SPI, ev.Hard)
		}
	}
}

func (n *Node) startClustered(ctx context.Context) error {
	var err error
	if n.cnode, err = openCluster(n.cfg, n.log); err != nil {
		return err
	}
	if n.cnode.Role() == cluster.RoleWitness {
		n.log.Info("witness: Raft voter only; no IKE, no data plane, no VIP")
		return nil
	}
	if n.fence, err = newFence(n.log.With("component", "fence")); err != nil {
		return err
	}
	sender := &lateSender{}
	dp, esp, err := n.newDataplane(ctx, sender)
	if err != nil {
		return err
	}
	n.dp = dp
	n.mem = &member{cfg: n.cfg, log: n.log, node: n.cnode, dp: dp, esp: esp, sender: sender, sockHook: n.sockHook, sendGate: &n.fence.gate}
	// The replicated connections: loaded now, polled from here on, and
	// refreshed by a takeover before it builds the engine.
	n.sync = newConfigSync(n)
	n.cfg.refresh = n.sync.load
	go n.sync.run()
	go n.forwardExpiries()
	n.roles, err = startRoles(n)
	return err
}

// restore resumes every persisted SA: the pairs are re-installed with their
// outbound sequence numbers jumped by the bound (failover.SeqBound: every
// packet the previous run may have sent since its last sync; persisted first, so a
// second restart jumps again from there), then the engine continues them.
func (n *Node) restore(ctx context.Context) error {
	ikes, kids, err := loadAll(n.db)
	if err != nil {
		return fmt.Errorf("reading the SA database: %w", err)
	}
	if len(ikes) == 0 && len(kids) == 0 {
		return nil
	}
	jumped := map[uint32]sa.Counters{}
	var live []*sa.ChildSA
	now := time.Now()
	bound := n.cfg.seqBound()
	for _, c := range kids {
		if c.State == sa.ChildDeleted {
			continue
		}
		c.Counters.OutSeq += bound.Jump(c, now)
		c.Counters.SyncedAt = now.UnixNano()
		jumped[c.In.SPI] = c.Counters
		live = append(live, c)
	}
	if err := (storePersister{n.db}).Persist(ctx, ikev1.Persist{Counters: jumped}); err != nil {
		return fmt.Errorf("persisting jumped sequence numbers: %w", err)
	}
	for _, c := range live {
		if err := n.dp.InstallChild(ctx, c); err != nil {
			n.log.Error("re-installing a persisted IPsec SA pair failed", "spi_in", fmt.Sprintf("%08x", c.In.SPI), "err", err)
		}
	}
	err = n.rt.Do(ctx, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		return e.Restore(now, ikes, live, ikev1.RestoreOptions{})
	})
	if err != nil {
		return fmt.Errorf("restoring the engine: %w", err)
	}
	n.log.Info("resumed persisted SAs", "ike_sas", len(ikes), "child_sas", len(live), "max_pps", n.cfg.Dataplane.MaxPPS)
	return nil
}

// Stop closes everything. SAs stay persisted; with the userspace data plane
// they stop carrying traffic with the process.
func (n *Node) Stop() {
	if n.admin != nil {
		n.admin.close()
	}
	if n.roles != nil {
		n.roles.stop()
	}
	if n.sync != nil {
		n.sync.close()
	}
	if n.rt != nil {
		n.rt.Close()
	}
	if n.cnode != nil {
		n.cnode.Shutdown()
	}
	if n.dp != nil {
		n.dp.Close()
	}
	if n.db != nil {
		n.db.Close()
	}
}

// Reload re-reads the configuration file's connections and applies them
// (SIGHUP). A bad file changes nothing.
func (n *Node) Reload(ctx context.Context, path string) error {
	c, err := LoadConfig(path)
	if err != nil {
		return err
	}
	if v := n.sync.applied().Version; v > 0 {
		return fmt.Errorf("reload: the connections are cluster-wide (version %d applied through Raft): change them with `ikegwctl config apply`", v)
	}
	return n.ApplyConnections(ctx, c.Connections)
}

// ApplyConnections replaces the connection set: the running engine (if
// this node is active or standalone) reconfigures at once; a standby uses
// the new set at its next takeover. SAs of a removed connection run until
// they expire or are deleted.
func (n *Node) ApplyConnections(ctx context.Context, conns []*config.Connection) error {
	n.forceEncap(conns)
	if rt := n.runtime(); rt != nil {
		if err := rt.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
			return nil, e.Reconfigure(conns)
		}); err != nil {
			return err
		}
	}
	n.cfg.setConnections(conns)
	n.log.Info("configuration applied", "connections", len(conns))
	return nil
}

// notifyReady tells systemd (Type=notify) that the node is up.
func notifyReady(log *slog.Logger) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.Warn("sd_notify failed", "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}
