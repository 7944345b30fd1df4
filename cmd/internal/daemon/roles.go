package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"ikegw/cluster"
	"ikegw/failover"
	"ikegw/failover/role"
	"ikegw/failover/vip"
	"ikegw/ike/config"
)

// roles runs the active/standby role machine (failover/role) of a cluster
// gateway: only the Raft leader, after Barrier and with a quorum confirmed
// within the lease, takes over and holds the VIPs (DESIGN.md invariant 2).
type roles struct {
	m      *role.Machine
	lead   *failover.Leadership
	mem    *member
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// handoverPoll is how often a standby looks for a handover naming it.
const handoverPoll = 2 * time.Millisecond

func startRoles(n *Node) (*roles, error) {
	vm, err := newVIPs(n.cfg, n.log)
	if err != nil {
		return nil, err
	}
	n.vips.Store(vm)
	// A previous run may have died holding them (the supervisor removes
	// them too; this is the start-time half of the same rule).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = vm.Release(ctx)
	cancel()
	if err != nil {
		return nil, err
	}
	lease := n.cfg.Cluster.LeaderLease
	if lease == 0 {
		lease = 500 * time.Millisecond
	}
	lead := failover.NewLeadership(n.cnode)
	lk, err := openVIPLock(VIPLockPath(n.cfg))
	if err != nil {
		return nil, err
	}
	m, err := role.New(role.Config{Lease: lease, Log: n.log.With("component", "role")},
		lead, lockedVIPs{roleVIPs: vm, lk: lk}, n.roleCallbacks()) // lk: open until exit
	if err != nil {
		lk.close()
		return nil, err
	}
	ctx, cancel = context.WithCancel(context.Background())
	n.mem.life = ctx // before Run: the callbacks read it
	r := &roles{m: m, lead: lead, mem: n.mem, log: n.log, cancel: cancel, done: make(chan struct{})}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		n.mem.watchHandovers(ctx, handoverPoll)
	}()
	go func() {
		defer close(r.done)
		if err := m.Run(ctx); err != nil {
			n.log.Error("role machine stopped", "err", err)
		}
		<-watched
	}()
	return r, nil
}

// roleCallbacks are the role machine's hooks: the member's, the lease for
// the fence, and the record of the active node.
func (n *Node) roleCallbacks() role.Callbacks {
	cb := memberCallbacks(n.mem, n.fence)
	cb.OnActive = func() {
		cs := n.cnode.Stats()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.cnode.Commit(ctx, cluster.SetActive(n.cfg.Node.Name, cs.Term)); err != nil {
			n.log.Warn("recording the active node failed", "err", err)
		}
		n.log.Info("now ACTIVE", "term", cs.Term)
	}
	return cb
}

// memberCallbacks are the hooks of mem and f (everything but OnActive).
func memberCallbacks(mem *member, f *fence) role.Callbacks {
	return role.Callbacks{
		OnActivate: mem.activate,
		OnStandby:  mem.deactivate,
		OnHandover: mem.handingOver,
		OnFence:    mem.fence,
		OnLease:    f.onLease,
	}
}

func (r *roles) active() bool { return r.m.State() == role.Active }

