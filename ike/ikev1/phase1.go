package ikev1

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
	"ikegw/ike/sa"
)

// payload helpers

func first[T isakmp.Payload](d isakmp.Decoded) (T, []byte, bool) {
	for i, p := range d.Payloads {
		if v, ok := p.(T); ok {
			return v, d.Raw[i], true
		}
	}
	var zero T
	return zero, nil, false
}

func all[T isakmp.Payload](d isakmp.Decoded) []T {
	var out []T
	for _, p := range d.Payloads {
		if v, ok := p.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// encodeSABody returns the wire bytes of an SA payload's body (without the
// generic header), as HASH_I/HASH_R hash it.
func encodeSABody(s *isakmp.SA) ([]byte, error) {
	_, b, err := isakmp.AppendPayloads(nil, []isakmp.Payload{s})
	if err != nil {
		return nil, err
	}
	return b[4:], nil
}

func addrPort(a netip.Addr, port uint16) netip.AddrPort {
	if !a.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, port)
}

// Initiate starts phase 1 (and then every child of the connection) towards
// the connection's remote address.
func (e *Engine) Initiate(now time.Time, conn string) ([]Action, error) {
	c := e.conns[conn]
	if c == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownConnection, conn)
	}
	if !c.Remote.IsValid() || c.Remote.IsUnspecified() {
		return nil, fmt.Errorf("ikev1: connection %q has no remote address to initiate to", conn)
	}
	var o out
	e.initiatePhase1(now, &o, c, nil)
	return o.acts, nil
}

func (e *Engine) initiatePhase1(now time.Time, o *out, c *config.Connection, reauthOf *ikeSA) *ikeSA {
	s := &ikeSA{conn: c, xchg: map[uint32]*exchange{}}
	copy(s.rec.Cookies.I[:], e.randBytes(8))
	s.rec.Version = sa.RecordVersion
	s.rec.Role = sa.Initiator
	s.rec.Connection = c.Name
	s.rec.Local = addrPort(c.Local, c.LocalPort)
	s.rec.Remote = addrPort(c.Remote, c.RemotePort)
	if reauthOf != nil {
		cp := reauthOf.rec.Cookies
		s.rec.ReauthOf = &cp
	}
	mode := isakmp.ExchangeMain
	if c.Aggressive {
		mode = isakmp.ExchangeAggressive
	}
	p := &phase1{mode: mode, psk: c.PSK, started: now, offer: phase1Offer(c)}
	s.p1 = p
	ps := []isakmp.Payload{}
	offer := p.offer
	if mode == isakmp.ExchangeAggressive {
		// Aggressive Mode sends its KE with the first message, so every
		// transform must use the group of the first proposal.
		g := c.Proposals[0].Group
		offer = nil
		for i, t := range p.offer {
			if c.Proposals[i].Group == g {
				offer = append(offer, t)
			}
		}
		p.offer = offer
	}
	saPayload := &isakmp.SA{DOI: isakmp.DOIIPsec, Situation: isakmp.SitIdentityOnly,
		Proposals: []isakmp.Proposal{{Number: 1, Protocol: isakmp.ProtoISAKMP, Transforms: offer}}}
	body, err := encodeSABody(saPayload)
	if err != nil {
		e.log.Error("phase 1: cannot encode our proposal", "conn", c.Name, "err", err)
		return nil
	}
	p.saiB = body
	ps = append(ps, saPayload)
	if mode == isakmp.ExchangeAggressive {
		g, err := ikecrypto.GroupByID(c.Proposals[0].Group)
		if err != nil {
			e.log.Error("phase 1: bad group", "conn", c.Name, "err", err)
			return nil
		}
		p.group = g
		priv, pub, err := g.GenerateKey(e.rand)
		if err != nil {
			e.log.Error("phase 1: DH key generation failed", "conn", c.Name, "err", err)
			return nil
		}
		p.dhPriv, p.gxi = priv, pub
		p.ni = e.randBytes(nonceLen)
		id := localID(c, c.Local)
		ps = append(ps, &isakmp.KE{Data: pub}, &isakmp.Nonce{Data: p.ni}, &id)
		ps = append(ps, certRequests(c)...)
	}
	ps = append(ps, &isakmp.VendorID{Data: vidNATT3947}, &isakmp.VendorID{Data: vidDPD})
	m := &isakmp.Message{Header: s.header(mode, 0), Payloads: ps}
	msg, err := m.Marshal()
	if err != nil {
		e.log.Error("phase 1: cannot encode message 1", "conn", c.Name, "err", err)
		return nil
	}
	p.step = 1
	p.lastSent = msg
	e.putIKE(s)
	o.send(s.rec.Local, s.rec.Remote, msg)
	e.stats.Sent++
	o.arm(Timer{Kind: TimerRetransmit, IKE: s.rec.Cookies}, now.Add(e.retransmitDelay(c, 0)))
	o.arm(Timer{Kind: TimerHalfOpen, IKE: s.rec.Cookies}, now.Add(e.cfg.HalfOpenTimeout))
	e.log.Info("initiating phase 1", "conn", c.Name, "mode", mode.String(), "remote", s.rec.Remote.String(), "icookie", fmt.Sprintf("%x", s.rec.Cookies.I))
	return s
}

func (e *Engine) retransmitDelay(c *config.Connection, try int) time.Duration {
	timeout, base := 4*time.Second, 1.8
	if c != nil && c.Retransmit.Timeout > 0 {
		timeout = c.Retransmit.Timeout
	}
	if c != nil && c.Retransmit.Base >= 1 {
		base = c.Retransmit.Base
	}
	return time.Duration(float64(timeout) * math.Pow(base, float64(try)))
}

func retransmitTries(c *config.Connection) int {
	if c != nil && c.Retransmit.Tries > 0 {
		return c.Retransmit.Tries
	}
	return 5
}

