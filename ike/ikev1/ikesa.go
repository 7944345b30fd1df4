package ikev1

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
	"ikegw/ike/pki"
	"ikegw/ike/sa"
)

// Vendor IDs we send and recognise.
var (
	vidNATT3947 = []byte{0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f}
	vidDPD      = []byte{0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57, 0x01, 0x00}
)

const (
	portIKE  = 500
	portNATT = 4500
	nonceLen = 32
)

// ikeSA is an ISAKMP SA as the engine holds it: the replicated record plus
// what only this node needs (suites, exchanges in progress, timers' state).
type ikeSA struct {
	rec     sa.IKESA
	idxAddr netip.Addr // the remote address it is indexed under
	conn    *config.Connection
	prf     *ikecrypto.Prf
	cipher  *ikecrypto.Cipher

	p1 *phase1 // phase 1 in progress; kept after completion only to answer retransmits

	xchg map[uint32]*exchange // phase 2 and informational exchanges in progress

	dpdOutstanding bool      // an R-U-THERE is unanswered
	dpdSince       time.Time // when the first unanswered R-U-THERE was sent
	dpdLastSent    time.Time // when the last R-U-THERE was sent
	lastHeard      time.Time // last authenticated message from the peer

	// pendingDeletes are inbound SPIs of pairs whose DELETE waits for
	// TimerDeleteFlush, to go out together in one INFORMATIONAL.
	pendingDeletes []uint32
}

// phase1 is a Main or Aggressive Mode exchange in progress.
type phase1 struct {
	mode isakmp.ExchangeType
	step int // number of the last message handled or sent

	saiB   []byte // the initiator's SA payload body (for HASH_I / HASH_R)
	offer  []isakmp.Transform
	chosen isakmp.Transform
	group  ikecrypto.Group
	dhPriv []byte
	gxi    []byte
	gxr    []byte
	ni, nr []byte
	gxy    []byte
	psk    []byte
	iv     []byte // current CBC IV of phase 1

	peerNATT, peerDPD bool
	peerCR            bool   // the peer sent a certificate request
	idPeerB           []byte // the peer's ID payload body

	// Retransmission: the last message we sent and the request it answers.
	lastSent     []byte
	lastRecvHash [32]byte
	retries      int
	done         bool // established; kept only to answer retransmits
	unsaved      bool // the commit guarding lastSent failed (PersistFailed)
	countedHalf  bool
	started      time.Time

	// pendingRekeys are pairs (inbound SPIs) to rekey once this phase 1
	// is established.
	pendingRekeys []uint32
}

func (s *ikeSA) key() [16]byte { return s.rec.Cookies.Key() }

// peerCompletedPhase1 is called on the first authenticated message of a
// later exchange: the peer has our last phase 1 message, so its cache (in
// memory and in the replicated record) is no longer needed.
func (s *ikeSA) peerCompletedPhase1() {
	if s.p1 != nil && s.p1.done {
		s.p1 = nil
	}
	for i, x := range s.rec.Exchanges {
		if x.MessageID == 0 && x.Type == uint8(isakmp.ExchangeMain) {
			s.rec.Exchanges = slices.Delete(slices.Clone(s.rec.Exchanges), i, i+1)
			return
		}
	}
}

// setSuite builds the PRF and cipher from the negotiated proposal.
func (s *ikeSA) setSuite() error {
	p, err := ikecrypto.NewPRF(ikecrypto.HashAlg(s.rec.Proposal.Hash))
	if err != nil {
		return err
	}
	c, err := ikecrypto.NewCipher(ikecrypto.EncrAlg(s.rec.Proposal.Encr), int(s.rec.Proposal.KeyLen))
	if err != nil {
		return err
	}
	s.prf, s.cipher = p, c
	return nil
}

