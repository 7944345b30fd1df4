// Package role is the active/standby role machine of an ikegw gateway. It
// decides when this node holds the virtual IPs: only while it is the Raft
// leader, has applied every committed entry (Ready), is a gateway (a
// witness never activates), the takeover callback succeeded, and a quorum
// confirmed its leadership less than one lease ago. It never talks Raft,
// netlink or IKE itself: it drives the interfaces below (cluster adapter in
// package failover, VIP manager in failover/vip, callbacks from the daemon),
// so its tests run on fakes.
//
// # States
//
//	standby    -> activating  leader and ready, gateway, not held off
//	activating -> active      OnActivate succeeded, quorum confirmed within
//	                          the lease; VIPs claimed and announced, OnActive
//	activating -> standby     OnActivate or the claim failed: VIPs released,
//	                          OnStandby, leadership handed to another gateway,
//	                          retry after a backoff if still leader
//	active     -> standby     leadership lost (event, poll, or a quorum check
//	                          answered "not leader"): VIPs released FIRST,
//	                          then OnStandby
//	active     -> fencing     no quorum confirmation for a whole lease: VIPs
//	                          released at once, then OnStandby
//	fencing    -> activating  a quorum confirms leadership again (same leader)
//	fencing    -> standby     leadership lost
//
// OnStandby is called once after every OnActivate call, whatever its
// outcome, before the next OnActivate, except that a fence whose OnFence
// kept the state is followed by OnActivate again (same term) and OnStandby
// comes once, when the machine stands down. OnActivate must be idempotent (it may
// run again after a fence without a change of leader) and must return soon
// after its context is cancelled. OnActive and OnStandby run on the
// machine's goroutine: they must return quickly (start work, do not wait
// for it), because a fence that falls due while they run waits for them. A
// callback slower than a tenth of the lease is logged.
//
// # Self-fencing: the timing argument
//
// While not in standby the machine calls VerifyQuorum every CheckInterval:
// a heartbeat round that a quorum must acknowledge (in the daemon the
// first to answer of hashicorp/raft's VerifyLeader and
// cluster.QuorumConfirmer, which sends the heartbeats directly over the
// transport so that raft's leader loop, busy writing the log or feeding
// the FSM, does not delay the confirmation). Let s be the start of the last call that succeeded. Every
// voter of that quorum heard from this leader at a time >= s. A hashicorp
// raft follower that knows a leader refuses to vote for anybody else until
// its heartbeat timer fires, at the earliest HeartbeatTimeout after it last
// heard from the leader; any election quorum shares a voter with the quorum
// that confirmed s. So no other node can become leader (let alone Ready and
// active) before s + HeartbeatTimeout. The machine fences (releases the
// VIPs) when s + Lease passes without a newer confirmation; releasing is a
// few netlink calls (under a millisecond each). With the defaults, Lease =
// LeaderLeaseTimeout = 500ms and HeartbeatTimeout = ElectionTimeout = 1s,
// the VIPs are gone at s + 500ms + (timer latency + release), leaving about
// 500ms of margin before the earliest possible new leader. Config.Lease must
// therefore stay well below the cluster's HeartbeatTimeout.
//
// The verifier records the start of every successful check itself as soon
// as it returns, and the machine reads the newest one before it fences or
// claims: a machine held up by a slow callback or a stalled CPU decides with
// the newest confirmation, not with the older results queued for it (it
// used to fence on those and re-activate at once). s above is still the
// start of a call that succeeded, so the argument is unchanged. Several
// checks in flight would not confirm sooner: raft counts every pending
// check with the same heartbeat and replication replies, so a later check
// never completes before an earlier one.
//
// Liveness: every check is a Raft heartbeat round over TCP, and a lost
// segment waits for the retransmission timeout, by Linux's default at least
// 200ms, longer than a short lease (the lab's 100ms). With 10% loss on the
// cluster link the lab's active fenced and re-activated about once a second
// (make chaos, issue 8: 24 activations in TestChaosLoss's 15s of loss). The
// Raft connections therefore use a minimum RTO of a fifth of the lease
// (cluster.RTOMinFor; on kernels before 6.15, rto_min on the route to the
// cluster network: deploy/OPERATIONS.md); with it the same test activates
// once.
//
// Raft's own lease check steps the leader down when no quorum was in contact
// for LeaderLeaseTimeout; contact is counted from when each follower's
// reply arrived, which is later than s, so raft's step-down comes at about
// the same time or a little after the fence. The machine reacts to
// whichever comes first. A planned leadership transfer skips the vote
// refusal above, so Handover releases the VIPs before it asks Raft to
// transfer.
//
// One caveat: raft's VerifyLeader counts a successful AppendEntries that
// was already in flight when it was called, so the follower may have heard
// from the leader up to one network delay before s (the confirmer counts
// only heartbeats it sent after s). The margin HeartbeatTimeout - Lease
// (500ms with the defaults) covers that delay, the timer latency, the
// release and clock-rate differences between the nodes.
//
// Measured (go test -v -run TestPartitionedLeaderNeverOverlaps
// ./failover/, in-memory Raft transport, defaults, real VIPs in network
// namespaces, 4 cuts): the cut leader released its VIPs 472-498ms after the
// cut, raft's step-down event came at 493-508ms (the fence was first in 3
// of 4 cuts, a tie in the other), and the next gateway claimed the VIPs
// 1.4-2.6s after the cut. Releasing 2 VIPs takes about 0.2ms, 16 VIPs 1ms
// (BenchmarkRelease in failover/vip).
//
// The machine also claims only with a fresh confirmation (younger than half
// a lease), so a leader that was cut off while OnActivate ran never claims.
//
// # The published lease
//
// A frozen process (SIGSTOP, a stalled CPU) cannot fence itself: its VIPs
// stay in the kernel and its data plane resumes sending before the loop
// runs. So the machine publishes its lease (Callbacks.OnLease: s + Lease on
// every newer confirmation, the zero time when it ends) for watchers
// outside the loop: the daemon's send gates drop packets past the deadline
// and the supervisor removes the VIPs. A renewal published after the
// previous deadline passed is a lapse: the machine then fences as if its
// timer had fired (the watchers did) and claims again only after
// OnActivate and a fresh confirmation.
package role

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// State is the machine's state.
type State int32

