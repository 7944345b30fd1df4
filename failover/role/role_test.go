package role

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder keeps the order of every call the machine makes.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) count(s string) int {
	n := 0
	for _, c := range r.all() {
		if c == s {
			n++
		}
	}
	return n
}

// since returns the calls after the first n.
func (r *recorder) since(n int) []string { return r.all()[n:] }

type verifyMode int

const (
	verifyOK verifyMode = iota
	verifyBlock
	verifyNotLeader
)

type fakeLead struct {
	rec     *recorder
	events  chan Event
	mu      sync.Mutex
	ready   bool
	term    uint64
	mode    verifyMode
	unblock chan struct{}
	stepErr error
}

func newFakeLead(rec *recorder) *fakeLead {
	return &fakeLead{rec: rec, events: make(chan Event, 16), unblock: make(chan struct{})}
}

func (f *fakeLead) Subscribe(ctx context.Context) <-chan Event { return f.events }

func (f *fakeLead) LeaderReady() (bool, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.term
}

func (f *fakeLead) VerifyQuorum(ctx context.Context) error {
	f.mu.Lock()
	mode, unblock := f.mode, f.unblock
	f.mu.Unlock()
	switch mode {
	case verifyNotLeader:
		return errors.New("not leader")
	case verifyBlock:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-unblock:
			return nil
		}
	}
	return nil
}

func (f *fakeLead) StepDown() error {
	f.rec.add("stepdown")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stepErr
}

// elect makes this node leader and ready in term, with or without telling
// the machine through an event.
func (f *fakeLead) elect(term uint64, event bool) {
	f.mu.Lock()
	f.ready, f.term = true, term
	f.mu.Unlock()
	if event {
		f.events <- Event{Leader: true, Term: term}
		f.events <- Event{Leader: true, Ready: true, Term: term}
	}
}

func (f *fakeLead) lose(event bool) {
	f.mu.Lock()
	f.ready = false
	term := f.term
	f.mu.Unlock()
	if event {
		f.events <- Event{Leader: false, Term: term}
	}
}

func (f *fakeLead) setVerify(m verifyMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode == verifyBlock && m != verifyBlock {
		close(f.unblock)
		f.unblock = make(chan struct{})
	}
	f.mode = m
}

type fakeVIPs struct {
	rec         *recorder
	mu          sync.Mutex
	held        bool
	claimErr    error
	failRelease int // how many releases fail next
}

func (v *fakeVIPs) Claim(ctx context.Context) error {
	v.rec.add("claim")
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.claimErr != nil {
		v.held = true // a partial claim
		return v.claimErr
	}
	v.held = true
	return nil
}

func (v *fakeVIPs) Release(ctx context.Context) error {
	v.rec.add("release")
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.failRelease > 0 {
		v.failRelease--
		return errors.New("netlink: resource busy")
	}
	v.held = false
	return nil
}

func (v *fakeVIPs) isHeld() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.held
}

type harness struct {
	t        *testing.T
	rec      *recorder
	lead     *fakeLead
	vips     *fakeVIPs
	m        *Machine
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const testLease = 100 * time.Millisecond

func start(t *testing.T, cfg Config, onActivate func(ctx context.Context) error, opts ...func(*Callbacks)) *harness {
	t.Helper()
	rec := &recorder{}
	h := &harness{t: t, rec: rec, lead: newFakeLead(rec), vips: &fakeVIPs{rec: rec}, done: make(chan error, 1)}
	if cfg.Lease == 0 {
		cfg.Lease = testLease
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = 50 * time.Millisecond
	}
	cfg.Log = quiet()
	cb := Callbacks{
		OnActivate: func(ctx context.Context) error {
			rec.add("activate")
			if onActivate != nil {
				return onActivate(ctx)
			}
			return nil
		},
		OnActive:  func() { rec.add("active") },
		OnStandby: func() { rec.add("standby") },
	}
	for _, o := range opts {
		o(&cb)
	}
	m, err := New(cfg, h.lead, h.vips, cb)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(h.stop)
	// The leftover release at start.
	h.waitCalls("initial release", func(c []string) bool { return slices.Contains(c, "release") })
	return h
}

func (h *harness) stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			h.t.Error("Run did not return after cancel")
		}
	})
}

func (h *harness) waitState(s State) {
	h.t.Helper()
	waitFor(h.t, "state "+s.String(), func() bool { return h.m.State() == s })
}

