package ikev1

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
	"ikegw/ike/sa"
)

// sendInfo sends an encrypted, hashed informational exchange (RFC 2409
// §5.7) on an established SA. It does not persist anything: callers that
// send state the peer will believe in persist it first.
func (e *Engine) sendInfo(o *out, s *ikeSA, ps []isakmp.Payload) {
	if !s.established() || s.rec.IVBase == nil {
		return
	}
	msgID := e.newMsgID(s)
	_, rest, err := isakmp.AppendPayloads(nil, ps)
	if err != nil {
		e.log.Error("informational: cannot encode", "sa", s.String(), "err", err)
		return
	}
	hash := ikecrypto.InfoHash(s.prf, s.rec.SKEYIDa, msgID, rest)
	iv := ikecrypto.ExchangeIV(s.prf, s.rec.IVBase, msgID, s.cipher.BlockSize())
	msg, _, err := s.encrypt(s.header(isakmp.ExchangeInfo, msgID), append([]isakmp.Payload{&isakmp.Hash{Data: hash}}, ps...), iv)
	if err != nil {
		e.log.Error("informational: cannot encrypt", "sa", s.String(), "err", err)
		return
	}
	o.send(s.rec.Local, s.rec.Remote, msg)
	e.stats.Sent++
}

func cookieSPI(c sa.Cookies) []byte { return append(c.I[:], c.R[:]...) }

// handleInfo handles an informational exchange.
func (e *Engine) handleInfo(now time.Time, o *out, pkt Packet, h isakmp.Header, body []byte) {
	s := e.ikes[sa.Cookies{I: h.ICookie, R: h.RCookie}.Key()]
	if s == nil {
		s = e.ikes[sa.Cookies{I: h.ICookie}.Key()]
	}
	if h.Flags&isakmp.FlagEncryption == 0 {
		// Unauthenticated: only believed for a phase 1 still in progress,
		// and only to give up on it.
		d, err := isakmp.DecodePayloads(h.NextPayload, body)
		if err != nil {
			e.malformed("informational", err, pkt)
			return
		}
		n, _, ok := first[*isakmp.Notify](d)
		if s == nil || s.established() || !ok || !n.NotifyType.IsError() || s.rec.Remote.Addr() != pkt.Remote.Addr() {
			e.drop("unauthenticated informational", pkt, h)
			return
		}
		if s.rec.Role == sa.Initiator {
			e.phase1Refused(o, s, n.NotifyType)
		} else if e.logLimit(now, "phase1-error-notify") { // unauthenticated: rate-limited
			e.log.Warn("peer reported an error during phase 1", "sa", s.String(), "notify", n.NotifyType.String())
		}
		return
	}
	if s != nil && !s.established() && s.rec.Role == sa.Initiator && s.p1 != nil && s.p1.mode == isakmp.ExchangeMain &&
		s.p1.step == 5 && s.rec.Remote.Addr() == pkt.Remote.Addr() {
		e.infoDuringMainMode(o, s, pkt, h, body)
		return
	}
	if s == nil || !s.established() || s.rec.IVBase == nil {
		e.drop("informational for an unknown ISAKMP SA", pkt, h)
		return
	}
	iv := ikecrypto.ExchangeIV(s.prf, s.rec.IVBase, h.MessageID, s.cipher.BlockSize())
	d, _, err := s.decrypt(h, body, iv)
	if err != nil {
		e.malformed("informational does not decrypt", err, pkt)
		return
	}
	if len(d.Payloads) == 0 {
		e.malformed("empty informational", nil, pkt)
		return
	}
	hp, ok := d.Payloads[0].(*isakmp.Hash)
	if !ok || !ikecrypto.Equal(ikecrypto.InfoHash(s.prf, s.rec.SKEYIDa, h.MessageID, restAfter(d, 0)), hp.Data) {
		e.malformed("informational HASH does not verify", nil, pkt)
		return
	}
	s.lastHeard = now
	s.rec.Local, s.rec.Remote = e.peerMoved(s, pkt)
	s.peerCompletedPhase1()
	for _, p := range d.Payloads[1:] {
		switch v := p.(type) {
		case *isakmp.Notify:
			e.handleNotify(now, o, s, v)
			if e.ikes[s.key()] == nil {
				return // the peer refused our authentication
			}
		case *isakmp.Delete:
			e.handleDelete(now, o, s, v)
			if e.ikes[s.key()] == nil {
				return // the SA itself was deleted
			}
		}
	}
}

