package ikev1

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
	"ikegw/ike/sa"
)

// exchange is a Quick Mode (or, briefly, informational) exchange in
// progress on an ISAKMP SA.
type exchange struct {
	msgID uint32
	kind  isakmp.ExchangeType
	role  sa.Role
	step  int
	iv    []byte

	child    *config.Child
	ni, nr   []byte
	group    ikecrypto.Group
	dhPriv   []byte
	gxi, gxr []byte
	ourSPI   uint32
	offer    []isakmp.Transform
	idci     *isakmp.ID
	idcr     *isakmp.ID
	localTS  sa.TrafficSelector
	remoteTS sa.TrafficSelector
	rekeyOf  uint32

	lastSent     []byte
	lastRecvHash [32]byte
	retries      int
	started      time.Time
	restored     bool // rebuilt from a replicated record; only HASH(3) is expected
	// unsaved: the commit guarding lastSent failed (PersistFailed); it is
	// resent only behind a new Persist.
	unsaved bool
	// replaced is the inbound SPI of the pair a responder's new pair
	// replaced (a rekey), 0 if none.
	replaced uint32
}

// p2Attrs is an ESP transform's attributes, decoded.
type p2Attrs struct {
	tid                        uint8
	keyLen, auth, group, encap uint16
	lifeSecs                   uint32
	lifeKB                     uint64
}

func parseP2Transform(t isakmp.Transform) (p2Attrs, error) {
	a := p2Attrs{tid: t.ID}
	lifeType := isakmp.LifeSeconds
	for _, at := range t.Attributes {
		v, ok := at.Uint()
		if !ok {
			return a, fmt.Errorf("transform %d: attribute %d has no usable value", t.Number, at.Type)
		}
		switch at.Type {
		case isakmp.AttrSALifeType:
			lifeType = uint16(v)
		case isakmp.AttrSALifeDuration:
			switch lifeType {
			case isakmp.LifeSeconds:
				a.lifeSecs = uint32(min(v, 0xffffffff))
			case isakmp.LifeKilobytes:
				a.lifeKB = v
			}
		case isakmp.AttrSAGroupDescription:
			a.group = uint16(v)
		case isakmp.AttrEncapsulationMode:
			a.encap = uint16(v)
		case isakmp.AttrAuthAlgorithm:
			a.auth = uint16(v)
		case isakmp.AttrSAKeyLength:
			a.keyLen = uint16(v)
		default:
			return a, fmt.Errorf("transform %d: unsupported attribute type %d", t.Number, at.Type)
		}
	}
	if a.tid == isakmp.ESPAESCBC && a.keyLen == 0 {
		a.keyLen = 128
	}
	return a, nil
}

func (a p2Attrs) matches(p config.ESPProposal, pfs uint16) bool {
	return a.tid == p.TransformID && a.keyLen == p.KeyLen && a.auth == p.AuthAlg && a.group == pfs
}

func (a p2Attrs) udpEncap() bool {
	switch a.encap {
	case isakmp.EncapUDPTunnel, isakmp.EncapUDPTransport, isakmp.EncapUDPTunnelDraft, isakmp.EncapUDPTransportDraft:
		return true
	}
	return false
}

func (a p2Attrs) mode() sa.Mode {
	switch a.encap {
	case isakmp.EncapTransport, isakmp.EncapUDPTransport, isakmp.EncapUDPTransportDraft:
		return sa.Transport
	}
	return sa.Tunnel
}

// pfsGroup is the PFS group of a child: that of its first ESP proposal
// (IKEv1 carries one KE, so all proposals share it).
func pfsGroup(c *config.Child) uint16 {
	if len(c.ESPProposals) == 0 {
		return 0
	}
	return c.ESPProposals[0].PFSGroup
}

func encapMode(s *ikeSA, m sa.Mode) uint16 {
	nat := (s.natDetected() || (s.conn != nil && s.conn.ForceEncap)) && s.rec.NATT
	switch {
	case m == sa.Transport && nat:
		return isakmp.EncapUDPTransport
	case m == sa.Transport:
		return isakmp.EncapTransport
	case nat:
		return isakmp.EncapUDPTunnel
	}
	return isakmp.EncapTunnel
}

// p2Offer builds our ESP transforms for a child.
func p2Offer(s *ikeSA, c *config.Child) []isakmp.Transform {
	var ts []isakmp.Transform
	pfs := pfsGroup(c)
	life := uint32(c.LifeTime / time.Second)
	if life == 0 {
		life = 3600
	}
	for i, p := range c.ESPProposals {
		attrs := []isakmp.Attribute{
			basic(isakmp.AttrSALifeType, isakmp.LifeSeconds),
			lifeAttr(isakmp.AttrSALifeDuration, life),
		}
		if c.LifeBytes > 0 {
			kb := c.LifeBytes / 1024
			attrs = append(attrs, basic(isakmp.AttrSALifeType, isakmp.LifeKilobytes), lifeAttr(isakmp.AttrSALifeDuration, uint32(min(kb, 0xffffffff))))
		}
		if pfs != 0 {
			attrs = append(attrs, basic(isakmp.AttrSAGroupDescription, pfs))
		}
		attrs = append(attrs, basic(isakmp.AttrEncapsulationMode, encapMode(s, c.Mode)))
		if p.AuthAlg != 0 {
			attrs = append(attrs, basic(isakmp.AttrAuthAlgorithm, p.AuthAlg))
		}
		if p.KeyLen != 0 {
			attrs = append(attrs, basic(isakmp.AttrSAKeyLength, p.KeyLen))
		}
		ts = append(ts, isakmp.Transform{Number: uint8(i + 1), ID: p.TransformID, Attributes: attrs})
	}
	return ts
}