// handlePhase1 handles a Main or Aggressive Mode message.
func (e *Engine) handlePhase1(now time.Time, o *out, pkt Packet, h isakmp.Header, body []byte) {
	var zero [8]byte
	if h.MessageID != 0 {
		e.drop("phase 1 message with a non-zero message ID", pkt, h)
		return
	}
	if h.RCookie == zero {
		// Message 1. As responder: new, or a retransmission.
		if s := e.ikes[sa.Cookies{I: h.ICookie}.Key()]; s != nil {
			// Our own initiator SA: a message 1 reflected back, ignore.
			e.drop("message 1 with our own initiator cookie", pkt, h)
			return
		}
		if s := e.findResponderHalf(h.ICookie, pkt.Remote.Addr()); s != nil {
			e.answerFromCache(o, s.p1, pkt, s)
			return
		}
		e.respondPhase1(now, o, pkt, h, body)
		return
	}
	s := e.ikes[sa.Cookies{I: h.ICookie, R: h.RCookie}.Key()]
	if s == nil {
		// Message 2 for a phase 1 we initiated?
		s = e.ikes[sa.Cookies{I: h.ICookie}.Key()]
		if s == nil || s.rec.Role != sa.Initiator || s.p1 == nil || s.p1.step != 1 {
			e.drop("no ISAKMP SA for these cookies", pkt, h)
			return
		}
	}
	p := s.p1
	if p == nil || p.mode != h.Exchange {
		e.drop("unexpected phase 1 message for an established SA", pkt, h)
		return
	}
	if p.done || (s.rec.Role == sa.Responder && datagramHash(pkt.Data) == p.lastRecvHash) {
		if s.rec.Role == sa.Responder {
			e.answerFromCache(o, p, pkt, s)
		} else {
			e.drop("phase 1 retransmission after completion", pkt, h)
		}
		return
	}
	if p.mode == isakmp.ExchangeMain {
		e.mainMode(now, o, s, pkt, h, body)
	} else {
		e.aggressiveMode(now, o, s, pkt, h, body)
	}
}

func (e *Engine) findResponderHalf(icookie [8]byte, remote netip.Addr) *ikeSA {
	if s := e.idx.halfByI[icookie]; s != nil && s.rec.Remote.Addr() == remote && s.p1 != nil {
		return s
	}
	return nil
}

// answerFromCache resends our last phase 1 message when the peer
// retransmits the request it answered.
func (e *Engine) answerFromCache(o *out, p *phase1, pkt Packet, s *ikeSA) {
	if p == nil || p.lastSent == nil || datagramHash(pkt.Data) != p.lastRecvHash {
		e.stats.Dropped++
		e.log.Debug("phase 1: unexpected message, dropped", "sa", s.String(), "remote", pkt.Remote.String())
		return
	}
	e.stats.AnsweredFromCache++
	e.stats.Sent++
	if p.unsaved {
		e.resavePhase1(o, s, p)
	}
	o.send(s.rec.Local, s.rec.Remote, p.lastSent)
}

func (e *Engine) drop(why string, pkt Packet, h isakmp.Header) {
	e.stats.Dropped++
	e.log.Debug("dropped", "why", why, "remote", pkt.Remote.String(), "exchange", h.Exchange.String(),
		"icookie", fmt.Sprintf("%x", h.ICookie), "rcookie", fmt.Sprintf("%x", h.RCookie), "msgid", h.MessageID)
}

func (e *Engine) malformed(why string, err error, pkt Packet) {
	e.stats.Malformed++
	e.log.Debug("malformed message dropped", "why", why, "remote", pkt.Remote.String(), "err", err)
}

// candidates returns the connections a message from remote may belong to.
func (e *Engine) candidates(remote netip.Addr, aggressive bool) []*config.Connection {
	var exact, wild []*config.Connection
	for _, c := range e.cfg.Connections {
		if aggressive && !c.Aggressive {
			continue
		}
		if !aggressive && c.Aggressive {
			continue
		}
		switch {
		case c.Remote.IsValid() && !c.Remote.IsUnspecified() && c.Remote.Unmap() == remote.Unmap():
			exact = append(exact, c)
		case !c.Remote.IsValid() || c.Remote.IsUnspecified():
			wild = append(wild, c)
		}
	}
	return append(exact, wild...)
}