func (e *Engine) handleNotify(now time.Time, o *out, s *ikeSA, n *isakmp.Notify) {
	switch n.NotifyType {
	case isakmp.NotifyRUThere:
		if len(n.Data) != 4 {
			e.log.Debug("R-U-THERE without a 4-byte sequence number", "sa", s.String())
			return
		}
		seq := binary.BigEndian.Uint32(n.Data)
		s.rec.DPDPeerSeq = seq
		e.sendInfo(o, s, []isakmp.Payload{&isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP,
			NotifyType: isakmp.NotifyRUThereAck, SPI: cookieSPI(s.rec.Cookies), Data: n.Data}})
	case isakmp.NotifyRUThereAck:
		if len(n.Data) != 4 {
			return
		}
		if binary.BigEndian.Uint32(n.Data) == s.rec.DPDOurSeq {
			s.dpdOutstanding = false
			e.stats.DPDAcked++
		}
	case isakmp.NotifyInitialContact:
		e.initialContact(now, o, s)
	case isakmp.NotifyAuthenticationFailed:
		// The peer refused our phase 1 authentication after we sent
		// message 6 (a certificate it does not accept): it holds no SA.
		e.log.Warn("phase 1 refused by the peer after our last message; deleting the IKE SA", "sa", s.String(), "notify", n.NotifyType.String())
		e.deleteIKE(now, o, s, false, true)
	default:
		if n.NotifyType.IsError() {
			e.log.Warn("peer reported an error", "sa", s.String(), "notify", n.NotifyType.String(), "protocol", n.Protocol.String())
		} else {
			e.log.Debug("notify ignored", "sa", s.String(), "notify", n.NotifyType.String())
		}
	}
}

func (e *Engine) handleDelete(now time.Time, o *out, s *ikeSA, d *isakmp.Delete) {
	switch d.Protocol {
	case isakmp.ProtoISAKMP:
		for _, spi := range d.SPIs {
			if len(spi) != 16 {
				continue
			}
			var c sa.Cookies
			copy(c.I[:], spi[:8])
			copy(c.R[:], spi[8:])
			t := e.ikes[c.Key()]
			if t == nil || t.rec.Remote.Addr() != s.rec.Remote.Addr() {
				continue
			}
			e.stats.Deletes++
			e.log.Info("peer deleted the IKE SA", "sa", t.String())
			e.deleteIKE(now, o, t, false, true)
		}
	case isakmp.ProtoESP:
		for _, spi := range d.SPIs {
			if len(spi) != 4 {
				continue
			}
			out := binary.BigEndian.Uint32(spi)
			for _, c := range e.peerChildren(s.rec.Remote.Addr()) {
				if c.Out.SPI == out {
					e.stats.Deletes++
					e.log.Info("peer deleted an IPsec SA pair", "conn", c.Connection, "child", c.Child,
						"spi_in", fmt.Sprintf("%08x", c.In.SPI), "spi_out", fmt.Sprintf("%08x", c.Out.SPI))
					e.deleteChild(now, o, c, false)
					break
				}
			}
		}
	}
}

// deleteChild removes an IPsec SA pair: persist the deletion, then (if
// notify) tell the peer, then remove it from the data plane.
func (e *Engine) deleteChild(now time.Time, o *out, c *sa.ChildSA, notify bool) {
	e.deleteChildAs(now, o, c, notify, false)
}

// deleteCoalesce is how long the DELETEs of expiring pairs wait for others
// of the same ISAKMP SA. Pairs expire in bursts (a new active resumes every
// overdue timer at once); one INFORMATIONAL per pair then floods the peer,
// and strongSwan keeps the state of only three IKEv1 exchanges per ISAKMP
// SA (charon.max_ikev1_exchanges): a burst during its own Quick Mode makes
// it lose that Quick Mode, and after its retransmissions the whole ISAKMP SA.
const deleteCoalesce = 50 * time.Millisecond

// maxDeleteSPIs bounds the SPIs of one Delete payload (a message stays far
// below any path MTU: 4 bytes each).
const maxDeleteSPIs = 200

