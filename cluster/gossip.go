package cluster

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
)

// GossipConfig configures membership (hashicorp/memberlist).
type GossipConfig struct {
	BindAddr      string // e.g. "127.0.0.1"
	BindPort      int    // 0 picks a free port
	AdvertiseAddr string // optional
	AdvertisePort int    // optional
	// SecretKey is the memberlist keyring's primary key (16, 24 or 32
	// bytes, AES-GCM). All gossip is encrypted and authenticated with it.
	SecretKey []byte
	// PreviousKeys are further keyring keys: incoming gossip encrypted
	// with any of them is accepted, nothing is sent with them (key
	// rotation: deploy/OPERATIONS.md).
	PreviousKeys [][]byte
	// Join lists gossip addresses (host:port) of existing members.
	Join []string
	// BootstrapExpect is the number of voters the cluster is bootstrapped
	// with: the node with the lowest name among the first members that see
	// this many bootstraps with all of them. 0: join an existing cluster
	// only. 2 is refused (ErrTwoNodes).
	BootstrapExpect int
	// Version is this build's version, advertised to other members.
	Version string
	// ReconcileInterval is how often the leader reconciles membership with
	// the Raft configuration (default 2s); membership events also trigger it.
	ReconcileInterval time.Duration
	// ReapFailedAfter is how long a failed member stays a voter before the
	// leader removes it (default 72h, as Consul).
	ReapFailedAfter time.Duration
	// DeadNodeReclaimTime is how long a failed member's name stays bound
	// to its old address; after it, the node may come back on another
	// address or port (default 30s).
	DeadNodeReclaimTime time.Duration
	// LocalTimings uses memberlist's loopback timings (fast failure
	// detection); for tests and the single-host lab.
	LocalTimings bool
}

func (g *GossipConfig) validate() error {
	switch k := len(g.SecretKey); k {
	case 16, 24, 32:
	default:
		return fmt.Errorf("gossip: secret key is %d bytes, want 16, 24 or 32", k)
	}
	for i, pk := range g.PreviousKeys {
		switch k := len(pk); k {
		case 16, 24, 32:
		default:
			return fmt.Errorf("gossip: previous key %d is %d bytes, want 16, 24 or 32", i+1, k)
		}
	}
	if g.BootstrapExpect < 0 {
		return fmt.Errorf("gossip: bootstrap_expect %d is negative", g.BootstrapExpect)
	}
	if g.BootstrapExpect == 2 {
		return fmt.Errorf("gossip: bootstrap_expect = 2: %w", ErrTwoNodes)
	}
	if g.BindAddr == "" {
		return errors.New("gossip: empty bind address")
	}
	return nil
}

// nodeMeta is what a member advertises about itself (memberlist limits it
// to 512 bytes).
type nodeMeta struct {
	RaftAddr     string      `cbor:"1,keyasint"`
	Role         Role        `cbor:"2,keyasint"`
	Version      string      `cbor:"3,keyasint,omitempty"`
	MaxCommand   CommandType `cbor:"4,keyasint"`
	Expect       int         `cbor:"5,keyasint,omitempty"`
	Bootstrapped bool        `cbor:"6,keyasint,omitempty"`
	// Leaving is set just before a graceful leave, so that the others tell
	// a leave from a failure (memberlist reports both as NotifyLeave).
	Leaving bool `cbor:"7,keyasint,omitempty"`
}

type memberState struct {
	meta   nodeMeta
	addr   string
	state  memberlist.NodeStateType
	since  time.Time // when the state last changed (local clock)
	badMet bool
}

type gossip struct {
	n    *Node
	cfg  GossipConfig
	ml   *memberlist.Memberlist
	wake chan struct{}
	stp  chan struct{}
	done chan struct{}

	mu           sync.Mutex
	meta         nodeMeta
	members      map[string]*memberState
	joined       bool
	bootstrapped bool
	lastView     string // bootstrap candidates seen on the previous step
	// removed names members an admin removed through this node
	// (RemoveMember): reconcile does not add them back until they join
	// again (members.go).
	removed map[string]bool
}

