package ikev1

import (
	"container/list"
	"log/slog"
	"net/netip"
	"sort"
	"time"
)

// Admission of new responder phase 1 exchanges (denial of service).
//
// IKEv1 has no cookie challenge: a Main Mode message 1 from a spoofed
// source costs the responder an SA slot until the half-open timeout. The
// engine therefore bounds half-open responder SAs three ways:
//
//   - a global limit (Config.MaxHalfOpen);
//   - a reserved share of that limit for known peers, the addresses of
//     connections with an exact remote address (Config.ReservedHalfOpen):
//     unknown sources can never hold more than MaxHalfOpen minus it;
//   - a per-source limit (Config.MaxHalfOpenPerSource), so one address
//     cannot take the whole table.
//
// When the table is full a known peer's request evicts the oldest half-open
// SA of an unknown source that has not gone past message 2 (a spoofed
// source never answers message 2). The runtime adds a cheap pre-filter in
// front (per-source and global rate limits, ike/runtime/admission.go).
//
// Drops are counted in Stats; the log lines a remote can trigger go
// through a limiter that prints a few lines per interval and one summary
// of what it held back.

// admission tracks the half-open responder SAs the engine admitted.
type admission struct {
	unknown int                   // of Engine.halfOpen: held by unknown sources
	perSrc  map[netip.Addr]int    // half-open SAs by source (sourceKey)
	entries map[*ikeSA]*halfEntry // every admitted SA
	order   *list.List            // unknown-source entries, oldest first (*ikeSA)
}

type halfEntry struct {
	src   netip.Addr
	known bool
	elem  *list.Element // in order, for unknown sources
}

type peerSet map[netip.Addr]struct{}

func newAdmission() admission {
	return admission{perSrc: map[netip.Addr]int{}, entries: map[*ikeSA]*halfEntry{}, order: list.New()}
}

// Default admission limits.
const (
	defaultMaxHalfOpen          = 4096
	defaultMaxHalfOpenPerSource = 128
	defaultLogInterval          = 10 * time.Second
	logBurst                    = 5 // lines per key and interval before suppression
)

// setKnownPeers records the exact remote addresses of the connections.
func (e *Engine) setKnownPeers() {
	ps := peerSet{}
	for _, c := range e.cfg.Connections {
		if c.Remote.IsValid() && !c.Remote.IsUnspecified() {
			ps[c.Remote.Unmap()] = struct{}{}
		}
	}
	e.knownPeers.Store(&ps)
}

// KnownPeer reports whether a is the configured remote address of a
// connection. Unlike every other method it is safe for concurrent use
// (the runtime's socket readers call it).
func (e *Engine) KnownPeer(a netip.Addr) bool {
	ps := e.knownPeers.Load()
	if ps == nil {
		return false
	}
	_, ok := (*ps)[a.Unmap()]
	return ok
}

// admitHalf decides whether a new responder phase 1 from src may start.
// It may evict an unknown source's half-open SA for a known peer. It
// counts and logs (rate-limited) what it refuses.
func (e *Engine) admitHalf(now time.Time, o *out, src netip.Addr) bool {
	src = src.Unmap()
	known := e.KnownPeer(src)
	if e.adm.perSrc[sourceKey(src)] >= e.cfg.MaxHalfOpenPerSource {
		e.stats.DroppedSourceLimit++
		e.stats.Dropped++
		e.limitedWarn(now, "half-open-source", "phase 1 request dropped: per-source half-open limit reached",
			"remote", src.String(), "limit", e.cfg.MaxHalfOpenPerSource)
		return false
	}
	reserved := e.cfg.ReservedHalfOpen
	if !known && (e.halfOpen >= e.cfg.MaxHalfOpen || e.adm.unknown >= e.cfg.MaxHalfOpen-reserved) {
		e.stats.DroppedHalfOpenLimit++
		e.stats.Dropped++
		e.limitedWarn(now, "half-open-unknown", "phase 1 request dropped: half-open limit for unknown sources reached",
			"remote", src.String(), "limit", e.cfg.MaxHalfOpen-reserved)
		return false
	}
	if known && e.halfOpen >= e.cfg.MaxHalfOpen {
		if !e.evictUnknownHalf(o) {
			e.stats.DroppedHalfOpenLimit++
			e.stats.Dropped++
			e.limitedWarn(now, "half-open-known", "phase 1 request from a known peer dropped: half-open limit reached",
				"remote", src.String(), "limit", e.cfg.MaxHalfOpen)
			return false
		}
	}
	return true
}