// espAlgs maps negotiated ESP attributes to data plane algorithm names and
// key lengths (bytes).
func espAlgs(a p2Attrs) (encr string, encLen int, integ string, intLen int, trunc uint16, err error) {
	switch a.tid {
	case isakmp.ESPAESCBC:
		encr, encLen = sa.EncrAESCBC, int(a.keyLen)/8
	case isakmp.ESPAESGCM16:
		encr, encLen, trunc = sa.EncrAESGCM, int(a.keyLen)/8+4, 128
	case isakmp.ESP3DES:
		encr, encLen = sa.Encr3DES, 24
	default:
		return "", 0, "", 0, 0, fmt.Errorf("ESP transform %d not supported", a.tid)
	}
	if a.tid == isakmp.ESPAESCBC && a.keyLen != 128 && a.keyLen != 192 && a.keyLen != 256 {
		return "", 0, "", 0, 0, fmt.Errorf("AES key length %d not supported", a.keyLen)
	}
	if a.tid == isakmp.ESPAESGCM16 && a.keyLen != 128 && a.keyLen != 256 {
		return "", 0, "", 0, 0, fmt.Errorf("AES-GCM key length %d not supported", a.keyLen)
	}
	switch a.auth {
	case 0:
		if a.tid != isakmp.ESPAESGCM16 {
			return "", 0, "", 0, 0, fmt.Errorf("ESP without integrity is not supported")
		}
	case isakmp.AuthAlgHMACSHA1:
		integ, intLen, trunc = sa.IntegSHA1, 20, 96
	case isakmp.AuthAlgHMACSHA256:
		integ, intLen, trunc = sa.IntegSHA256, 32, 128
	case isakmp.AuthAlgHMACSHA384:
		integ, intLen, trunc = sa.IntegSHA384, 48, 192
	case isakmp.AuthAlgHMACSHA512:
		integ, intLen, trunc = sa.IntegSHA512, 64, 256
	default:
		return "", 0, "", 0, 0, fmt.Errorf("ESP authentication algorithm %d not supported", a.auth)
	}
	if a.tid == isakmp.ESPAESGCM16 && a.auth != 0 {
		return "", 0, "", 0, 0, fmt.Errorf("AES-GCM with a separate integrity algorithm is not supported")
	}
	return
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func (e *Engine) newSPI() uint32 {
	for {
		spi := e.randUint32()
		if spi < 0x100 {
			continue
		}
		if _, used := e.children[spi]; used {
			continue
		}
		return spi
	}
}

func (e *Engine) newMsgID(s *ikeSA) uint32 {
	for {
		id := e.randUint32()
		if id == 0 {
			continue
		}
		if _, used := s.xchg[id]; used {
			continue
		}
		return id
	}
}

func tsFromID(id *isakmp.ID) (sa.TrafficSelector, error) {
	p, err := id.Prefix()
	if err != nil {
		return sa.TrafficSelector{}, err
	}
	return sa.TrafficSelector{Prefix: p, Protocol: id.Protocol, Port: id.Port}, nil
}

func hostTS(a netip.Addr) sa.TrafficSelector {
	a = a.Unmap()
	return sa.TrafficSelector{Prefix: netip.PrefixFrom(a, a.BitLen())}
}

// tsWithin reports whether the selector inner is inside outer.
func tsWithin(inner, outer sa.TrafficSelector) bool {
	if inner.Prefix.Addr().Is4() != outer.Prefix.Addr().Is4() {
		return false
	}
	if inner.Prefix.Bits() < outer.Prefix.Bits() || !outer.Prefix.Contains(inner.Prefix.Addr()) {
		return false
	}
	if outer.Protocol != 0 && inner.Protocol != outer.Protocol {
		return false
	}
	if outer.Port != 0 && inner.Port != outer.Port {
		return false
	}
	return true
}

// tsPair is one local and one remote traffic selector: what one Quick
// Mode negotiates (IKEv1 carries a single ID pair per exchange).
type tsPair struct{ local, remote sa.TrafficSelector }

// childPairs lists the selector pairs of a child: every combination of its
// local and remote selectors (as strongSwan's IKEv1 does, one Quick Mode
// and one IPsec SA pair each); a child without selectors covers the two
// gateways' own addresses.
func childPairs(s *ikeSA, c *config.Child) []tsPair {
	locals, remotes := c.LocalTS, c.RemoteTS
	if len(locals) == 0 {
		locals = []sa.TrafficSelector{hostTS(s.rec.Local.Addr())}
	}
	if len(remotes) == 0 {
		remotes = []sa.TrafficSelector{hostTS(s.rec.Remote.Addr())}
	}
	pairs := make([]tsPair, 0, len(locals)*len(remotes))
	for _, l := range locals {
		for _, r := range remotes {
			pairs = append(pairs, tsPair{l, r})
		}
	}
	return pairs
}

// pairUp reports whether an installed pair of the given child covers
// exactly these selectors, or a Quick Mode for them is under way on s.
func (e *Engine) pairUp(s *ikeSA, conn, child string, p tsPair) bool {
	for _, c := range e.idx.kidsBySel[reqidKey(conn, child, p.local, p.remote)] {
		if c.State == sa.ChildInstalled && len(c.LocalTS) == 1 && len(c.RemoteTS) == 1 &&
			c.LocalTS[0] == p.local && c.RemoteTS[0] == p.remote {
			return true
		}
	}
	for _, x := range s.xchg {
		if x.kind == isakmp.ExchangeQuick && x.child != nil && x.child.Name == child && x.localTS == p.local && x.remoteTS == p.remote {
			return true
		}
	}
	return false
}

// startChildren starts a Quick Mode for every selector pair of every child
// of s's connection that has no pair installed or under way.
func (e *Engine) startChildren(now time.Time, o *out, s *ikeSA) {
	for _, ch := range s.conn.Children {
		for _, p := range childPairs(s, ch) {
			if !e.pairUp(s, s.conn.Name, ch.Name, p) {
				e.startQuick(now, o, s, ch, 0, p)
			}
		}
	}
}

// startQuick initiates a Quick Mode for a child's selector pair ts on an
// established SA. rekeyOf names the inbound SPI of the pair being rekeyed
// (0 for a new one); a rekey keeps the old pair's selectors.
func (e *Engine) startQuick(now time.Time, o *out, s *ikeSA, c *config.Child, rekeyOf uint32, ts tsPair) {
	x := &exchange{kind: isakmp.ExchangeQuick, role: sa.Initiator, child: c, rekeyOf: rekeyOf, started: now}
	x.msgID = e.newMsgID(s)
	x.iv = ikecrypto.ExchangeIV(s.prf, s.rec.IVBase, x.msgID, s.cipher.BlockSize())
	x.ourSPI = e.newSPI()
	x.ni = e.randBytes(nonceLen)
	x.localTS, x.remoteTS = ts.local, ts.remote
	if old := e.children[rekeyOf]; old != nil && len(old.LocalTS) > 0 && len(old.RemoteTS) > 0 {
		x.localTS, x.remoteTS = old.LocalTS[0], old.RemoteTS[0]
	} else if !x.localTS.Prefix.IsValid() || !x.remoteTS.Prefix.IsValid() {
		p := childPairs(s, c)[0] // a rekey whose pair is gone: the child's first pair
		x.localTS, x.remoteTS = p.local, p.remote
	}
	x.offer = p2Offer(s, c)
	saP := &isakmp.SA{DOI: isakmp.DOIIPsec, Situation: isakmp.SitIdentityOnly,
		Proposals: []isakmp.Proposal{{Number: 1, Protocol: isakmp.ProtoESP, SPI: be32(x.ourSPI), Transforms: x.offer}}}
	rest := []isakmp.Payload{saP, &isakmp.Nonce{Data: x.ni}}
	if g := pfsGroup(c); g != 0 {
		grp, err := ikecrypto.GroupByID(g)
		if err != nil {
			e.log.Error("quick mode: PFS group", "sa", s.String(), "child", c.Name, "err", err)
			return
		}
		priv, pub, err := grp.GenerateKey(e.rand)
		if err != nil {
			e.log.Error("quick mode: DH key generation failed", "sa", s.String(), "err", err)
			return
		}
		x.group, x.dhPriv, x.gxi = grp, priv, pub
		rest = append(rest, &isakmp.KE{Data: pub})
	}
	idci := isakmp.IDFromPrefix(x.localTS.Prefix, x.localTS.Protocol, x.localTS.Port)
	idcr := isakmp.IDFromPrefix(x.remoteTS.Prefix, x.remoteTS.Protocol, x.remoteTS.Port)
	x.idci, x.idcr = &idci, &idcr
	rest = append(rest, &idci, &idcr)
	_, restBytes, err := isakmp.AppendPayloads(nil, rest)
	if err != nil {
		e.log.Error("quick mode: cannot encode", "sa", s.String(), "err", err)
		return
	}
	hash := ikecrypto.QMHash1(s.prf, s.rec.SKEYIDa, x.msgID, restBytes)
	msg, iv, err := s.encrypt(s.header(isakmp.ExchangeQuick, x.msgID), append([]isakmp.Payload{&isakmp.Hash{Data: hash}}, rest...), x.iv)
	if err != nil {
		e.log.Error("quick mode: cannot encrypt", "sa", s.String(), "err", err)
		return
	}
	x.iv = iv
	x.step = 1
	x.lastSent = msg
	s.xchg[x.msgID] = x
	o.send(s.rec.Local, s.rec.Remote, msg)
	e.stats.Sent++
	o.arm(Timer{Kind: TimerRetransmit, IKE: s.rec.Cookies, MsgID: x.msgID}, now.Add(e.retransmitDelay(s.conn, 0)))
	o.arm(Timer{Kind: TimerExchange, IKE: s.rec.Cookies, MsgID: x.msgID}, now.Add(e.cfg.HalfOpenTimeout))
	e.log.Debug("quick mode initiated", "sa", s.String(), "child", c.Name, "msgid", x.msgID, "rekey_of", fmt.Sprintf("%08x", rekeyOf))
}

// handleQuick handles a Quick Mode message.
func (e *Engine) handleQuick(now time.Time, o *out, pkt Packet, h isakmp.Header, body []byte) {
	s := e.ikes[sa.Cookies{I: h.ICookie, R: h.RCookie}.Key()]
	if s == nil || !s.established() || s.rec.IVBase == nil {
		e.drop("quick mode for an unknown ISAKMP SA", pkt, h)
		return
	}
	if h.MessageID == 0 {
		e.drop("quick mode with message ID 0", pkt, h)
		return
	}
	x := s.xchg[h.MessageID]
	if x != nil && x.role == sa.Responder && x.lastSent != nil && datagramHash(pkt.Data) == x.lastRecvHash {
		e.stats.AnsweredFromCache++
		e.stats.Sent++
		if x.unsaved {
			e.resaveQuick(o, s, x)
		}
		o.send(s.rec.Local, s.rec.Remote, x.lastSent)
		return
	}
	iv := ikecrypto.ExchangeIV(s.prf, s.rec.IVBase, h.MessageID, s.cipher.BlockSize())
	if x != nil {
		iv = x.iv
	}
	d, newIV, err := s.decrypt(h, body, iv)
	if err != nil {
		e.malformed("quick mode message does not decrypt", err, pkt)
		return
	}
	if len(d.Payloads) == 0 {
		e.malformed("quick mode message without payloads", nil, pkt)
		return
	}
	hp, ok := d.Payloads[0].(*isakmp.Hash)
	if !ok {
		e.malformed("quick mode message does not start with HASH", nil, pkt)
		return
	}
	rest := restAfter(d, 0)
	s.rec.Local, s.rec.Remote = e.peerMoved(s, pkt)
	s.peerCompletedPhase1()
	switch {
	case x == nil:
		if !ikecrypto.Equal(ikecrypto.QMHash1(s.prf, s.rec.SKEYIDa, h.MessageID, rest), hp.Data) {
			e.malformed("quick mode HASH(1) does not verify", nil, pkt)
			return
		}
		s.lastHeard = now
		e.respondQuick(now, o, s, pkt, h, d, newIV)
	case x.role == sa.Initiator && x.step == 1:
		if !ikecrypto.Equal(ikecrypto.QMHash2(s.prf, s.rec.SKEYIDa, h.MessageID, x.ni, rest), hp.Data) {
			e.malformed("quick mode HASH(2) does not verify", nil, pkt)
			return
		}
		s.lastHeard = now
		x.iv = newIV
		e.quickReply(now, o, s, x, d)
	case x.role == sa.Responder && x.step == 2:
		if !ikecrypto.Equal(ikecrypto.QMHash3(s.prf, s.rec.SKEYIDa, h.MessageID, x.ni, x.nr), hp.Data) {
			e.malformed("quick mode HASH(3) does not verify", nil, pkt)
			return
		}
		s.lastHeard = now
		e.finishExchange(o, s, x)
		e.stats.Phase2Done++
		e.log.Debug("quick mode completed", "sa", s.String(), "msgid", h.MessageID)
	default:
		e.drop("quick mode message out of order", pkt, h)
	}
}

// peerMoved follows a NAT mapping change of the peer (RFC 3947 §6: the
// responder updates the peer's address from authenticated messages).
func (e *Engine) peerMoved(s *ikeSA, pkt Packet) (netip.AddrPort, netip.AddrPort) {
	if s.rec.Remote != pkt.Remote && s.rec.NATRemote {
		e.log.Info("peer address changed (NAT mapping)", "sa", s.String(), "from", s.rec.Remote.String(), "to", pkt.Remote.String())
		for _, c := range e.peerChildren(s.rec.Remote.Addr()) {
			if c.IKE == s.rec.Cookies && c.EncapRemotePort != 0 {
				c.EncapRemotePort = pkt.Remote.Port()
			}
		}
		if peerAddr(pkt.Remote) != s.idxAddr {
			e.dropIKE(s)
			s.rec.Remote = pkt.Remote
			e.putIKE(s)
		}
		return pkt.Local, pkt.Remote
	}
	return s.rec.Local, s.rec.Remote
}

// restAfter returns the wire bytes of every payload after index i.
func restAfter(d isakmp.Decoded, i int) []byte {
	var n int
	for _, r := range d.Raw[i+1:] {
		n += len(r)
	}
	b := make([]byte, 0, n)
	for _, r := range d.Raw[i+1:] {
		b = append(b, r...)
	}
	return b
}

func (e *Engine) finishExchange(o *out, s *ikeSA, x *exchange) {
	delete(s.xchg, x.msgID)
	o.stop(Timer{Kind: TimerRetransmit, IKE: s.rec.Cookies, MsgID: x.msgID})
	o.stop(Timer{Kind: TimerExchange, IKE: s.rec.Cookies, MsgID: x.msgID})
	for i, r := range s.rec.Exchanges {
		if r.MessageID == x.msgID {
			s.rec.Exchanges = slices.Delete(slices.Clone(s.rec.Exchanges), i, i+1)
			break
		}
	}
}

// respondQuick answers a Quick Mode message 1.
func (e *Engine) respondQuick(now time.Time, o *out, s *ikeSA, pkt Packet, h isakmp.Header, d isakmp.Decoded, iv []byte) {
	saP, _, okSA := first[*isakmp.SA](d)
	nonce, _, okN := first[*isakmp.Nonce](d)
	if !okSA || !okN || len(saP.Proposals) == 0 {
		e.malformed("quick mode message 1 lacks SA or nonce", nil, pkt)
		return
	}
	ids := all[*isakmp.ID](d)
	var remoteTS, localTS sa.TrafficSelector
	switch len(ids) {
	case 0:
		remoteTS, localTS = hostTS(s.rec.Remote.Addr()), hostTS(s.rec.Local.Addr())
	case 2:
		var err1, err2 error
		remoteTS, err1 = tsFromID(ids[0])
		localTS, err2 = tsFromID(ids[1])
		if err1 != nil || err2 != nil {
			e.quickFailed(o, s, pkt, h, isakmp.NotifyInvalidIDInformation, "traffic selectors not usable")
			return
		}
	default:
		e.malformed("quick mode message 1 with one ID payload", nil, pkt)
		return
	}
	if s.conn == nil {
		e.quickFailed(o, s, pkt, h, isakmp.NotifyNoProposalChosen, "connection no longer configured")
		return
	}
	var ch *config.Child
	for _, c := range s.conn.Children {
		l, r := childTSAll(s, c)
		if anyWithin(localTS, l) && anyWithin(remoteTS, r) {
			ch = c
			break
		}
	}
	if ch == nil {
		e.quickFailed(o, s, pkt, h, isakmp.NotifyInvalidIDInformation,
			fmt.Sprintf("no child matches traffic selectors %s === %s", prefixString(localTS), prefixString(remoteTS)))
		return
	}
	prop := saP.Proposals[0]
	if prop.Protocol != isakmp.ProtoESP || len(prop.SPI) != 4 {
		e.quickFailed(o, s, pkt, h, isakmp.NotifyNoProposalChosen, "only ESP with a 4-byte SPI is supported")
		return
	}
	var chosen isakmp.Transform
	var attrs p2Attrs
	found := false
	for _, t := range prop.Transforms {
		a, err := parseP2Transform(t)
		if err != nil {
			continue
		}
		if a.mode() != ch.Mode {
			continue
		}
		for _, p := range ch.ESPProposals {
			if a.matches(p, p.PFSGroup) {
				chosen, attrs, found = t, a, true
				break
			}
		}
		if found {
			break
		}
	}
	if !found {
		e.quickFailed(o, s, pkt, h, isakmp.NotifyNoProposalChosen, "no acceptable ESP proposal")
		return
	}
	x := &exchange{msgID: h.MessageID, kind: isakmp.ExchangeQuick, role: sa.Responder, child: ch, started: now,
		localTS: localTS, remoteTS: remoteTS, ni: slices.Clone(nonce.Data), nr: e.randBytes(nonceLen)}
	x.ourSPI = e.newSPI()
	var gqm []byte
	reply := []isakmp.Payload{}
	if attrs.group != 0 {
		ke, _, okKE := first[*isakmp.KE](d)
		if !okKE {
			e.quickFailed(o, s, pkt, h, isakmp.NotifyInvalidKeyInformation, "PFS group proposed without KE")
			return
		}
		g, err := ikecrypto.GroupByID(attrs.group)
		if err != nil {
			e.quickFailed(o, s, pkt, h, isakmp.NotifyNoProposalChosen, err.Error())
			return
		}
		priv, pub, err := g.GenerateKey(e.rand)
		if err != nil {
			e.log.Error("quick mode: DH key generation failed", "err", err)
			return
		}
		gqm, err = g.Shared(priv, ke.Data)
		if err != nil {
			e.quickFailed(o, s, pkt, h, isakmp.NotifyInvalidKeyInformation, "bad KE: "+err.Error())
			return
		}
		x.gxr = pub
	}
	life := responderLife(ch, attrs)
	attrs.lifeSecs, attrs.lifeKB = life.secs, life.kb
	var lifeNotify *isakmp.Notify
	if life.cut {
		chosen = withLife(chosen, life)
		data, err := isakmp.AppendAttributes(nil, life.attrs())
		if err != nil {
			e.log.Error("quick mode: cannot encode RESPONDER-LIFETIME", "err", err)
			return
		}
		lifeNotify = &isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoESP, NotifyType: isakmp.NotifyResponderLifetime,
			SPI: be32(x.ourSPI), Data: data}
	}
	peerSPI := binary.BigEndian.Uint32(prop.SPI)
	c, err := e.buildChild(now, s, x, attrs, peerSPI, gqm)
	if err != nil {
		e.quickFailed(o, s, pkt, h, isakmp.NotifyNoProposalChosen, err.Error())
		return
	}
	// The initiator normally rekeys first; should it not, we replace the
	// pair ourselves before it expires (at 95% of its lifetime).
	c.RekeyAt = now.Add(time.Duration(c.ExpireAt-c.Established) * 95 / 100).UnixNano()
	reply = append(reply, &isakmp.SA{DOI: isakmp.DOIIPsec, Situation: saP.Situation,
		Proposals: []isakmp.Proposal{{Number: prop.Number, Protocol: isakmp.ProtoESP, SPI: be32(x.ourSPI), Transforms: []isakmp.Transform{chosen}}}},
		&isakmp.Nonce{Data: x.nr})
	if x.gxr != nil {
		reply = append(reply, &isakmp.KE{Data: x.gxr})
	}
	if len(ids) == 2 {
		reply = append(reply, ids[0], ids[1])
	}
	if lifeNotify != nil {
		// After HASH(2), so HASH(2) covers it (RFC 2409 §5.5).
		reply = append(reply, lifeNotify)
		e.log.Info("quick mode: our lifetime is shorter than proposed, sending RESPONDER-LIFETIME", "sa", s.String(),
			"child", ch.Name, "msgid", x.msgID, "proposed_s", life.proposedSecs, "life_s", life.secs, "proposed_kb", life.proposedKB, "life_kb", life.kb)
	}
	_, restBytes, err := isakmp.AppendPayloads(nil, reply)
	if err != nil {
		e.log.Error("quick mode: cannot encode reply", "err", err)
		return
	}
	hash := ikecrypto.QMHash2(s.prf, s.rec.SKEYIDa, x.msgID, x.ni, restBytes)
	msg, newIV, err := s.encrypt(s.header(isakmp.ExchangeQuick, x.msgID), append([]isakmp.Payload{&isakmp.Hash{Data: hash}}, reply...), iv)
	if err != nil {
		e.log.Error("quick mode: cannot encrypt reply", "err", err)
		return
	}
	x.iv, x.step, x.lastSent, x.lastRecvHash = newIV, 2, msg, datagramHash(pkt.Data)
	s.xchg[x.msgID] = x
	s.rec.Exchanges = append(slices.Clone(s.rec.Exchanges), sa.Exchange{MessageID: x.msgID, Type: uint8(isakmp.ExchangeQuick),
		IV: newIV, LastReply: msg, LastRequestHash: x.lastRecvHash[:], Ni: x.ni, Nr: x.nr, InSPI: x.ourSPI})
	old := e.findRekeyed(c)
	persist := Persist{IKE: []*sa.IKESA{cloneIKE(&s.rec)}, Children: []*sa.ChildSA{cloneChild(c)}}
	if old != nil {
		old.State = sa.ChildRekeyed
		e.stats.ChildRekeys++
		persist.Children = append(persist.Children, cloneChild(old))
		x.replaced = old.In.SPI
	}
	e.putChild(c)
	o.add(persist)
	o.add(InstallChild{Child: cloneChild(c)})
	o.send(s.rec.Local, s.rec.Remote, msg)
	e.stats.Sent++
	o.arm(Timer{Kind: TimerExchange, IKE: s.rec.Cookies, MsgID: x.msgID}, now.Add(e.cfg.HalfOpenTimeout))
	e.armChildTimers(o, c)
	if old != nil {
		o.arm(Timer{Kind: TimerChildDelete, SPI: old.In.SPI}, now.Add(e.cfg.RekeyGrace))
	}
	e.logChild("IPsec SA pair established", c, old)
}

