package role

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// stallLead is a fakeLead whose LeaderReady (called on the machine's
// goroutine by every poll) can hold the machine's loop up once, like a
// stalled CPU or a slow callback.
type stallLead struct {
	*fakeLead
	mu      sync.Mutex
	stall   time.Duration
	stalled chan struct{} // closed when the stall ended
	polls   int
}

func (s *stallLead) LeaderReady() (bool, uint64) {
	s.mu.Lock()
	d := s.stall
	s.stall = 0
	s.polls++
	s.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
		close(s.stalled)
	}
	return s.fakeLead.LeaderReady()
}

func (s *stallLead) pollCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls
}

// TestStalledLoopFencesOnNewestConfirmation: the machine's loop is held up
// for longer than the lease while the quorum checks keep succeeding. The
// fence timer and queued results are all due when the loop resumes; the
// machine must decide with the newest successful check (recorded by the
// verifier), not with the old ones queued for the loop, and stay active.
// Before the verifier recorded it, the loop saw at best the results queued
// early in the stall and fenced (flapping under load, issue 8).
func TestStalledLoopFencesOnNewestConfirmation(t *testing.T) {
	const lease = 400 * time.Millisecond
	rec := &recorder{}
	lead := &stallLead{fakeLead: newFakeLead(rec), stalled: make(chan struct{})}
	vips := &fakeVIPs{rec: rec}
	m, err := New(Config{Lease: lease, CheckInterval: 20 * time.Millisecond, Log: quiet()}, lead, vips, Callbacks{
		OnActivate: func(context.Context) error { rec.add("activate"); return nil },
		OnActive:   func() { rec.add("active") },
		OnStandby:  func() { rec.add("standby") },
	})
	if err != nil {
		t.Fatal(err)
	}
	runMachine(t, m)
	lead.elect(1, true)
	waitFor(t, "active", func() bool { return m.State() == Active })
	n := len(rec.all())
	lead.mu.Lock()
	lead.stall = 3 * lease / 2
	lead.mu.Unlock()
	select {
	case <-lead.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop never polled")
	}
	// Let the loop handle everything that fell due, and a few polls more.
	p := lead.pollCount()
	waitFor(t, "polls after the stall", func() bool { return lead.pollCount() >= p+5 })
	if got := rec.since(n); slices.Contains(got, "release") || m.State() != Active {
		t.Fatalf("after a %v stall with quorum checks succeeding: state %v, calls %v; want still active, no release", 3*lease/2, m.State(), got)
	}
	// A real loss of quorum still fences.
	lead.setVerify(verifyBlock)
	waitFor(t, "fencing", func() bool { return m.State() == Fencing })
	if vips.isHeld() {
		t.Fatal("fenced node holds VIPs")
	}
}
