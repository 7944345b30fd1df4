package ikev1

import (
	"bytes"

	"ikegw/ike/sa"
)

// PersistFailed tells the engine that the runtime could not commit p, so
// the packets p guarded were not sent (DESIGN.md invariant 1, commit
// before send). The engine keeps its state, because the commit may still
// have reached a quorum (an ambiguous failure, e.g. leadership lost while
// the entry was in flight), but it marks every cached reply p guarded: a
// Quick Mode reply (message 2, with its new pair) and Main Mode message 6.
// When the peer retransmits the request, the reply goes out again only
// behind a new Persist of the current records (and, for a Quick Mode, the
// data plane install the runtime skipped). So the peer's retransmission is
// answered once a commit succeeds, with the same reply it would have got,
// and no reply leaves while its state is not known to be committed.
func (e *Engine) PersistFailed(p Persist) {
	for _, r := range p.IKE {
		s := e.ikes[r.Cookies.Key()]
		if s == nil {
			continue
		}
		for _, ex := range r.Exchanges {
			if ex.MessageID == 0 {
				if p1 := s.p1; p1 != nil && p1.done && s.rec.Role == sa.Responder && p1.lastSent != nil && bytes.Equal(p1.lastSent, ex.LastReply) {
					p1.unsaved = true
				}
				continue
			}
			if x := s.xchg[ex.MessageID]; x != nil && x.role == sa.Responder && x.lastSent != nil && bytes.Equal(x.lastSent, ex.LastReply) {
				x.unsaved = true
			}
		}
	}
}

// resaveQuick re-commits what a Quick Mode reply whose commit failed
// guards, before the reply is sent again: the ISAKMP SA record (with the
// exchange), the new pair and the pair it replaced; then the pair's data
// plane install.
func (e *Engine) resaveQuick(o *out, s *ikeSA, x *exchange) {
	x.unsaved = false
	e.stats.Resaved++
	p := Persist{IKE: []*sa.IKESA{cloneIKE(&s.rec)}}
	c := e.children[x.ourSPI]
	if c != nil {
		p.Children = append(p.Children, cloneChild(c))
	}
	if old := e.children[x.replaced]; x.replaced != 0 && old != nil {
		p.Children = append(p.Children, cloneChild(old))
	}
	o.add(p)
	if c != nil && c.State == sa.ChildInstalled {
		o.add(InstallChild{Child: cloneChild(c)})
	}
}

// resavePhase1 re-commits the ISAKMP SA that Main Mode message 6 (whose
// commit failed) established, before the message is sent again.
func (e *Engine) resavePhase1(o *out, s *ikeSA, p *phase1) {
	p.unsaved = false
	e.stats.Resaved++
	o.persistIKE(&s.rec)
}