// respondPhase1 handles the first message of a Main or Aggressive Mode.
func (e *Engine) respondPhase1(now time.Time, o *out, pkt Packet, h isakmp.Header, body []byte) {
	if !e.admitHalf(now, o, pkt.Remote.Addr()) {
		return
	}
	if h.Flags&isakmp.FlagEncryption != 0 {
		e.drop("encrypted first message", pkt, h)
		return
	}
	d, err := isakmp.DecodePayloads(h.NextPayload, body)
	if err != nil {
		e.malformed("phase 1 message 1", err, pkt)
		return
	}
	saP, saRaw, ok := first[*isakmp.SA](d)
	if !ok || len(saP.Proposals) == 0 || saP.DOI != isakmp.DOIIPsec {
		e.malformed("phase 1 message 1 without an IPsec DOI SA payload", nil, pkt)
		return
	}
	prop := saP.Proposals[0]
	if prop.Protocol != isakmp.ProtoISAKMP {
		e.malformed("phase 1 proposal is not for ISAKMP", nil, pkt)
		return
	}
	aggressive := h.Exchange == isakmp.ExchangeAggressive
	var idP *isakmp.ID
	if aggressive {
		idP, _, _ = first[*isakmp.ID](d)
		if idP == nil {
			e.malformed("aggressive mode message 1 without ID", nil, pkt)
			return
		}
	}
	var conn *config.Connection
	var chosen isakmp.Transform
	var attrs p1Attrs
	for _, c := range e.candidates(pkt.Remote.Addr(), aggressive) {
		if aggressive && !remoteIDAllowed(c, idP, pkt.Remote.Addr()) {
			continue
		}
		if t, a, ok := selectP1(c, prop.Transforms); ok {
			conn, chosen, attrs = c, t, a
			break
		}
	}
	if conn == nil {
		e.phase1Fail(FailNoProposal)
		if aggressive && len(e.candidates(pkt.Remote.Addr(), false)) > 0 && len(e.candidates(pkt.Remote.Addr(), true)) == 0 {
			e.limitedWarn(now, "no-aggressive", "phase 1 refused: aggressive mode is not enabled for this peer (PSK + aggressive mode exposes an offline-crackable hash)", "remote", pkt.Remote.String())
		} else if e.logLimit(now, "no-proposal") {
			e.log.Warn("phase 1 refused: no acceptable proposal", "remote", pkt.Remote.String(), "offered", describeP1Offer(prop.Transforms))
		}
		e.sendNotifyPlain(o, pkt, h, isakmp.NotifyNoProposalChosen)
		return
	}
	s := &ikeSA{conn: conn, xchg: map[uint32]*exchange{}}
	s.rec.Version = sa.RecordVersion
	s.rec.Cookies.I = h.ICookie
	copy(s.rec.Cookies.R[:], e.randBytes(8))
	s.rec.Role = sa.Responder
	s.rec.Connection = conn.Name
	s.rec.Local, s.rec.Remote = pkt.Local, pkt.Remote
	s.rec.Proposal = sa.IKEProposal{Encr: attrs.encr, KeyLen: attrs.keyLen, Hash: attrs.hash, Group: attrs.group, AuthMethod: attrs.auth,
		Lifetime: minLife(attrs.life, conn.IKELifetime)}
	if err := s.setSuite(); err != nil {
		e.log.Error("phase 1: negotiated suite unusable", "conn", conn.Name, "err", err)
		return
	}
	p := &phase1{mode: h.Exchange, psk: conn.PSK, started: now, saiB: saRaw[4:], chosen: chosen}
	p.peerNATT = hasVID(d.Payloads, vidNATT3947)
	p.peerDPD = hasVID(d.Payloads, vidDPD)
	s.p1 = p
	reply := []isakmp.Payload{&isakmp.SA{DOI: isakmp.DOIIPsec, Situation: saP.Situation,
		Proposals: []isakmp.Proposal{{Number: prop.Number, Protocol: isakmp.ProtoISAKMP, Transforms: []isakmp.Transform{chosen}}}}}
	if aggressive {
		ke, _, okKE := first[*isakmp.KE](d)
		nonce, _, okN := first[*isakmp.Nonce](d)
		if !okKE || !okN {
			e.malformed("aggressive mode message 1 without KE or nonce", nil, pkt)
			return
		}
		p.idPeerB = idBody(idP)
		s.rec.RemoteID = toSAIdentity(idP)
		if err := e.dhResponder(s, p, ke.Data, nonce.Data); err != nil {
			e.phase1Fail(FailKeyExchange)
			e.limitedWarn(now, "bad-key-exchange", "phase 1 refused: bad key exchange", "conn", conn.Name, "remote", pkt.Remote.String(), "err", err)
			return
		}
		id := localID(conn, pkt.Local.Addr())
		s.rec.LocalID = toSAIdentity(&id)
		hashR := ikecrypto.HashR(s.authPRF(), s.rec.SKEYID, p.gxr, p.gxi, s.rec.Cookies.R[:], s.rec.Cookies.I[:], p.saiB, idBody(&id))
		p.peerCR = len(all[*isakmp.CertRequest](d)) > 0
		auth, err := authPayloads(conn, p, &id, hashR) // ID, then HASH or [CERT] SIG
		if err != nil {
			e.log.Error("phase 1: cannot sign aggressive mode message 2", "conn", conn.Name, "err", err)
			return
		}
		reply = append(reply, &isakmp.KE{Data: p.gxr}, &isakmp.Nonce{Data: p.nr}, auth[0])
		reply = append(reply, certRequests(conn)...)
		reply = append(reply, e.natdPayloads(s, p, pkt.Local, pkt.Remote)...)
		reply = append(reply, auth[1:]...)
	}
	if p.peerNATT {
		reply = append(reply, &isakmp.VendorID{Data: vidNATT3947})
	}
	reply = append(reply, &isakmp.VendorID{Data: vidDPD})
	m := &isakmp.Message{Header: s.header(h.Exchange, 0), Payloads: reply}
	msg, err := m.Marshal()
	if err != nil {
		e.log.Error("phase 1: cannot encode reply", "conn", conn.Name, "err", err)
		return
	}
	p.step = 2
	p.lastSent, p.lastRecvHash = msg, datagramHash(pkt.Data)
	e.countHalf(s, pkt.Remote.Addr())
	e.putIKE(s)
	o.send(pkt.Local, pkt.Remote, msg)
	e.stats.Sent++
	o.arm(Timer{Kind: TimerHalfOpen, IKE: s.rec.Cookies}, now.Add(e.cfg.HalfOpenTimeout))
	e.log.Debug("phase 1 request accepted", "conn", conn.Name, "mode", h.Exchange.String(), "remote", pkt.Remote.String(), "proposal", describeP1(attrs))
}

func minLife(peer uint32, ours time.Duration) uint32 {
	o := uint32(ours / time.Second)
	if ours <= 0 {
		o = 28800
	}
	if peer == 0 || peer > o {
		return o
	}
	return peer
}

