package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/store"
)

// Role is what a node does in the cluster.
type Role string

const (
	// RoleGateway nodes run IKE and the data plane and may be active.
	RoleGateway Role = "gateway"
	// RoleWitness nodes only vote: never active, never leader for long.
	RoleWitness Role = "witness"
)

// Errors of the commit API and of cluster operations.
var (
	// ErrNotLeader: this node is not the Raft leader; commit on the leader.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrLeadershipLost: leadership was lost while the entry was in flight;
	// it may or may not have been committed.
	ErrLeadershipLost = errors.New("cluster: leadership lost while committing; outcome unknown")
	// ErrShutdown: the node is shutting down.
	ErrShutdown = errors.New("cluster: node is shut down")
	// ErrTwoNodes: a cluster of two voters without a witness cannot survive
	// the loss of either node and is refused.
	ErrTwoNodes = errors.New("cluster: two voters without a witness cannot survive the loss of either node; add a third gateway or a witness (bootstrap_expect = 3)")
	// ErrUnknownNode: a node name not in the Raft configuration.
	ErrUnknownNode = errors.New("cluster: unknown node")
	// ErrUnsupportedByCluster: some member runs a build that cannot apply
	// the command, and the command is not ignorable.
	ErrUnsupportedByCluster = errors.New("cluster: command type not supported by every member yet")
)

// Peer is a voter named in a static bootstrap configuration.
type Peer struct {
	ID      string
	Address string // Raft address
	Role    Role
}

// Config configures a Node.
type Config struct {
	NodeID string
	Role   Role
	Log    *slog.Logger

	// Peers, when set and the node has no Raft state yet, bootstraps the
	// cluster with exactly these voters (this node must be one of them).
	// Every node must be given the same list. Leave empty to bootstrap
	// through membership (Gossip.BootstrapExpect).
	Peers []Peer

	// Gossip enables memberlist membership; nil runs without it.
	Gossip *GossipConfig

	// Raft timing; zero values take the defaults below.
	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	SnapshotThreshold  uint64        // default 8192 entries
	SnapshotInterval   time.Duration // default 2m
	TrailingLogs       uint64        // default 10240

	// MaxBatch caps the Commit calls coalesced into one Raft entry
	// (default 512).
	MaxBatch int
	// MaxInflight is how many Batch entries may be in flight at once
	// (default 1: gather while one Apply is in flight).
	MaxInflight int
	// CommitGather bounds how long the committer, once its last entry in
	// flight has landed, holds the next entry back for the Commit calls
	// that entry answered to come back (callers that commit in a loop call
	// again as soon as their previous Commit returns; gather.go). It
	// waits only while most answered callers have come back within
	// CommitGather of recent landings, and stops as soon as they are back,
	// when none arrives for a third of CommitGather, or after
	// CommitGather. Default 300µs; negative never waits.
	CommitGather time.Duration
	// BarrierTimeout bounds the Barrier a new leader runs before it
	// declares itself ready (default 30s).
	BarrierTimeout time.Duration
	// HandoffInterval is how often a witness leader retries handing
	// leadership to a gateway (default 500ms).
	HandoffInterval time.Duration
}

// Deps are the pieces a Node runs on. Production code gets them from Open;
// tests may pass in-memory ones.
type Deps struct {
	// DB is the SA database; Backend defaults to DBBackend(DB).
	DB        *store.DB
	Backend   Backend
	Sealer    Sealer
	Logs      raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	Transport raft.Transport
	// Close, if set, is called last by Node.Shutdown (closes stores).
	Close func() error
}

// LeadershipEvent reports a change of this node's leadership. Ready is true
// once a new leader has applied every committed entry (Barrier): only then
// may it act as leader (claim the active role).
type LeadershipEvent struct {
	Leader bool
	Ready  bool
	Term   uint64
}

// Node is one member of the ikegw cluster.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *FSM
	deps  Deps
	trans raft.Transport

	notifyCh chan bool
	commitCh chan *pending
	// raftDown is closed once Raft has shut down.
	raftDown chan struct{}
	// committerDone is closed when the committer has stopped.
	committerDone chan struct{}
	events        chan LeadershipEvent
	ready         atomic.Bool
	shutdown      chan struct{}
	closeOnce     sync.Once
	wg            sync.WaitGroup

	rolesMu sync.RWMutex
	roles   map[string]Role

	gossip *gossip // nil without membership
	// removed is set when the leader removed this node (members.go).
	removed atomic.Bool

	// commitLat times successful Commit calls (queueing, Raft round trip
	// and local apply).
	commitLat Latency
	// proposedEntries and proposedBytes count the Batch entries proposed.
	proposedEntries, proposedBytes atomic.Uint64

	// leaderCtx is cancelled when leadership is lost.
	leaderMu     sync.Mutex
	leaderCancel context.CancelFunc
}

