package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"ikegw/cluster"
	"ikegw/failover"
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
	// sendGate closes the runtime's sends when the lease runs out
	// (fence.go).
	sendGate runtime.Gate

	mu           sync.Mutex
	rt           *runtime.Runtime
	activatedAt  time.Time
	lastTakeover TakeoverTimes
	stats        takeoverStats // every activation, for metrics
	// gate stops the engine's SA commits while a handover is prepared.
	gate persistGate
	// announced is the ID of the handover this node announced as the
	// active (0: none pending), announcedTerm the Raft term it was
	// announced in.
	announced     uint64
	announcedTerm uint64
	// staged is the takeover prepared for a handover to this node;
	// usedHandover the ID of the last one a takeover used.
	staged       *stagedTakeover
	usedHandover uint64
	// keptTerm is the Raft term of a fence that kept the runtime and the
	// data plane's pairs (fence; 0: none kept); keptGen tells one kept
	// fence from the next for its flush timer.
	keptTerm uint64
	keptGen  uint64
	// handedOver: handingOver stopped the sends of a planned handover
	// announced in handoverTerm and the next deactivate is its flush,
	// which waits for the target's claim (deferFlush). flushPending: that
	// flush has not run yet (flushGen tells one deferral from the next).
	handedOver   bool
	handoverTerm uint64
	flushPending bool
	flushGen     uint64
	// life ends when the role machine stops (nil: never).
	life context.Context
	// flushWait bounds deferFlush's wait (0: flushWaitMax).
	flushWait time.Duration
	// lastStaging is how long this node's last staging of a handover
	// took, or the same work in its last full takeover (0: none yet);
	// stageGraceFor uses it when this node hands over.
	lastStaging time.Duration
}

// flushWaitMax bounds how long a handover's flush waits for the target's
// claim (deferFlush).
const flushWaitMax = time.Second

// keptFenceFor is how long a fence keeps the runtime and the pairs for a
// re-activation in the same term. The IKE engine's timers keep running
// behind closed send gates meanwhile; a longer fence would let a DPD or a
// retransmission limit declare a healthy peer dead, so it is flushed as a
// stand-down would be (the next activation is then a full takeover).
const keptFenceFor = 2 * time.Second

// TakeoverTimes splits the last activation for metrics and the bench.
type TakeoverTimes struct {
	Started time.Time
	Load    time.Duration // reading the replicated records
	Commit  time.Duration // committing the jumped sequence numbers (the pairs are staged meanwhile)
	// Install is the data plane's time after the commit: activating the
	// staged pairs, plus any staging that outlasted the commit.
	Install time.Duration
	Engine  time.Duration // engine restore and sockets
	// Staged: the takeover finished what a planned handover had staged
	// (Load and Install were spent before the old active let go, unless
	// StagedLate).
	Staged bool
	// StagedLate: the handover's announcement was applied but not yet
	// staged when the leadership came; it was staged at activation (no
	// commit of jumped counters needed: the announcement has them).
	StagedLate bool
	// Unstaged says why a takeover after a handover announced to this
	// node did not use it ("" when it did, or when none was announced).
	Unstaged string
	IKESAs   int
	ChildSAs int
}

