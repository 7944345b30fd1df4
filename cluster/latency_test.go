package cluster

import (
	"testing"
	"time"
)

func TestLatencyBuckets(t *testing.T) {
	var l Latency
	for _, d := range []time.Duration{-time.Second, 0, 500 * time.Microsecond, 700 * time.Microsecond, 3 * time.Millisecond, time.Minute} {
		l.Observe(d)
	}
	s := l.Snapshot()
	if s.Count != 6 {
		t.Fatalf("count %d, want 6", s.Count)
	}
	if want := 700*time.Microsecond + 500*time.Microsecond + 3*time.Millisecond + time.Minute; s.Sum != want {
		t.Fatalf("sum %v, want %v", s.Sum, want)
	}
	// <=500µs: -1s (as 0), 0, 500µs; <=1ms: +700µs; <=5ms: +3ms; a minute only in +Inf.
	want := map[time.Duration]uint64{500 * time.Microsecond: 3, time.Millisecond: 4, 2 * time.Millisecond: 4, 5 * time.Millisecond: 5, 10 * time.Second: 5}
	for i, b := range LatencyBounds {
		if w, ok := want[b]; ok && s.Cumulative[i] != w {
			t.Errorf("bucket <= %v: %d, want %d", b, s.Cumulative[i], w)
		}
		if i > 0 && s.Cumulative[i] < s.Cumulative[i-1] {
			t.Errorf("bucket <= %v not cumulative", b)
		}
	}
}

func TestCommitLatencyCounted(t *testing.T) {
	c := newCluster(t, three, false, nil)
	l := c.leader()
	before := l.n.CommitLatency().Count
	c.commit(UpsertIKE(testIKE(1)))
	c.commit(UpsertIKE(testIKE(2)))
	s := l.n.CommitLatency()
	if s.Count != before+2 || s.Sum <= 0 {
		t.Fatalf("commit latency after two commits: %+v (before: %d)", s, before)
	}
	// A refused commit (follower) is not timed.
	for _, tn := range c.nodes {
		if tn != l {
			_ = tn.n.Commit(t.Context(), UpsertIKE(testIKE(3)))
			if got := tn.n.CommitLatency().Count; got != 0 {
				t.Errorf("follower %s timed %d commits", tn.id, got)
			}
		}
	}
}

func BenchmarkLatencyObserve(b *testing.B) {
	var l Latency
	for i := 0; b.Loop(); i++ {
		l.Observe(time.Duration(i) * time.Microsecond)
	}
}