// pending is one Commit call waiting for its group to be applied.
type pending struct {
	group [][]byte
	done  chan error
	start time.Time // when Commit was called
}

func (c *Config) setDefaults() {
	if c.Log == nil {
		c.Log = defaultLog()
	}
	if c.Role == "" {
		c.Role = RoleGateway
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = time.Second
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = time.Second
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = 500 * time.Millisecond
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 2 * time.Minute
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 512
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1
	}
	if c.CommitGather == 0 {
		c.CommitGather = 300 * time.Microsecond
	}
	if c.BarrierTimeout == 0 {
		c.BarrierTimeout = 30 * time.Second
	}
	if c.HandoffInterval == 0 {
		c.HandoffInterval = 500 * time.Millisecond
	}
}

func (c *Config) validate() error {
	if c.NodeID == "" {
		return errors.New("cluster: config: empty node id")
	}
	if c.Role != RoleGateway && c.Role != RoleWitness {
		return fmt.Errorf("cluster: config: node %q: role %q is neither %q nor %q", c.NodeID, c.Role, RoleGateway, RoleWitness)
	}
	if len(c.Peers) > 0 {
		if err := checkVoters(c.Peers); err != nil {
			return fmt.Errorf("cluster: config: node %q: peers: %w", c.NodeID, err)
		}
		if !slices.ContainsFunc(c.Peers, func(p Peer) bool { return p.ID == c.NodeID }) {
			return fmt.Errorf("cluster: config: node %q is not among its own peers", c.NodeID)
		}
	}
	if c.Gossip != nil {
		if err := c.Gossip.validate(); err != nil {
			return fmt.Errorf("cluster: config: node %q: %w", c.NodeID, err)
		}
	}
	return nil
}

// checkVoters refuses duplicate or empty entries and the two-voter cluster
// without a witness.
func checkVoters(ps []Peer) error {
	seen := map[string]bool{}
	witness := false
	for i, p := range ps {
		if p.ID == "" || p.Address == "" {
			return fmt.Errorf("peer %d: empty id or address", i)
		}
		if seen[p.ID] {
			return fmt.Errorf("peer %q listed twice", p.ID)
		}
		seen[p.ID] = true
		if p.Role == RoleWitness {
			witness = true
		}
	}
	if len(ps) == 2 && !witness {
		return ErrTwoNodes
	}
	return nil
}

// New starts a node on deps. It bootstraps from cfg.Peers when the node has
// no Raft state, starts membership when cfg.Gossip is set, and the
// committer.
func New(cfg Config, deps Deps) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Backend == nil && deps.DB != nil {
		deps.Backend = DBBackend(deps.DB)
	}
	if deps.Backend == nil || deps.Sealer == nil || deps.Logs == nil || deps.Stable == nil || deps.Snapshots == nil || deps.Transport == nil {
		return nil, fmt.Errorf("cluster: node %q: missing dependency (backend, sealer, raft stores and transport are all required)", cfg.NodeID)
	}
	n := &Node{
		cfg:           cfg,
		log:           cfg.Log.With("node", cfg.NodeID),
		deps:          deps,
		trans:         deps.Transport,
		notifyCh:      make(chan bool, 8),
		commitCh:      make(chan *pending, 1024),
		committerDone: make(chan struct{}),
		raftDown:      make(chan struct{}),
		events:        make(chan LeadershipEvent, 64),
		shutdown:      make(chan struct{}),
		roles:         map[string]Role{cfg.NodeID: cfg.Role},
	}
	for _, p := range cfg.Peers {
		n.roles[p.ID] = p.Role
	}
	n.fsm = NewFSM(deps.Backend, deps.Sealer, n.log)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NotifyCh = n.notifyCh
	// The SA database survives a restart: resume decides whether it needs
	// the snapshot (restart.go).
	rc.NoSnapshotRestoreOnStart = true
	rc.Logger = newHCLog(n.log, "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("cluster: node %q: raft config: %w", cfg.NodeID, err)
	}

	has, err := raft.HasExistingState(deps.Logs, deps.Stable, deps.Snapshots)
	if err != nil {
		return nil, fmt.Errorf("cluster: node %q: read raft state: %w", cfg.NodeID, err)
	}
	if err := n.resume(has); err != nil {
		return nil, err
	}
	r, err := raft.NewRaft(rc, n.fsm, deps.Logs, deps.Stable, deps.Snapshots, deps.Transport)
	if err != nil {
		return nil, fmt.Errorf("cluster: node %q: start raft: %w", cfg.NodeID, err)
	}
	n.raft = r
	if !has && len(cfg.Peers) > 0 {
		if err := n.bootstrap(cfg.Peers); err != nil {
			r.Shutdown()
			return nil, err
		}
	}
	// Membership starts before the goroutines that read n.gossip.
	if cfg.Gossip != nil {
		g, err := startGossip(n, *cfg.Gossip)
		if err != nil {
			r.Shutdown()
			return nil, err
		}
		n.gossip = g
		go g.run()
	}
	n.wg.Add(2)
	go n.leadershipLoop()
	go n.committer()
	return n, nil
}