// activate runs the takeover (DESIGN.md "Takeover, step by step", steps 4
// and 6; the caller claims the VIPs afterwards, step 5). It is called only
// on the Raft leader once its store holds every committed SA (after the
// Barrier, or with every earlier-term entry applied: failover.Leadership).
// After a planned handover to this node it finishes the pre-staged
// takeover instead (see stage and the failover package documentation).
func (m *member) activate(ctx context.Context) (err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settleFlushLocked()
	if m.rt != nil && m.keptTerm != 0 && m.node.Raft().CurrentTerm() != m.keptTerm {
		// Not the term the state was kept in (the role machine
		// re-activates only in the same term; defence in depth).
		m.log.Warn("takeover: the state kept at a fence is of another term; full takeover", "kept_term", m.keptTerm)
		m.deactivateLocked()
	}
	if m.rt != nil {
		// Kept at a fence (or already active): the runtime runs on, but
		// a handover announced before the fence must still be cancelled
		// and the commit gate it closed opened, as for a full takeover.
		if err := m.endAnnouncementLocked(ctx); err != nil {
			return err
		}
		if m.keptTerm != 0 {
			m.log.Info("re-activated in the term of the fence: the runtime and the pairs were kept", "term", m.keptTerm)
		}
		m.keptTerm = 0
		m.keptGen++
		return nil
	}
	t := TakeoverTimes{Started: time.Now()}
	defer func() { m.stats.record(t, err) }()
	if err := m.endAnnouncementLocked(ctx); err != nil {
		return err
	}
	if m.staged == nil {
		// The last handover applied may name this node while its
		// watcher has not staged it yet (it polls; the leadership can
		// come first on a loaded machine): stage it now. The jumped
		// counters are committed by the announcement, so this still
		// saves the takeover's own commit; stagedValid below decides.
		h, ok, err := cluster.ReadHandover(m.node.Store())
		switch {
		case err != nil:
			t.Unstaged = "reading the last handover: " + err.Error()
		case !ok || h.To != m.cfg.Node.Name || h.ID == m.usedHandover:
			t.Unstaged = "no handover to this node was announced"
		default:
			if t.StagedLate = m.stageLocked(ctx, h); !t.StagedLate {
				t.Unstaged = "the announcement could not be staged (too old, or staging failed: see the log)"
			}
		}
	}
	if st := m.staged; st != nil {
		m.staged = nil
		if err := m.stagedValid(st); err != nil {
			m.log.Info("takeover: the pre-staged handover does not apply; full takeover", "reason", err)
			t.Unstaged = err.Error()
			st.rt.Close()
		} else {
			m.usedHandover = st.id
			t.Staged = true
			t.Load = st.load
			// The staged pairs send from now on (this node leads the
			// term right after the announcement's: stagedValid).
			mark := time.Now()
			m.install(ctx, st.live)
			t.Install = time.Since(mark)
			m.startStaged(st, &t)
			return nil
		}
	}
	// A full takeover consumes every handover applied so far: from here
	// on this node sends with counters of its own, and what an
	// announcement staged (its counters) must never be installed by a
	// later activation of this node (a fence and re-activation in the
	// same term would pass stagedValid's term check and go back).
	if h, ok, err := cluster.ReadHandover(m.node.Store()); err == nil && ok {
		m.usedHandover = h.ID
	}
	ikes, kids, err := loadAll(m.node.Store())
	if err != nil {
		return fmt.Errorf("takeover: reading the replicated SAs: %w", err)
	}
	t.Load = time.Since(t.Started)
	// Sequence numbers never go back: every pair continues at the last
	// committed value plus every packet the old active may have sent since
	// it read that value (failover.SeqBound), and that is replicated
	// first, as counters read now, so a second takeover jumps from there.
	jumped := map[uint32]sa.Counters{}
	var live []*sa.ChildSA
	now := time.Now()
	bound := m.cfg.seqBound()
	for _, c := range kids {
		if c.State == sa.ChildDeleted {
			continue
		}
		c.Counters.OutSeq += bound.Jump(c, now)
		c.Counters.SyncedAt = now.UnixNano()
		jumped[c.In.SPI] = c.Counters
		live = append(live, c)
	}
	mark := time.Now()
	commitEnd, stage, err := m.commitAndStage(ctx, jumped, live)
	t.Commit = commitEnd.Sub(mark)
	if err != nil {
		// The staged pairs sent nothing; OnStandby, which follows a
		// failed activation, flushes them.
		return fmt.Errorf("takeover: committing jumped sequence numbers: %w", err)
	}
	m.install(ctx, live)
	t.Install = time.Since(commitEnd)
	_, rt, err := m.newRuntime()
	if err != nil {
		return err
	}
	if len(live) > 0 {
		m.log.Info("takeover: pairs staged while the jumped counters were committed", "pairs", len(live), "stage", stage, "commit", t.Commit)
	}
	if err := m.start(ctx, rt, ikes, live, &t); err != nil {
		return err
	}
	// What a handover's target would spend staging these records (read,
	// install, engine restore): the grace of this node's next handover.
	m.lastStaging = t.Load + stage + t.Engine
	return nil
}

