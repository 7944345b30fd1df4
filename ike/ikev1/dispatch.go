package ikev1

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/isakmp"
	"ikegw/ike/sa"
)

// HandlePacket processes one received ISAKMP message.
func (e *Engine) HandlePacket(now time.Time, pkt Packet) []Action {
	var o out
	e.stats.Received++
	e.flushLogSummary(now)
	h, err := isakmp.ParseHeader(pkt.Data)
	if err != nil {
		e.malformed("header", err, pkt)
		return nil
	}
	body := pkt.Data[isakmp.HeaderLen:h.Length]
	switch h.Exchange {
	case isakmp.ExchangeMain, isakmp.ExchangeAggressive:
		e.handlePhase1(now, &o, pkt, h, body)
	case isakmp.ExchangeQuick:
		e.handleQuick(now, &o, pkt, h, body)
	case isakmp.ExchangeInfo:
		e.handleInfo(now, &o, pkt, h, body)
	default:
		e.drop("unsupported exchange type", pkt, h)
	}
	return o.acts
}

// HandleTimer processes a timer the runtime armed.
func (e *Engine) HandleTimer(now time.Time, t Timer) []Action {
	var o out
	switch t.Kind {
	case TimerRetransmit:
		e.retransmit(now, &o, t)
	case TimerHalfOpen:
		if s := e.ikes[t.IKE.Key()]; s != nil && !s.established() {
			e.phase1Fail(FailTimeout)
			// As responder a spoofed message 1 ends here: rate-limited.
			if s.rec.Role == sa.Initiator || e.logLimit(now, "half-open-timeout") {
				e.log.Warn("phase 1 did not complete in time", "sa", s.String(), "remote", s.rec.Remote.String(), "timeout", e.cfg.HalfOpenTimeout)
			}
			e.removeIKE(&o, s)
		}
	case TimerExchange:
		if s := e.ikes[t.IKE.Key()]; s != nil {
			if x := s.xchg[t.MsgID]; x != nil {
				if x.role == sa.Initiator {
					e.phase2Fail(FailTimeout)
					e.log.Warn("quick mode did not complete in time", "sa", s.String(), "msgid", t.MsgID)
				}
				// A responder's pair was installed with its reply; a lost
				// HASH(3) only ends the exchange.
				e.finishExchange(&o, s, x)
			}
		}
	case TimerDPD:
		if s := e.ikes[t.IKE.Key()]; s != nil {
			e.dpd(now, &o, s)
		}
	case TimerKeepalive:
		if s := e.ikes[t.IKE.Key()]; s != nil && s.established() && s.rec.NATLocal {
			o.add(Send{Packet: Packet{Local: s.rec.Local, Remote: s.rec.Remote, Data: []byte{0xff}}, Keepalive: true})
			o.arm(t, now.Add(e.cfg.KeepaliveInterval))
		}
	case TimerIKERekey:
		if s := e.ikes[t.IKE.Key()]; s != nil && s.established() && s.conn != nil && s.rec.Role == sa.Initiator {
			e.log.Info("reauthenticating IKE SA", "sa", s.String())
			e.initiatePhase1(now, &o, s.conn, s)
		}
	case TimerIKEExpire:
		if s := e.ikes[t.IKE.Key()]; s != nil {
			e.log.Info("IKE SA lifetime expired", "sa", s.String())
			e.deleteIKE(now, &o, s, true, true)
		}
	case TimerChildRekey:
		e.rekeyChild(now, &o, t.SPI)
	case TimerChildExpire:
		if c := e.children[t.SPI]; c != nil {
			e.log.Info("IPsec SA pair lifetime expired", "conn", c.Connection, "child", c.Child, "spi_in", fmt.Sprintf("%08x", c.In.SPI))
			e.deleteChildAs(now, &o, c, true, true)
		}
	case TimerChildDelete:
		if c := e.children[t.SPI]; c != nil && c.State == sa.ChildRekeyed {
			e.deleteChildAs(now, &o, c, true, true)
		}
	case TimerDeleteFlush:
		if s := e.ikes[t.IKE.Key()]; s != nil && len(s.pendingDeletes) > 0 {
			e.flushDeletes(&o, s)
		}
	}
	return o.acts
}