func (n *Node) bootstrap(peers []Peer) error {
	if err := checkVoters(peers); err != nil {
		return fmt.Errorf("cluster: node %q: bootstrap: %w", n.cfg.NodeID, err)
	}
	var c raft.Configuration
	for _, p := range peers {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address)})
	}
	n.log.Info("cluster: bootstrapping", "voters", len(peers))
	if err := n.raft.BootstrapCluster(c).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("cluster: node %q: bootstrap: %w", n.cfg.NodeID, err)
	}
	return nil
}

// ID is this node's name (its Raft server ID).
func (n *Node) ID() string { return n.cfg.NodeID }

// Role is this node's role.
func (n *Node) Role() Role { return n.cfg.Role }

// Addr is this node's Raft address.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// Raft exposes the underlying Raft instance (for tools and tests).
func (n *Node) Raft() *raft.Raft { return n.raft }

// LeadershipChanges delivers this node's leadership events. The channel is
// buffered; when the reader falls behind the oldest event is dropped, so
// read IsLeaderReady for the current state after a gap.
func (n *Node) LeadershipChanges() <-chan LeadershipEvent { return n.events }

// IsLeaderReady reports whether this node is leader and has applied every
// committed entry.
func (n *Node) IsLeaderReady() bool { return n.ready.Load() && n.raft.State() == raft.Leader }

func (n *Node) emit(ev LeadershipEvent) {
	for {
		select {
		case n.events <- ev:
			return
		default:
		}
		select { // full: drop the oldest
		case <-n.events:
		default:
		}
	}
}

func (n *Node) leadershipLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.shutdown:
			n.stopLeading()
			return
		case leader := <-n.notifyCh:
			if !leader {
				if n.stopLeading() {
					n.log.Info("cluster: lost leadership")
				}
				n.emit(LeadershipEvent{Leader: false, Term: n.raft.CurrentTerm()})
				continue
			}
			n.stopLeading()
			ctx, cancel := context.WithCancel(context.Background())
			n.leaderMu.Lock()
			n.leaderCancel = cancel
			n.leaderMu.Unlock()
			term := n.raft.CurrentTerm()
			n.log.Info("cluster: elected leader", "term", term)
			n.emit(LeadershipEvent{Leader: true, Term: term})
			n.wg.Add(1)
			go n.establish(ctx, term)
		}
	}
}

// stopLeading cancels leader work; it reports whether any was running.
func (n *Node) stopLeading() bool {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	n.ready.Store(false)
	if n.leaderCancel == nil {
		return false
	}
	n.leaderCancel()
	n.leaderCancel = nil
	return true
}