// commitAndStage commits the jumped counters and, at the same time, stages
// the pairs with them in the data plane (stageDuringCommit).
func (m *member) commitAndStage(ctx context.Context, jumped map[uint32]sa.Counters, live []*sa.ChildSA) (commitEnd time.Time, stage time.Duration, err error) {
	commit := func(ctx context.Context) error {
		if len(jumped) == 0 {
			return nil
		}
		return m.node.Commit(ctx, cluster.CountersBatch(jumped))
	}
	return stageDuringCommit(ctx, m.dp, m.log, commit, live)
}

// stageDuringCommit runs commit (of the pairs' jumped counters) and, at the
// same time, stages the pairs in dp when it is an xfrm.Stager (their SAs
// with the jumped counters, not yet allowed to send). It returns when
// both are done: when the commit ended, how long staging took, and the
// commit's error.
//
// Why the overlap keeps the invariants (DESIGN.md 1 and 3; failover
// package documentation, "Installing the pairs"): a staged pair sends
// nothing (kernel: no policy selects it; userspace: the engine never
// matches it to a packet, and the IKE runtime that carries its ESP does
// not exist yet), so no packet with a
// jumped sequence number leaves this node before the jump is on a quorum;
// the pairs start sending only in install, after the commit returned. If
// the commit fails, the staged pairs are flushed by OnStandby, which
// follows every activation, and they never sent.
func stageDuringCommit(ctx context.Context, dp xfrm.DataPlane, log *slog.Logger, commit func(context.Context) error, live []*sa.ChildSA) (commitEnd time.Time, stage time.Duration, err error) {
	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		err := commit(ctx)
		done <- result{err, time.Now()}
	}()
	if st, ok := dp.(xfrm.Stager); ok && len(live) > 0 {
		mark := time.Now()
		if err := st.StageChildren(ctx, live); err != nil {
			// Activation installs what could not be staged, or logs it.
			log.Warn("takeover: staging IPsec SA pairs failed; installing them after the commit", "err", err)
		}
		stage = time.Since(mark)
	}
	r := <-done
	return r.at, stage, r.err
}

// stagePairs installs the pairs of a handover's target ahead of its
// takeover, sending nothing: a Stager stages them (kernel: SAs without
// policies, so the packets standby forwarding hands to the active are
// never encrypted here with the jumped counters; userspace: pairs no
// packet is matched to), and install activates them at the takeover. Any
// other data plane installs them at once. Failures are logged: the
// activation installs what could not be staged.
func (m *member) stagePairs(ctx context.Context, live []*sa.ChildSA) {
	if err := stagePairs(ctx, m.dp, live); err != nil {
		m.log.Warn("handover: staging IPsec SA pairs failed; the takeover installs them", "err", err)
	}
}

func stagePairs(ctx context.Context, dp xfrm.DataPlane, live []*sa.ChildSA) error {
	if st, ok := dp.(xfrm.Stager); ok {
		return st.StageChildren(ctx, live)
	}
	var errs []error
	for _, c := range live {
		if err := dp.InstallChild(ctx, c); err != nil {
			errs = append(errs, fmt.Errorf("pair %08x: %w", c.In.SPI, err))
		}
	}
	return errors.Join(errs...)
}

// install lets the pairs carry traffic: a Stager activates them (staged
// ones may send from now on; the others are installed), any other data
// plane installs them one by one. A failure is logged: the others still
// work.
func (m *member) install(ctx context.Context, live []*sa.ChildSA) {
	if st, ok := m.dp.(xfrm.Stager); ok {
		if err := st.ActivateChildren(ctx, live); err != nil {
			m.log.Error("takeover: installing IPsec SA pairs failed", "err", err)
		}
		return
	}
	for _, c := range live {
		if err := m.dp.InstallChild(ctx, c); err != nil {
			m.log.Error("takeover: installing an IPsec SA pair failed", "spi_in", fmt.Sprintf("%08x", c.In.SPI), "err", err)
		}
	}
}

