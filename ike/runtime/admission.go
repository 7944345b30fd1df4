package runtime

import (
	"container/list"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Admission is the runtime's pre-filter for new phase 1 requests (Main or
// Aggressive Mode message 1: a zero responder cookie). It runs in the
// socket readers, before the packet is copied, queued or decoded, so a
// spoofed flood costs a few hundred nanoseconds a packet and never fills
// the engine's event queue ahead of DPD, Quick Mode and the later phase 1
// messages of real peers.
//
// Every other packet passes. Requests from known peers (the engine's
// KnownPeer: exact remote addresses of connections) pass too: the engine
// keeps a reserved share of its half-open table for them. Requests from
// other sources must get a token from their source's bucket (a bounded
// LRU table keyed by address, IPv6 by /64) and then from one global
// bucket for all unknown sources. The engine's half-open limits
// (ike/ikev1/admission.go) stay the hard bound behind this filter.
type Admission struct {
	// SourceRate and SourceBurst: message 1 per second and burst allowed
	// from one unknown source; zero means 5 and 10.
	SourceRate  float64
	SourceBurst float64
	// GlobalRate: message 1 per second from all unknown sources together
	// (the burst is the same number); zero means 4000, negative disables
	// the global bucket.
	GlobalRate float64
	// Sources is the size of the per-source table (least recently seen
	// sources are forgotten first); zero means 16384.
	Sources int
	// LogInterval is how often a summary of the drops is logged (one line,
	// only when something was dropped); zero means 10 s.
	LogInterval time.Duration
	// Disabled turns the pre-filter off (tests, load generators).
	Disabled bool
}

func (a *Admission) defaults() {
	if a.SourceRate <= 0 {
		a.SourceRate = 5
	}
	if a.SourceBurst <= 0 {
		a.SourceBurst = 10
	}
	if a.GlobalRate == 0 {
		a.GlobalRate = 4000
	}
	if a.Sources <= 0 {
		a.Sources = 16384
	}
	if a.LogInterval <= 0 {
		a.LogInterval = 10 * time.Second
	}
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(burst, b.tokens+el*rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type srcEntry struct {
	addr netip.Addr
	b    bucket
}

// admitter is the state behind Admission; safe for concurrent use (every
// socket reader calls it).
type admitter struct {
	cfg   Admission
	known func(netip.Addr) bool
	now   func() time.Time

	mu      sync.Mutex
	global  bucket
	sources map[netip.Addr]*list.Element // -> *srcEntry
	lru     *list.List                   // most recently seen first
	// drops since the last summary, by reason
	pending map[string]uint64
	// drops since the start
	droppedSource, droppedGlobal atomic.Uint64
}

func newAdmitter(cfg Admission, known func(netip.Addr) bool, now func() time.Time) *admitter {
	cfg.defaults()
	a := &admitter{cfg: cfg, known: known, now: now, sources: map[netip.Addr]*list.Element{}, lru: list.New(), pending: map[string]uint64{}}
	a.global = bucket{tokens: cfg.GlobalRate, last: now()}
	return a
}

// isPhase1Request reports whether b (an ISAKMP message without the non-ESP
// marker) is a Main or Aggressive Mode message with a zero responder
// cookie. It reads fixed offsets only.
func isPhase1Request(b []byte) bool {
	const hdr = 28
	if len(b) < hdr {
		return false
	}
	if binary.BigEndian.Uint64(b[8:16]) != 0 {
		return false
	}
	x := b[18] // exchange type: 2 identity protection (Main), 4 aggressive
	return x == 2 || x == 4
}

// sourceKey is the rate limit key of a source: the address, an IPv6
// address by its /64 (one host usually holds the whole prefix).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// admit says whether a packet from remote may go on to the engine, and
// counts what it drops.
func (a *admitter) admit(b []byte, remote netip.Addr) bool {
	if !isPhase1Request(b) {
		return true
	}
	if a.known != nil && a.known(remote) {
		return true
	}
	key := sourceKey(remote)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	var e *srcEntry
	if el := a.sources[key]; el != nil {
		a.lru.MoveToFront(el)
		e = el.Value.(*srcEntry)
	} else {
		if a.lru.Len() >= a.cfg.Sources {
			old := a.lru.Back()
			a.lru.Remove(old)
			delete(a.sources, old.Value.(*srcEntry).addr)
		}
		e = &srcEntry{addr: key, b: bucket{tokens: a.cfg.SourceBurst, last: now}}
		a.sources[key] = a.lru.PushFront(e)
	}
	if !e.b.take(now, a.cfg.SourceRate, a.cfg.SourceBurst) {
		a.pending["source_rate"]++
		a.droppedSource.Add(1)
		return false
	}
	if a.cfg.GlobalRate > 0 && !a.global.take(now, a.cfg.GlobalRate, a.cfg.GlobalRate) {
		a.pending["global_rate"]++
		a.droppedGlobal.Add(1)
		return false
	}
	return true
}

// tracked returns the number of sources in the table.
func (a *admitter) tracked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lru.Len()
}

// takePending returns and resets the drop counts since the last call.
func (a *admitter) takePending() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return nil
	}
	p := a.pending
	a.pending = map[string]uint64{}
	return p
}

// logLimiter lets a few lines of each kind through per interval (remote
// peers can trigger them) and counts the rest for the summary.
type logLimiter struct {
	mu    sync.Mutex
	lines map[string]int
	held  map[string]uint64
}

const logBurst = 5

func (l *logLimiter) allow(kind string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines == nil {
		l.lines, l.held = map[string]int{}, map[string]uint64{}
	}
	if l.lines[kind] < logBurst {
		l.lines[kind]++
		return true
	}
	l.held[kind]++
	return false
}

func (l *logLimiter) reset() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held
	l.lines, l.held = nil, nil
	return h
}

// dropReporter logs one summary line per interval with the pre-filter's
// drops and the log lines held back, when there were any, until done is
// closed.
func dropReporter(log *slog.Logger, a *admitter, l *logLimiter, interval time.Duration, done <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		reportDrops(log, a, l, interval)
	}
}

func reportDrops(log *slog.Logger, a *admitter, l *logLimiter, interval time.Duration) {
	var attrs []any
	if a != nil {
		if p := a.takePending(); len(p) > 0 {
			attrs = append(attrs, sortedAttrs("dropped_", p)...)
			attrs = append(attrs, slog.Int("sources_tracked", a.tracked()))
		}
	}
	if h := l.reset(); len(h) > 0 {
		attrs = append(attrs, sortedAttrs("log_suppressed_", h)...)
	}
	if len(attrs) > 0 {
		attrs = append([]any{slog.Duration("interval", interval)}, attrs...)
		log.Warn("IKE packets dropped by the phase 1 rate limits or log lines suppressed", attrs...)
	}
}

func sortedAttrs(prefix string, m map[string]uint64) []any {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, slog.Uint64(prefix+k, m[k]))
	}
	return out
}
