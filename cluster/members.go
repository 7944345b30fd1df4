package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
)

// Errors of membership changes made by an admin (RemoveMember, AddMember).
var (
	// ErrQuorum: the change would leave the remaining voters without a
	// quorum of alive members.
	ErrQuorum = errors.New("cluster: the remaining voters would not have a quorum of alive members")
	// ErrRemoveSelf: the leader cannot remove itself; hand leadership over
	// first (planned failover) and ask the new leader.
	ErrRemoveSelf = errors.New("cluster: a leader does not remove itself; move leadership to another node first (ikegwctl failover), then ask the new leader")
	// ErrNoGossip: membership (gossip) is not enabled on this node.
	ErrNoGossip = errors.New("cluster: membership is not enabled")
)

// msgRemove is the first byte of a memberlist user message that tells a
// member the leader removed it (the rest is CBOR removeMsg). Gossip is
// encrypted and authenticated with the keyring, so only members send it.
const msgRemove byte = 'R'

type removeMsg struct {
	Target string `cbor:"1,keyasint"`
	From   string `cbor:"2,keyasint"`
}

// RemoveMember takes a member out of the cluster for good (leader only):
// it refuses to remove the leader itself, a node Raft does not know, or a
// voter whose removal would leave the remaining voters without a quorum of
// alive members or as two voters without a witness. An alive member is
// asked to leave gossip first (so that the leader's reconcile does not add
// it back), then its Raft server is removed. The removed node keeps
// running, out of the cluster, until it is stopped; restarted, it joins
// again (see AddMember).
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if id == n.cfg.NodeID {
		return fmt.Errorf("%w (%q is this node)", ErrRemoveSelf, id)
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("cluster: remove %q: %w", id, err)
	}
	servers := f.Configuration().Servers
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return string(s.ID) == id })
	if i < 0 {
		return fmt.Errorf("%w: %q is not in the Raft configuration", ErrUnknownNode, id)
	}
	if servers[i].Suffrage == raft.Voter {
		var remaining, alive []string
		witness := false
		for _, s := range servers {
			sid := string(s.ID)
			if s.Suffrage != raft.Voter || sid == id {
				continue
			}
			remaining = append(remaining, sid)
			if sid == n.cfg.NodeID || n.gossip == nil || n.gossip.alive(sid) {
				alive = append(alive, sid)
			}
			if n.roleOf(sid) == RoleWitness {
				witness = true
			}
		}
		if need := len(remaining)/2 + 1; len(alive) < need {
			return fmt.Errorf("%w: removing %q leaves %d voters (%v) of which %d are alive (%v); %d are needed", ErrQuorum,
				id, len(remaining), remaining, len(alive), alive, need)
		}
		if len(remaining) == 2 && !witness {
			return fmt.Errorf("cluster: remove %q: %w", id, ErrTwoNodes)
		}
	}
	if g := n.gossip; g != nil {
		g.setRemoved(id, true)
		if g.alive(id) {
			if err := g.askLeave(id); err != nil {
				n.log.Warn("cluster: could not ask the removed member to leave gossip", "member", id, "err", err)
			} else {
				g.waitGone(ctx, id, 5*time.Second)
			}
		}
	}
	n.log.Info("cluster: removing member (admin)", "member", id)
	if err := n.wait(n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second)); err != nil {
		return fmt.Errorf("cluster: remove %q from Raft: %w", id, err)
	}
	return nil
}

// AddMember contacts a node at its gossip address (host:port) and waits
// until the leader has made it a voter (its reconcile adds every alive
// member; a witness votes too). It works on any member. It returns the new
// member's name.
func (n *Node) AddMember(ctx context.Context, gossipAddr string) (string, error) {
	g := n.gossip
	if g == nil {
		return "", ErrNoGossip
	}
	host, port, err := net.SplitHostPort(gossipAddr)
	if err != nil {
		return "", fmt.Errorf("cluster: join %q: want the node's gossip address host:port: %w", gossipAddr, err)
	}
	if net.ParseIP(host) == nil {
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil || len(ips) == 0 {
			return "", fmt.Errorf("cluster: join %q: resolve %q: %v", gossipAddr, host, err)
		}
		host = ips[0].IP.String()
	}
	if err := n.Join(net.JoinHostPort(host, port)); err != nil {
		return "", err
	}
	var name string
	for name == "" {
		name = g.nameAt(host, port)
		if name != "" {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cluster: join %s: no member answers at that address: %w", gossipAddr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	g.setRemoved(name, false)
	g.poke()
	for {
		f := n.raft.GetConfiguration()
		if f.Error() == nil && slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool {
			return string(s.ID) == name && s.Suffrage == raft.Voter
		}) {
			return name, nil
		}
		select {
		case <-ctx.Done():
			return name, fmt.Errorf("cluster: join %s (%s): gossip reached it but it is not a voter yet (the leader adds alive members; see its log): %w", gossipAddr, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Removed reports whether the leader removed this node from the cluster
// (it has left gossip; restart it to join again).
func (n *Node) Removed() bool { return n.removed.Load() }

func (g *gossip) setRemoved(id string, v bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed == nil {
		g.removed = map[string]bool{}
	}
	if v {
		g.removed[id] = true
	} else {
		delete(g.removed, id)
	}
}

// askLeave sends the remove message to member id, at the address gossip
// last reported for it (memberlist's own Node values are not safe to read
// concurrently).
func (g *gossip) askLeave(id string) error {
	g.mu.Lock()
	m, ok := g.members[id]
	addr := ""
	if ok {
		addr = m.addr
	}
	g.mu.Unlock()
	if addr == "" {
		return fmt.Errorf("member %q not in the gossip pool", id)
	}
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("member %q: address %q: %w", id, addr, err)
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return fmt.Errorf("member %q: address %q: %w", id, addr, err)
	}
	body, err := sa.Marshal(removeMsg{Target: id, From: g.n.cfg.NodeID})
	if err != nil {
		return err
	}
	to := &memberlist.Node{Name: id, Addr: net.ParseIP(host), Port: uint16(port)}
	return g.ml.SendReliable(to, append([]byte{msgRemove}, body...))
}

// waitGone waits until member id is no longer alive in gossip, or d.
func (g *gossip) waitGone(ctx context.Context, id string, d time.Duration) {
	deadline := time.Now().Add(d)
	for g.alive(id) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// nameAt returns the name of the alive member at host:port, "" if none.
func (g *gossip) nameAt(host, port string) string {
	want := net.JoinHostPort(host, port)
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, m := range g.members {
		if m.addr == want && m.state == memberlist.StateAlive {
			return name
		}
	}
	return ""
}

// handleMsg handles a memberlist user message.
func (g *gossip) handleMsg(b []byte) {
	if len(b) == 0 || b[0] != msgRemove {
		return
	}
	var m removeMsg
	if err := decMode.Unmarshal(b[1:], &m); err != nil {
		g.n.log.Warn("cluster: unreadable remove message", "err", err)
		return
	}
	if m.Target != g.n.cfg.NodeID {
		return
	}
	if _, leader := g.n.raft.LeaderWithID(); string(leader) != m.From {
		g.n.log.Warn("cluster: ignoring a remove message that does not come from the leader", "from", m.From, "leader", string(leader))
		return
	}
	if !g.n.removed.CompareAndSwap(false, true) {
		return
	}
	g.n.log.Warn("cluster: the leader removed this node from the cluster; leaving gossip. Stop it, or restart it to join again",
		"leader", m.From)
	go func() {
		if err := g.leave(); err != nil {
			g.n.log.Warn("cluster: leaving gossip after removal", "err", err)
		}
	}()
}
