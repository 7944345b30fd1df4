package failover

import (
	"math"
	"time"

	"ikegw/ike/sa"
)

// Defaults of SeqBound (see the package documentation, "Sequence-number
// jump").
const (
	// DefaultMaxPPS is 10 Gbit/s Ethernet's line rate in minimum-size
	// frames (64 bytes plus 20 of preamble and gap): no ESP packet is
	// smaller, so no pair sends faster through a 10 GbE port.
	DefaultMaxPPS = 14_880_952
	// DefaultClockSkew is how far apart two members' wall clocks may be
	// (NTP keeps them within milliseconds; this allows a bad day).
	DefaultClockSkew = 250 * time.Millisecond
	// HandoverWindow is the longest a planned handover may take from the
	// moment the old active reads its counters to the moment the target
	// activates: the old active jumps the counters it commits with the
	// announcement by MaxPPS x HandoverWindow, and a target that activates
	// later does not use that staging (see SeqBound.StagedValid).
	HandoverWindow = time.Second
	// maxJump caps a jump: a 32-bit sequence number cannot go further
	// (the data plane then refuses the pair and it must be rekeyed).
	maxJump = 1 << 32
	// unknownAge is the age assumed for counters of a pair that carries
	// neither a sync time nor an establishment time (never written by this
	// build's engine): a day, longer than any IPsec SA lifetime we allow
	// by default.
	unknownAge = 24 * time.Hour
)

// SeqBound turns the rate bound of the data plane into the sequence-number
// jump of a takeover (DESIGN.md invariant 3): a pair's last committed
// counters were read at time T (Counters.SyncedAt, the old active's clock);
// the old active cannot have sent more than MaxPPS packets per second on it
// from T until it stopped, and it stopped before the new active's takeover
// began (it died, or released its VIPs and stopped its data plane before a
// new leader could be elected). So at takeover time now the jump
//
//	MaxPPS x (now - T + ClockSkew)
//
// covers every packet the old active may have sent after its last
// committed sync, whatever the sync interval was and however late its
// commits were (a sync that failed or lagged only makes T older).
type SeqBound struct {
	// MaxPPS is the most ESP packets per second one IPsec SA pair can
	// send (the outside link's line rate in minimum-size packets).
	MaxPPS uint64
	// ClockSkew is the most two members' wall clocks may differ.
	ClockSkew time.Duration
	// Min is the smallest jump (covers reordering and anything the rate
	// bound does not: e.g. packets already queued in a device).
	Min uint64
}

// CountersAsOf returns when c's counters were last read from a data plane:
// Counters.SyncedAt, or the pair's establishment (its counters started at 0
// then) when they were never synced. ok is false when c carries neither.
func CountersAsOf(c *sa.ChildSA) (t time.Time, ok bool) {
	switch {
	case c.Counters.SyncedAt > 0:
		return time.Unix(0, c.Counters.SyncedAt), true
	case c.Established > 0:
		return time.Unix(0, c.Established), true
	}
	return time.Time{}, false
}

// Jump returns how far the outbound sequence number of c must move when
// another node installs it at now: MaxPPS x (now - CountersAsOf(c) +
// ClockSkew), at least Min, at most 2^32.
func (b SeqBound) Jump(c *sa.ChildSA, now time.Time) uint64 {
	age := unknownAge
	if t, ok := CountersAsOf(c); ok {
		age = now.Sub(t)
	}
	return b.forAge(age + b.ClockSkew)
}

// HandoverJump is the jump the old active of a planned handover adds to
// its live counters (read at the same time, on its own clock): every packet
// it may send until the target activates, HandoverWindow at the most (the
// target checks that with StagedValid).
func (b SeqBound) HandoverJump() uint64 { return b.forAge(HandoverWindow) }

// StagedValid reports whether counters that a planned handover committed
// at readAt (the old active's clock: its live counters plus HandoverJump)
// still cover every packet the old active may have sent, for a target
// activating at now: now - readAt + ClockSkew <= HandoverWindow. When it is
// false the target must take over the slow way (Jump from the committed
// counters).
func (b SeqBound) StagedValid(readAt, now time.Time) bool {
	return !readAt.IsZero() && now.Sub(readAt)+b.ClockSkew <= HandoverWindow
}

func (b SeqBound) forAge(age time.Duration) uint64 {
	if age < 0 {
		age = 0
	}
	j := math.Ceil(float64(b.MaxPPS) * age.Seconds())
	if j >= maxJump {
		return maxJump
	}
	return max(uint64(j), b.Min)
}