func (h *harness) waitCalls(what string, cond func([]string) bool) {
	h.t.Helper()
	waitFor(h.t, what, func() bool { return cond(h.rec.all()) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitSeq waits until exactly len(want) calls followed the first n, then
// checks them.
func (h *harness) waitSeq(n int, want ...string) {
	h.t.Helper()
	h.waitCalls(fmt.Sprintf("calls %v", want), func(c []string) bool { return len(c)-n >= len(want) })
	wantCalls(h.t, h.rec.since(n), want...)
}

func wantCalls(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
}

func TestActivateThenLoseLeadership(t *testing.T) {
	h := start(t, Config{}, nil)
	n := len(h.rec.all())
	h.lead.elect(1, true)
	h.waitState(Active)
	h.waitSeq(n, "activate", "claim", "active")
	if !h.vips.isHeld() {
		t.Fatal("active without VIPs")
	}
	n = len(h.rec.all())
	h.lead.lose(true)
	h.waitState(Standby)
	// VIPs released first, then the standby hook.
	h.waitSeq(n, "release", "standby")
	if h.vips.isHeld() {
		t.Fatal("standby still holds VIPs")
	}
}

func TestLeaderNotReadyStaysStandby(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.events <- Event{Leader: true, Term: 3} // elected, Barrier not done
	// Several poll intervals: nothing may happen.
	time.Sleep(5 * testLease / 10 * 3)
	if h.m.State() != Standby || h.rec.count("activate") != 0 {
		t.Fatalf("activated before Ready: state %v, calls %v", h.m.State(), h.rec.all())
	}
	h.lead.elect(3, true)
	h.waitState(Active)
}

func TestWitnessNeverActivates(t *testing.T) {
	h := start(t, Config{Witness: true}, nil)
	h.lead.elect(1, true)
	time.Sleep(3 * testLease)
	if h.m.State() != Standby || h.rec.count("activate") != 0 || h.rec.count("claim") != 0 || h.vips.isHeld() {
		t.Fatalf("witness acted: state %v, calls %v", h.m.State(), h.rec.all())
	}
}

func TestActivationFailureStepsDownAndRetries(t *testing.T) {
	var mu sync.Mutex
	fail := true
	h := start(t, Config{}, func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return errors.New("install SAs: boom")
		}
		return nil
	})
	n := len(h.rec.all())
	h.lead.elect(1, true)
	h.waitCalls("step down", func(c []string) bool { return slices.Contains(c[n:], "stepdown") })
	got := h.rec.since(n)
	wantCalls(t, got[:4], "activate", "release", "standby", "stepdown")
	if h.vips.isHeld() {
		t.Fatal("VIPs held after a failed takeover")
	}
	// Still leader (the transfer did not happen): it retries after the
	// backoff and succeeds.
	mu.Lock()
	fail = false
	mu.Unlock()
	h.waitState(Active)
	if h.rec.count("activate") < 2 {
		t.Fatalf("no retry: %v", h.rec.all())
	}
}

func TestClaimFailureReleasesAndStepsDown(t *testing.T) {
	h := start(t, Config{RetryBackoff: time.Hour}, nil)
	h.vips.mu.Lock()
	h.vips.claimErr = errors.New("netlink: no such device")
	h.vips.mu.Unlock()
	n := len(h.rec.all())
	h.lead.elect(1, true)
	h.waitCalls("step down", func(c []string) bool { return slices.Contains(c[n:], "stepdown") })
	h.waitSeq(n, "activate", "claim", "release", "standby", "stepdown")
	if h.vips.isHeld() || h.m.State() != Standby {
		t.Fatalf("after a failed claim: held %v, state %v", h.vips.isHeld(), h.m.State())
	}
}

// fenceAndRecover cuts the active off from its quorum (Raft still says
// leader): it fences (the VIPs released, then the callback named onFence),
// and when the quorum answers again it is active again.
func (h *harness) fenceAndRecover(onFence string) {
	h.t.Helper()
	n := len(h.rec.all())
	h.lead.setVerify(verifyBlock)
	h.waitState(Fencing)
	h.waitSeq(n, "release", onFence)
	if h.vips.isHeld() {
		h.t.Fatal("fenced node holds VIPs")
	}
	n = len(h.rec.all())
	h.lead.setVerify(verifyOK)
	h.waitState(Active)
	h.waitSeq(n, "activate", "claim", "active")
}

// fenceThenLose cuts the active off from its quorum: it fences (the VIPs
// released, then the callback named onFence); then Raft steps down. It
// returns the calls the loss made.
func (h *harness) fenceThenLose(onFence string) []string {
	h.t.Helper()
	n := len(h.rec.all())
	h.lead.setVerify(verifyBlock)
	h.waitState(Fencing)
	h.waitSeq(n, "release", onFence)
	n += 2
	h.lead.lose(true)
	h.waitState(Standby)
	return h.rec.since(n)
}

func TestFencingWithoutQuorum(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	// Quorum unreachable; Raft has not stepped down (still says leader).
	// Contact comes back while still leader: active again.
	h.fenceAndRecover("standby")
	// Then Raft steps down after all.
	n := len(h.rec.all())
	h.lead.lose(true)
	h.waitState(Standby)
	h.waitSeq(n, "release", "standby")
}

func TestFencedThenLeadershipLost(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	// OnStandby ran at the fence already: not twice.
	after := h.fenceThenLose("standby")
	for _, c := range after {
		if c != "release" {
			t.Fatalf("after fence, loss made calls %v", after)
		}
	}
}

// A fence whose OnFence keeps the state is followed, when the quorum
// confirms the same leader again, by OnActivate without OnStandby; the
// OnStandby owed comes once, when the machine stands down. A fence that
// keeps nothing owes nothing.
func TestFenceKeepsStateForTheSameTerm(t *testing.T) {
	for _, kept := range []bool{true, false} {
		t.Run(fmt.Sprintf("kept=%v", kept), func(t *testing.T) {
			var h *harness
			h = start(t, Config{}, nil, func(cb *Callbacks) {
				cb.OnFence = func() bool { h.rec.add("fence"); return kept }
			})
			h.lead.elect(1, true)
			h.waitState(Active)
			for range 2 {
				h.fenceAndRecover("fence")
			}
			after := h.fenceThenLose("fence")
			var standbys int
			for _, c := range after {
				switch c {
				case "standby":
					standbys++
				case "release":
				default:
					t.Fatalf("after the fence, the loss made calls %v", after)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[kept]; standbys != want {
				t.Fatalf("OnStandby ran %d times after the loss, want %d (calls %v)", standbys, want, after)
			}
		})
	}
}

func TestNoClaimWithoutFreshConfirmation(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.setVerify(verifyBlock)
	h.lead.elect(1, true)
	h.waitCalls("activate", func(c []string) bool { return slices.Contains(c, "activate") })
	time.Sleep(2 * testLease)
	if h.rec.count("claim") != 0 || h.m.State() != Activating {
		t.Fatalf("claimed without quorum confirmation: state %v, calls %v", h.m.State(), h.rec.all())
	}
	h.lead.setVerify(verifyOK)
	h.waitState(Active)
}

func TestQuorumCheckNotLeaderStandsDown(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	n := len(h.rec.all())
	h.lead.mu.Lock()
	h.lead.mode = verifyNotLeader
	h.lead.ready = false // raft agrees, but no event is sent
	h.lead.mu.Unlock()
	h.waitState(Standby)
	h.waitSeq(n, "release", "standby")
}

func TestLeadershipLostDuringActivation(t *testing.T) {
	ctxSeen := make(chan context.Context, 1)
	h := start(t, Config{}, func(ctx context.Context) error {
		ctxSeen <- ctx
		<-ctx.Done()
		return ctx.Err()
	})
	h.lead.elect(1, true)
	actx := <-ctxSeen
	n := len(h.rec.all())
	h.lead.lose(true)
	h.waitState(Standby)
	if actx.Err() == nil {
		t.Fatal("activation context not cancelled on leadership loss")
	}
	h.waitSeq(n, "release", "standby")
	if h.rec.count("claim") != 0 {
		t.Fatalf("claimed: %v", h.rec.all())
	}
}

func TestPollCoversDroppedEvents(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.elect(1, false) // no event at all
	h.waitState(Active)
	// A new term without any event: stand down and take over again.
	n := len(h.rec.all())
	h.lead.elect(2, false)
	h.waitCalls("reactivation", func(c []string) bool { return slices.Contains(c[n:], "active") })
	got := h.rec.since(n)
	wantCalls(t, got[:5], "release", "standby", "activate", "claim", "active")
	n = len(h.rec.all())
	h.lead.lose(false)
	h.waitState(Standby)
	h.waitSeq(n, "release", "standby")
}

func TestHandover(t *testing.T) {
	h := start(t, Config{HandoverHold: time.Hour}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	n := len(h.rec.all())
	if err := h.m.Handover(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitSeq(n, "release", "standby", "stepdown")
	// Still leader (the fake never transfers), but held off.
	time.Sleep(3 * testLease)
	if h.m.State() != Standby || h.vips.isHeld() {
		t.Fatalf("re-activated during the hold: %v", h.rec.all())
	}
	// The transfer error is reported.
	h.lead.mu.Lock()
	h.lead.stepErr = errors.New("no gateway to take over")
	h.lead.mu.Unlock()
	if err := h.m.Handover(context.Background()); err == nil || !strings.Contains(err.Error(), "no gateway") {
		t.Fatalf("handover error %v", err)
	}
}

// TestHandoverFlushesAfterTheTransfer: with OnHandover, a planned
// handover ends the lease (the send gates close), releases the VIPs, stops
// the sends (OnHandover), and only then asks for the transfer; OnStandby,
// the flush whose time grows with the pairs, follows the transfer instead
// of lying between the release and the target's claim.
func TestHandoverFlushesAfterTheTransfer(t *testing.T) {
	var rec atomic.Pointer[recorder] // h.rec, once start made it
	h := start(t, Config{HandoverHold: time.Hour}, nil, func(cb *Callbacks) {
		cb.OnHandover = func() { rec.Load().add("handover") }
		cb.OnLease = func(d time.Time) {
			if d.IsZero() {
				rec.Load().add("lease-end")
			}
		}
	})
	rec.Store(h.rec)
	h.lead.elect(1, true)
	h.waitState(Active)
	n := len(h.rec.all())
	if err := h.m.Handover(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitSeq(n, "lease-end", "release", "handover", "stepdown", "standby")
	// A failed transfer still flushes (OnStandby is owed once).
	h.lead.elect(2, true)
	h.waitState(Active)
	h.lead.mu.Lock()
	h.lead.stepErr = errors.New("no gateway to take over")
	h.lead.mu.Unlock()
	n = len(h.rec.all())
	if err := h.m.Handover(context.Background()); err == nil {
		t.Fatal("handover: want the transfer's error")
	}
	h.waitSeq(n, "lease-end", "release", "handover", "stepdown", "standby")
	if got := h.rec.count("standby"); got != h.rec.count("activate") {
		t.Fatalf("%d OnStandby for %d OnActivate: %v", got, h.rec.count("activate"), h.rec.all())
	}
}

func TestRunReleasesOnExit(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	n := len(h.rec.all())
	h.stop()
	h.waitSeq(n, "release", "standby")
	if h.vips.isHeld() {
		t.Fatal("VIPs held after Run returned")
	}
	if err := h.m.Handover(context.Background()); err != ErrNotRunning {
		t.Fatalf("handover after Run: %v", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	rec := &recorder{}
	lead, vips := newFakeLead(rec), &fakeVIPs{rec: rec}
	for _, c := range []Config{
		{Lease: time.Second, CheckInterval: time.Second},
		{Lease: -time.Second},
		{RetryBackoff: -1},
	} {
		if _, err := New(c, lead, vips, Callbacks{}); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", c, err)
		}
	}
	if _, err := New(Config{}, nil, vips, Callbacks{}); !errors.Is(err, ErrConfig) {
		t.Errorf("nil leadership: %v", err)
	}
}

func TestHoldEndsWithTheTerm(t *testing.T) {
	h := start(t, Config{HandoverHold: time.Hour, RetryBackoff: time.Hour}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	if err := h.m.Handover(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Leadership moved away and came back in a later term: a fresh start,
	// the hold of term 1 does not apply.
	h.lead.lose(true)
	h.lead.elect(2, true)
	h.waitState(Active)
}

func TestFailedReleaseIsRetried(t *testing.T) {
	h := start(t, Config{}, nil)
	h.lead.elect(1, true)
	h.waitState(Active)
	h.vips.mu.Lock()
	h.vips.failRelease = 3
	h.vips.mu.Unlock()
	n := len(h.rec.all())
	h.lead.lose(true)
	h.waitState(Standby)
	// Retried on the polls until it works.
	waitFor(t, "VIPs released", func() bool { return !h.vips.isHeld() })
	got := h.rec.since(n)
	if len(got) < 5 || got[0] != "release" || got[1] != "standby" || got[2] != "release" || got[3] != "release" || got[4] != "release" {
		t.Fatalf("calls %v, want release, standby, then three more releases", got)
	}
	// Leader again with the VIPs cleared: activates normally.
	h.lead.elect(2, true)
	h.waitState(Active)
}
