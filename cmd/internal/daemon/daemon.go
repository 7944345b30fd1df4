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

	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
	"ikegw/store"
	"ikegw/xfrm"
	"ikegw/xfrm/userspace"
)

// Version is set at build time (-ldflags "-X ikegw/cmd/internal/daemon.Version=...").
var Version = "dev"

// Node is a running standalone ikegwd.
type Node struct {
	cfg     *Config
	log     *slog.Logger
	db      *store.DB
	dp      xfrm.DataPlane
	rt      *runtime.Runtime
	eng     *ikev1.Engine
	admin   *adminServer
	started time.Time
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

// Start opens the state, restores every persisted SA, binds the sockets
// and starts the runtime and the admin API. Stop undoes it.
func Start(ctx context.Context, cfg *Config, log *slog.Logger) (n *Node, err error) {
	n = &Node{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	if err := os.MkdirAll(cfg.Node.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	key, err := store.LoadClusterKey(cfg.Node.ClusterKeyFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (create one with `ikegwd keygen --out %s`)", err, cfg.Node.ClusterKeyFile)
		}
		return nil, err
	}
	sealer, err := store.NewSealer(key)
	if err != nil {
		return nil, err
	}
	n.db, err = store.Open(filepath.Join(cfg.Node.StateDir, "sa.db"), sealer)
	if err != nil {
		return nil, err
	}
	n.eng, err = ikev1.New(ikev1.Config{Connections: cfg.Connections, Log: log.With("component", "ike")})
	if err != nil {
		return nil, err
	}
	sender := &lateSender{}
	var esp runtime.ESPReceiver
	kind := cfg.Dataplane.Kind
	if kind == "auto" {
		kind = "userspace"
		log.Info("data plane selected", "kind", kind, "reason", "the kernel data plane is not available in this build")
	}
	switch kind {
	case "userspace":
		if err := userspace.Probe(); err != nil {
			return nil, fmt.Errorf("userspace data plane: %w", err)
		}
		u, err := userspace.New(userspace.Config{Sender: sender, Name: cfg.Dataplane.TUN, MTU: cfg.Dataplane.MTU,
			Logger: log.With("component", "dataplane")})
		if err != nil {
			return nil, fmt.Errorf("userspace data plane: %w", err)
		}
		n.dp, esp = u, u
	default:
		return nil, fmt.Errorf("dataplane.kind %q is not available in this build", kind)
	}
	if err := n.dp.Flush(ctx); err != nil {
		return nil, fmt.Errorf("data plane flush at start: %w", err)
	}
	n.rt, err = runtime.New(runtime.Config{
		Engine: n.eng, Listen: cfg.ListenAddrs(), Port: cfg.IKE.Port, NATTPort: cfg.IKE.NATTPort, FreeBind: cfg.IKE.FreeBind,
		Persister: storePersister{n.db}, DataPlane: n.dp, ESP: esp, CounterSync: cfg.Dataplane.CounterSync,
		Log: log.With("component", "runtime"),
	})
	if err != nil {
		return nil, err
	}
	sender.rt.Store(n.rt)
	go func() {
		if err := n.rt.Run(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("runtime stopped", "err", err)
		}
	}()
	go func() {
		for ev := range n.dp.Expiries() {
			n.rt.HandleExpiry(ev.SPI, ev.Hard)
		}
	}()
	if err := n.restore(ctx); err != nil {
		return nil, err
	}
	n.admin, err = startAdmin(cfg.Admin.Socket, n, log.With("component", "admin"))
	if err != nil {
		return nil, err
	}
	for _, c := range cfg.Connections {
		if c.Initiate {
			if err := n.rt.Initiate(ctx, c.Name); err != nil {
				log.Warn("initiate failed", "conn", c.Name, "err", err)
			}
		}
	}
	notifyReady(log)
	log.Info("ikegwd started", "node", cfg.Node.Name, "version", Version, "dataplane", n.dp.Kind(), "connections", len(cfg.Connections))
	return n, nil
}

// restore resumes every persisted SA: the pairs are re-installed with their
// outbound sequence numbers jumped by the margin (persisted first, so a
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
	for _, c := range kids {
		if c.State == sa.ChildDeleted {
			continue
		}
		c.Counters.OutSeq += n.cfg.Dataplane.SeqMargin
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
	n.log.Info("resumed persisted SAs", "ike_sas", len(ikes), "child_sas", len(live), "seq_margin", n.cfg.Dataplane.SeqMargin)
	return nil
}

// Stop closes everything. SAs stay persisted; with the userspace data plane
// they stop carrying traffic with the process.
func (n *Node) Stop() {
	if n.admin != nil {
		n.admin.close()
	}
	if n.rt != nil {
		n.rt.Close()
	}
	if n.dp != nil {
		n.dp.Close()
	}
	if n.db != nil {
		n.db.Close()
	}
}

// Reload re-reads the configuration file's connections.
func (n *Node) Reload(ctx context.Context, path string) error {
	c, err := LoadConfig(path)
	if err != nil {
		return err
	}
	err = n.rt.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		return nil, e.Reconfigure(c.Connections)
	})
	if err == nil {
		n.cfg.Connections = c.Connections
		n.log.Info("configuration reloaded", "connections", len(c.Connections))
	}
	return err
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
