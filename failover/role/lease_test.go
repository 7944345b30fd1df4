package role

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// leases records OnLease calls.
type leases struct {
	mu  sync.Mutex
	got []time.Time
}

func (l *leases) add(t time.Time) {
	l.mu.Lock()
	l.got = append(l.got, t)
	l.mu.Unlock()
}

func (l *leases) all() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func (l *leases) last() time.Time {
	a := l.all()
	if len(a) == 0 {
		return time.Time{}
	}
	return a[len(a)-1]
}

// holdLead is a fakeLead whose LeaderReady (called on the machine's
// goroutine by every poll) holds the loop up until release is closed, once
// armed: a process whose role loop is starved or frozen.
type holdLead struct {
	*fakeLead
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed when the loop is held
	release chan struct{}
}

func (h *holdLead) LeaderReady() (bool, uint64) {
	h.mu.Lock()
	armed := h.armed
	h.armed = false
	h.mu.Unlock()
	if armed {
		close(h.held)
		<-h.release
	}
	return h.fakeLead.LeaderReady()
}

func startLease(t *testing.T, lead Leadership, rec *recorder, vips *fakeVIPs, ls *leases, lease time.Duration) *Machine {
	t.Helper()
	m, err := New(Config{Lease: lease, CheckInterval: lease / 10, Log: quiet()}, lead, vips, Callbacks{
		OnActivate: func(context.Context) error { rec.add("activate"); return nil },
		OnActive:   func() { rec.add("active") },
		OnStandby:  func() { rec.add("standby") },
		OnLease: func(d time.Time) {
			if d.IsZero() {
				rec.add("lease-end")
			}
			ls.add(d)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runMachine(t, m)
	return m
}

// TestOnLeaseRenewsAndEnds: while active the machine publishes a deadline
// no further than one lease ahead that moves forward with the quorum
// checks; a fence publishes the zero time.
func TestOnLeaseRenewsAndEnds(t *testing.T) {
	const lease = 200 * time.Millisecond
	rec, ls := &recorder{}, &leases{}
	lead := newFakeLead(rec)
	m := startLease(t, lead, rec, &fakeVIPs{rec: rec}, ls, lease)
	lead.elect(1, true)
	waitFor(t, "active", func() bool { return m.State() == Active })
	first := ls.last()
	waitFor(t, "a renewal", func() bool { return ls.last().After(first) })
	for i, d := range ls.all() {
		if d.IsZero() {
			t.Fatalf("lease %d is the zero time while active: %v", i, ls.all())
		}
		if ahead := time.Until(d); ahead > lease {
			t.Fatalf("lease %d ends %v ahead, more than the lease %v", i, ahead, lease)
		}
		if i > 0 && !d.After(ls.all()[i-1]) {
			t.Fatalf("lease %d does not move forward: %v", i, ls.all())
		}
	}
	lead.setVerify(verifyBlock)
	waitFor(t, "fencing", func() bool { return m.State() == Fencing })
	waitFor(t, "the lease's end", func() bool { return ls.last().IsZero() })
	calls := rec.all()
	if i, j := slices.Index(calls, "release"), slices.Index(calls, "lease-end"); i < 0 || j < 0 {
		t.Fatalf("calls %v: want a release and a lease end", calls)
	}
	// A quorum again: a new lease, and the VIPs claimed once more.
	n := len(rec.all())
	lead.setVerify(verifyOK)
	waitFor(t, "active again", func() bool { return m.State() == Active })
	if d := ls.last(); d.IsZero() || time.Until(d) > lease {
		t.Fatalf("lease after re-activation %v (now %v)", d, time.Now())
	}
	if got := rec.since(n); !slices.Contains(got, "claim") {
		t.Fatalf("calls after the quorum came back %v: want a claim", got)
	}
}

// TestLapsedLeaseFences: the role loop is held up (a frozen process:
// SIGSTOP, a VM pause of the daemon alone) while the quorum checks stop
// succeeding for longer than the lease, then succeed again before the loop
// runs. The lease published to the supervisor and the send gates lapsed
// meanwhile (the supervisor may have removed the VIPs), so the machine
// must fence and claim again with a fresh confirmation, even though its
// newest confirmation is fresh when the loop resumes. Without the lapse it
// stays active (TestStalledLoopFencesOnNewestConfirmation).
func TestLapsedLeaseFences(t *testing.T) {
	const lease = 150 * time.Millisecond
	rec, ls := &recorder{}, &leases{}
	lead := &holdLead{fakeLead: newFakeLead(rec), held: make(chan struct{}), release: make(chan struct{})}
	vips := &fakeVIPs{rec: rec}
	m := startLease(t, lead, rec, vips, ls, lease)
	lead.elect(1, true)
	waitFor(t, "active", func() bool { return m.State() == Active })
	lead.setVerify(verifyBlock)
	lead.mu.Lock()
	lead.armed = true
	lead.mu.Unlock()
	<-lead.held
	n := len(rec.all())
	old := ls.last()
	waitFor(t, "the published lease to pass", func() bool { return time.Now().After(old.Add(10 * time.Millisecond)) })
	lead.setVerify(verifyOK)
	waitFor(t, "a renewal after the lapse", func() bool { return ls.last().After(old) })
	close(lead.release)
	waitFor(t, "a new claim", func() bool { return slices.Contains(rec.since(n), "claim") })
	got := rec.since(n)
	want := []string{"release", "lease-end", "standby", "activate", "claim", "active"}
	pos := 0
	for _, c := range got {
		if pos < len(want) && c == want[pos] {
			pos++
		}
	}
	if pos < len(want) {
		t.Fatalf("calls after the lapse %v: want %v in that order", got, want)
	}
	waitFor(t, "active again", func() bool { return m.State() == Active })
	if !vips.isHeld() {
		t.Fatal("active again without the VIPs")
	}
}

// runMachine runs m until the test ends, then checks that Run returns.
func runMachine(t *testing.T, m *Machine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}