func (e *Engine) retransmit(now time.Time, o *out, t Timer) {
	s := e.ikes[t.IKE.Key()]
	if s == nil {
		return
	}
	if t.MsgID == 0 {
		p := s.p1
		if p == nil || p.done || s.rec.Role != sa.Initiator || p.lastSent == nil {
			return
		}
		if p.retries >= retransmitTries(s.conn) {
			e.phase1Fail(FailNoResponse)
			e.log.Warn("phase 1 failed: peer does not answer", "sa", s.String(), "remote", s.rec.Remote.String(), "message", p.step, "tries", p.retries+1)
			e.removeIKE(o, s)
			return
		}
		p.retries++
		e.stats.Retransmits++
		e.stats.Sent++
		o.send(s.rec.Local, s.rec.Remote, p.lastSent)
		o.arm(t, now.Add(e.retransmitDelay(s.conn, p.retries)))
		return
	}
	x := s.xchg[t.MsgID]
	if x == nil || x.role != sa.Initiator || x.lastSent == nil {
		return
	}
	if x.retries >= retransmitTries(s.conn) {
		e.phase2Fail(FailNoResponse)
		e.log.Warn("quick mode failed: peer does not answer", "sa", s.String(), "msgid", x.msgID)
		e.finishExchange(o, s, x)
		return
	}
	x.retries++
	e.stats.Retransmits++
	e.stats.Sent++
	o.send(s.rec.Local, s.rec.Remote, x.lastSent)
	o.arm(t, now.Add(e.retransmitDelay(s.conn, x.retries)))
}

// rekeyChild starts a Quick Mode that replaces the pair with inbound SPI
// spi, on the newest established ISAKMP SA of its connection (starting a
// phase 1 first when there is none).
func (e *Engine) rekeyChild(now time.Time, o *out, spi uint32) {
	c := e.children[spi]
	if c == nil || c.State != sa.ChildInstalled {
		return
	}
	conn := e.conns[c.Connection]
	if conn == nil {
		return
	}
	var cc *config.Child
	for _, ch := range conn.Children {
		if ch.Name == c.Child {
			cc = ch
		}
	}
	if cc == nil {
		return
	}
	s := e.ikes[c.IKE.Key()]
	if s == nil || !s.established() {
		s = e.anyIKEFor(c.Connection, c.Out.Dst)
	}
	if s == nil {
		if !conn.Remote.IsValid() || conn.Remote.IsUnspecified() {
			return // responder-only connection: the peer rekeys
		}
		n := e.initiatePhase1(now, o, conn, nil)
		if n != nil {
			n.p1.pendingRekeys = append(n.p1.pendingRekeys, spi)
		}
		return
	}
	for _, x := range s.xchg {
		if x.rekeyOf == spi {
			return // already in progress
		}
	}
	e.startQuick(now, o, s, cc, spi, tsPair{})
}

// finishReauth moves the pairs of the reauthenticated SA onto the new one
// with fresh Quick Modes (make before break) and retires the old SA after
// the rekey grace period.
func (e *Engine) finishReauth(now time.Time, o *out, s *ikeSA, old sa.Cookies) {
	e.stats.IKEReauths++
	for _, c := range e.peerChildren(s.rec.Remote.Addr()) {
		if c.IKE == old && c.State == sa.ChildInstalled {
			if cc := e.childConfig(c); cc != nil {
				e.startQuick(now, o, s, cc, c.In.SPI, tsPair{})
			}
		}
	}
	if t := e.ikes[old.Key()]; t != nil {
		t.rec.RekeyAt = 0
		o.stop(Timer{Kind: TimerIKERekey, IKE: old})
		o.arm(Timer{Kind: TimerIKEExpire, IKE: old}, now.Add(2*e.cfg.RekeyGrace))
	}
}

func (e *Engine) childConfig(c *sa.ChildSA) *config.Child {
	conn := e.conns[c.Connection]
	if conn == nil {
		return nil
	}
	for _, ch := range conn.Children {
		if ch.Name == c.Child {
			return ch
		}
	}
	return nil
}

func (e *Engine) sortedChildren() []*sa.ChildSA {
	out := make([]*sa.ChildSA, 0, len(e.children))
	for _, c := range e.children {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].In.SPI < out[j].In.SPI })
	return out
}

