package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"ikegw/cluster"
	"ikegw/failover/vip"
)

// vipHolder claims and releases this node's virtual IPs.
type vipHolder interface {
	// Claim adds the VIPs and announces them (gratuitous ARP, unsolicited
	// NA).
	Claim(ctx context.Context) error
	// Release removes them; idempotent, fast.
	Release() error
}

// roleLoop turns Raft leadership into the active role (DESIGN.md invariant
// 2): only the leader, after Barrier, activates; leadership loss, or losing
// the leader lease (self-fencing), drops the VIPs first.
type roleLoop struct {
	n      *Node
	vips   vipHolder
	active atomic.Bool
	term   atomic.Uint64
	stopCh chan struct{}
	done   sync.WaitGroup
	// FenceCheck is how often the active node checks it is still the
	// ready leader.
	fenceCheck time.Duration
}

func startRoleLoop(n *Node, vips vipHolder) (*roleLoop, error) {
	r := &roleLoop{n: n, vips: vips, stopCh: make(chan struct{}), fenceCheck: 20 * time.Millisecond}
	// A previous run may have died holding them (the supervisor removes
	// them too; this is the start-time half of the same rule).
	if err := vips.Release(); err != nil {
		return nil, err
	}
	r.done.Add(1)
	go r.loop()
	return r, nil
}

func (r *roleLoop) loop() {
	defer r.done.Done()
	events := r.n.cnode.LeadershipChanges()
	tick := time.NewTicker(r.fenceCheck)
	defer tick.Stop()
	for {
		select {
		case <-r.stopCh:
			r.standby("stopping")
			return
		case ev := <-events:
			switch {
			case ev.Leader && ev.Ready:
				r.term.Store(ev.Term)
				r.activate()
			case !ev.Leader:
				r.standby("leadership lost")
			}
		case <-tick.C:
			// Self-fencing: raft's leader steps down when it cannot reach a
			// quorum within the leader lease; the moment this node is no
			// longer the ready leader, the VIPs go, whatever the event
			// channel says.
			if r.active.Load() && !r.n.cnode.IsLeaderReady() {
				r.standby("not the ready leader any more (fenced)")
			}
		}
	}
}

func (r *roleLoop) activate() {
	if r.active.Load() {
		return
	}
	log := r.n.log
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.n.mem.activate(ctx); err != nil {
		log.Error("takeover failed; stepping down", "err", err)
		r.n.mem.deactivate()
		if err := r.n.cnode.TransferLeadership(""); err != nil {
			log.Warn("leadership transfer after a failed takeover", "err", err)
		}
		return
	}
	if !r.n.cnode.IsLeaderReady() {
		// Lost leadership while taking over: never claim the VIPs.
		r.n.mem.deactivate()
		return
	}
	if err := r.vips.Claim(ctx); err != nil {
		log.Error("claiming the VIPs failed; stepping down", "err", err)
		r.vips.Release()
		r.n.mem.deactivate()
		r.n.cnode.TransferLeadership("")
		return
	}
	r.active.Store(true)
	if err := r.n.cnode.Commit(ctx, cluster.SetActive(r.n.cfg.Node.Name, r.term.Load())); err != nil {
		log.Warn("recording the active node failed", "err", err)
	}
	log.Info("now ACTIVE", "term", r.term.Load(), "takeover", time.Since(start))
}

func (r *roleLoop) standby(why string) {
	if !r.active.Swap(false) {
		return
	}
	if err := r.vips.Release(); err != nil {
		r.n.log.Error("releasing the VIPs failed", "err", err)
	}
	r.n.mem.deactivate()
	r.n.log.Warn("now STANDBY", "reason", why)
}

// handover moves the active role to another gateway (planned failover): it
// transfers Raft leadership; the leadership loss then releases the VIPs.
func (r *roleLoop) handover(to string) error {
	if !r.active.Load() {
		return nil
	}
	if err := r.n.cnode.TransferLeadership(to); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.active.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (r *roleLoop) stop() {
	close(r.stopCh)
	r.done.Wait()
}

// vipAdapter makes a vip.Manager a vipHolder.
type vipAdapter struct{ m *vip.Manager }

func (a vipAdapter) Claim(ctx context.Context) error { return a.m.Claim(ctx) }

func (a vipAdapter) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return a.m.Release(ctx)
}

// newVIPs builds the VIP manager of the failover section.
func newVIPs(cfg *Config, log *slog.Logger) (vipHolder, error) {
	var vips []vip.VIP
	for i, v := range cfg.Failover.VIPs {
		p, err := vip.Parse(v.Interface, v.Address)
		if err != nil {
			return nil, fmt.Errorf("failover.vips[%d]: %w", i, err)
		}
		vips = append(vips, p)
	}
	m, err := vip.New(vip.Config{VIPs: vips, Log: log.With("component", "vip"), NetNS: netns.None(),
		Announce: vip.Announce{Count: cfg.Failover.Announce.Count, Interval: cfg.Failover.Announce.Interval}})
	if err != nil {
		return nil, err
	}
	return vipAdapter{m}, nil
}
