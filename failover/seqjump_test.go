package failover

import (
	"testing"
	"time"

	"ikegw/ike/sa"
)

func TestSeqBoundJump(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := SeqBound{MaxPPS: 1000, ClockSkew: 250 * time.Millisecond, Min: 10}
	child := func(synced, established time.Time) *sa.ChildSA {
		c := &sa.ChildSA{}
		if !synced.IsZero() {
			c.Counters.SyncedAt = synced.UnixNano()
		}
		if !established.IsZero() {
			c.Established = established.UnixNano()
		}
		return c
	}
	cases := []struct {
		name string
		c    *sa.ChildSA
		want uint64
	}{
		// 1000 pps x (0.2 s since the sync + 0.25 s skew)
		{"synced 200ms ago", child(now.Add(-200*time.Millisecond), now.Add(-time.Hour)), 450},
		// a sync that lagged: its age counts, whatever the interval
		{"synced 3s ago", child(now.Add(-3*time.Second), now.Add(-time.Hour)), 3250},
		// never synced: everything since the pair was established
		{"never synced", child(time.Time{}, now.Add(-2*time.Second)), 2250},
		// a clock ahead of ours: the skew still counts, never below Min
		{"sync in the future", child(now.Add(time.Second), time.Time{}), 10},
		{"just synced", child(now, time.Time{}), 250},
		{"no time at all", child(time.Time{}, time.Time{}), uint64(1000 * (unknownAge + 250*time.Millisecond).Seconds())},
	}
	for _, c := range cases {
		if got := b.Jump(c.c, now); got != c.want {
			t.Errorf("%s: Jump = %d, want %d", c.name, got, c.want)
		}
	}
	// Capped at the 32-bit sequence space.
	fast := SeqBound{MaxPPS: 1 << 40}
	if got := fast.Jump(child(now.Add(-time.Hour), time.Time{}), now); got != 1<<32 {
		t.Errorf("capped jump = %d, want 2^32", got)
	}
	if got := b.HandoverJump(); got != 1000 {
		t.Errorf("HandoverJump = %d, want MaxPPS x HandoverWindow = 1000", got)
	}
}

func TestSeqBoundStagedValid(t *testing.T) {
	b := SeqBound{MaxPPS: 1000, ClockSkew: 250 * time.Millisecond}
	read := time.Unix(1_800_000_000, 0)
	cases := []struct {
		after time.Duration
		want  bool
	}{
		{0, true},
		{HandoverWindow - 250*time.Millisecond, true},
		{HandoverWindow - 249*time.Millisecond, false},
		{5 * time.Second, false},
	}
	for _, c := range cases {
		if got := b.StagedValid(read, read.Add(c.after)); got != c.want {
			t.Errorf("activation %s after the read: StagedValid = %v, want %v", c.after, got, c.want)
		}
	}
	if b.StagedValid(time.Time{}, read) {
		t.Error("an unknown read time is valid")
	}
}

// TestSeqBoundCoversTheOldActive: a simulated old active sends at MaxPPS
// from its last committed sync until it stops, at most at the new active's
// takeover (clocks apart by up to ClockSkew, either way): the jumped start
// is above every sequence number it used.
func TestSeqBoundCoversTheOldActive(t *testing.T) {
	b := SeqBound{MaxPPS: 50_000, ClockSkew: 100 * time.Millisecond}
	base := time.Unix(1_800_000_000, 0)
	for _, skew := range []time.Duration{-100 * time.Millisecond, 0, 100 * time.Millisecond} {
		for _, age := range []time.Duration{0, 10 * time.Millisecond, 200 * time.Millisecond, 1500 * time.Millisecond} {
			// Real times: the old active reads its counters at base (its
			// clock shows base+skew) and sends until base+age; the new
			// active takes over then, on its own clock (base+age).
			const synced = 123_456
			c := &sa.ChildSA{Counters: sa.Counters{OutSeq: synced, SyncedAt: base.Add(skew).UnixNano()}}
			sent := uint64(float64(b.MaxPPS) * age.Seconds())
			start := synced + b.Jump(c, base.Add(age))
			if start < synced+sent {
				t.Errorf("skew %s, age %s: new active starts at %d, the old one reached %d", skew, age, start, synced+sent)
			}
		}
	}
}