// endAnnouncementLocked cancels a handover this node announced and that
// did not happen (it still leads the term it announced in), before any SA
// change, so that its target never trusts what it staged from before these
// changes; then it opens the commit gate the announcement closed. In a
// later term there is nothing to cancel: a target trusts its staged state
// only as the leader of the term right after the announcement
// (stagedValid), and that term is over. Cancelling then would only spoil a
// handover announced to this node since (it is the last one applied).
// m.mu is held.
func (m *member) endAnnouncementLocked(ctx context.Context) error {
	if m.announced != 0 && m.node.Raft().CurrentTerm() == m.announcedTerm {
		if err := m.node.Commit(ctx, cluster.Handover(cluster.HandoverBody{ID: newHandoverID(), From: m.cfg.Node.Name,
			Term: m.node.Raft().CurrentTerm()})); err != nil {
			return fmt.Errorf("takeover: cancelling the handover this node announced: %w", err)
		}
	}
	m.announced, m.announcedTerm = 0, 0
	m.gate.open()
	return nil
}

// newRuntime builds the engine and the IKE runtime (sockets bound to the
// VIPs with IP_FREEBIND); nothing runs until start.
func (m *member) newRuntime() (*ikev1.Engine, *runtime.Runtime, error) {
	eng, err := ikev1.New(ikev1.Config{Connections: m.cfg.connections(), Log: m.log.With("component", "ike")})
	if err != nil {
		return nil, nil, err
	}
	rt, err := runtime.New(runtime.Config{
		Engine: eng, Listen: m.cfg.ListenAddrs(), Port: m.cfg.IKE.Port, NATTPort: m.cfg.IKE.NATTPort, FreeBind: true,
		Persister: clusterPersister{node: m.node, gate: &m.gate}, DataPlane: m.dp, ESP: m.esp, CounterSync: m.cfg.Dataplane.CounterSync, SocketHook: m.sockHook,
		Log: m.log.With("component", "runtime"), Gate: m.sendGate,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("takeover: IKE sockets: %w", err)
	}
	return eng, rt, nil
}

// start runs rt, restores the engine from the records (the pairs are
// installed already) and starts the connections this node initiates.
// m.mu is held.
func (m *member) start(ctx context.Context, rt *runtime.Runtime, ikes []*sa.IKESA, live []*sa.ChildSA, t *TakeoverTimes) error {
	mark := time.Now()
	m.sender.rt.Store(rt)
	go rt.Run(context.Background())
	if err := rt.Do(ctx, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		return e.Restore(now, ikes, live, ikev1.RestoreOptions{})
	}); err != nil {
		rt.Close()
		m.sender.rt.Store(nil)
		return fmt.Errorf("takeover: restoring the engine: %w", err)
	}
	t.Engine = time.Since(mark)
	t.IKESAs, t.ChildSAs = len(ikes), len(live)
	m.rt = rt
	m.activatedAt = time.Now()
	m.lastTakeover = *t
	m.log.Info("takeover complete", "ike_sas", len(ikes), "child_sas", len(live), "staged", t.Staged,
		"load", t.Load, "commit", t.Commit, "install", t.Install, "engine", t.Engine, "total", time.Since(t.Started))
	m.initiateMissing(ctx, rt, ikes)
	return nil
}

// initiateMissing starts the connections this node should initiate and
// that have no established IKE SA among ikes.
func (m *member) initiateMissing(ctx context.Context, rt *runtime.Runtime, ikes []*sa.IKESA) {
	for _, c := range m.cfg.connections() {
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
}

// fence is the role machine's OnFence: the lease ended while this node was
// active, and no change of leader was seen. With the userspace data plane
// it keeps the runtime and the installed pairs: the send gates drop what
// they would send until a new lease, and no VIP is held, so nothing reaches
// or leaves the pairs. If a quorum then confirms this leader again in the
// same term, no other node led meanwhile (a quorum still in this term means
// no later term was won) and nobody else used the pairs: activate returns
// at once, the outbound sequence numbers continue from the data plane's
// own (never back), and the fence costs the VIP release and claim instead
// of a flush and a full takeover (at 10,000 tunnels each fence cost a flush
// of 0.6-1.8 s and a reinstall of about 1 s, which made the next fence
// likelier). The kernel data plane's XFRM states would still encrypt
// what reaches this node, so it is flushed as on standby. It reports
// whether it kept the state.
func (m *member) fence() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rt == nil || !m.sendsGated() {
		m.deactivateLocked()
		return false
	}
	m.keptTerm = m.node.Raft().CurrentTerm()
	m.keptGen++
	gen := m.keptGen
	time.AfterFunc(keptFenceFor, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.keptGen == gen && m.keptTerm != 0 {
			m.log.Info("fenced for too long: flushing the state kept for a re-activation", "after", keptFenceFor)
			m.deactivateLocked()
		}
	})
	m.log.Info("fenced: runtime and pairs kept for a re-activation in this term", "term", m.keptTerm, "for", keptFenceFor)
	return true
}

