package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"ikegw/cluster"
	"ikegw/failover"
	"ikegw/failover/role"
	"ikegw/failover/vip"
)

// roles runs the active/standby role machine (failover/role) of a cluster
// gateway: only the Raft leader, after Barrier and with a quorum confirmed
// within the lease, takes over and holds the VIPs (DESIGN.md invariant 2).
type roles struct {
	m      *role.Machine
	lead   *failover.Leadership
	cancel context.CancelFunc
	done   chan struct{}
}

func startRoles(n *Node) (*roles, error) {
	vm, err := newVIPs(n.cfg, n.log)
	if err != nil {
		return nil, err
	}
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
	m, err := role.New(role.Config{Lease: lease, Log: n.log.With("component", "role")},
		lead, vm, role.Callbacks{
			OnActivate: n.mem.activate,
			OnActive: func() {
				cs := n.cnode.Stats()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := n.cnode.Commit(ctx, cluster.SetActive(n.cfg.Node.Name, cs.Term)); err != nil {
					n.log.Warn("recording the active node failed", "err", err)
				}
				n.log.Info("now ACTIVE", "term", cs.Term)
			},
			OnStandby: n.mem.deactivate,
		})
	if err != nil {
		return nil, err
	}
	ctx, cancel = context.WithCancel(context.Background())
	r := &roles{m: m, lead: lead, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := m.Run(ctx); err != nil {
			n.log.Error("role machine stopped", "err", err)
		}
	}()
	return r, nil
}

func (r *roles) active() bool { return r.m.State() == role.Active }

// handover gives up the active role (planned failover): VIPs released,
// then leadership handed to another gateway (to, when named).
func (r *roles) handover(to string) error {
	if r.m.State() == role.Standby {
		return nil
	}
	if to != "" {
		r.lead.Prefer(to)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.m.Handover(ctx)
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
	return vip.New(vip.Config{VIPs: vips, Log: log.With("component", "vip"),
		Announce: vip.Announce{Count: cfg.Failover.Announce.Count, Interval: cfg.Failover.Announce.Interval}})
}