// dhResponder runs our half of the DH exchange as responder and derives
// every phase 1 key.
func (e *Engine) dhResponder(s *ikeSA, p *phase1, gxi, ni []byte) error {
	g, err := ikecrypto.GroupByID(s.rec.Proposal.Group)
	if err != nil {
		return err
	}
	priv, pub, err := g.GenerateKey(e.rand)
	if err != nil {
		return err
	}
	gxy, err := g.Shared(priv, gxi)
	if err != nil {
		return err
	}
	p.group, p.dhPriv, p.gxi, p.gxr, p.gxy = g, priv, slices.Clone(gxi), pub, gxy
	p.ni, p.nr = slices.Clone(ni), e.randBytes(nonceLen)
	deriveKeys(s, p)
	return nil
}

// deriveKeys computes SKEYID.., the encryption key and the phase 1 IV.
func deriveKeys(s *ikeSA, p *phase1) {
	if usesSig(s.conn) {
		s.rec.SKEYID = ikecrypto.SKEYIDSig(s.prf, p.ni, p.nr, p.gxy)
	} else {
		s.rec.SKEYID = ikecrypto.SKEYIDPSK(s.prf, p.psk, p.ni, p.nr)
	}
	s.rec.SKEYIDd, s.rec.SKEYIDa, s.rec.SKEYIDe = ikecrypto.DeriveSKEYIDs(s.prf, s.rec.SKEYID, p.gxy, s.rec.Cookies.I[:], s.rec.Cookies.R[:])
	s.rec.EncKey = ikecrypto.ExpandKey(s.prf, s.rec.SKEYIDe, s.cipher.KeyLen())
	p.iv = ikecrypto.Phase1IV(s.prf, p.gxi, p.gxr, s.cipher.BlockSize())
}