func startGossip(n *Node, cfg GossipConfig) (*gossip, error) {
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 2 * time.Second
	}
	if cfg.ReapFailedAfter == 0 {
		cfg.ReapFailedAfter = 72 * time.Hour
	}
	g := &gossip{
		n:       n,
		cfg:     cfg,
		wake:    make(chan struct{}, 1),
		stp:     make(chan struct{}),
		done:    make(chan struct{}),
		members: map[string]*memberState{},
		meta: nodeMeta{
			RaftAddr:   n.Addr(),
			Role:       n.cfg.Role,
			Version:    cfg.Version,
			MaxCommand: MaxCommandType,
			Expect:     cfg.BootstrapExpect,
		},
	}
	g.bootstrapped = n.hasRaftState()
	g.meta.Bootstrapped = g.bootstrapped

	var mc *memberlist.Config
	if cfg.LocalTimings {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = n.cfg.NodeID
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	kr, err := memberlist.NewKeyring(cfg.PreviousKeys, cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
	}
	mc.Keyring = kr
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	if mc.DeadNodeReclaimTime == 0 {
		mc.DeadNodeReclaimTime = 30 * time.Second
	}
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.Delegate = g
	mc.Events = g
	mc.Logger = newHCLog(n.log, "memberlist").StandardLogger(nil)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	g.ml = ml
	return g, nil
}

// GossipAddr is this node's memberlist address (host:port).
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	ln := n.gossip.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Join contacts existing members at the given gossip addresses.
func (n *Node) Join(addrs ...string) error {
	if n.gossip == nil {
		return errors.New("cluster: join: membership is not enabled")
	}
	if _, err := n.gossip.ml.Join(addrs); err != nil {
		return fmt.Errorf("cluster: join %v: %w", addrs, err)
	}
	return nil
}

func (n *Node) hasRaftState() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

func (g *gossip) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// leave announces a permanent departure (the leader then removes this
// node's voter) and leaves the gossip pool.
func (g *gossip) leave() error {
	g.mu.Lock()
	g.meta.Leaving = true
	g.mu.Unlock()
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.n.log.Warn("cluster: could not announce leaving; others will see a failure", "err", err)
	}
	if err := g.ml.Leave(time.Second); err != nil {
		return fmt.Errorf("cluster: gossip leave: %w", err)
	}
	return nil
}

// stop ends the reconcile loop and gossip without leaving: the others see
// this node fail (a restart, not a departure).
func (g *gossip) stop() error {
	close(g.stp)
	<-g.done
	if err := g.ml.Shutdown(); err != nil {
		return fmt.Errorf("cluster: gossip shutdown: %w", err)
	}
	return nil
}

func (g *gossip) run() {
	defer close(g.done)
	t := time.NewTicker(g.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		g.step()
		select {
		case <-g.stp:
			return
		case <-t.C:
		case <-g.wake:
		}
	}
}

func (g *gossip) step() {
	g.mu.Lock()
	joined, boot := g.joined, g.bootstrapped
	g.mu.Unlock()
	if !joined && len(g.cfg.Join) > 0 {
		if _, err := g.ml.Join(g.cfg.Join); err != nil {
			g.n.log.Warn("cluster: gossip join failed; will retry", "join", g.cfg.Join, "err", err)
		} else {
			g.mu.Lock()
			g.joined = true
			g.mu.Unlock()
		}
	}
	if !boot {
		if g.n.hasRaftState() {
			g.markBootstrapped()
		} else {
			g.maybeBootstrap()
		}
	}
	if g.n.IsLeaderReady() {
		g.reconcile()
	}
}

func (g *gossip) markBootstrapped() {
	g.mu.Lock()
	g.bootstrapped = true
	g.meta.Bootstrapped = true
	g.mu.Unlock()
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.n.log.Warn("cluster: gossip metadata update failed", "err", err)
	}
}