// sendsGated reports whether everything this node sends as the active
// stops when its lease ends, so that its runtime and pairs may outlive
// the lease (fence, handingOver): the userspace data plane, whose engine
// the daemon builds with the fence's send gate, with the runtime's send
// gate set too. The kernel's XFRM states encrypt without a gate.
func (m *member) sendsGated() bool {
	return m.dp.Kind() == xfrm.KindUserspace && m.sendGate != nil
}

// handingOver is the role machine's OnHandover: a planned handover released
// the VIPs and ended the lease, and leadership is about to move to the
// target. It stops what this node sends in time that does not grow with
// the pairs, and leaves the flush to deactivate (OnStandby), which the
// role machine calls after the transfer: at 1,000 tunnels the flush took
// 34-42 ms, most of a planned failover's outage, when it ran before.
//
// With the userspace data plane (built with the send gate, as on every
// cluster gateway) the IKE runtime is closed (no IKE message
// leaves after the release) and the pairs stay until the flush: the lease
// ended before the release, so the send gate (fence.go) drops every packet
// the engine would encrypt, and the target's counters start above the old
// active's by the handover's jump whatever it sent before the gate closed
// (failover's "Planned handover"). The kernel data plane's SAs encrypt
// without a gate: they are flushed here, before the transfer, as before.
func (m *member) handingOver() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.sendsGated() {
		m.deactivateLocked()
		return
	}
	m.keptTerm = 0
	m.keptGen++
	if m.rt != nil {
		m.rt.Close()
		m.rt = nil
		m.sender.rt.Store(nil)
	}
	m.handedOver = true
	m.handoverTerm = 0
	if m.node != nil {
		m.handoverTerm = m.node.Raft().CurrentTerm()
	}
	m.log.Info("handover: IKE stopped, the data plane's sends gated; its pairs are flushed once the target claimed")
}

// deactivate stops answering IKE and removes the data plane's SAs (the
// caller has already dropped the VIPs). Nothing is sent to peers. After
// handingOver the flush is deferred (deferFlush).
func (m *member) deactivate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handedOver {
		m.handedOver = false
		m.deferFlush(m.handoverTerm)
		return
	}
	m.deactivateLocked()
}