// mainMode handles Main Mode messages 2..6.
func (e *Engine) mainMode(now time.Time, o *out, s *ikeSA, pkt Packet, h isakmp.Header, body []byte) {
	p := s.p1
	initiator := s.rec.Role == sa.Initiator
	switch {
	case initiator && p.step == 1: // message 2
		if _, ok := e.phase1Reply(o, s, pkt, h, body); !ok {
			return
		}
		e.adoptResponderCookie(o, s, h, pkt)
		g, err := ikecrypto.GroupByID(s.rec.Proposal.Group)
		if err != nil {
			e.log.Error("phase 1: group", "sa", s.String(), "err", err)
			return
		}
		priv, pub, err := g.GenerateKey(e.rand)
		if err != nil {
			e.log.Error("phase 1: DH key generation failed", "sa", s.String(), "err", err)
			return
		}
		p.group, p.dhPriv, p.gxi = g, priv, pub
		p.ni = e.randBytes(nonceLen)
		ps := []isakmp.Payload{&isakmp.KE{Data: pub}, &isakmp.Nonce{Data: p.ni}}
		ps = append(ps, certRequests(s.conn)...)
		ps = append(ps, e.natdPayloads(s, p, pkt.Local, pkt.Remote)...)
		e.sendP1Request(now, o, s, ps, 3, false)

	case initiator && p.step == 3: // message 4
		d, err := isakmp.DecodePayloads(h.NextPayload, body)
		if err != nil {
			e.malformed("main mode message 4", err, pkt)
			return
		}
		ke, _, okKE := first[*isakmp.KE](d)
		nonce, _, okN := first[*isakmp.Nonce](d)
		if !okKE || !okN {
			e.malformed("main mode message 4 without KE or nonce", nil, pkt)
			return
		}
		gxy, err := p.group.Shared(p.dhPriv, ke.Data)
		if err != nil {
			e.log.Warn("phase 1 failed: bad key exchange from the peer", "sa", s.String(), "err", err)
			return
		}
		p.gxr, p.gxy, p.nr = slices.Clone(ke.Data), gxy, slices.Clone(nonce.Data)
		deriveKeys(s, p)
		if p.peerNATT {
			s.detectNAT(all[*isakmp.NATD](d), pkt.Local, pkt.Remote)
			if s.natDetected() {
				s.float()
			}
		}
		p.peerCR = len(all[*isakmp.CertRequest](d)) > 0
		id := localID(s.conn, s.rec.Local.Addr())
		s.rec.LocalID = toSAIdentity(&id)
		hashI := ikecrypto.HashI(s.authPRF(), s.rec.SKEYID, p.gxi, p.gxr, s.rec.Cookies.I[:], s.rec.Cookies.R[:], p.saiB, idBody(&id))
		ps, err := authPayloads(s.conn, p, &id, hashI)
		if err != nil {
			e.log.Error("phase 1: cannot sign message 5", "sa", s.String(), "err", err)
			return
		}
		e.sendP1Request(now, o, s, ps, 5, true)

	case initiator && p.step == 5: // message 6
		d, iv, err := s.decrypt(h, body, p.iv)
		if err != nil {
			e.phase1AuthFailed(o, s, pkt, "message 6 does not decrypt", err)
			return
		}
		id, _, okID := first[*isakmp.ID](d)
		if !okID {
			e.phase1AuthFailed(o, s, pkt, "message 6 lacks ID", nil)
			return
		}
		want := ikecrypto.HashR(s.authPRF(), s.rec.SKEYID, p.gxr, p.gxi, s.rec.Cookies.R[:], s.rec.Cookies.I[:], p.saiB, idBody(id))
		if usesSig(s.conn) {
			if !e.sigAuthOK(now, o, s, pkt, d, id, want, iv, true) {
				return
			}
		} else if hp, _, okH := first[*isakmp.Hash](d); !okH || !ikecrypto.Equal(want, hp.Data) {
			e.phase1AuthFailed(o, s, pkt, "HASH_R missing or does not verify", nil)
			return
		}
		if err := remoteIDMismatch(s.conn, id, s.rec.Remote.Addr()); err != nil {
			e.refusePhase1(o, s, pkt, iv, true)
			e.phase1AuthFailed(o, s, pkt, fmt.Sprintf("peer identity %s is not the one configured", id), err)
			return
		}
		s.rec.RemoteID = toSAIdentity(id)
		s.rec.IVBase = iv
		e.established(now, o, s, nil)

	case !initiator && p.step == 2: // message 3
		if h.Flags&isakmp.FlagEncryption != 0 {
			e.drop("main mode message 3 encrypted", pkt, h)
			return
		}
		d, err := isakmp.DecodePayloads(h.NextPayload, body)
		if err != nil {
			e.malformed("main mode message 3", err, pkt)
			return
		}
		ke, _, okKE := first[*isakmp.KE](d)
		nonce, _, okN := first[*isakmp.Nonce](d)
		if !okKE || !okN {
			e.malformed("main mode message 3 without KE or nonce", nil, pkt)
			return
		}
		if err := e.dhResponder(s, p, ke.Data, nonce.Data); err != nil {
			e.log.Warn("phase 1 failed: bad key exchange from the peer", "sa", s.String(), "err", err)
			return
		}
		if p.peerNATT {
			s.detectNAT(all[*isakmp.NATD](d), pkt.Local, pkt.Remote)
		}
		p.peerCR = len(all[*isakmp.CertRequest](d)) > 0
		ps := []isakmp.Payload{&isakmp.KE{Data: p.gxr}, &isakmp.Nonce{Data: p.nr}}
		ps = append(ps, certRequests(s.conn)...)
		ps = append(ps, e.natdPayloads(s, p, pkt.Local, pkt.Remote)...)
		m := &isakmp.Message{Header: s.header(isakmp.ExchangeMain, 0), Payloads: ps}
		msg, err := m.Marshal()
		if err != nil {
			e.log.Error("phase 1: cannot encode message 4", "sa", s.String(), "err", err)
			return
		}
		p.step = 4
		p.lastSent, p.lastRecvHash = msg, datagramHash(pkt.Data)
		o.send(pkt.Local, pkt.Remote, msg)
		e.stats.Sent++

	case !initiator && p.step == 4: // message 5
		d, iv, err := s.decrypt(h, body, p.iv)
		if err != nil {
			e.phase1AuthFailed(o, s, pkt, "message 5 does not decrypt (wrong pre-shared key?)", err)
			return
		}
		// An initiator may ask for our certificate only now (strongSwan
		// sends its CR with message 5, not 3).
		p.peerCR = p.peerCR || len(all[*isakmp.CertRequest](d)) > 0
		id, idRaw, okID := first[*isakmp.ID](d)
		if !okID {
			e.phase1AuthFailed(o, s, pkt, "message 5 lacks ID (wrong pre-shared key?)", nil)
			return
		}
		want := ikecrypto.HashI(s.authPRF(), s.rec.SKEYID, p.gxi, p.gxr, s.rec.Cookies.I[:], s.rec.Cookies.R[:], p.saiB, idRaw[4:])
		if usesSig(s.conn) {
			if !e.sigAuthOK(now, o, s, pkt, d, id, want, iv, false) {
				return
			}
		} else if hp, _, okH := first[*isakmp.Hash](d); !okH || !ikecrypto.Equal(want, hp.Data) {
			e.phase1AuthFailed(o, s, pkt, "HASH_I missing or does not verify (wrong pre-shared key?)", nil)
			return
		}
		if err := remoteIDMismatch(s.conn, id, pkt.Remote.Addr()); err != nil {
			e.refusePhase1(o, s, pkt, iv, false)
			e.phase1AuthFailed(o, s, pkt, fmt.Sprintf("peer identity %s is not the one configured", id), err)
			return
		}
		s.rec.RemoteID = toSAIdentity(id)
		s.rec.Local, s.rec.Remote = pkt.Local, pkt.Remote
		s.rec.Floated = pkt.Local.Port() == portNATT
		p.iv = iv
		myID := localID(s.conn, pkt.Local.Addr())
		s.rec.LocalID = toSAIdentity(&myID)
		hashR := ikecrypto.HashR(s.authPRF(), s.rec.SKEYID, p.gxr, p.gxi, s.rec.Cookies.R[:], s.rec.Cookies.I[:], p.saiB, idBody(&myID))
		ps6, err := authPayloads(s.conn, p, &myID, hashR)
		if err != nil {
			e.log.Error("phase 1: cannot sign message 6", "sa", s.String(), "err", err)
			return
		}
		msg, iv6, err := s.encrypt(s.header(isakmp.ExchangeMain, 0), ps6, p.iv)
		if err != nil {
			e.log.Error("phase 1: cannot encrypt message 6", "sa", s.String(), "err", err)
			return
		}
		p.step = 6
		p.lastSent, p.lastRecvHash = msg, datagramHash(pkt.Data)
		s.rec.IVBase = iv6
		// Replicate message 6 with the hash of the message 5 it answers:
		// if it is lost and this node dies, the new active answers the
		// peer's retransmitted message 5 from this cache (the peer would
		// otherwise never complete phase 1 while we hold the SA).
		s.rec.Exchanges = append(slices.Clone(s.rec.Exchanges), sa.Exchange{Type: uint8(isakmp.ExchangeMain),
			LastReply: msg, LastRequestHash: p.lastRecvHash[:]})
		initialContact := false
		for _, n := range all[*isakmp.Notify](d) {
			if n.NotifyType == isakmp.NotifyInitialContact {
				initialContact = true
			}
		}
		e.established(now, o, s, msg)
		if initialContact {
			e.initialContact(now, o, s)
		}
	default:
		e.drop(fmt.Sprintf("main mode message out of order (step %d)", p.step), pkt, h)
	}
}