// States.
const (
	Standby State = iota
	Activating
	Active
	Fencing
)

func (s State) String() string {
	switch s {
	case Standby:
		return "standby"
	case Activating:
		return "activating"
	case Active:
		return "active"
	case Fencing:
		return "fencing"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Event is a change of this node's leadership, as the cluster reports it.
type Event struct {
	Leader bool
	// Ready: the leader applied every committed entry (Barrier done).
	Ready bool
	Term  uint64
}

// Leadership is the cluster seen from the role machine.
type Leadership interface {
	// Subscribe delivers this node's leadership changes until ctx ends.
	// Events may be dropped; the machine re-reads LeaderReady every
	// CheckInterval. Called once, by Run.
	Subscribe(ctx context.Context) <-chan Event
	// LeaderReady reports whether this node is leader now and Ready, and
	// the current term.
	LeaderReady() (ready bool, term uint64)
	// VerifyQuorum returns nil once a quorum has confirmed this node's
	// leadership after the call began, an error when this node is not (or
	// stops being) the leader, and ctx's error when ctx ends first.
	VerifyQuorum(ctx context.Context) error
	// StepDown hands leadership to another gateway; an error when none can
	// take it.
	StepDown() error
}

// VIPs claims and releases this node's virtual IPs (failover/vip.Manager).
type VIPs interface {
	// Claim adds the VIPs and announces them.
	Claim(ctx context.Context) error
	// Release removes the VIPs; idempotent; it must be fast.
	Release(ctx context.Context) error
}

// Callbacks are the daemon's hooks. Nil hooks are skipped.
type Callbacks struct {
	// OnActivate prepares the takeover (installs SAs, ...) before the VIPs
	// are claimed. Its context ends when leadership is lost.
	OnActivate func(ctx context.Context) error
	// OnActive runs once the VIPs are claimed and announced.
	OnActive func()
	// OnStandby runs after the VIPs are released, once per OnActivate.
	// In a planned handover with OnHandover set it runs after the
	// leadership transfer.
	OnStandby func()
	// OnHandover, if set, runs in a planned handover (Handover) after the
	// lease ended (OnLease with the zero time) and the VIPs were released,
	// and before leadership is transferred: it must stop everything this
	// node sends as the active (IKE, ESP) at once, with work that does not
	// grow with the number of SAs. OnStandby, with the slow part of
	// stepping down (removing every pair from the data plane), then runs
	// after the transfer, so that it does not lie between the release and
	// the target's claim (see Handover). Without OnHandover, OnStandby
	// runs before the transfer. It runs only when OnStandby is owed.
	OnHandover func()
	// OnFence, if set, runs instead of OnStandby when the active fences
	// itself (its lease ended, no change of leader seen). It returns
	// whether it kept the takeover's state (the data plane's pairs, the
	// IKE engine) for a re-activation in the same term; a quorum that
	// confirms this leader again in the same term proves that no other
	// node led meanwhile, so nobody else used those pairs. When it kept
	// them the machine still owes OnStandby: it calls it when it stands
	// down. When it did not (false), OnFence did what OnStandby does.
	OnFence func() (kept bool)
	// OnLease reports the lease this node holds while not standby: the
	// start of the newest successful quorum check plus Lease, each time a
	// newer check succeeds, and the zero time when the lease ends (fence,
	// stand-down). Past the deadline this node must not act as the active
	// (the daemon's send gates and the supervisor's fence). It is called
	// from the quorum checker's goroutine as soon as a check returns (a
	// loop held up by a slow callback still renews), and from the
	// machine's goroutine; never concurrently. It must not block.
	OnLease func(deadline time.Time)
}

// Config configures a Machine.
type Config struct {
	// Witness nodes never activate.
	Witness bool
	// Lease: without a quorum confirmation for this long the active node
	// fences itself. Use the cluster's LeaderLeaseTimeout (default 500ms);
	// it must be well below its HeartbeatTimeout.
	Lease time.Duration
	// CheckInterval separates quorum checks and leadership polls (default
	// Lease/10).
	CheckInterval time.Duration
	// RetryBackoff is the first wait before activating again after a failed
	// activation while still leader in the same term (default 1s; doubles
	// up to 30s, reset by a success).
	RetryBackoff time.Duration
	// HandoverHold is how long the machine stays standby after Handover
	// while it is still leader in the same term (default 3s).
	HandoverHold time.Duration
	// ReleaseTimeout bounds a release (default 5s).
	ReleaseTimeout time.Duration
	Log            *slog.Logger
}

// Errors.
var (
	// ErrNotRunning: Handover was called while Run is not running.
	ErrNotRunning = errors.New("role: machine not running")
	// ErrConfig: a bad Config.
	ErrConfig = errors.New("role: bad config")
	// ErrVIPsLeft: Run ended but the VIPs could not be released.
	ErrVIPsLeft = errors.New("role: stopped, but the VIPs could not be released (see the log); run the cleanup")
)

// Machine is the role machine. Create it with New and drive it with Run.
type Machine struct {
	cfg  Config
	lead Leadership
	vips VIPs
	cb   Callbacks
	log  *slog.Logger

	state    atomic.Int32
	running  atomic.Bool
	handover chan chan error

	// loop-owned
	gen             uint64
	lastConfirmed   time.Time
	verifyCancel    context.CancelFunc
	verifyRes       chan verifyResult
	actCancel       context.CancelFunc
	actDone         chan actResult
	activated       bool      // OnActivate of this generation succeeded
	needStandby     bool      // OnActivate was called and OnStandby not yet
	vipsDirty       bool      // VIPs may be held (claimed, or a release failed)
	releaseFailures int       // consecutive failed releases
	holdUntil       time.Time // no activation before this, in term holdTerm
	holdTerm        uint64
	backoff         time.Duration
	fence           *time.Timer
	term            uint64
	wg              sync.WaitGroup

	// newest is the start of the newest successful quorum check, written
	// by the verifier as soon as the check returns: a loop held up (a slow
	// callback, a stalled CPU) still fences on the newest confirmation,
	// not on those queued in verifyRes.
	newest struct {
		sync.Mutex
		gen   uint64
		start time.Time
		// The lease given to OnLease (see renew): cur is the loop's
		// generation, end the deadline published (zero: none), floor
		// the end of the last lease (only checks started after it
		// publish again), lapsed that a renewal came after the
		// published deadline had passed.
		cur    uint64
		end    time.Time
		floor  time.Time
		lapsed bool
	}
}

type verifyResult struct {
	gen   uint64
	start time.Time
	err   error
}

type actResult struct {
	gen uint64
	err error
}

// New checks cfg and returns a machine in standby.
func New(cfg Config, lead Leadership, vips VIPs, cb Callbacks) (*Machine, error) {
	if lead == nil || vips == nil {
		return nil, fmt.Errorf("%w: leadership source and VIP manager are required", ErrConfig)
	}
	if cfg.Lease == 0 {
		cfg.Lease = 500 * time.Millisecond
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = cfg.Lease / 10
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = time.Second
	}
	if cfg.HandoverHold == 0 {
		cfg.HandoverHold = 3 * time.Second
	}
	if cfg.ReleaseTimeout == 0 {
		cfg.ReleaseTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Lease < 0 || cfg.CheckInterval <= 0 || cfg.CheckInterval >= cfg.Lease || cfg.RetryBackoff < 0 || cfg.HandoverHold < 0 || cfg.ReleaseTimeout < 0 {
		return nil, fmt.Errorf("%w: lease %v, check interval %v: want 0 < check interval < lease, and no negative durations", ErrConfig, cfg.Lease, cfg.CheckInterval)
	}
	return &Machine{
		cfg:       cfg,
		lead:      lead,
		vips:      vips,
		cb:        cb,
		log:       cfg.Log,
		handover:  make(chan chan error),
		verifyRes: make(chan verifyResult, 4),
		actDone:   make(chan actResult, 1),
		backoff:   cfg.RetryBackoff,
		// A previous run may have left the VIPs: release before anything.
		vipsDirty: true,
	}, nil
}

// State is the current state.
func (m *Machine) State() State { return State(m.state.Load()) }

// Handover gives up the active role for a planned failover: it ends the
// lease and releases the VIPs, calls OnHandover (or, without it,
// OnStandby), then asks the cluster to hand leadership to another gateway,
// then calls OnStandby (when OnHandover was called), and stays standby for
// HandoverHold. It returns StepDown's error.
//
// Everything between the release and StepDown is in the outage of a
// planned failover: the target can be elected only once StepDown asked
// for it, and the VIPs are nobody's meanwhile. OnStandby's flush of the
// data plane grows with the pairs (at 1,000 tunnels in the lab 34-42 ms of
// a 47-62 ms gap between the release and the target's claim); OnHandover
// stops the sends in constant time instead, and the flush follows the
// transfer.
func (m *Machine) Handover(ctx context.Context) error {
	if !m.running.Load() {
		return ErrNotRunning
	}
	reply := make(chan error, 1)
	select {
	case m.handover <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run drives the machine until ctx ends; then it releases the VIPs (if it
// held them), calls OnStandby as needed, and returns: nil, or ErrVIPsLeft
// when the last release failed (run failover.Cleanup). Call it once.
func (m *Machine) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("role: Run called twice")
	}
	defer m.running.Store(false)
	events := m.lead.Subscribe(ctx)
	poll := time.NewTicker(m.cfg.CheckInterval)
	defer poll.Stop()
	m.fence = time.NewTimer(time.Hour)
	m.fence.Stop()
	defer m.fence.Stop()
	if m.cfg.Witness {
		m.log.Info("role: witness: never active")
	}
	m.tryActivate(ctx, "start")
	for {
		select {
		case <-ctx.Done():
			m.standDown("shutting down")
			m.wg.Wait()
			if m.vipsDirty {
				return ErrVIPsLeft
			}
			return nil
		case ev := <-events:
			m.onEvent(ctx, ev)
		case <-poll.C:
			m.onPoll(ctx)
		case r := <-m.verifyRes:
			m.onVerify(ctx, r)
		case r := <-m.actDone:
			m.onActivated(ctx, r)
		case <-m.fence.C:
			m.onFenceTimer()
		case reply := <-m.handover:
			// The lease ends (the send gates close) and the VIPs go
			// first, then OnHandover (or OnStandby) stops IKE and the
			// data plane's sends (so the old active sends nothing more,
			// with sequence numbers below the target's), then leadership
			// moves, then OnStandby flushes what OnHandover left.
			deferred := m.leave("handover", m.cb.OnHandover != nil)
			if deferred {
				m.timed("OnHandover", m.cb.OnHandover)
			}
			m.hold(m.cfg.HandoverHold)
			err := m.lead.StepDown()
			if err != nil {
				m.log.Warn("role: handover: leadership transfer failed", "err", err)
			}
			if deferred {
				m.callStandby()
			}
			reply <- err
		}
	}
}

func (m *Machine) setState(s State, reason string) {
	old := State(m.state.Swap(int32(s)))
	if old != s {
		m.log.Info("role: state", "from", old.String(), "to", s.String(), "reason", reason, "term", m.term)
	}
}

func (m *Machine) onEvent(ctx context.Context, ev Event) {
	switch {
	case !ev.Leader:
		m.standDown("leadership lost")
	case m.State() != Standby && ev.Term != m.term:
		// Another term without a loss in between (events dropped).
		m.standDown("new term")
	}
	if ev.Leader && ev.Ready {
		m.tryActivate(ctx, "leader ready")
	}
}

func (m *Machine) onPoll(ctx context.Context) {
	leader, term := m.lead.LeaderReady()
	st := m.State()
	switch {
	case st != Standby && (!leader || term != m.term):
		m.standDown("not leader in this term (poll)")
	case leader && st == Standby:
		m.tryActivate(ctx, "leader ready (poll)")
	case st == Standby && m.vipsDirty:
		m.release("retry release")
	}
}

// tryActivate starts an activation when the node may be active.
func (m *Machine) tryActivate(ctx context.Context, reason string) {
	if m.cfg.Witness || m.State() != Standby || ctx.Err() != nil {
		return
	}
	leader, term := m.lead.LeaderReady()
	if !leader || (term == m.holdTerm && time.Now().Before(m.holdUntil)) {
		return
	}
	m.term = term
	if m.vipsDirty && !m.release("before activation") {
		return
	}
	m.setState(Activating, reason)
	m.gen++
	m.lastConfirmed = time.Time{}
	m.endLease(m.gen)
	m.startVerifier(ctx)
	m.startActivation(ctx)
}

func (m *Machine) startVerifier(ctx context.Context) {
	vctx, cancel := context.WithCancel(ctx)
	m.verifyCancel = cancel
	gen := m.gen
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.CheckInterval)
		defer t.Stop()
		for {
			start := time.Now()
			err := m.lead.VerifyQuorum(vctx)
			if vctx.Err() != nil {
				return
			}
			r := verifyResult{gen: gen, start: start, err: err}
			if err != nil {
				select {
				case m.verifyRes <- r:
				case <-vctx.Done():
				}
				return
			}
			// Published before the loop can claim with it.
			m.renew(gen, start)
			m.noteConfirmed(gen, start)
			select {
			case m.verifyRes <- r:
			default:
				// The loop is behind: it reads this one from newest.
			}
			select {
			case <-t.C:
			case <-vctx.Done():
				return
			}
		}
	}()
}

func (m *Machine) startActivation(ctx context.Context) {
	m.activated = false
	m.needStandby = true
	actx, cancel := context.WithCancel(ctx)
	m.actCancel = cancel
	gen := m.gen
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		var err error
		if m.cb.OnActivate != nil {
			err = m.cb.OnActivate(actx)
		}
		m.actDone <- actResult{gen: gen, err: err}
	}()
}

func (m *Machine) onActivated(ctx context.Context, r actResult) {
	m.actCancel()
	m.actCancel = nil
	if r.gen != m.gen || m.State() != Activating {
		return
	}
	if r.err != nil {
		m.failActivation(fmt.Errorf("takeover callback: %w", r.err))
		return
	}
	m.activated = true
	m.maybeClaim(ctx)
}

func (m *Machine) onVerify(ctx context.Context, r verifyResult) {
	if r.gen != m.gen || m.State() == Standby {
		return
	}
	if r.err != nil {
		m.standDown("quorum check: " + r.err.Error())
		return
	}
	if r.start.After(m.lastConfirmed) {
		m.lastConfirmed = r.start
	}
	m.refreshConfirmed()
	if m.takeLapsed() && m.State() == Active {
		m.fenceNow("the lease lapsed before a newer quorum check was taken in (a frozen or starved process); VIPs released")
	}
	m.fence.Reset(time.Until(m.lastConfirmed.Add(m.cfg.Lease)))
	switch m.State() {
	case Activating:
		m.maybeClaim(ctx)
	case Fencing:
		if leader, term := m.lead.LeaderReady(); leader && term == m.term {
			m.setState(Activating, "quorum confirmed again")
			m.startActivation(ctx)
		}
	}
}

// maybeClaim claims the VIPs once OnActivate succeeded and a quorum
// confirmed leadership within half a lease.
func (m *Machine) maybeClaim(ctx context.Context) {
	m.refreshConfirmed()
	if !m.activated || m.lastConfirmed.IsZero() || time.Since(m.lastConfirmed) >= m.cfg.Lease/2 {
		return
	}
	if !m.leaseFresh() {
		// The confirmation predates a fence and its lease was never
		// published: the watchers would not fence this claim. Wait for
		// the next check.
		return
	}
	// A lapse before this claim changes nothing: the VIPs were not held.
	m.takeLapsed()
	m.vipsDirty = true
	if err := m.vips.Claim(ctx); err != nil {
		m.failActivation(fmt.Errorf("claim VIPs: %w", err))
		return
	}
	m.backoff = m.cfg.RetryBackoff
	if m.cb.OnActive != nil {
		m.timed("OnActive", m.cb.OnActive)
	}
	m.setState(Active, "takeover done")
}

func (m *Machine) onFenceTimer() {
	if m.State() != Active {
		return
	}
	m.refreshConfirmed()
	if m.takeLapsed() {
		m.fenceNow("the lease lapsed before a newer quorum check was taken in (a frozen or starved process); VIPs released")
		return
	}
	since := time.Since(m.lastConfirmed)
	if since < m.cfg.Lease {
		m.fence.Reset(m.cfg.Lease - since)
		return
	}
	m.fenceNow(fmt.Sprintf("no quorum confirmation for %v (lease %v); VIPs released", since.Round(time.Millisecond), m.cfg.Lease))
}

// fenceNow releases the VIPs of an active node whose lease ended and moves
// to fencing; a later quorum check activates it again (OnActivate, then a
// claim with a fresh confirmation).
func (m *Machine) fenceNow(reason string) {
	m.release("fencing")
	m.endLease(m.gen)
	if m.cb.OnFence != nil && m.needStandby {
		var kept bool
		m.timed("OnFence", func() { kept = m.cb.OnFence() })
		if !kept {
			m.needStandby = false
		}
	} else {
		m.callStandby()
	}
	m.setState(Fencing, reason)
}

// renew publishes the lease of a successful quorum check of generation gen
// that started at start (verifier goroutine). A renewal published after
// the previous deadline passed marks the lease lapsed: whoever watched the
// deadline (the supervisor, the send gates) treated the node as fenced
// meanwhile, so the machine fences too (takeLapsed) and claims again only
// with a fresh confirmation. OnLease runs before the check, so a renewal
// published in time is seen by a watcher that reads every renewal written
// before it decides.
func (m *Machine) renew(gen uint64, start time.Time) {
	m.newest.Lock()
	defer m.newest.Unlock()
	end := start.Add(m.cfg.Lease)
	if gen != m.newest.cur || !start.After(m.newest.floor) || !end.After(m.newest.end) {
		return
	}
	prev := m.newest.end
	m.newest.end = end
	if m.cb.OnLease != nil {
		m.cb.OnLease(end)
	}
	if !prev.IsZero() && !time.Now().Before(prev) {
		m.newest.lapsed = true
	}
}

// endLease ends the published lease and makes gen the generation whose
// checks may publish again, from checks started after now (loop
// goroutine).
func (m *Machine) endLease(gen uint64) {
	m.newest.Lock()
	defer m.newest.Unlock()
	m.newest.cur = gen
	m.newest.floor = time.Now()
	m.newest.lapsed = false
	if m.newest.end.IsZero() {
		return
	}
	m.newest.end = time.Time{}
	if m.cb.OnLease != nil {
		m.cb.OnLease(time.Time{})
	}
}

// leaseFresh reports whether the published lease is younger than half a
// lease, as a claim requires of its confirmation (loop goroutine).
func (m *Machine) leaseFresh() bool {
	m.newest.Lock()
	end := m.newest.end
	m.newest.Unlock()
	return !end.IsZero() && time.Until(end) > m.cfg.Lease/2
}

// takeLapsed reports (and clears) a lapsed lease (loop goroutine).
func (m *Machine) takeLapsed() bool {
	m.newest.Lock()
	defer m.newest.Unlock()
	l := m.newest.lapsed
	m.newest.lapsed = false
	return l
}

// noteConfirmed records a successful quorum check of generation gen that
// started at start (verifier goroutine).
func (m *Machine) noteConfirmed(gen uint64, start time.Time) {
	m.newest.Lock()
	defer m.newest.Unlock()
	if gen > m.newest.gen || gen == m.newest.gen && start.After(m.newest.start) {
		m.newest.gen, m.newest.start = gen, start
	}
}

// refreshConfirmed takes the newest successful quorum check of the current
// generation into lastConfirmed (loop goroutine).
func (m *Machine) refreshConfirmed() {
	m.newest.Lock()
	gen, start := m.newest.gen, m.newest.start
	m.newest.Unlock()
	if gen == m.gen && start.After(m.lastConfirmed) {
		m.lastConfirmed = start
	}
}

// failActivation undoes a failed activation and hands leadership on.
func (m *Machine) failActivation(err error) {
	m.log.Error("role: activation failed; stepping down", "err", err, "retry_in", m.backoff)
	m.standDown("activation failed")
	m.hold(m.backoff)
	m.backoff = min(2*m.backoff, 30*time.Second)
	if err := m.lead.StepDown(); err != nil {
		m.log.Warn("role: cannot hand leadership to another gateway", "err", err)
	}
}

// hold keeps the machine from activating again for d while leadership
// stays in the current term (a transfer in flight, a backoff); leadership
// won again in a later term is a fresh start.
func (m *Machine) hold(d time.Duration) {
	_, term := m.lead.LeaderReady()
	m.holdUntil, m.holdTerm = time.Now().Add(d), term
}

// standDown returns to standby: stop the quorum checks, cancel and wait for
// an activation in progress, release the VIPs first, then OnStandby.
func (m *Machine) standDown(reason string) { m.leave(reason, false) }

// leave is standDown; with deferStandby it leaves OnStandby to the caller
// and reports whether it is owed (m.needStandby stays set until the
// caller's callStandby).
func (m *Machine) leave(reason string, deferStandby bool) (owed bool) {
	if m.State() == Standby {
		if m.vipsDirty {
			m.release(reason)
		}
		return false
	}
	m.gen++
	if m.verifyCancel != nil {
		m.verifyCancel()
		m.verifyCancel = nil
	}
	m.fence.Stop()
	m.lastConfirmed = time.Time{}
	m.endLease(m.gen)
	if m.actCancel != nil {
		// Activation in progress (the VIPs are not claimed before it
		// ends): wait for the callback to return.
		m.actCancel()
		<-m.actDone
		m.actCancel = nil
	}
	m.release(reason)
	if deferStandby && m.needStandby {
		owed = true
	} else {
		m.callStandby()
	}
	m.activated = false
	m.setState(Standby, reason)
	return owed
}

// release removes the VIPs; it reports success. A failure leaves vipsDirty
// set so that the next poll tries again.
func (m *Machine) release(reason string) bool {
	if !m.vipsDirty && m.State() != Active && m.State() != Activating {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ReleaseTimeout)
	defer cancel()
	if err := m.vips.Release(ctx); err != nil {
		m.releaseFailures++
		lvl := slog.LevelDebug
		if m.releaseFailures == 1 || m.releaseFailures%100 == 0 {
			lvl = slog.LevelError
		}
		m.vipsDirty = true
		m.log.Log(ctx, lvl, "role: cannot release VIPs; retrying", "reason", reason, "failures", m.releaseFailures, "err", err)
		return false
	}
	if m.releaseFailures > 0 {
		m.log.Info("role: VIPs released after failures", "failures", m.releaseFailures)
		m.releaseFailures = 0
	}
	m.vipsDirty = false
	return true
}

func (m *Machine) callStandby() {
	if !m.needStandby {
		return
	}
	m.needStandby = false
	if m.cb.OnStandby != nil {
		m.timed("OnStandby", m.cb.OnStandby)
	}
}

// timed runs a callback and logs it when it held the machine up.
func (m *Machine) timed(name string, f func()) {
	t0 := time.Now()
	f()
	if d := time.Since(t0); d > m.cfg.Lease/10 {
		m.log.Warn("role: slow callback holds up the role machine (and the fence)", "callback", name, "took", d.Round(time.Millisecond), "lease", m.cfg.Lease)
	}
}