// establish runs the Barrier, declares readiness, and starts leader duties.
func (n *Node) establish(ctx context.Context, term uint64) {
	defer n.wg.Done()
	for {
		err := n.wait(n.raft.Barrier(n.cfg.BarrierTimeout))
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			break
		}
		n.log.Warn("cluster: leader barrier failed; retrying", "term", term, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Under leaderMu so that a concurrent stopLeading (leadership lost)
	// cannot be overtaken by a stale "ready".
	n.leaderMu.Lock()
	if ctx.Err() != nil {
		n.leaderMu.Unlock()
		return
	}
	n.ready.Store(true)
	n.emit(LeadershipEvent{Leader: true, Ready: true, Term: term})
	n.leaderMu.Unlock()
	n.log.Info("cluster: leader ready", "term", term, "applied_index", n.raft.AppliedIndex())
	if n.gossip != nil {
		n.gossip.poke()
	}
	if n.cfg.Role == RoleWitness {
		n.handoff(ctx)
	}
}

// handoff moves leadership from a witness to a healthy gateway.
func (n *Node) handoff(ctx context.Context) {
	t := time.NewTicker(n.cfg.HandoffInterval)
	defer t.Stop()
	for {
		gws := n.gatewayVoters()
		switch {
		case ctx.Err() != nil:
			return
		case len(gws) == 1:
			s := gws[0]
			n.log.Info("cluster: witness is leader; handing leadership to a gateway", "to", s.ID)
			err := n.wait(n.raft.LeadershipTransferToServer(s.ID, s.Address))
			if err == nil {
				return
			}
			n.log.Warn("cluster: leadership hand-off failed", "to", s.ID, "err", err)
		case len(gws) > 1:
			// Several candidates, one of them maybe dead or cut off while
			// gossip still calls it alive (right after a failure): a
			// transfer to it would block until the transport times out.
			// Let raft pick the most up-to-date voter, a live one.
			n.log.Info("cluster: witness is leader; handing leadership to the most up-to-date voter", "gateways", len(gws))
			err := n.wait(n.raft.LeadershipTransfer())
			if err == nil {
				return
			}
			n.log.Warn("cluster: leadership hand-off failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gatewayVoters lists healthy gateway voters other than this node.
func (n *Node) gatewayVoters() []raft.Server {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || string(s.ID) == n.cfg.NodeID {
			continue
		}
		if n.roleOf(string(s.ID)) != RoleGateway {
			continue
		}
		if n.gossip != nil && !n.gossip.alive(string(s.ID)) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (n *Node) roleOf(id string) Role {
	n.rolesMu.RLock()
	defer n.rolesMu.RUnlock()
	return n.roles[id]
}

func (n *Node) setRole(id string, r Role) {
	n.rolesMu.Lock()
	n.roles[id] = r
	n.rolesMu.Unlock()
}

// TransferLeadership hands leadership to the named node, or to the most
// up-to-date voter when to is empty.
func (n *Node) TransferLeadership(to string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if to == "" {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("cluster: leadership transfer: %w", err)
		}
		return nil
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("cluster: leadership transfer to %q: %w", to, err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == to {
			if s.Suffrage != raft.Voter {
				return fmt.Errorf("cluster: leadership transfer to %q: not a voter", to)
			}
			if err := n.raft.LeadershipTransferToServer(s.ID, s.Address).Error(); err != nil {
				return fmt.Errorf("cluster: leadership transfer to %q: %w", to, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %q is not in the Raft configuration", ErrUnknownNode, to)
}

// Commit proposes cmds as one atomic group and returns once a quorum has
// the entry and it is applied on this node (so the caller may now tell the
// peer). It returns ErrNotLeader on a follower, the FSM's error if the group
// was refused, or ctx.Err() if ctx ends first (the group may still commit).
// Concurrent calls are coalesced into one Raft entry.
func (n *Node) Commit(ctx context.Context, cmds ...Command) error {
	if len(cmds) == 0 {
		return nil
	}
	group := make([][]byte, len(cmds))
	maxCmd := CommandType(MaxCommandType)
	if n.gossip != nil {
		maxCmd = n.gossip.clusterMaxCommand()
	}
	for i, c := range cmds {
		if c.Type > maxCmd && c.Flags&FlagIgnorable == 0 {
			return fmt.Errorf("%w: command %d is %v; the oldest member applies up to type %d", ErrUnsupportedByCluster, i, c.Type, maxCmd)
		}
		b, err := encodeCommand(c)
		if err != nil {
			return fmt.Errorf("cluster: commit: command %d: %w", i, err)
		}
		group[i] = b
	}
	select {
	case <-n.shutdown:
		return ErrShutdown
	default:
	}
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	start := time.Now()
	p := &pending{group: group, done: make(chan error, 1), start: start}
	select {
	case n.commitCh <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.shutdown:
		return ErrShutdown
	}
	select {
	case err := <-p.done:
		if err == nil {
			n.commitLat.Observe(time.Since(start))
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.committerDone:
		// The committer answered everything it took before it stopped.
		select {
		case err := <-p.done:
			return err
		default:
			return ErrShutdown
		}
	}
}

// committer coalesces pending commits: while an Apply is in flight it
// gathers the next ones, then proposes them as one Batch entry. At most
// Config.MaxInflight entries are in flight; entries are proposed in arrival
// order. When the last entry in flight lands and the callers of recent
// entries have been committing again at once (gather.go), the next entry
// is held back, for at most Config.CommitGather, until the callers this
// one answered are queued too: proposed without them, it would leave them
// to wait for its whole round before their own.
func (n *Node) committer() {
	defer n.wg.Done()
	defer close(n.committerDone)
	var queue []*pending
	inflight := 0
	done := make(chan int, n.cfg.MaxInflight) // the commits an entry answered
	// Gathering: want > 0 holds proposals until len(queue) >= want or
	// the timer fires (at the latest capAt; a third of CommitGather after
	// the last arrival).
	g := gatherer{window: n.cfg.CommitGather}
	want := 0
	var capAt time.Time
	gap := n.cfg.CommitGather / 3
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var timerC <-chan time.Time
	stopGather := func() {
		want = 0
		if timerC != nil {
			timer.Stop()
			timerC = nil
		}
	}
	armGather := func(now time.Time) {
		d := min(capAt.Sub(now), gap)
		if d <= 0 {
			stopGather()
			return
		}
		timer.Reset(d)
		timerC = timer.C
	}
	for {
		if want > 0 && len(queue) >= want {
			stopGather()
		}
		for want == 0 && inflight < n.cfg.MaxInflight && len(queue) > 0 {
			k := min(len(queue), n.cfg.MaxBatch)
			batch := queue[:k:k]
			queue = append([]*pending(nil), queue[k:]...)
			inflight++
			n.proposeBatch(batch, done)
		}
		select {
		case <-timerC:
			timerC = nil
			want = 0
		case p := <-n.commitCh:
			queue = append(queue, p)
			g.arrived(p.start)
		drain:
			for {
				select {
				case p := <-n.commitCh:
					queue = append(queue, p)
					g.arrived(p.start)
				default:
					break drain
				}
			}
			if want > 0 {
				armGather(time.Now())
			}
		case answered := <-done:
			inflight--
			if inflight == 0 && n.cfg.CommitGather > 0 {
				now := time.Now()
				if w := min(g.landed(now, answered, len(queue)), n.cfg.MaxBatch); w > len(queue) {
					want, capAt = w, now.Add(n.cfg.CommitGather)
					armGather(now)
				}
			}
		case <-n.shutdown:
			for ; inflight > 0; inflight-- {
				<-done
			}
			for _, p := range queue {
				p.done <- ErrShutdown
			}
			for {
				select {
				case p := <-n.commitCh:
					p.done <- ErrShutdown
				default:
					return
				}
			}
		}
	}
}

// proposeBatch appends one Batch entry and, in a goroutine, hands each
// Commit its group's result once the entry is applied here; then it sends
// done the number of commits it answered.
func (n *Node) proposeBatch(batch []*pending, done chan<- int) {
	fail := func(err error) {
		for _, p := range batch {
			p.done <- err
		}
	}
	groups := make([][][]byte, len(batch))
	for i, p := range batch {
		groups[i] = p.group
	}
	entry, err := encodeBatch(n.deps.Sealer, groups)
	if err != nil {
		fail(err)
		done <- len(batch)
		return
	}
	n.proposedEntries.Add(1)
	n.proposedBytes.Add(uint64(len(entry)))
	f := n.raft.Apply(entry, 10*time.Second)
	go func() {
		defer func() { done <- len(batch) }()
		// hashicorp/raft may never answer a future that was in flight when
		// it shut down: stop waiting once Raft is down (outcome unknown).
		if err := n.wait(f); err != nil {
			switch {
			case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
				fail(ErrNotLeader)
			case errors.Is(err, raft.ErrLeadershipLost):
				fail(ErrLeadershipLost)
			case errors.Is(err, raft.ErrRaftShutdown):
				fail(ErrShutdown)
			default:
				fail(fmt.Errorf("cluster: raft apply: %w", err))
			}
			return
		}
		switch r := f.Response().(type) {
		case *BatchResult:
			if len(r.Errs) != len(batch) {
				fail(fmt.Errorf("cluster: FSM returned %d results for %d groups", len(r.Errs), len(batch)))
				return
			}
			for i, p := range batch {
				p.done <- r.Errs[i]
			}
		case error:
			fail(r)
		default:
			fail(fmt.Errorf("cluster: FSM returned %T for a Batch", r))
		}
	}()
}

// Proposed returns how many Batch entries this node proposed as leader
// and their size in bytes (sealed, as they go into the Raft log and to
// every follower): the replication cost of what the engine commits.
func (n *Node) Proposed() (entries, bytes uint64) {
	return n.proposedEntries.Load(), n.proposedBytes.Load()
}

// CommitLatency returns the histogram of this node's successful Commit
// calls: from the call to the group applied locally after a quorum stored
// it (queueing behind other batches included).
func (n *Node) CommitLatency() LatencySnapshot { return n.commitLat.Snapshot() }

// Stats is a snapshot of this node's Raft state.
type Stats struct {
	State        string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastIndex    uint64
	LastContact  time.Time // zero on the leader
	LeaderID     string
	LeaderAddr   string
	LeaderReady  bool
}

// Stats returns this node's Raft state.
func (n *Node) Stats() Stats {
	addr, id := n.raft.LeaderWithID()
	return Stats{
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastIndex:    n.raft.LastIndex(),
		LastContact:  n.raft.LastContact(),
		LeaderID:     string(id),
		LeaderAddr:   string(addr),
		LeaderReady:  n.IsLeaderReady(),
	}
}

// Member describes one node of the cluster.
type Member struct {
	ID          string
	Role        Role
	RaftAddr    string
	GossipAddr  string // empty without membership
	Version     string
	MaxCommand  CommandType
	Status      string // alive, suspect, dead, left, or "raft-only"
	Voter       bool
	Leader      bool
	InRaft      bool
	FailedSince time.Time
}

// Members lists the nodes known through membership and the Raft
// configuration.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("cluster: members: %w", err)
	}
	_, leaderID := n.raft.LeaderWithID()
	byID := map[string]*Member{}
	var order []string
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			m := m
			byID[m.ID] = &m
			order = append(order, m.ID)
		}
	}
	for _, s := range f.Configuration().Servers {
		id := string(s.ID)
		m, ok := byID[id]
		if !ok {
			m = &Member{ID: id, Role: n.roleOf(id), Status: "raft-only"}
			byID[id] = m
			order = append(order, id)
		}
		m.RaftAddr = string(s.Address)
		m.InRaft = true
		m.Voter = s.Suffrage == raft.Voter
		m.Leader = s.ID == leaderID
	}
	slices.Sort(order)
	out := make([]Member, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}

// Leave removes this node from the cluster for good: it hands leadership
// over if it leads, announces its departure (the leader then removes its
// voter), and shuts down. For a restart or upgrade use Shutdown, which keeps
// the node a voter.
func (n *Node) Leave() error {
	var errs []error
	if n.raft.State() == raft.Leader {
		if err := n.TransferLeadership(""); err != nil {
			n.log.Warn("cluster: leaving without handing leadership over", "err", err)
		}
	}
	if n.gossip != nil {
		errs = append(errs, n.gossip.leave())
	}
	errs = append(errs, n.Shutdown())
	return errors.Join(errs...)
}

// Shutdown stops membership and Raft and closes the stores, without
// leaving the cluster: the others see this node fail and keep it a voter
// (a restart, an upgrade, a crash). It does not hand leadership over first:
// call TransferLeadership for a planned stop.
func (n *Node) Shutdown() error {
	var errs []error
	n.closeOnce.Do(func() {
		if n.gossip != nil {
			errs = append(errs, n.gossip.stop())
		}
		close(n.shutdown)
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: raft shutdown: %w", err))
		}
		close(n.raftDown)
		n.wg.Wait()
		if c, ok := n.trans.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
		if n.deps.Close != nil {
			errs = append(errs, n.deps.Close())
		}
	})
	return errors.Join(errs...)
}

func defaultLog() *slog.Logger { return slog.Default() }

// wait returns f's error, or ErrRaftShutdown once Raft is down (a future in
// flight at shutdown may never be answered).
func (n *Node) wait(f raft.Future) error {
	errCh := make(chan error, 1)
	go func() { errCh <- f.Error() }()
	select {
	case err := <-errCh:
		return err
	case <-n.raftDown:
		select {
		case err := <-errCh:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}