// deferFlush flushes the data plane of a planned handover announced in
// term once the target claimed (it recorded itself as the active node in
// a later term), or after flushWaitMax. The role machine calls OnStandby
// right after the transfer, while the target is elected, confirms its
// leadership and claims the VIPs; on a machine where the gateways share
// the CPU, the flush (34-161 ms for 1,000 pairs in the lab, two netlink
// calls and a log line per pair) delayed the target's quorum check (48
// ms instead of 5-9 in one run). Until the flush the pairs send nothing
// (the send gate is closed, handingOver) and the IKE runtime is closed;
// an activation or a staging on this node runs the flush first
// (settleFlushLocked). m.mu is held.
func (m *member) deferFlush(term uint64) {
	m.flushPending = true
	m.flushGen++
	gen := m.flushGen
	go func() {
		t0 := time.Now()
		limit := m.flushWait
		if limit == 0 {
			limit = flushWaitMax
		}
		claimed := m.waitClaimed(term, limit)
		if m.life != nil && m.life.Err() != nil {
			return // the daemon stops: closing the data plane removes the pairs
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.flushPending || m.flushGen != gen {
			return
		}
		m.log.Info("handover: flushing the data plane", "target_claimed", claimed, "waited", time.Since(t0).Round(time.Millisecond))
		m.deactivateLocked()
	}()
}

// waitClaimed waits until the store records another node as the active
// one in a term after term, for at most limit or until m.life ends; it
// reports whether it saw that.
func (m *member) waitClaimed(term uint64, limit time.Duration) bool {
	if m.node == nil {
		return false
	}
	life := m.life
	if life == nil {
		life = context.Background()
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	t := time.NewTicker(handoverPoll)
	defer t.Stop()
	var applied uint64
	for {
		if a := m.node.FSMAppliedIndex(); a != applied {
			applied = a
			act, ok, err := cluster.ReadActive(m.node.Store())
			if err != nil {
				return false
			}
			if ok && act.Node != m.cfg.Node.Name && act.Term > term {
				return true
			}
		}
		select {
		case <-t.C:
		case <-deadline.C:
			return false
		case <-life.Done():
			return false
		}
	}
}

// settleFlushLocked runs a deferred flush now (m.mu held): before this
// node installs pairs again.
func (m *member) settleFlushLocked() {
	if m.flushPending {
		m.log.Info("handover: flushing the data plane before installing pairs again")
		m.deactivateLocked()
	}
}

// deactivateLocked is deactivate with m.mu held.
func (m *member) deactivateLocked() {
	m.keptTerm = 0
	m.keptGen++
	m.handedOver = false
	m.flushPending = false
	if m.rt != nil {
		m.rt.Close()
		m.rt = nil
		m.sender.rt.Store(nil)
	}
	if m.staged != nil {
		m.staged.rt.Close()
		m.staged = nil
	}
	// Always flush: a takeover that failed half way may have installed
	// pairs before it gave up.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.dp.Flush(ctx); err != nil {
		if errors.Is(err, xfrm.ErrClosed) {
			return // the daemon stops: the data plane is gone
		}
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

// stagedTakeover is a takeover prepared on the target of a planned handover
// while the old active still holds the VIPs: the records read, the pairs
// staged (sending nothing) with the jumped counters the handover committed, the runtime
// built (sockets bound, nothing running) and its engine restored.
type stagedTakeover struct {
	id, term uint64
	ikes     []*sa.IKESA
	live     []*sa.ChildSA
	rt       *runtime.Runtime
	timers   []ikev1.Action // the restored engine's, armed at activation
	at       time.Time
	// readAt is when the old active read the counters it committed with
	// the announcement (zero when a pair carries none: not usable).
	readAt        time.Time
	load, install time.Duration
}

// startStaged starts the runtime of a staged takeover, whose engine was
// restored while staging: its timers are armed by the runtime's loop before
// it handles any packet (events are handled in order), so the activation
// does not wait for the loop. m.mu is held.
func (m *member) startStaged(st *stagedTakeover, t *TakeoverTimes) {
	mark := time.Now()
	rt := st.rt
	m.sender.rt.Store(rt)
	go rt.Run(context.Background())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := rt.Do(ctx, func(time.Time, *ikev1.Engine) ([]ikev1.Action, error) { return st.timers, nil })
		if err != nil && !errors.Is(err, runtime.ErrClosed) {
			m.log.Error("takeover: arming the restored engine's timers failed", "err", err)
		}
		m.initiateMissing(ctx, rt, st.ikes)
	}()
	t.Engine = time.Since(mark)
	t.IKESAs, t.ChildSAs = len(st.ikes), len(st.live)
	m.rt = rt
	m.activatedAt = time.Now()
	m.lastTakeover = *t
	m.log.Info("takeover complete", "ike_sas", t.IKESAs, "child_sas", t.ChildSAs, "staged", true,
		"load", t.Load, "install", t.Install, "engine", t.Engine, "total", time.Since(t.Started))
}

// stagedLife is how long a staged takeover waits for the leadership.
const stagedLife = 10 * time.Second

// stagedValid checks, on the new leader, that st still describes the
// store: the last handover applied is the one st was staged for, and this
// node leads the term right after the one it was announced in, so nobody
// but the announcing node (which commits no SA change after announcing,
// and cancels before any if it stays active) led in between.
func (m *member) stagedValid(st *stagedTakeover) error {
	h, ok, err := cluster.ReadHandover(m.node.Store())
	switch {
	case err != nil:
		return err
	case !ok || h.ID != st.id:
		return errors.New("another handover (or its cancel) was applied since")
	case h.To != m.cfg.Node.Name:
		return fmt.Errorf("the handover names %q", h.To)
	}
	if st.id == m.usedHandover {
		return errors.New("this node already took over after that handover (its counters moved on since)")
	}
	if term := m.node.Raft().CurrentTerm(); term != h.Term+1 {
		return fmt.Errorf("leader in term %d, the handover was announced in term %d", term, h.Term)
	}
	if now := time.Now(); !m.cfg.seqBound().StagedValid(st.readAt, now) {
		return fmt.Errorf("the staged counters were read at %s, %s ago: the handover's jump covers %s (failover.HandoverWindow)",
			st.readAt.UTC().Format(time.RFC3339Nano), now.Sub(st.readAt).Round(time.Millisecond), failover.HandoverWindow)
	}
	return nil
}

// seqBound is the sequence-number jump bound of the configuration.
func (c *Config) seqBound() failover.SeqBound {
	return failover.SeqBound{MaxPPS: c.Dataplane.MaxPPS, ClockSkew: c.Dataplane.MaxClockSkew, Min: c.Dataplane.SeqMargin}
}

// stage prepares the takeover for handover h to this node (a standby).
func (m *member) stage(ctx context.Context, h cluster.HandoverBody) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stageLocked(ctx, h)
}

// stageLocked is stage with m.mu held; it reports whether a takeover is
// staged now.
func (m *member) stageLocked(ctx context.Context, h cluster.HandoverBody) bool {
	if m.rt != nil || h.ID == m.usedHandover {
		return false
	}
	m.settleFlushLocked()
	m.dropStaged("a newer handover")
	start := time.Now()
	ikes, kids, err := loadAll(m.node.Store())
	if err != nil {
		m.log.Warn("handover: staging failed; the takeover will read the records", "err", err)
		return false
	}
	st := &stagedTakeover{id: h.ID, term: h.Term, ikes: ikes, at: start}
	for _, c := range kids {
		if c.State == sa.ChildDeleted {
			continue
		}
		st.live = append(st.live, c) // counters: jumped by the handover entry
		// readAt: the oldest read time of any pair (zero if one has none).
		var at time.Time
		if c.Counters.SyncedAt > 0 {
			at = time.Unix(0, c.Counters.SyncedAt)
		}
		if len(st.live) == 1 || at.IsZero() || (!st.readAt.IsZero() && at.Before(st.readAt)) {
			st.readAt = at
		}
	}
	st.load = time.Since(start)
	if !m.cfg.seqBound().StagedValid(st.readAt, time.Now()) {
		// An old announcement (a node catching up replays them): its
		// counters no longer cover the old active's packets.
		m.log.Info("handover: announcement too old to stage", "from", h.From, "term", h.Term, "counters_read_at", st.readAt)
		return false
	}
	mark := time.Now()
	m.stagePairs(ctx, st.live)
	st.install = time.Since(mark)
	eng, rt, err := m.newRuntime()
	if err == nil {
		// The engine is not running yet: restore it here, and let the
		// activation arm the timers.
		st.rt = rt
		if st.timers, err = eng.Restore(time.Now(), ikes, st.live, ikev1.RestoreOptions{}); err != nil {
			rt.Close()
		}
	}
	if err != nil {
		m.log.Warn("handover: staging failed; the takeover will start from scratch", "err", err)
		if err := m.dp.Flush(ctx); err != nil {
			m.log.Error("handover: data plane flush failed", "err", err)
		}
		return false
	}
	m.staged = st
	m.lastStaging = time.Since(start)
	// The election and the first quorum check of the target are Raft
	// round trips: open their connections now, without holding m.mu (an
	// activation waits for it, and a peer that is shutting down may take
	// seconds to answer). All three connections the transport pools per
	// peer: with two, the new leader dialed a third to the witness (TLS
	// handshakes on both ends) 7-14 ms after its claim at 1,000 tunnels,
	// while the first packets went through it (raft's replication,
	// heartbeats and the quorum confirmer each hold one).
	go m.node.WarmConnections(3)
	m.log.Info("handover: takeover staged", "from", h.From, "term", h.Term, "ike_sas", len(ikes), "child_sas", len(st.live),
		"load", st.load, "install", st.install, "total", time.Since(start))
	return true
}

// dropStaged discards a staged takeover (m.mu held).
func (m *member) dropStaged(reason string) {
	if m.staged == nil {
		return
	}
	m.staged.rt.Close()
	m.staged = nil
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.dp.Flush(ctx); err != nil {
		m.log.Error("handover: data plane flush failed", "err", err)
	}
	m.log.Info("handover: staged takeover dropped", "reason", reason)
}

// watchHandovers stages the takeover when a Handover naming this node is
// applied, and drops a staged takeover that waited stagedLife in vain. It
// polls the FSM's applied index (cheap) every pollEvery until ctx ends:
// raft's own AppliedIndex runs ahead of the store.
func (m *member) watchHandovers(ctx context.Context, pollEvery time.Duration) {
	var seen uint64
	if h, ok, err := cluster.ReadHandover(m.node.Store()); err == nil && ok {
		seen = h.ID // announced before this run: not for us to stage
	}
	applied := m.node.FSMAppliedIndex()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a := m.node.FSMAppliedIndex(); a != applied {
			applied = a
			h, ok, err := cluster.ReadHandover(m.node.Store())
			if err != nil {
				m.log.Warn("handover: reading the last announcement failed", "err", err)
			}
			if err == nil && ok && h.ID != seen {
				seen = h.ID
				m.log.Info("handover: announcement applied", "from", h.From, "to", h.To, "term", h.Term, "applied_index", a)
				if h.To == m.cfg.Node.Name {
					m.stage(ctx, h)
				} else {
					m.mu.Lock()
					m.dropStaged("a handover to another node, or a cancel")
					m.mu.Unlock()
				}
			}
		}
		m.mu.Lock()
		if m.staged != nil && time.Since(m.staged.at) > stagedLife {
			m.dropStaged("no leadership came")
		}
		m.mu.Unlock()
	}
}