func childTSAll(s *ikeSA, c *config.Child) (local, remote []sa.TrafficSelector) {
	local, remote = c.LocalTS, c.RemoteTS
	if len(local) == 0 {
		local = []sa.TrafficSelector{hostTS(s.rec.Local.Addr())}
	}
	if len(remote) == 0 {
		remote = []sa.TrafficSelector{hostTS(s.rec.Remote.Addr())}
	}
	return
}

func anyWithin(ts sa.TrafficSelector, set []sa.TrafficSelector) bool {
	for _, o := range set {
		if tsWithin(ts, o) {
			return true
		}
	}
	return false
}

func prefixString(ts sa.TrafficSelector) string {
	s := ts.Prefix.String()
	if ts.Protocol != 0 || ts.Port != 0 {
		s += fmt.Sprintf("[%d/%d]", ts.Protocol, ts.Port)
	}
	return s
}

// findRekeyed returns the installed pair that a new pair replaces: same
// connection, child and traffic selectors.
func (e *Engine) findRekeyed(n *sa.ChildSA) *sa.ChildSA {
	var best *sa.ChildSA
	for _, c := range e.idx.kidsBySel[childReqidKey(n)] {
		if c == n || c.State != sa.ChildInstalled {
			continue
		}
		if !slices.Equal(c.LocalTS, n.LocalTS) || !slices.Equal(c.RemoteTS, n.RemoteTS) {
			continue
		}
		if best == nil || c.Established > best.Established {
			best = c
		}
	}
	return best
}