// maybeBootstrap implements bootstrap_expect: when this node sees expect
// alive members that all expect the same size and none of which is already
// part of a cluster, the member with the lowest name bootstraps with all of
// them; the others wait to be replicated to.
func (g *gossip) maybeBootstrap() {
	expect := g.cfg.BootstrapExpect
	if expect == 0 {
		return
	}
	g.mu.Lock()
	var cands []Peer
	for name, m := range g.members {
		if m.state != memberlist.StateAlive || m.badMet {
			continue
		}
		if m.meta.Bootstrapped {
			g.mu.Unlock()
			return // a cluster exists: its leader will add us
		}
		if m.meta.Expect != expect {
			g.mu.Unlock()
			g.n.log.Warn("cluster: member expects a different cluster size; not bootstrapping",
				"member", name, "member_expect", m.meta.Expect, "expect", expect)
			return
		}
		cands = append(cands, Peer{ID: name, Address: m.meta.RaftAddr, Role: m.meta.Role})
	}
	g.mu.Unlock()
	if len(cands) < expect {
		return
	}
	slices.SortFunc(cands, func(a, b Peer) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	cands = cands[:expect]
	if cands[0].ID != g.n.cfg.NodeID {
		return
	}
	// Require the same view on two consecutive steps (a reconcile interval
	// apart), so that a member that bootstrapped a moment ago has had time
	// to announce it. This narrows, but cannot close, the window in which
	// two nodes bootstrap two clusters; keep bootstrap_expect equal on all
	// nodes and start them together.
	key := ""
	for _, c := range cands {
		key += c.ID + "=" + c.Address + ","
	}
	if g.lastView != key {
		g.lastView = key
		return
	}
	if err := checkVoters(cands); err != nil {
		g.n.log.Error("cluster: refusing to bootstrap", "err", err)
		return
	}
	if err := g.n.bootstrap(cands); err != nil {
		g.n.log.Error("cluster: bootstrap failed", "err", err)
		return
	}
	g.markBootstrapped()
}

// reconcile (leader only) adds alive members that are not voters yet and
// removes members that left, or failed longer than ReapFailedAfter.
func (g *gossip) reconcile() {
	r := g.n.raft
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return
	}
	inRaft := map[string]raft.Server{}
	witness := false
	for _, s := range f.Configuration().Servers {
		inRaft[string(s.ID)] = s
		if g.n.roleOf(string(s.ID)) == RoleWitness {
			witness = true
		}
	}
	type change struct {
		id, addr string
		add      bool
		why      string
	}
	var changes []change
	target := len(inRaft)
	removals := 0
	var dead []change
	now := time.Now()
	g.mu.Lock()
	for name, m := range g.members {
		if name == g.n.cfg.NodeID || m.badMet {
			continue
		}
		s, ok := inRaft[name]
		switch m.state {
		case memberlist.StateAlive:
			if g.removed[name] {
				continue // removed by an admin and not joined again yet
			}
			if !ok || string(s.Address) != m.meta.RaftAddr || s.Suffrage != raft.Voter {
				changes = append(changes, change{id: name, addr: m.meta.RaftAddr, add: true, why: "member alive"})
				if !ok {
					target++
				}
				if m.meta.Role == RoleWitness {
					witness = true
				}
			}
		case memberlist.StateLeft:
			if ok {
				removals++
				changes = append(changes, change{id: name, why: "member left"})
			}
		case memberlist.StateDead:
			if ok && now.Sub(m.since) >= g.cfg.ReapFailedAfter {
				dead = append(dead, change{id: name, why: "member failed for " + now.Sub(m.since).Round(time.Second).String()})
			}
		}
	}
	g.mu.Unlock()
	// Reap failed voters only while three voters remain: a replacement is
	// added first, then the failed one goes.
	slices.SortFunc(dead, func(a, b change) int { return strings.Compare(a.id, b.id) })
	for _, d := range dead {
		if target-removals < 4 {
			g.n.log.Warn("cluster: keeping a failed voter until a replacement joins", "member", d.id, "voters", target-removals)
			continue
		}
		removals++
		changes = append(changes, d)
	}
	slices.SortFunc(changes, func(a, b change) int {
		if a.id < b.id {
			return -1
		}
		if a.id > b.id {
			return 1
		}
		return 0
	})
	for _, c := range changes {
		if c.add {
			if target == 2 && !witness {
				g.n.log.Warn("cluster: not adding a second voter without a witness", "member", c.id, "err", ErrTwoNodes)
				continue
			}
			g.n.log.Info("cluster: adding voter", "member", c.id, "raft_addr", c.addr, "reason", c.why)
			if err := r.AddVoter(raft.ServerID(c.id), raft.ServerAddress(c.addr), 0, 10*time.Second).Error(); err != nil {
				g.n.log.Warn("cluster: add voter failed", "member", c.id, "err", err)
			}
			continue
		}
		g.n.log.Info("cluster: removing voter", "member", c.id, "reason", c.why)
		if err := r.RemoveServer(raft.ServerID(c.id), 0, 10*time.Second).Error(); err != nil {
			g.n.log.Warn("cluster: remove voter failed", "member", c.id, "err", err)
		}
	}
}