// HandleExpiry handles a lifetime event from the data plane (by bytes, or
// by time when the data plane enforces it too).
func (e *Engine) HandleExpiry(now time.Time, inSPI uint32, hard bool) []Action {
	var o out
	c := e.children[inSPI]
	if c == nil {
		return nil
	}
	if hard {
		e.log.Info("IPsec SA pair hard lifetime reached in the data plane", "conn", c.Connection, "child", c.Child, "spi_in", fmt.Sprintf("%08x", inSPI))
		e.deleteChild(now, &o, c, true)
	} else {
		e.rekeyChild(now, &o, inSPI)
	}
	return o.acts
}

// UpdateCounters merges counters read from the data plane into the
// engine's records (sequence numbers never go back).
func (e *Engine) UpdateCounters(m map[uint32]sa.Counters) {
	for spi, n := range m {
		c := e.children[spi]
		if c == nil {
			continue
		}
		c.Counters = MergeCounters(c.Counters, n)
	}
}

// MergeCounters combines two counter snapshots of one pair, keeping the
// larger sequence numbers and the replay window that goes with the larger
// inbound sequence number.
func MergeCounters(a, b sa.Counters) sa.Counters {
	r := a
	r.OutSeq = max(a.OutSeq, b.OutSeq)
	if b.InSeq > a.InSeq || (b.InSeq == a.InSeq && len(a.ReplayBitmap) == 0) {
		r.InSeq, r.ReplayBitmap = b.InSeq, slices.Clone(b.ReplayBitmap)
	}
	r.InBytes, r.InPackets = max(a.InBytes, b.InBytes), max(a.InPackets, b.InPackets)
	r.OutBytes, r.OutPackets = max(a.OutBytes, b.OutBytes), max(a.OutPackets, b.OutPackets)
	r.SyncedAt = max(a.SyncedAt, b.SyncedAt)
	return r
}

// RestoreOptions tunes Restore.
type RestoreOptions struct {
	// DPDSeqJump is added to our DPD sequence numbers (DESIGN.md invariant
	// 3); the engine persists each number before use, so 0 is safe.
	DPDSeqJump uint32
}

// Restore rebuilds the engine's SAs from replicated records, as a standby
// that becomes active (or a restarted node) does. It returns the timers to
// arm. Installing the pairs in the data plane, with their jumped sequence
// numbers, is the caller's job.
func (e *Engine) Restore(now time.Time, ikes []*sa.IKESA, children []*sa.ChildSA, opt RestoreOptions) ([]Action, error) {
	var o out
	for _, r := range ikes {
		if r.State != sa.IKEEstablished {
			continue
		}
		s := &ikeSA{rec: *cloneIKE(r), conn: e.conns[r.Connection], xchg: map[uint32]*exchange{}, lastHeard: now}
		if err := s.setSuite(); err != nil {
			return nil, fmt.Errorf("ikev1: restore IKE SA %s: %w", r.Cookies, err)
		}
		if len(s.rec.IVBase) != s.cipher.BlockSize() {
			return nil, fmt.Errorf("ikev1: restore IKE SA %s: phase 1 IV base of %d bytes", r.Cookies, len(s.rec.IVBase))
		}
		if opt.DPDSeqJump != 0 && s.rec.DPDOurSeq != 0 {
			s.rec.DPDOurSeq += opt.DPDSeqJump
		}
		for _, x := range s.rec.Exchanges {
			if isakmp.ExchangeType(x.Type) == isakmp.ExchangeMain && x.MessageID == 0 && len(x.LastReply) > 0 {
				// Our replicated Main Mode message 6: answer a retransmitted
				// message 5 from it.
				p := &phase1{mode: isakmp.ExchangeMain, step: 6, done: true, lastSent: slices.Clone(x.LastReply), started: now}
				copy(p.lastRecvHash[:], x.LastRequestHash)
				s.p1 = p
				continue
			}
			if isakmp.ExchangeType(x.Type) != isakmp.ExchangeQuick || len(x.IV) != s.cipher.BlockSize() {
				continue
			}
			ex := &exchange{msgID: x.MessageID, kind: isakmp.ExchangeQuick, role: sa.Responder, step: 2, iv: slices.Clone(x.IV),
				ni: slices.Clone(x.Ni), nr: slices.Clone(x.Nr), ourSPI: x.InSPI, lastSent: slices.Clone(x.LastReply), started: now, restored: true}
			copy(ex.lastRecvHash[:], x.LastRequestHash)
			s.xchg[x.MessageID] = ex
			o.arm(Timer{Kind: TimerExchange, IKE: s.rec.Cookies, MsgID: x.MessageID}, now.Add(e.cfg.HalfOpenTimeout))
		}
		e.putIKE(s)
		e.armIKETimers(now, &o, s)
	}
	for _, r := range children {
		if r.State == sa.ChildDeleted {
			continue
		}
		c := cloneChild(r)
		e.putChild(c)
		e.armChildTimers(&o, c)
		if c.State == sa.ChildRekeyed {
			o.arm(Timer{Kind: TimerChildDelete, SPI: c.In.SPI}, now.Add(e.cfg.RekeyGrace))
		}
	}
	e.log.Info("state restored", "ike_sas", len(ikes), "child_sas", len(children))
	return o.acts, nil
}