func (e *Engine) quickFailed(o *out, s *ikeSA, pkt Packet, h isakmp.Header, n isakmp.NotifyType, why string) {
	switch n {
	case isakmp.NotifyInvalidIDInformation:
		e.phase2Fail(FailSelectors)
	case isakmp.NotifyInvalidKeyInformation:
		e.phase2Fail(FailKeyExchange)
	default:
		e.phase2Fail(FailNoProposal)
	}
	e.log.Warn("quick mode refused", "sa", s.String(), "msgid", h.MessageID, "notify", n.String(), "reason", why)
	e.sendInfo(o, s, []isakmp.Payload{&isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoESP, NotifyType: n}})
}

// quickReply handles Quick Mode message 2 as initiator.
func (e *Engine) quickReply(now time.Time, o *out, s *ikeSA, x *exchange, d isakmp.Decoded) {
	fail := func(r FailReason, why string) {
		e.phase2Fail(r)
		e.log.Warn("quick mode failed", "sa", s.String(), "child", x.child.Name, "msgid", x.msgID, "reason", why)
		e.finishExchange(o, s, x)
	}
	if n, _, ok := first[*isakmp.Notify](d); ok && n.NotifyType.IsError() {
		fail(FailPeerRefused, "peer answered "+n.NotifyType.String())
		return
	}
	saP, _, okSA := first[*isakmp.SA](d)
	nonce, _, okN := first[*isakmp.Nonce](d)
	if !okSA || !okN || len(saP.Proposals) != 1 || len(saP.Proposals[0].Transforms) != 1 {
		fail(FailProtocol, "reply lacks SA (one proposal, one transform) or nonce")
		return
	}
	prop := saP.Proposals[0]
	if prop.Protocol != isakmp.ProtoESP || len(prop.SPI) != 4 {
		fail(FailProtocol, "reply is not ESP with a 4-byte SPI")
		return
	}
	a, err := parseP2Transform(prop.Transforms[0])
	if err != nil {
		fail(FailNoProposal, err.Error())
		return
	}
	ok := false
	for _, p := range x.child.ESPProposals {
		if a.matches(p, pfsGroup(x.child)) {
			ok = true
		}
	}
	if !ok {
		fail(FailProtocol, "peer chose a transform we did not offer")
		return
	}
	if ids := all[*isakmp.ID](d); len(ids) == 2 {
		l, err1 := tsFromID(ids[0])
		r, err2 := tsFromID(ids[1])
		if err1 != nil || err2 != nil || l != x.localTS || r != x.remoteTS {
			fail(FailProtocol, "peer changed the traffic selectors")
			return
		}
	}
	x.nr = slices.Clone(nonce.Data)
	var gqm []byte
	if x.group != nil {
		ke, _, okKE := first[*isakmp.KE](d)
		if !okKE {
			fail(FailKeyExchange, "PFS reply without KE")
			return
		}
		gqm, err = x.group.Shared(x.dhPriv, ke.Data)
		if err != nil {
			fail(FailKeyExchange, "bad KE: "+err.Error())
			return
		}
	}
	for _, n := range all[*isakmp.Notify](d) {
		if n.NotifyType == isakmp.NotifyResponderLifetime {
			secs, kb := responderLifetime(n.Data)
			if secs != 0 && (a.lifeSecs == 0 || secs < a.lifeSecs) {
				a.lifeSecs = secs
			}
			if kb != 0 && (a.lifeKB == 0 || kb < a.lifeKB) {
				a.lifeKB = kb
			}
			e.log.Info("quick mode: received RESPONDER-LIFETIME", "sa", s.String(), "child", x.child.Name, "msgid", x.msgID,
				"life_s", secs, "life_kb", kb)
		}
	}
	if a.lifeSecs == 0 {
		a.lifeSecs = uint32(x.child.LifeTime / time.Second)
	}
	c, err := e.buildChild(now, s, x, a, binary.BigEndian.Uint32(prop.SPI), gqm)
	if err != nil {
		fail(FailInternal, err.Error())
		return
	}
	c.Initiated = true
	if rk := x.child.RekeyTime; rk > 0 {
		if c.Lifetime.SoftSeconds < uint64(rk/time.Second) {
			rk = time.Duration(c.Lifetime.SoftSeconds) * time.Second // the responder shortened the lifetime
		}
		c.RekeyAt = now.Add(rk).UnixNano()
	}
	hash3 := ikecrypto.QMHash3(s.prf, s.rec.SKEYIDa, x.msgID, x.ni, x.nr)
	msg, _, err := s.encrypt(s.header(isakmp.ExchangeQuick, x.msgID), []isakmp.Payload{&isakmp.Hash{Data: hash3}}, x.iv)
	if err != nil {
		fail(FailInternal, "cannot encrypt message 3: "+err.Error())
		return
	}
	var old *sa.ChildSA
	if x.rekeyOf != 0 {
		old = e.children[x.rekeyOf]
	}
	if old == nil {
		old = e.findRekeyed(c)
	}
	persist := Persist{Children: []*sa.ChildSA{cloneChild(c)}}
	if old != nil {
		old.State = sa.ChildRekeyed
		e.stats.ChildRekeys++
		persist.Children = append(persist.Children, cloneChild(old))
	}
	e.putChild(c)
	e.finishExchange(o, s, x)
	o.add(persist)
	o.add(InstallChild{Child: cloneChild(c)})
	o.send(s.rec.Local, s.rec.Remote, msg)
	e.stats.Sent++
	e.stats.Phase2Done++
	e.armChildTimers(o, c)
	if old != nil {
		o.stop(Timer{Kind: TimerChildRekey, SPI: old.In.SPI})
		o.arm(Timer{Kind: TimerChildDelete, SPI: old.In.SPI}, now.Add(e.cfg.RekeyGrace))
	}
	e.logChild("IPsec SA pair established", c, old)
}