// evictUnknownHalf removes the oldest half-open SA of an unknown source
// that is still waiting for message 3.
func (e *Engine) evictUnknownHalf(o *out) bool {
	for el := e.adm.order.Front(); el != nil; el = el.Next() {
		s := el.Value.(*ikeSA)
		if s.p1 == nil || s.p1.step > 2 {
			continue // the source answered message 2: not spoofed
		}
		e.stats.EvictedHalfOpen++
		e.removeIKE(o, s)
		return true
	}
	return false
}

// countHalf records an admitted half-open SA (after admitHalf said yes).
func (e *Engine) countHalf(s *ikeSA, src netip.Addr) {
	src = src.Unmap()
	h := &halfEntry{src: sourceKey(src), known: e.KnownPeer(src)}
	if !h.known {
		h.elem = e.adm.order.PushBack(s)
		e.adm.unknown++
	}
	e.adm.entries[s] = h
	e.adm.perSrc[h.src]++
	e.halfOpen++
	s.p1.countedHalf = true
}

// releaseHalf forgets a half-open SA that completed or went away.
func (e *Engine) releaseHalf(s *ikeSA) {
	if s.p1 == nil || !s.p1.countedHalf {
		return
	}
	s.p1.countedHalf = false
	e.halfOpen--
	h := e.adm.entries[s]
	if h == nil {
		return
	}
	delete(e.adm.entries, s)
	if h.elem != nil {
		e.adm.order.Remove(h.elem)
		e.adm.unknown--
	}
	if n := e.adm.perSrc[h.src] - 1; n > 0 {
		e.adm.perSrc[h.src] = n
	} else {
		delete(e.adm.perSrc, h.src)
	}
}

// sourceKey is the per-source limit's key: the address, an IPv6 address
// by its /64 (one host usually holds the whole prefix).
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// HalfOpen returns the responder phase 1 exchanges in progress: all of
// them and those of unknown sources.
func (e *Engine) HalfOpen() (total, unknown int) { return e.halfOpen, e.adm.unknown }

// logLimiter lets a few lines per key through per interval and then
// counts what it holds back; the counts go out as one summary line at the
// first call after the interval.
type logLimiter struct {
	start      time.Time
	lines      map[string]int
	suppressed map[string]uint64
}

// limitedWarn logs a Warn a remote peer can trigger, at most logBurst
// lines per key and interval.
func (e *Engine) limitedWarn(now time.Time, key, msg string, args ...any) {
	if e.logLimit(now, key) {
		e.log.Warn(msg, args...)
	}
}

func (e *Engine) logLimit(now time.Time, key string) bool {
	l := &e.loglim
	e.flushLogSummary(now)
	if l.lines == nil {
		l.lines, l.suppressed = map[string]int{}, map[string]uint64{}
		l.start = now
	}
	if l.lines[key] < logBurst {
		l.lines[key]++
		return true
	}
	l.suppressed[key]++
	e.stats.LogSuppressed++
	return false
}

// flushLogSummary ends the limiter's interval when it is over, with one
// line that names how many lines of each kind were held back.
func (e *Engine) flushLogSummary(now time.Time) {
	l := &e.loglim
	if l.lines == nil || now.Sub(l.start) < e.cfg.LogInterval {
		return
	}
	if len(l.suppressed) > 0 {
		keys := make([]string, 0, len(l.suppressed))
		for k := range l.suppressed {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		attrs := make([]any, 0, len(keys)+1)
		attrs = append(attrs, slog.Duration("interval", now.Sub(l.start)))
		for _, k := range keys {
			attrs = append(attrs, slog.Uint64(k, l.suppressed[k]))
		}
		e.log.Warn("log lines suppressed (remote-triggered events over the rate limit; see the drop counters)", attrs...)
	}
	l.lines, l.suppressed = nil, nil
}