// prepareHandover runs on the active node before a planned handover to
// target, while it still holds the VIPs: it stops the engine's SA commits
// (waiting for those in flight), then commits in one entry the jumped
// counters of every pair (the live ones where the data plane has them,
// plus the margin) and a Handover naming target. It returns the number of
// pairs. On an error nothing is announced and the gate is open again; a
// cluster with a member that cannot apply Handover gives an error wrapping
// cluster.ErrUnsupportedByCluster.
func (m *member) prepareHandover(ctx context.Context, target string) (int, error) {
	m.gate.close()
	n, err := m.announce(ctx, target)
	if err != nil {
		m.gate.open()
	}
	return n, err
}

func (m *member) announce(ctx context.Context, target string) (int, error) {
	_, kids, err := loadAll(m.node.Store())
	if err != nil {
		return 0, err
	}
	// The read time is taken before the read: the counters are at least
	// as recent as it.
	readAt := time.Now()
	liveCounters, err := m.dp.Counters(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the data plane counters: %w", err)
	}
	jump := m.cfg.seqBound().HandoverJump()
	jumped := map[uint32]sa.Counters{}
	for _, c := range kids {
		if c.State == sa.ChildDeleted {
			continue
		}
		cs := ikev1.MergeCounters(c.Counters, liveCounters[c.In.SPI])
		cs.OutSeq += jump
		cs.SyncedAt = readAt.UnixNano()
		jumped[c.In.SPI] = cs
	}
	id, term := newHandoverID(), m.node.Raft().CurrentTerm()
	cmds := []cluster.Command{cluster.Handover(cluster.HandoverBody{ID: id, From: m.cfg.Node.Name, To: target, Term: term})}
	if len(jumped) > 0 {
		cmds = append([]cluster.Command{cluster.CountersBatch(jumped)}, cmds...)
	}
	if err := m.node.Commit(ctx, cmds...); err != nil {
		return 0, fmt.Errorf("announcing the handover to %s: %w", target, err)
	}
	// Raft tells a follower that an entry is committed only with the next
	// one it replicates: repeat the announcement (applying it again changes
	// nothing), so the target applies the first and stages. It may leave
	// the repeat unapplied and still be ready at once (PriorTermsApplied).
	if err := m.node.Commit(ctx, cmds[len(cmds)-1]); err != nil {
		return 0, fmt.Errorf("repeating the handover announcement to %s: %w", target, err)
	}
	m.mu.Lock()
	m.announced, m.announcedTerm = id, term
	m.mu.Unlock()
	return len(jumped), nil
}

// newHandoverID is a random non-zero ID.
func newHandoverID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