// responderLifetime decodes a RESPONDER-LIFETIME notify's attributes (RFC
// 2407 §4.6.3.1): the lifetime in seconds and in kilobytes, 0 when absent.
// A malformed attribute ends the decoding; what came before it counts.
func responderLifetime(data []byte) (secs uint32, kb uint64) {
	lifeType := isakmp.LifeSeconds
	for len(data) >= 4 {
		t := binary.BigEndian.Uint16(data)
		var v uint64
		if t&0x8000 != 0 {
			v = uint64(binary.BigEndian.Uint16(data[2:]))
			data = data[4:]
		} else {
			l := int(binary.BigEndian.Uint16(data[2:]))
			if len(data) < 4+l || l > 8 {
				return secs, kb
			}
			for _, b := range data[4 : 4+l] {
				v = v<<8 | uint64(b)
			}
			data = data[4+l:]
		}
		switch t & 0x7fff {
		case isakmp.AttrSALifeType:
			lifeType = uint16(v)
		case isakmp.AttrSALifeDuration:
			switch lifeType {
			case isakmp.LifeSeconds:
				secs = uint32(min(v, 0xffffffff))
			case isakmp.LifeKilobytes:
				kb = v
			}
		}
	}
	return secs, kb
}

// defaultChildLifeSecs is an IPsec SA's lifetime when the proposal names
// none (RFC 2407 §4.5).
const defaultChildLifeSecs = 28800