func (g *gossip) alive(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members[id]
	return ok && m.state == memberlist.StateAlive
}

func (g *gossip) clusterMaxCommand() CommandType {
	g.mu.Lock()
	defer g.mu.Unlock()
	mx := CommandType(MaxCommandType)
	for _, m := range g.members {
		if m.state == memberlist.StateAlive && !m.badMet && m.meta.MaxCommand < mx {
			mx = m.meta.MaxCommand
		}
	}
	return mx
}

func (g *gossip) snapshot() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for name, m := range g.members {
		mb := Member{
			ID: name, Role: m.meta.Role, RaftAddr: m.meta.RaftAddr, GossipAddr: m.addr,
			Version: m.meta.Version, MaxCommand: m.meta.MaxCommand, Status: stateName(m.state),
		}
		if m.state == memberlist.StateDead {
			mb.FailedSince = m.since
		}
		out = append(out, mb)
	}
	return out
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "failed"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// memberlist.Delegate

func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	m := g.meta
	g.mu.Unlock()
	b, err := sa.Marshal(m)
	if err != nil || len(b) > limit {
		g.n.log.Error("cluster: node metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}

func (g *gossip) NotifyMsg(b []byte)                         { g.handleMsg(b) }
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

// memberlist.EventDelegate

// memberlist's Node.State is not maintained in events, so the state comes
// from the event: join and update mean alive; leave means left when the
// member announced it was leaving, failed otherwise.

func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.update(n, memberlist.StateAlive) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.update(n, memberlist.StateAlive) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.update(n, memberlist.StateDead) }

func (g *gossip) update(n *memberlist.Node, state memberlist.NodeStateType) {
	var meta nodeMeta
	bad := false
	if err := decMode.Unmarshal(n.Meta, &meta); err != nil || meta.RaftAddr == "" || (meta.Role != RoleGateway && meta.Role != RoleWitness) {
		bad = true
		g.n.log.Warn("cluster: member has unreadable metadata; ignoring it", "member", n.Name, "addr", n.Address())
	}
	g.mu.Lock()
	m, ok := g.members[n.Name]
	if !ok {
		m = &memberState{}
		g.members[n.Name] = m
	}
	if !bad {
		m.meta = meta
	}
	if state == memberlist.StateDead && m.meta.Leaving {
		state = memberlist.StateLeft
	}
	changed := !ok || m.state != state
	if changed {
		m.since = time.Now()
	}
	if changed && state == memberlist.StateAlive && ok && (m.state == memberlist.StateLeft || m.state == memberlist.StateDead) {
		delete(g.removed, n.Name) // it joined again
	}
	m.state, m.addr, m.badMet = state, n.Address(), bad
	g.mu.Unlock()
	if changed {
		g.n.log.Info("cluster: member state", "member", n.Name, "state", stateName(state), "addr", n.Address())
	}
	if !bad {
		g.n.setRole(n.Name, meta.Role)
	}
	g.poke()
}