// deleteChildAs deletes a pair; with notify the peer is told, at once or,
// with batched, together with the other pairs of the same ISAKMP SA that
// are deleted within deleteCoalesce.
func (e *Engine) deleteChildAs(now time.Time, o *out, c *sa.ChildSA, notify, batched bool) {
	e.dropChild(c)
	c.State = sa.ChildDeleted
	o.add(Persist{DeleteChildren: []uint32{c.In.SPI}})
	if notify {
		s := e.ikes[c.IKE.Key()]
		if s == nil || !s.established() {
			s = e.anyIKEFor(c.Connection, c.Out.Dst)
		}
		switch {
		case s == nil:
		case batched:
			if len(s.pendingDeletes) == 0 {
				o.arm(Timer{Kind: TimerDeleteFlush, IKE: s.rec.Cookies}, now.Add(deleteCoalesce))
			}
			s.pendingDeletes = append(s.pendingDeletes, c.In.SPI)
		default:
			e.sendInfo(o, s, []isakmp.Payload{&isakmp.Delete{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoESP, SPIs: [][]byte{be32(c.In.SPI)}}})
		}
	}
	o.add(DeleteChild{Child: cloneChild(c)})
	for _, k := range []TimerKind{TimerChildRekey, TimerChildExpire, TimerChildDelete} {
		o.stop(Timer{Kind: k, SPI: c.In.SPI})
	}
}

// flushDeletes sends the DELETEs gathered on s, maxDeleteSPIs per message.
func (e *Engine) flushDeletes(o *out, s *ikeSA) {
	o.stop(Timer{Kind: TimerDeleteFlush, IKE: s.rec.Cookies})
	spis := s.pendingDeletes
	s.pendingDeletes = nil
	for len(spis) > 0 {
		n := min(len(spis), maxDeleteSPIs)
		d := &isakmp.Delete{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoESP}
		for _, spi := range spis[:n] {
			d.SPIs = append(d.SPIs, be32(spi))
		}
		e.sendInfo(o, s, []isakmp.Payload{d})
		spis = spis[n:]
	}
}

// anyIKEFor returns an established ISAKMP SA of a connection towards
// remote, preferring the newest.
func (e *Engine) anyIKEFor(conn string, remote netip.Addr) *ikeSA {
	var best *ikeSA
	for _, s := range e.peerIKEs(remote) {
		if s.rec.Connection != conn || !s.established() || s.rec.Remote.Addr() != remote {
			continue
		}
		if best == nil || s.rec.Established > best.rec.Established {
			best = s
		}
	}
	return best
}

// deleteIKE removes an ISAKMP SA. With notify we send a DELETE first (after
// persisting). Its IPsec SA pairs move to another established SA of the
// same connection and peer when there is one; otherwise they are deleted
// too when deleteChildren is set.
func (e *Engine) deleteIKE(now time.Time, o *out, s *ikeSA, notify, deleteChildren bool) {
	var other *ikeSA
	for _, t := range e.peerIKEs(s.rec.Remote.Addr()) {
		if t != s && t.established() && t.rec.Connection == s.rec.Connection && t.rec.Remote.Addr() == s.rec.Remote.Addr() {
			if other == nil || t.rec.Established > other.rec.Established {
				other = t
			}
		}
	}
	var kids []*sa.ChildSA
	for _, c := range e.peerChildren(s.rec.Remote.Addr()) {
		if c.IKE == s.rec.Cookies {
			kids = append(kids, c)
		}
	}
	p := Persist{DeleteIKE: []sa.Cookies{s.rec.Cookies}}
	if other != nil {
		for _, c := range kids {
			c.IKE = other.rec.Cookies
			p.Children = append(p.Children, cloneChild(c))
		}
		kids = nil
	}
	if notify {
		// Children first, while the SA that carries the deletes exists.
		// One INFORMATIONAL for all of them (and for those already
		// waiting to be flushed), then the ISAKMP SA's own.
		if deleteChildren {
			for _, c := range kids {
				e.deleteChildAs(now, o, c, true, true)
			}
			kids = nil
		}
		if len(s.pendingDeletes) > 0 {
			e.flushDeletes(o, s)
		}
		o.add(p)
		e.sendInfo(o, s, []isakmp.Payload{&isakmp.Delete{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP, SPIs: [][]byte{cookieSPI(s.rec.Cookies)}}})
	} else {
		o.add(p)
	}
	s.rec.State = sa.IKEDeleted
	e.removeIKE(o, s)
	if deleteChildren {
		for _, c := range kids {
			e.deleteChild(now, o, c, false)
		}
	}
}