// childLife is the lifetime a responder gives a new pair: the shorter of
// the accepted transform's and the child's own (RFC 2407 §4.5.4).
type childLife struct {
	secs uint32
	kb   uint64 // 0: no volume limit
	// proposedSecs and proposedKB are what the initiator proposed.
	proposedSecs uint32
	proposedKB   uint64
	// cut: ours is shorter than what the initiator proposed (28800 s and
	// no volume limit when it proposed none); the reply then carries our
	// values in the echoed transform and in a RESPONDER-LIFETIME notify.
	cut bool
}

func responderLife(ch *config.Child, a p2Attrs) childLife {
	l := childLife{secs: a.lifeSecs, kb: a.lifeKB, proposedSecs: a.lifeSecs, proposedKB: a.lifeKB}
	if l.secs == 0 {
		// No lifetime proposed means the default (RFC 2407 §4.5).
		l.secs = defaultChildLifeSecs
	}
	if ours := uint32(min(ch.LifeTime/time.Second, 0xffffffff)); ours > 0 && ours < l.secs {
		l.secs, l.cut = ours, true
	}
	if ch.LifeBytes > 0 {
		if ours := max(ch.LifeBytes/1024, 1); l.kb == 0 || ours < l.kb {
			l.kb, l.cut = ours, true
		}
	}
	return l
}

