package cluster

import (
	"sync/atomic"
	"time"
)

// LatencyBounds are the upper bounds of the buckets a Latency counts into,
// from 500 µs to 10 s (Prometheus-style: each bucket counts observations
// at or below its bound; a last implicit bucket holds the rest).
var LatencyBounds = []time.Duration{
	500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
}

// Latency is a histogram of durations over LatencyBounds. Observe is safe
// for concurrent use and does not allocate; the zero value is ready.
type Latency struct {
	buckets [16]atomic.Uint64 // one per bound, then +Inf
	count   atomic.Uint64
	sumNS   atomic.Int64
}

// Observe counts one duration (negative ones count as 0).
func (l *Latency) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := 0
	for i < len(LatencyBounds) && d > LatencyBounds[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.sumNS.Add(int64(d))
	l.count.Add(1)
}

// LatencySnapshot is a point-in-time copy of a Latency. Cumulative[i] is
// the number of observations at or below LatencyBounds[i]. The fields are
// read one after the other: under concurrent Observe calls Count is
// raised to the buckets' total, so Count >= every Cumulative value.
type LatencySnapshot struct {
	Count      uint64
	Sum        time.Duration
	Cumulative []uint64
}

// Snapshot copies the histogram.
func (l *Latency) Snapshot() LatencySnapshot {
	s := LatencySnapshot{Cumulative: make([]uint64, len(LatencyBounds))}
	var acc uint64
	for i := range LatencyBounds {
		acc += l.buckets[i].Load()
		s.Cumulative[i] = acc
	}
	acc += l.buckets[len(LatencyBounds)].Load()
	s.Sum = time.Duration(l.sumNS.Load())
	s.Count = max(l.count.Load(), acc)
	return s
}