// handover gives up the active role (planned failover): the target is
// announced and stages its takeover while this node still holds the VIPs
// (member.prepareHandover), then the VIPs are released and leadership goes
// to the target (to, when named). When the announcement fails (a member
// too old to apply it, no quorum) the handover goes on without it.
func (r *roles) handover(to string) error {
	if r.m.State() == role.Standby {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target, err := r.lead.Target(to)
	if err == nil && r.m.State() == role.Active {
		t0 := time.Now()
		pairs, perr := r.mem.prepareHandover(ctx, target)
		if perr != nil {
			r.log.Warn("handover: announcing it failed; handing over without a staged takeover", "to", target, "err", perr)
		} else {
			// Time for the target to learn that the announcement is
			// committed (Raft's commit timeout, 5-10 ms), apply it and
			// stage. Not needed for safety: a target that is not ready
			// takes over the slow way (Barrier, full install).
			r.mem.mu.Lock()
			staged := r.mem.lastStaging
			r.mem.mu.Unlock()
			grace := stageGraceFor(pairs, staged)
			time.Sleep(grace)
			r.log.Info("handover: announced", "to", target, "pairs", pairs, "announce", time.Since(t0)-grace, "grace", grace)
		}
		to = target
	}
	if to != "" {
		r.lead.Prefer(to)
	}
	term := r.mem.node.Raft().CurrentTerm()
	t0 := time.Now()
	if err := r.m.Handover(ctx); err != nil {
		return err
	}
	// Stay quiet until the target claimed: what the caller does next
	// (ikegwd's exit closes the data plane, 58 ms of CPU at 1,000 pairs
	// in the lab) would otherwise share the CPU with the target's first
	// quorum check, which the claim waits for.
	claimed := r.mem.waitClaimed(term, flushWaitMax)
	r.log.Info("handover: done", "target", to, "target_claimed", claimed, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// stageGrace and stagePerPair: how long the active waits after announcing
// a handover before it lets go (measured staging: see BENCHMARKS.md).
const (
	stageGrace   = 60 * time.Millisecond
	stagePerPair = 50 * time.Microsecond
	// stageGraceMax bounds the part of the grace derived from a measured
	// staging: the target uses what it staged only within
	// failover.HandoverWindow - max_clock_skew (750 ms by default) of
	// the counters' read, which precedes the announcement's two commits
	// and the grace, and is followed by the release and the election.
	stageGraceMax = 400 * time.Millisecond
)

// stageGraceFor is the grace for a handover of pairs pairs: the fixed
// estimate, or one and a half times this node's own last staging (the
// same records on a similar node; or the same work in its last full
// takeover) when that is longer, up to stageGraceMax. At 1,000 tunnels and load 4-5 the lab's staging took
// 64-196 ms (median 90) against a fixed grace of 110 ms: a target that
// had not staged when the leadership came staged in the outage (71 and
// 88 ms gaps).
func stageGraceFor(pairs int, lastStaging time.Duration) time.Duration {
	g := stageGrace + time.Duration(pairs)*stagePerPair
	return max(g, min(lastStaging*3/2, stageGraceMax))
}

func (r *roles) stop() {
	r.cancel()
	<-r.done
}

// newVIPs builds the VIP manager of the failover section.
func newVIPs(cfg *Config, log *slog.Logger) (*vip.Manager, error) {
	var vips []vip.VIP
	for i, v := range cfg.Failover.VIPs {
		p, err := vip.Parse(v.Interface, v.Address)
		if err != nil {
			return nil, fmt.Errorf("failover.vips[%d]: %w", i, err)
		}
		vips = append(vips, p)
	}
	return vip.New(vip.Config{VIPs: vips, Log: log.With("component", "vip"), Forward: forwardOf(vips, cfg.connectionsOnly(), log),
		Announce: vip.Announce{Count: cfg.Failover.Announce.Count, Interval: cfg.Failover.Announce.Interval}})
}

// forwardOf gives each VIP the remote traffic selectors of the children
// whose local selectors contain it (an inside VIP, the gateway of the
// protected hosts): a node that does not hold the VIP routes them to the
// node that does (vip "Standby forwarding"). Selectors of the whole
// address space are left out (never a default route), and so are those
// holding a peer's own address (its IKE and ESP go out directly) and those
// of children without static selectors.
func forwardOf(vips []vip.VIP, conns []*config.Connection, log *slog.Logger) map[netip.Addr][]netip.Prefix {
	out := map[netip.Addr][]netip.Prefix{}
	for i := range vips {
		a := vips[i].Addr()
		var fwd []netip.Prefix
		for _, c := range conns {
			for _, ch := range c.Children {
				inside := false
				for _, ts := range ch.LocalTS {
					if ts.Prefix.Contains(a) {
						inside = true
					}
				}
				if !inside {
					continue
				}
				for _, ts := range ch.RemoteTS {
					p := ts.Prefix.Masked()
					if p.Bits() == 0 || p.Addr().Is4() != a.Is4() || p.Contains(a) || slices.Contains(fwd, p) {
						continue
					}
					if c.Remote.IsValid() && p.Contains(c.Remote.Unmap()) {
						continue // never the route to a peer's own address
					}
					fwd = append(fwd, p)
				}
			}
		}
		if len(fwd) > 0 {
			out[a] = fwd
			log.Debug("vip: standby forwarding", "vip", vips[i].String(), "prefixes", fmt.Sprint(fwd))
		}
	}
	return out
}

// updateForward gives the VIP manager the standby forwarding prefixes of the
// current connections (after a cluster-wide configuration change).
func (n *Node) updateForward() {
	vm := n.vips.Load()
	if vm == nil {
		return
	}
	if err := vm.SetForward(forwardOf(vm.VIPs(), n.cfg.connectionsOnly(), n.log)); err != nil {
		n.log.Warn("vip: standby forwarding not updated", "err", err)
	}
}