// adoptResponderCookie completes an initiator's SA with the responder's
// cookie from message 2: re-indexed under the full pair, its timers moved
// to the new key, and our local address as the reply arrived.
func (e *Engine) adoptResponderCookie(o *out, s *ikeSA, h isakmp.Header, pkt Packet) {
	oldKey := s.rec.Cookies
	e.dropIKE(s)
	s.rec.Cookies.R = h.RCookie
	e.putIKE(s)
	o.stop(Timer{Kind: TimerRetransmit, IKE: oldKey})
	o.stop(Timer{Kind: TimerHalfOpen, IKE: oldKey})
	o.arm(Timer{Kind: TimerHalfOpen, IKE: s.rec.Cookies}, s.p1.started.Add(e.cfg.HalfOpenTimeout))
	s.rec.Local = pkt.Local
}

// float moves an initiator's IKE traffic to port 4500 (RFC 3947 §4).
func (s *ikeSA) float() {
	if s.rec.Local.Port() == portNATT {
		s.rec.Floated = true
		return
	}
	s.rec.Local = netip.AddrPortFrom(s.rec.Local.Addr(), portNATT)
	s.rec.Remote = netip.AddrPortFrom(s.rec.Remote.Addr(), portNATT)
	s.rec.Floated = true
}

// phase1Reply decodes the responder's message 2 (Main or Aggressive Mode),
// gives up on an error notify, and checks the SA the responder chose.
func (e *Engine) phase1Reply(o *out, s *ikeSA, pkt Packet, h isakmp.Header, body []byte) (isakmp.Decoded, bool) {
	d, err := isakmp.DecodePayloads(h.NextPayload, body)
	if err != nil {
		e.malformed(h.Exchange.String()+" mode message 2", err, pkt)
		return d, false
	}
	if n, _, ok := first[*isakmp.Notify](d); ok && n.NotifyType.IsError() {
		e.phase1Refused(o, s, n.NotifyType)
		return d, false
	}
	return d, e.acceptP1Reply(s, d, pkt)
}

// acceptP1Reply checks the responder's SA choice in message 2 and records
// the negotiated suite.
func (e *Engine) acceptP1Reply(s *ikeSA, d isakmp.Decoded, pkt Packet) bool {
	p := s.p1
	saP, _, ok := first[*isakmp.SA](d)
	if !ok || len(saP.Proposals) != 1 || len(saP.Proposals[0].Transforms) != 1 {
		e.malformed("phase 1 reply must carry one proposal with one transform", nil, pkt)
		return false
	}
	t := saP.Proposals[0].Transforms[0]
	a, err := parseP1Transform(t)
	if err != nil {
		e.malformed("phase 1 reply transform", err, pkt)
		return false
	}
	var match *config.IKEProposal
	for i := range s.conn.Proposals {
		if a.matches(s.conn.Proposals[i], authMethod(s.conn)) {
			match = &s.conn.Proposals[i]
			break
		}
	}
	if match == nil {
		e.log.Warn("phase 1 failed: the peer chose a transform we did not offer", "sa", s.String(), "chosen", describeP1(a))
		return false
	}
	s.rec.Proposal = sa.IKEProposal{Encr: a.encr, KeyLen: a.keyLen, Hash: a.hash, Group: a.group, AuthMethod: a.auth,
		Lifetime: minLife(a.life, s.conn.IKELifetime)}
	if err := s.setSuite(); err != nil {
		e.log.Error("phase 1: negotiated suite unusable", "sa", s.String(), "err", err)
		return false
	}
	p.chosen = t
	p.peerNATT = hasVID(d.Payloads, vidNATT3947)
	p.peerDPD = hasVID(d.Payloads, vidDPD)
	return true
}

// sendP1Request sends the initiator's next phase 1 message and arms its
// retransmission.
func (e *Engine) sendP1Request(now time.Time, o *out, s *ikeSA, ps []isakmp.Payload, step int, encrypt bool) {
	p := s.p1
	var msg []byte
	var err error
	h := s.header(p.mode, 0)
	if encrypt {
		msg, p.iv, err = s.encrypt(h, ps, p.iv)
	} else {
		m := &isakmp.Message{Header: h, Payloads: ps}
		msg, err = m.Marshal()
	}
	if err != nil {
		e.log.Error("phase 1: cannot encode message", "sa", s.String(), "step", step, "err", err)
		return
	}
	p.step = step
	p.lastSent = msg
	p.retries = 0
	o.send(s.rec.Local, s.rec.Remote, msg)
	e.stats.Sent++
	o.arm(Timer{Kind: TimerRetransmit, IKE: s.rec.Cookies}, now.Add(e.retransmitDelay(s.conn, 0)))
}

func (e *Engine) phase1Refused(o *out, s *ikeSA, n isakmp.NotifyType) {
	e.phase1Fail(FailPeerRefused)
	e.log.Warn("phase 1 refused by the peer", "sa", s.String(), "notify", n.String())
	e.removeIKE(o, s)
}

func (e *Engine) phase1AuthFailed(o *out, s *ikeSA, pkt Packet, why string, err error) {
	e.phase1Fail(FailAuth)
	args := []any{"sa", s.String(), "remote", pkt.Remote.String(), "reason", why}
	if err != nil {
		args = append(args, "err", err)
	}
	e.log.Warn("phase 1 authentication failed", args...)
	e.removeIKE(o, s)
}

// removeIKE forgets an ISAKMP SA that never became established (nothing
// was persisted for it) or that was deleted.
func (e *Engine) removeIKE(o *out, s *ikeSA) {
	e.dropIKE(s)
	e.releaseHalf(s)
	for _, k := range []TimerKind{TimerRetransmit, TimerHalfOpen, TimerDPD, TimerIKERekey, TimerIKEExpire, TimerKeepalive, TimerDeleteFlush} {
		o.stop(Timer{Kind: k, IKE: s.rec.Cookies})
	}
	for id := range s.xchg {
		o.stop(Timer{Kind: TimerRetransmit, IKE: s.rec.Cookies, MsgID: id})
		o.stop(Timer{Kind: TimerExchange, IKE: s.rec.Cookies, MsgID: id})
	}
}