// encrypt builds an encrypted message with the given header fields and
// payloads, CBC-encrypted under iv. It returns the message and the new IV
// (its last cipher block).
func (s *ikeSA) encrypt(h isakmp.Header, ps []isakmp.Payload, iv []byte) (msg, newIV []byte, err error) {
	first, body, err := isakmp.AppendPayloads(nil, ps)
	if err != nil {
		return nil, nil, err
	}
	bs := s.cipher.BlockSize()
	// RFC 2409 §5.3: pad with zeros; the last pad byte holds the count of
	// pad bytes before it, so there is always padding.
	pad := bs - len(body)%bs
	for i := 0; i < pad-1; i++ {
		body = append(body, 0)
	}
	body = append(body, byte(pad-1))
	ct, err := s.cipher.Encrypt(s.rec.EncKey, iv, body)
	if err != nil {
		return nil, nil, err
	}
	h.NextPayload = first
	h.Version = isakmp.Version1
	h.Flags |= isakmp.FlagEncryption
	h.Length = uint32(isakmp.HeaderLen + len(ct))
	msg = h.AppendTo(make([]byte, 0, int(h.Length)))
	msg = append(msg, ct...)
	return msg, slices.Clone(ct[len(ct)-bs:]), nil
}

var errNotEncrypted = errors.New("message is not encrypted")

// decrypt decrypts the body of an encrypted message under iv and decodes
// its payloads. It returns the new IV (the message's last cipher block).
func (s *ikeSA) decrypt(h isakmp.Header, body []byte, iv []byte) (isakmp.Decoded, []byte, error) {
	if h.Flags&isakmp.FlagEncryption == 0 {
		return isakmp.Decoded{}, nil, errNotEncrypted
	}
	bs := s.cipher.BlockSize()
	if len(body) == 0 || len(body)%bs != 0 {
		return isakmp.Decoded{}, nil, fmt.Errorf("encrypted body of %d bytes is not a multiple of the %d-byte block", len(body), bs)
	}
	pt, err := s.cipher.Decrypt(s.rec.EncKey, iv, body)
	if err != nil {
		return isakmp.Decoded{}, nil, err
	}
	d, err := isakmp.DecodePayloads(h.NextPayload, pt)
	if err != nil {
		return isakmp.Decoded{}, nil, fmt.Errorf("decrypted payloads do not decode (wrong key or IV?): %w", err)
	}
	return d, slices.Clone(body[len(body)-bs:]), nil
}

// header returns a header for a message on this SA.
func (s *ikeSA) header(x isakmp.ExchangeType, msgID uint32) isakmp.Header {
	return isakmp.Header{
		ICookie:   s.rec.Cookies.I,
		RCookie:   s.rec.Cookies.R,
		Version:   isakmp.Version1,
		Exchange:  x,
		MessageID: msgID,
	}
}

func (s *ikeSA) established() bool { return s.rec.State == sa.IKEEstablished }

func (s *ikeSA) String() string {
	return fmt.Sprintf("%s[%s]", s.rec.Connection, s.rec.Cookies)
}

func datagramHash(b []byte) [32]byte { return sha256.Sum256(b) }

// ---- proposals ----

func lifeAttr(t uint16, secs uint32) isakmp.Attribute {
	if secs <= 0xffff {
		return isakmp.Attribute{Type: t, Basic: true, Value: uint16(secs)}
	}
	return isakmp.Attribute{Type: t, Data: []byte{byte(secs >> 24), byte(secs >> 16), byte(secs >> 8), byte(secs)}}
}

func basic(t, v uint16) isakmp.Attribute { return isakmp.Attribute{Type: t, Basic: true, Value: v} }

// phase1Offer builds the transforms of our phase 1 proposal.
func phase1Offer(c *config.Connection) []isakmp.Transform {
	life := uint32(c.IKELifetime / time.Second)
	var ts []isakmp.Transform
	for i, p := range c.Proposals {
		attrs := []isakmp.Attribute{basic(isakmp.AttrEncryptionAlgorithm, p.Encr)}
		if p.KeyLen != 0 {
			attrs = append(attrs, basic(isakmp.AttrKeyLength, p.KeyLen))
		}
		attrs = append(attrs,
			basic(isakmp.AttrHashAlgorithm, p.Hash),
			basic(isakmp.AttrAuthMethod, authMethod(c)),
			basic(isakmp.AttrGroupDescription, p.Group),
			basic(isakmp.AttrLifeType, isakmp.LifeSeconds),
			lifeAttr(isakmp.AttrLifeDuration, life),
		)
		ts = append(ts, isakmp.Transform{Number: uint8(i + 1), ID: isakmp.TransformKeyIKE, Attributes: attrs})
	}
	return ts
}