// initialContact: the peer has rebooted and lost its state; every other SA
// with it for this connection is stale (RFC 2407 §4.6.3.3).
func (e *Engine) initialContact(now time.Time, o *out, s *ikeSA) {
	for _, t := range e.peerIKEList(s.rec.Remote.Addr()) {
		if t != s && t.established() && t.rec.Connection == s.rec.Connection && t.rec.Remote.Addr() == s.rec.Remote.Addr() {
			e.log.Info("INITIAL-CONTACT: deleting stale IKE SA", "sa", t.String(), "new", s.String())
			e.deleteIKE(now, o, t, false, true)
		}
	}
	for _, c := range e.peerChildren(s.rec.Remote.Addr()) {
		if c.Connection == s.rec.Connection && c.IKE != s.rec.Cookies {
			e.deleteChild(now, o, c, false)
		}
	}
}

// dpd runs the DPD timer of an SA (RFC 3706).
func (e *Engine) dpd(now time.Time, o *out, s *ikeSA) {
	c := s.conn
	if c == nil || c.DPDDelay <= 0 || !s.established() {
		return
	}
	if s.dpdOutstanding && now.Sub(s.dpdSince) >= c.DPDTimeout {
		e.stats.DPDTimeouts++
		e.log.Warn("DPD timeout: peer is dead", "sa", s.String(), "action", dpdActionName(c.DPDAction), "since", s.dpdSince.Format(time.RFC3339))
		e.deleteIKE(now, o, s, false, c.DPDAction != config.DPDHold)
		if c.DPDAction == config.DPDRestart {
			e.initiatePhase1(now, o, c, nil)
		}
		return
	}
	if !s.dpdOutstanding && !s.dpdLastSent.IsZero() && now.Before(s.dpdLastSent.Add(c.DPDDelay)) {
		// The last R-U-THERE was answered: wait out the delay.
		o.arm(Timer{Kind: TimerDPD, IKE: s.rec.Cookies}, s.dpdLastSent.Add(c.DPDDelay))
		return
	}
	if s.rec.DPDOurSeq == 0 {
		s.rec.DPDOurSeq = e.randUint32() & 0x7fffffff
	}
	s.rec.DPDOurSeq++
	o.persistIKE(&s.rec) // the sequence number we use is replicated first
	e.sendInfo(o, s, []isakmp.Payload{&isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP,
		NotifyType: isakmp.NotifyRUThere, SPI: cookieSPI(s.rec.Cookies), Data: be32(s.rec.DPDOurSeq)}})
	e.stats.DPDSent++
	if !s.dpdOutstanding {
		s.dpdOutstanding, s.dpdSince = true, now
	}
	s.dpdLastSent = now
	// Check for the ack (and resend) after one retransmission interval.
	next := min(e.retransmitDelay(c, 0), c.DPDDelay)
	o.arm(Timer{Kind: TimerDPD, IKE: s.rec.Cookies}, now.Add(next))
}

func dpdActionName(a config.DPDAction) string {
	switch a {
	case config.DPDClear:
		return "clear"
	case config.DPDHold:
		return "hold"
	case config.DPDRestart:
		return "restart"
	}
	return "none"
}

// infoDuringMainMode handles an encrypted informational that arrives while
// we, the initiator, wait for Main Mode message 6: the peer refusing our
// message 5 (strongSwan sends AUTHENTICATION_FAILED when it does not accept
// our certificate or identity). It is encrypted under the phase 1 keys
// with the IV of its message ID from the last block of message 5, and must
// carry a valid HASH; an error notify then ends the phase 1 with the
// peer's reason instead of retransmitting until the timeout.
func (e *Engine) infoDuringMainMode(o *out, s *ikeSA, pkt Packet, h isakmp.Header, body []byte) {
	if h.MessageID == 0 || s.cipher == nil || s.rec.SKEYIDa == nil || s.p1.iv == nil {
		e.drop("informational during phase 1", pkt, h)
		return
	}
	iv := ikecrypto.ExchangeIV(s.prf, s.p1.iv, h.MessageID, s.cipher.BlockSize())
	d, _, err := s.decrypt(h, body, iv)
	if err != nil || len(d.Payloads) == 0 {
		e.drop("informational during phase 1 does not decrypt", pkt, h)
		return
	}
	hp, ok := d.Payloads[0].(*isakmp.Hash)
	if !ok || !ikecrypto.Equal(ikecrypto.InfoHash(s.prf, s.rec.SKEYIDa, h.MessageID, restAfter(d, 0)), hp.Data) {
		e.drop("informational during phase 1 without a valid HASH", pkt, h)
		return
	}
	for _, p := range d.Payloads[1:] {
		if n, ok := p.(*isakmp.Notify); ok && n.NotifyType.IsError() {
			e.phase1Refused(o, s, n.NotifyType)
			return
		}
	}
	e.drop("informational during phase 1 without an error notify", pkt, h)
}