// IKESAs returns copies of every ISAKMP SA record (established ones and,
// for visibility, phase 1 exchanges in progress).
func (e *Engine) IKESAs() []sa.IKESA {
	out := make([]sa.IKESA, 0, len(e.ikes))
	for _, s := range e.ikes {
		out = append(out, *cloneIKE(&s.rec))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Established < out[j].Established })
	return out
}

// Counts returns how many ISAKMP SAs and IPsec SA pairs IKESAs and
// ChildSAs would return, without copying them.
func (e *Engine) Counts() (ike, child int) { return len(e.ikes), len(e.children) }

// ChildSAs returns copies of every IPsec SA pair record.
func (e *Engine) ChildSAs() []sa.ChildSA {
	out := make([]sa.ChildSA, 0, len(e.children))
	for _, c := range e.sortedChildren() {
		out = append(out, *cloneChild(c))
	}
	return out
}

// Terminate deletes every SA of a connection, telling the peer.
func (e *Engine) Terminate(now time.Time, conn string) ([]Action, error) {
	if e.conns[conn] == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownConnection, conn)
	}
	var o out
	for _, s := range e.sortedIKEs() {
		if s.rec.Connection == conn {
			if s.established() {
				e.deleteIKE(now, &o, s, true, true)
			} else {
				e.removeIKE(&o, s)
			}
		}
	}
	for _, c := range e.sortedChildren() {
		if c.Connection == conn {
			e.deleteChild(now, &o, c, false)
		}
	}
	return o.acts, nil
}

// RekeyChildSA starts a Quick Mode rekey of the pair with inbound SPI spi.
func (e *Engine) RekeyChildSA(now time.Time, spi uint32) ([]Action, error) {
	if e.children[spi] == nil {
		return nil, fmt.Errorf("%w: no IPsec SA pair with inbound SPI %08x", ErrNoSA, spi)
	}
	var o out
	e.rekeyChild(now, &o, spi)
	return o.acts, nil
}

// DeleteChildSA deletes one pair and tells the peer.
func (e *Engine) DeleteChildSA(now time.Time, spi uint32) ([]Action, error) {
	c := e.children[spi]
	if c == nil {
		return nil, fmt.Errorf("%w: no IPsec SA pair with inbound SPI %08x", ErrNoSA, spi)
	}
	var o out
	e.deleteChild(now, &o, c, true)
	return o.acts, nil
}

// SendDPD sends an R-U-THERE on an SA now (administrative liveness check).
func (e *Engine) SendDPD(now time.Time, c sa.Cookies) ([]Action, error) {
	s := e.ikes[c.Key()]
	if s == nil || !s.established() {
		return nil, fmt.Errorf("%w: %s", ErrNoSA, c)
	}
	var o out
	s.lastHeard = time.Time{}
	e.dpd(now, &o, s)
	return o.acts, nil
}

func (e *Engine) sortedIKEs() []*ikeSA {
	out := make([]*ikeSA, 0, len(e.ikes))
	for _, s := range e.ikes {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].rec.Cookies.Key(), out[j].rec.Cookies.Key()
		return string(a[:]) < string(b[:])
	})
	return out
}