// p1Attrs is a phase 1 transform's attributes, decoded.
type p1Attrs struct {
	encr, keyLen, hash, auth, group uint16
	life                            uint32
}

func parseP1Transform(t isakmp.Transform) (p1Attrs, error) {
	var a p1Attrs
	if t.ID != isakmp.TransformKeyIKE {
		return a, fmt.Errorf("transform %d: id %d is not KEY_IKE", t.Number, t.ID)
	}
	lifeType := isakmp.LifeSeconds
	for _, at := range t.Attributes {
		v, ok := at.Uint()
		if !ok {
			if at.Type == isakmp.AttrLifeDuration {
				// Longer than 8 bytes: effectively infinite; cap it.
				a.life = 0xffffffff
				continue
			}
			return a, fmt.Errorf("transform %d: attribute %d has no usable value", t.Number, at.Type)
		}
		switch at.Type {
		case isakmp.AttrEncryptionAlgorithm:
			a.encr = uint16(v)
		case isakmp.AttrKeyLength:
			a.keyLen = uint16(v)
		case isakmp.AttrHashAlgorithm:
			a.hash = uint16(v)
		case isakmp.AttrAuthMethod:
			a.auth = uint16(v)
		case isakmp.AttrGroupDescription:
			a.group = uint16(v)
		case isakmp.AttrLifeType:
			lifeType = uint16(v)
		case isakmp.AttrLifeDuration:
			if lifeType == isakmp.LifeSeconds {
				if v > 0xffffffff {
					v = 0xffffffff
				}
				a.life = uint32(v)
			}
		default:
			// PRF, group type/prime, field size...: we do not negotiate
			// them, so a transform that needs them is not acceptable.
			return a, fmt.Errorf("transform %d: unsupported attribute type %d", t.Number, at.Type)
		}
	}
	if a.encr == isakmp.EncAESCBC && a.keyLen == 0 {
		a.keyLen = 128 // RFC 3602 §5: the default AES key length
	}
	return a, nil
}

func (a p1Attrs) matches(p config.IKEProposal, auth uint16) bool {
	return a.encr == p.Encr && a.keyLen == p.KeyLen && a.hash == p.Hash && a.group == p.Group && a.auth == auth
}

// authMethod is the phase 1 authentication method of a connection: PSK, or
// RSA / ECDSA signatures after the type of its private key.
func authMethod(c *config.Connection) uint16 {
	if c.Auth == config.AuthPubkey && c.Pubkey != nil && c.Pubkey.Key.Signer != nil {
		if m, err := pki.AuthMethod(c.Pubkey.Key.Public()); err == nil {
			return m
		}
		return 0
	}
	return isakmp.AuthPSK
}

// usesSig reports whether a connection authenticates with certificates.
func usesSig(c *config.Connection) bool { return c.Auth == config.AuthPubkey && c.Pubkey != nil }

// selectP1 picks the first of the peer's transforms that one of the
// connection's proposals allows.
func selectP1(c *config.Connection, offer []isakmp.Transform) (isakmp.Transform, p1Attrs, bool) {
	for _, t := range offer {
		a, err := parseP1Transform(t)
		if err != nil {
			continue
		}
		for _, p := range c.Proposals {
			if a.matches(p, authMethod(c)) {
				return t, a, true
			}
		}
	}
	return isakmp.Transform{}, p1Attrs{}, false
}

// ---- identities ----

func localID(c *config.Connection, local netip.Addr) isakmp.ID {
	if !c.LocalID.IsZero() && !c.LocalID.IsAny() {
		return isakmp.ID{IDType: isakmp.IDType(c.LocalID.Type), Data: slices.Clone(c.LocalID.Data)}
	}
	if usesSig(c) && len(c.Pubkey.Certs) > 0 {
		return isakmp.ID{IDType: isakmp.IDType(pki.IDDERASN1DN), Data: slices.Clone(c.Pubkey.Certs[0].RawSubject)}
	}
	return addrID(local)
}