// attrs is the lifetime as SA Life Type / SA Life Duration pairs.
func (l childLife) attrs() []isakmp.Attribute {
	var as []isakmp.Attribute
	if l.secs != 0 {
		as = append(as, basic(isakmp.AttrSALifeType, isakmp.LifeSeconds), isakmp.UintAttr(isakmp.AttrSALifeDuration, uint64(l.secs)))
	}
	if l.kb != 0 {
		as = append(as, basic(isakmp.AttrSALifeType, isakmp.LifeKilobytes), isakmp.UintAttr(isakmp.AttrSALifeDuration, l.kb))
	}
	return as
}

// withLife returns t with its lifetime attributes replaced by l's.
func withLife(t isakmp.Transform, l childLife) isakmp.Transform {
	as := l.attrs()
	for _, a := range t.Attributes {
		if a.Type != isakmp.AttrSALifeType && a.Type != isakmp.AttrSALifeDuration {
			as = append(as, a)
		}
	}
	t.Attributes = as
	return t
}

// buildChild derives the keys and makes the replicated record of a new
// IPsec SA pair.
func (e *Engine) buildChild(now time.Time, s *ikeSA, x *exchange, a p2Attrs, peerSPI uint32, gqm []byte) (*sa.ChildSA, error) {
	encr, encLen, integ, intLen, trunc, err := espAlgs(a)
	if err != nil {
		return nil, err
	}
	need := encLen + intLen
	// Ni_b and Nr_b are always the initiator's and the responder's nonce.
	ni, nr := x.ni, x.nr
	inKey := ikecrypto.KEYMAT(s.prf, s.rec.SKEYIDd, gqm, uint8(isakmp.ProtoESP), be32(x.ourSPI), ni, nr, need)
	outKey := ikecrypto.KEYMAT(s.prf, s.rec.SKEYIDd, gqm, uint8(isakmp.ProtoESP), be32(peerSPI), ni, nr, need)
	life := a.lifeSecs
	ours := uint32(x.child.LifeTime / time.Second)
	if ours > 0 && (life == 0 || ours < life) {
		life = ours
	}
	if life == 0 {
		life = 3600
	}
	c := &sa.ChildSA{
		Version:    sa.RecordVersion,
		IKE:        s.rec.Cookies,
		Connection: s.rec.Connection,
		Child:      x.child.Name,
		State:      sa.ChildInstalled,
		Reqid:      e.reqidFor(s.rec.Connection, x.child.Name, x.localTS, x.remoteTS),
		Mode:       a.mode(),
		Protocol:   50,
		In: sa.SADir{SPI: x.ourSPI, Src: s.rec.Remote.Addr(), Dst: s.rec.Local.Addr(), Encr: encr,
			EncrKey: inKey[:encLen], Integ: integ, IntegKey: inKey[encLen:], TruncBits: trunc},
		Out: sa.SADir{SPI: peerSPI, Src: s.rec.Local.Addr(), Dst: s.rec.Remote.Addr(), Encr: encr,
			EncrKey: outKey[:encLen], Integ: integ, IntegKey: outKey[encLen:], TruncBits: trunc},
		LocalTS:     []sa.TrafficSelector{x.localTS},
		RemoteTS:    []sa.TrafficSelector{x.remoteTS},
		PFSGroup:    a.group,
		Established: now.UnixNano(),
		ExpireAt:    now.Add(time.Duration(life) * time.Second).UnixNano(),
		Lifetime:    sa.Lifetime{HardSeconds: uint64(life), SoftSeconds: uint64(x.child.RekeyTime / time.Second)},
	}
	if integ == "" {
		c.In.IntegKey, c.Out.IntegKey = nil, nil
	}
	if a.lifeKB > 0 {
		c.Lifetime.HardBytes = a.lifeKB * 1024
	}
	if x.child.LifeBytes > 0 && (c.Lifetime.HardBytes == 0 || x.child.LifeBytes < c.Lifetime.HardBytes) {
		c.Lifetime.HardBytes = x.child.LifeBytes
	}
	c.Lifetime.SoftBytes = x.child.RekeyBytes
	// A lifetime the peer shortened (RESPONDER-LIFETIME) below our rekey
	// point: rekey at 90% of it instead, before it expires.
	if life < ours && c.Lifetime.SoftSeconds >= c.Lifetime.HardSeconds {
		c.Lifetime.SoftSeconds = c.Lifetime.HardSeconds * 9 / 10
	}
	if c.Lifetime.HardBytes < x.child.LifeBytes && c.Lifetime.SoftBytes >= c.Lifetime.HardBytes {
		c.Lifetime.SoftBytes = c.Lifetime.HardBytes * 9 / 10
	}
	if a.udpEncap() {
		c.EncapLocalPort = s.rec.Local.Port()
		c.EncapRemotePort = s.rec.Remote.Port()
		if c.EncapLocalPort == portIKE {
			c.EncapLocalPort = portNATT
		}
		if c.EncapRemotePort == portIKE {
			c.EncapRemotePort = portNATT
		}
	}
	return c, nil
}

func (e *Engine) armChildTimers(o *out, c *sa.ChildSA) {
	if c.RekeyAt != 0 {
		o.arm(Timer{Kind: TimerChildRekey, SPI: c.In.SPI}, time.Unix(0, c.RekeyAt))
	}
	if c.ExpireAt != 0 {
		o.arm(Timer{Kind: TimerChildExpire, SPI: c.In.SPI}, time.Unix(0, c.ExpireAt))
	}
}

func (e *Engine) logChild(msg string, c *sa.ChildSA, old *sa.ChildSA) {
	args := []any{"conn", c.Connection, "child", c.Child, "spi_in", fmt.Sprintf("%08x", c.In.SPI), "spi_out", fmt.Sprintf("%08x", c.Out.SPI),
		"local_ts", prefixString(c.LocalTS[0]), "remote_ts", prefixString(c.RemoteTS[0]), "encr", c.In.Encr, "integ", c.In.Integ,
		"pfs", c.PFSGroup, "udp_encap", c.EncapRemotePort != 0}
	if old != nil {
		args = append(args, "rekeyed", fmt.Sprintf("%08x", old.In.SPI))
	}
	e.log.Info(msg, args...)
}
