package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"ikegw/cluster"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
	"ikegw/xfrm"
)

// member is the IKE side of a cluster gateway: idle while standby; on
// activation it rebuilds the engine from the replicated records, installs
// the pairs with jumped sequence numbers and starts answering IKE.
type member struct {
	cfg    *Config
	log    *slog.Logger
	node   *cluster.Node
	dp     xfrm.DataPlane
	esp    runtime.ESPReceiver
	sender *lateSender
	// sockHook prepares IKE sockets for the kernel data plane.
	sockHook func(*net.UDPConn, bool) error

	mu           sync.Mutex
	rt           *runtime.Runtime
	activatedAt  time.Time
	lastTakeover TakeoverTimes
	stats        takeoverStats // every activation, for metrics
}

// TakeoverTimes splits the last activation for metrics and the bench.
type TakeoverTimes struct {
	Started  time.Time
	Load     time.Duration // reading the replicated records
	Commit   time.Duration // committing the jumped sequence numbers
	Install  time.Duration // data plane installs
	Engine   time.Duration // engine restore and sockets
	IKESAs   int
	ChildSAs int
}

// activate runs the takeover (DESIGN.md "Takeover, step by step", steps 4
// and 6; the caller claims the VIPs afterwards, step 5). It is called only
// on the Raft leader after Barrier, so the store holds every committed SA.
func (m *member) activate(ctx context.Context) (err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rt != nil {
		return nil // idempotent: already active (e.g. after a fence)
	}
	t := TakeoverTimes{Started: time.Now()}
	defer func() { m.stats.record(t, err) }()
	ikes, kids, err := loadAll(m.node.Store())
	if err != nil {
		return fmt.Errorf("takeover: reading the replicated SAs: %w", err)
	}
	t.Load = time.Since(t.Started)
	// Sequence numbers never go back: every pair continues at the last
	// synced value plus the margin, and that is replicated first, so a
	// second takeover jumps from there.
	jumped := map[uint32]sa.Counters{}
	var live []*sa.ChildSA
	for _, c := range kids {
		if c.State == sa.ChildDeleted {
			continue
		}
		c.Counters.OutSeq += m.cfg.Dataplane.SeqMargin
		jumped[c.In.SPI] = c.Counters
		live = append(live, c)
	}
	mark := time.Now()
	if len(jumped) > 0 {
		if err := m.node.Commit(ctx, cluster.CountersBatch(jumped)); err != nil {
			return fmt.Errorf("takeover: committing jumped sequence numbers: %w", err)
		}
	}
	t.Commit = time.Since(mark)
	mark = time.Now()
	for _, c := range live {
		if err := m.dp.InstallChild(ctx, c); err != nil {
			m.log.Error("takeover: installing an IPsec SA pair failed", "spi_in", fmt.Sprintf("%08x", c.In.SPI), "err", err)
		}
	}
	t.Install = time.Since(mark)
	mark = time.Now()
	conns := m.cfg.connections()
	eng, err := ikev1.New(ikev1.Config{Connections: conns, Log: m.log.With("component", "ike")})
	if err != nil {
		return err
	}
	rt, err := runtime.New(runtime.Config{
		Engine: eng, Listen: m.cfg.ListenAddrs(), Port: m.cfg.IKE.Port, NATTPort: m.cfg.IKE.NATTPort, FreeBind: true,
		Persister: clusterPersister{m.node}, DataPlane: m.dp, ESP: m.esp, CounterSync: m.cfg.Dataplane.CounterSync, SocketHook: m.sockHook,
		Log: m.log.With("component", "runtime"),
	})
	if err != nil {
		return fmt.Errorf("takeover: IKE sockets: %w", err)
	}
	m.sender.rt.Store(rt)
	go rt.Run(context.Background())
	if err := rt.Do(ctx, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		return e.Restore(now, ikes, live, ikev1.RestoreOptions{})
	}); err != nil {
		rt.Close()
		return fmt.Errorf("takeover: restoring the engine: %w", err)
	}
	t.Engine = time.Since(mark)
	t.IKESAs, t.ChildSAs = len(ikes), len(live)
	m.rt = rt
	m.activatedAt = time.Now()
	m.lastTakeover = t
	m.log.Info("takeover complete", "ike_sas", len(ikes), "child_sas", len(live),
		"load", t.Load, "commit", t.Commit, "install", t.Install, "engine", t.Engine, "total", time.Since(t.Started))
	// Connections this node should start and that have no SA yet.
	for _, c := range conns {
		if !c.Initiate {
			continue
		}
		up := false
		for _, r := range ikes {
			if r.Connection == c.Name && r.State == sa.IKEEstablished {
				up = true
			}
		}
		if !up {
			if err := rt.Initiate(ctx, c.Name); err != nil {
				m.log.Warn("initiate failed", "conn", c.Name, "err", err)
			}
		}
	}
	return nil
}

// deactivate stops answering IKE and removes the data plane's SAs (the
// caller has already dropped the VIPs). Nothing is sent to peers.
func (m *member) deactivate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rt != nil {
		m.rt.Close()
		m.rt = nil
		m.sender.rt.Store(nil)
	}
	// Always flush: a takeover that failed half way may have installed
	// pairs before it gave up.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.dp.Flush(ctx); err != nil {
		m.log.Error("standby: data plane flush failed", "err", err)
	}
	m.log.Info("now standby: IKE stopped, data plane flushed")
}

func (m *member) takeover() TakeoverTimes {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastTakeover
}

func (m *member) runtime() *runtime.Runtime {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rt
}

var errNotActive = errors.New("this node is not the active gateway")
