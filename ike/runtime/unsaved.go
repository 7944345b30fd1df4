package runtime

import (
	"crypto/sha256"

	"ikegw/ike/ikev1"
)

// A failed commit (Persist) drops every packet of its batch: DESIGN.md
// invariant 1, commit before send. The engine still holds the state the
// commit carried and would answer the peer's retransmitted request from
// its cache, so two more steps keep an uncommitted reply from ever
// leaving:
//
//   - the event loop hands the failed Persist to the engine
//     (ikev1.Engine.PersistFailed), which then resends such a reply only
//     behind a new Persist of its current records;
//   - until then (the retransmission may reach the engine before the loop
//     does), the executor remembers the messages the failed commit
//     guarded, by hash, and drops them again unless the action list that
//     sends them also committed (a Persist that succeeded).
//
// So the peer's retransmission is answered once a commit succeeds.

// maxUnsent bounds the remembered messages; when full the set starts
// over (the engine's marks still cover what it forgets).
const maxUnsent = 4096

func hasPersist(j job) bool {
	for _, a := range j.acts {
		if _, ok := a.(ikev1.Persist); ok {
			return true
		}
	}
	return false
}

// persistFailed records the messages a failed batch's commits guarded and
// queues the Persist for the engine. Executor goroutine.
func (r *Runtime) persistFailed(batch []job, p ikev1.Persist) {
	for _, j := range batch {
		if !hasPersist(j) {
			continue
		}
		for _, a := range j.acts {
			if s, ok := a.(ikev1.Send); ok && !s.Keepalive {
				if len(r.unsent) >= maxUnsent {
					clear(r.unsent)
				}
				r.unsent[sha256.Sum256(s.Data)] = struct{}{}
			}
		}
	}
	r.failMu.Lock()
	r.failed = append(r.failed, p)
	r.failMu.Unlock()
	select {
	case r.failSig <- struct{}{}:
	default: // already signalled: the loop takes every queued Persist
	}
}

// sendable reports whether s may leave: not a message whose commit failed,
// unless the action list sending it committed again (guarded). Executor
// goroutine.
func (r *Runtime) sendable(s ikev1.Send, guarded bool) bool {
	if len(r.unsent) == 0 || s.Keepalive {
		return true
	}
	h := sha256.Sum256(s.Data)
	if _, ok := r.unsent[h]; !ok {
		return true
	}
	if guarded {
		delete(r.unsent, h)
		return true
	}
	r.count(func(st *Stats) { st.UnsavedDrops++ })
	if r.loglim.allow("unsaved_drop") {
		r.log.Warn("not resending a reply whose commit failed; the engine commits it again first", "remote", s.Remote.String())
	}
	return false
}

// tellEngineFailed hands the failed Persists to the engine. Event loop
// goroutine.
func (r *Runtime) tellEngineFailed() {
	r.failMu.Lock()
	ps := r.failed
	r.failed = nil
	r.failMu.Unlock()
	for _, p := range ps {
		r.eng.PersistFailed(p)
	}
}