// established completes phase 1: persist, then send the last message (if
// any), then arm the SA's timers.
func (e *Engine) established(now time.Time, o *out, s *ikeSA, lastMsg []byte) {
	p := s.p1
	s.rec.State = sa.IKEEstablished
	s.rec.Established = now.UnixNano()
	life := time.Duration(s.rec.Proposal.Lifetime) * time.Second
	s.rec.ExpireAt = now.Add(life).UnixNano()
	if s.rec.Role == sa.Initiator {
		s.rec.RekeyAt = now.Add(reauthTime(s.conn, life)).UnixNano()
	}
	s.rec.NATT = p.peerNATT
	s.rec.DPD = p.peerDPD
	s.rec.Floated = s.rec.Local.Port() == portNATT
	s.lastHeard = now
	o.persistIKE(&s.rec)
	if lastMsg != nil {
		o.send(s.rec.Local, s.rec.Remote, lastMsg)
		e.stats.Sent++
	}
	e.releaseHalf(s)
	p.done = true
	// Keys no longer needed once established.
	p.dhPriv, p.gxy, p.psk = nil, nil, nil
	o.stop(Timer{Kind: TimerRetransmit, IKE: s.rec.Cookies})
	o.stop(Timer{Kind: TimerHalfOpen, IKE: s.rec.Cookies})
	e.armIKETimers(now, o, s)
	e.stats.Phase1Done++
	e.log.Info("IKE SA established", "conn", s.rec.Connection, "role", s.rec.Role.String(), "mode", p.mode.String(),
		"local", s.rec.Local.String(), "remote", s.rec.Remote.String(), "cookies", s.rec.Cookies.String(),
		"proposal", describeSA(s.rec.Proposal), "nat_local", s.rec.NATLocal, "nat_remote", s.rec.NATRemote)
	if old := s.rec.ReauthOf; old != nil {
		e.finishReauth(now, o, s, *old)
	}
	for _, spi := range p.pendingRekeys {
		if c := e.children[spi]; c != nil {
			if cc := e.childConfig(c); cc != nil {
				e.startQuick(now, o, s, cc, spi, tsPair{})
			}
		}
	}
	if s.rec.Role == sa.Initiator && s.conn != nil {
		e.startChildren(now, o, s)
	}
}

func reauthTime(c *config.Connection, life time.Duration) time.Duration {
	if c != nil && c.ReauthTime > 0 && c.ReauthTime < life {
		return c.ReauthTime
	}
	// Reauthenticate at 90% of the lifetime.
	return life * 9 / 10
}

func (e *Engine) armIKETimers(now time.Time, o *out, s *ikeSA) {
	if s.rec.ExpireAt != 0 {
		o.arm(Timer{Kind: TimerIKEExpire, IKE: s.rec.Cookies}, time.Unix(0, s.rec.ExpireAt))
	}
	if s.rec.RekeyAt != 0 {
		o.arm(Timer{Kind: TimerIKERekey, IKE: s.rec.Cookies}, time.Unix(0, s.rec.RekeyAt))
	}
	if s.rec.DPD && s.conn != nil && s.conn.DPDDelay > 0 {
		o.arm(Timer{Kind: TimerDPD, IKE: s.rec.Cookies}, now.Add(s.conn.DPDDelay))
	}
	if s.rec.NATLocal {
		o.arm(Timer{Kind: TimerKeepalive, IKE: s.rec.Cookies}, now.Add(e.cfg.KeepaliveInterval))
	}
}