func addrID(a netip.Addr) isakmp.ID {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return isakmp.ID{IDType: isakmp.IDIPv4Addr, Data: b[:]}
	}
	b := a.As16()
	return isakmp.ID{IDType: isakmp.IDIPv6Addr, Data: b[:]}
}

// remoteIDMismatch checks the peer's phase 1 identity against the
// connection: its configured remote ID, or (by default) its address. DNs
// compare as names (a configured DN is DER, possibly encoded differently
// from the peer's), FQDNs ignoring case. The error says what was expected.
func remoteIDMismatch(c *config.Connection, id *isakmp.ID, remote netip.Addr) error {
	want := c.RemoteID
	if want.IsZero() {
		want = config.AddrIdentity(remote)
	}
	return want.Match(uint8(id.IDType), id.Data)
}

// remoteIDAllowed reports whether remoteIDMismatch finds no mismatch.
func remoteIDAllowed(c *config.Connection, id *isakmp.ID, remote netip.Addr) bool {
	return remoteIDMismatch(c, id, remote) == nil
}

func idBody(id *isakmp.ID) []byte {
	// The ID payload body as hashed by HASH_I/HASH_R: type, protocol,
	// port, data.
	b := []byte{byte(id.IDType), id.Protocol, byte(id.Port >> 8), byte(id.Port)}
	return append(b, id.Data...)
}

func toSAIdentity(id *isakmp.ID) sa.Identity {
	return sa.Identity{Type: uint8(id.IDType), Protocol: id.Protocol, Port: id.Port, Data: slices.Clone(id.Data)}
}

// ---- NAT-T ----

func (e *Engine) natdPayloads(s *ikeSA, p *phase1, local, remote netip.AddrPort) []isakmp.Payload {
	if !p.peerNATT {
		return nil
	}
	ci, cr := s.rec.Cookies.I[:], s.rec.Cookies.R[:]
	// RFC 3947 §3.2: first the remote end (destination), then ours.
	dst := ikecrypto.NATD(s.prf, ci, cr, remote)
	src := ikecrypto.NATD(s.prf, ci, cr, local)
	if s.conn != nil && s.conn.ForceEncap {
		// Pretend we are behind a NAT so ESP is encapsulated (as
		// strongSwan's encap=yes does): a source hash nobody can match.
		src = e.randBytes(len(src))
	}
	return []isakmp.Payload{&isakmp.NATD{Hash: dst}, &isakmp.NATD{Hash: src}}
}

// detectNAT evaluates the peer's NAT-D payloads (RFC 3947 §3.2).
func (s *ikeSA) detectNAT(natds []*isakmp.NATD, local, remote netip.AddrPort) {
	if len(natds) < 2 {
		return
	}
	ci, cr := s.rec.Cookies.I[:], s.rec.Cookies.R[:]
	// The first is the peer's view of us.
	s.rec.NATLocal = !ikecrypto.Equal(natds[0].Hash, ikecrypto.NATD(s.prf, ci, cr, local))
	want := ikecrypto.NATD(s.prf, ci, cr, remote)
	s.rec.NATRemote = true
	for _, n := range natds[1:] {
		if ikecrypto.Equal(n.Hash, want) {
			s.rec.NATRemote = false
		}
	}
}

func (s *ikeSA) natDetected() bool { return s.rec.NATLocal || s.rec.NATRemote }

func hasVID(ps []isakmp.Payload, v []byte) bool {
	for _, p := range ps {
		if vid, ok := p.(*isakmp.VendorID); ok && bytes.Equal(vid.Data, v) {
			return true
		}
	}
	return false
}

func cloneIKE(r *sa.IKESA) *sa.IKESA {
	cp := *r
	cp.Exchanges = slices.Clone(r.Exchanges)
	return &cp
}

func cloneChild(c *sa.ChildSA) *sa.ChildSA {
	cp := *c
	cp.LocalTS = slices.Clone(c.LocalTS)
	cp.RemoteTS = slices.Clone(c.RemoteTS)
	cp.Counters.ReplayBitmap = slices.Clone(c.Counters.ReplayBitmap)
	return &cp
}
