package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"ikegw/cluster"
	"ikegw/cluster/certs"
	"ikegw/ike/ikev1"
	"ikegw/store"
)

// clusterPersister commits engine records through Raft: Persist returns
// once a quorum has the entry and it is applied locally (DESIGN.md
// invariant 1, commit before send).
type clusterPersister struct {
	node *cluster.Node
	gate *persistGate // nil: always open
}

// persistGate stops the engine's commits while a planned handover is
// prepared (member.prepareHandover): closing it waits for the Persist calls
// in flight, so every SA change the engine made known to a peer is in the
// log before the Handover entry; afterwards SA changes are refused (the
// runtime then does not send what they guard: the peer retransmits to the
// new active) and counter syncs are dropped (the handover committed the
// jumped counters). The zero value is open.
type persistGate struct {
	mu     sync.RWMutex
	closed bool
}

func (g *persistGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *persistGate) open() {
	g.mu.Lock()
	g.closed = false
	g.mu.Unlock()
}

// errHandingOver: Persist while a planned handover is being prepared.
var errHandingOver = errors.New("a planned handover is in progress: SA changes are left to the new active")

func (p clusterPersister) Persist(ctx context.Context, ps ikev1.Persist) error {
	if p.gate != nil {
		p.gate.mu.RLock()
		defer p.gate.mu.RUnlock()
		if p.gate.closed {
			if len(ps.IKE)+len(ps.Children)+len(ps.DeleteIKE)+len(ps.DeleteChildren) == 0 {
				return nil
			}
			return errHandingOver
		}
	}
	cmds := make([]cluster.Command, 0, len(ps.IKE)+len(ps.Children)+len(ps.DeleteIKE)+len(ps.DeleteChildren)+1)
	for _, r := range ps.IKE {
		cmds = append(cmds, cluster.UpsertIKE(r))
	}
	for _, c := range ps.Children {
		cmds = append(cmds, cluster.UpsertChild(c))
	}
	for _, c := range ps.DeleteIKE {
		cmds = append(cmds, cluster.DeleteIKE(c))
	}
	for _, s := range ps.DeleteChildren {
		cmds = append(cmds, cluster.DeleteChild(s))
	}
	if len(ps.Counters) > 0 {
		cmds = append(cmds, cluster.CountersBatch(ps.Counters))
	}
	return p.node.Commit(ctx, cmds...)
}

// openCluster starts this node's cluster membership.
func openCluster(cfg *Config, log *slog.Logger) (*cluster.Node, error) {
	cc := cfg.Cluster
	gkey, err := store.LoadClusterKey(cc.GossipKeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.gossip_key_file: %w", err)
	}
	gprev, err := loadPreviousKeys("cluster.previous_gossip_key_files", cc.PreviousGossipKeyFiles)
	if err != nil {
		return nil, err
	}
	host, portS, err := net.SplitHostPort(cc.GossipBind)
	if err != nil {
		return nil, fmt.Errorf("cluster.gossip_bind: %w", err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return nil, fmt.Errorf("cluster.gossip_bind: port %q: %w", portS, err)
	}
	role := cluster.RoleGateway
	if cc.Role == "witness" {
		role = cluster.RoleWitness
	}
	n, err := cluster.Open(cluster.Config{
		NodeID: cfg.Node.Name, Role: role, Log: log.With("component", "cluster"),
		Gossip: &cluster.GossipConfig{BindAddr: host, BindPort: port, SecretKey: gkey, PreviousKeys: gprev, Join: cc.Join,
			BootstrapExpect: cc.BootstrapExpect, Version: Version, LocalTimings: cc.LocalTimings},
		HeartbeatTimeout: cc.HeartbeatTimeout, ElectionTimeout: cc.ElectionTimeout, LeaderLeaseTimeout: cc.LeaderLease,
	}, cluster.Files{
		DataDir: cfg.Node.StateDir, ClusterKey: cfg.Node.ClusterKeyFile, PreviousClusterKeys: cfg.Node.PreviousClusterKeyFiles,
		TLS:      certs.TLSFiles{CA: cc.TLS.CA, Cert: cc.TLS.Cert, Key: cc.TLS.Key},
		RaftBind: cc.RaftBind, RaftAdvertise: cc.RaftAdvertise,
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}