// aggressiveMode handles Aggressive Mode messages 2 and 3.
func (e *Engine) aggressiveMode(now time.Time, o *out, s *ikeSA, pkt Packet, h isakmp.Header, body []byte) {
	p := s.p1
	initiator := s.rec.Role == sa.Initiator
	switch {
	case initiator && p.step == 1: // message 2
		d, ok := e.phase1Reply(o, s, pkt, h, body)
		if !ok {
			return
		}
		ke, _, okKE := first[*isakmp.KE](d)
		nonce, _, okN := first[*isakmp.Nonce](d)
		id, idRaw, okID := first[*isakmp.ID](d)
		hp, _, okH := first[*isakmp.Hash](d)
		if !okKE || !okN || !okID || (!okH && !usesSig(s.conn)) {
			e.malformed("aggressive mode message 2 incomplete", nil, pkt)
			return
		}
		if s.rec.Proposal.Group != p.group.ID() {
			e.log.Warn("phase 1 failed: the peer chose another DH group than our KE", "sa", s.String())
			return
		}
		e.adoptResponderCookie(o, s, h, pkt)
		gxy, err := p.group.Shared(p.dhPriv, ke.Data)
		if err != nil {
			e.phase1AuthFailed(o, s, pkt, "bad key exchange from the peer", err)
			return
		}
		p.gxr, p.gxy, p.nr = slices.Clone(ke.Data), gxy, slices.Clone(nonce.Data)
		deriveKeys(s, p)
		want := ikecrypto.HashR(s.authPRF(), s.rec.SKEYID, p.gxr, p.gxi, s.rec.Cookies.R[:], s.rec.Cookies.I[:], p.saiB, idRaw[4:])
		if usesSig(s.conn) {
			if !e.sigAuthOK(now, o, s, pkt, d, id, want, nil, false) {
				return
			}
			p.peerCR = len(all[*isakmp.CertRequest](d)) > 0
		} else if !ikecrypto.Equal(want, hp.Data) {
			e.phase1AuthFailed(o, s, pkt, "HASH_R does not verify (wrong pre-shared key?)", nil)
			return
		}
		if err := remoteIDMismatch(s.conn, id, pkt.Remote.Addr()); err != nil {
			e.phase1AuthFailed(o, s, pkt, fmt.Sprintf("peer identity %s is not the one configured", id), err)
			return
		}
		s.rec.RemoteID = toSAIdentity(id)
		natds := e.natdPayloads(s, p, pkt.Local, pkt.Remote)
		if p.peerNATT {
			s.detectNAT(all[*isakmp.NATD](d), pkt.Local, pkt.Remote)
			if s.natDetected() {
				s.float()
			}
		}
		myID := localID(s.conn, s.rec.Local.Addr())
		s.rec.LocalID = toSAIdentity(&myID)
		hashI := ikecrypto.HashI(s.authPRF(), s.rec.SKEYID, p.gxi, p.gxr, s.rec.Cookies.I[:], s.rec.Cookies.R[:], p.saiB, idBody(&myID))
		auth, err := authPayloads(s.conn, p, &myID, hashI) // ID (not sent again), then HASH or [CERT] SIG
		if err != nil {
			e.log.Error("phase 1: cannot sign aggressive mode message 3", "sa", s.String(), "err", err)
			return
		}
		ps := append(auth[1:], natds...)
		msg, iv, err := s.encrypt(s.header(isakmp.ExchangeAggressive, 0), ps, p.iv)
		if err != nil {
			e.log.Error("phase 1: cannot encrypt message 3", "sa", s.String(), "err", err)
			return
		}
		p.step = 3
		p.lastSent = msg
		s.rec.IVBase = iv
		e.established(now, o, s, msg)

	case !initiator && p.step == 2: // message 3
		var d isakmp.Decoded
		var err error
		iv := p.iv
		if h.Flags&isakmp.FlagEncryption != 0 {
			d, iv, err = s.decrypt(h, body, p.iv)
		} else {
			d, err = isakmp.DecodePayloads(h.NextPayload, body)
		}
		if err != nil {
			e.phase1AuthFailed(o, s, pkt, "message 3 does not decrypt (wrong pre-shared key?)", err)
			return
		}
		want := ikecrypto.HashI(s.authPRF(), s.rec.SKEYID, p.gxi, p.gxr, s.rec.Cookies.I[:], s.rec.Cookies.R[:], p.saiB, p.idPeerB)
		if usesSig(s.conn) {
			r := s.rec.RemoteID
			peerID := &isakmp.ID{IDType: isakmp.IDType(r.Type), Protocol: r.Protocol, Port: r.Port, Data: r.Data}
			// A notify, not a DELETE, on a refusal, although the initiator
			// believes phase 1 done: strongSwan answers a DELETE here by
			// initiating again at once, forever.
			if !e.sigAuthOK(now, o, s, pkt, d, peerID, want, iv, false) {
				return
			}
		} else if hp, _, okH := first[*isakmp.Hash](d); !okH {
			e.phase1AuthFailed(o, s, pkt, "message 3 lacks HASH", nil)
			return
		} else if !ikecrypto.Equal(want, hp.Data) {
			e.phase1AuthFailed(o, s, pkt, "HASH_I does not verify (wrong pre-shared key?)", nil)
			return
		}
		if p.peerNATT {
			s.detectNAT(all[*isakmp.NATD](d), pkt.Local, pkt.Remote)
		}
		s.rec.Local, s.rec.Remote = pkt.Local, pkt.Remote
		p.step = 3
		p.lastRecvHash = datagramHash(pkt.Data)
		s.rec.IVBase = iv
		e.established(now, o, s, nil)
	default:
		e.drop(fmt.Sprintf("aggressive mode message out of order (step %d)", p.step), pkt, h)
	}
}

// sendNotifyPlain answers a phase 1 request with an unencrypted
// informational notify (e.g. NO-PROPOSAL-CHOSEN).
func (e *Engine) sendNotifyPlain(o *out, pkt Packet, h isakmp.Header, t isakmp.NotifyType) {
	m := &isakmp.Message{
		Header: isakmp.Header{ICookie: h.ICookie, RCookie: h.RCookie, Version: isakmp.Version1, Exchange: isakmp.ExchangeInfo},
		Payloads: []isakmp.Payload{&isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP, NotifyType: t,
			SPI: append(h.ICookie[:], h.RCookie[:]...)}},
	}
	msg, err := m.Marshal()
	if err != nil {
		return
	}
	o.send(pkt.Local, pkt.Remote, msg)
	e.stats.Sent++
}

func describeP1(a p1Attrs) string {
	return describeSA(sa.IKEProposal{Encr: a.encr, KeyLen: a.keyLen, Hash: a.hash, Group: a.group, AuthMethod: a.auth, Lifetime: a.life})
}

func describeP1Offer(ts []isakmp.Transform) []string {
	var out []string
	for _, t := range ts {
		a, err := parseP1Transform(t)
		if err != nil {
			out = append(out, "unparsable")
			continue
		}
		out = append(out, describeP1(a))
	}
	return out
}

// describeSA spells a phase 1 proposal the strongSwan way.
func describeSA(p sa.IKEProposal) string {
	enc := map[uint16]string{isakmp.EncAESCBC: "aes", isakmp.Enc3DESCBC: "3des", isakmp.EncDESCBC: "des"}[p.Encr]
	if enc == "" {
		enc = fmt.Sprintf("encr%d", p.Encr)
	}
	if p.Encr == isakmp.EncAESCBC {
		enc = fmt.Sprintf("aes%d", p.KeyLen)
	}
	hash := map[uint16]string{isakmp.HashSHA1: "sha1", isakmp.HashSHA256: "sha256", isakmp.HashSHA384: "sha384", isakmp.HashSHA512: "sha512", isakmp.HashMD5: "md5"}[p.Hash]
	if hash == "" {
		hash = fmt.Sprintf("hash%d", p.Hash)
	}
	return fmt.Sprintf("%s-%s-%s", enc, hash, ikecrypto.GroupName(p.Group))
}
