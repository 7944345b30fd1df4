package ikev1

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
)

// qm2 is Quick Mode message 2 as the initiator decrypted it.
type qm2 struct {
	d      isakmp.Decoded
	hashOK bool // HASH(2) covers every payload after it
}

// captureQM2 decrypts, with the initiator's keys and IV, every Quick Mode
// message the responder sends it, and lets each through unchanged.
func captureQM2(t *testing.T, w *world, ini, resp *node) *[]qm2 {
	var got []qm2
	w.drop = func(p Packet) bool {
		h, err := isakmp.ParseHeader(p.Data)
		if err != nil || h.Exchange != isakmp.ExchangeQuick || p.Remote.Addr() != ini.addr {
			return false
		}
		s := ini.eng.ikes[[16]byte(append(h.ICookie[:], h.RCookie[:]...))]
		if s == nil || s.xchg[h.MessageID] == nil {
			return false
		}
		x := s.xchg[h.MessageID]
		d, _, err := s.decrypt(h, p.Data[isakmp.HeaderLen:], x.iv)
		if err != nil {
			t.Errorf("cannot decrypt quick mode message 2: %v", err)
			return false
		}
		hp, ok := d.Payloads[0].(*isakmp.Hash)
		if !ok {
			t.Errorf("quick mode message 2 starts with %T, want HASH", d.Payloads[0])
			return false
		}
		rest := bytes.Join(d.Raw[1:], nil)
		want := ikecrypto.QMHash2(s.prf, s.rec.SKEYIDa, h.MessageID, x.ni, rest)
		got = append(got, qm2{d: d, hashOK: bytes.Equal(hp.Data, want)})
		return false
	}
	return &got
}

func lifeAttrs(t *testing.T, as []isakmp.Attribute) (secs, kb uint64) {
	t.Helper()
	lt := uint64(isakmp.LifeSeconds)
	for _, a := range as {
		v, ok := a.Uint()
		if !ok {
			t.Fatalf("attribute %d has no value", a.Type)
		}
		switch a.Type {
		case isakmp.AttrSALifeType:
			lt = v
		case isakmp.AttrSALifeDuration:
			if lt == uint64(isakmp.LifeSeconds) {
				secs = v
			} else {
				kb = v
			}
		}
	}
	return secs, kb
}

// The responder whose lifetime is shorter than the initiator's proposal
// says so with RESPONDER-LIFETIME inside the hashed part of message 2 and
// in the echoed transform; both ikegw engines then agree on the shorter
// lifetime, and the initiator rekeys before it runs out.
func TestResponderLifetime(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		name                 string
		iniLife, respLife    time.Duration
		iniRekey, respRekey  time.Duration
		iniBytes, respBytes  uint64
		wantNotify           bool
		wantSecs             uint64
		wantKB, wantHardByte uint64
	}{
		{name: "responder shorter in seconds", iniLife: 2 * time.Hour, iniRekey: 100 * time.Minute,
			respLife: 20 * time.Minute, respRekey: 15 * time.Minute, wantNotify: true, wantSecs: 1200},
		{name: "responder has a volume limit, initiator none", iniLife: 66 * time.Minute, iniRekey: time.Hour,
			respLife: 66 * time.Minute, respRekey: time.Hour, respBytes: 10 * mb, wantNotify: true, wantSecs: 3960,
			wantKB: 10 * 1024, wantHardByte: 10 * mb},
		{name: "responder shorter in kilobytes", iniLife: 66 * time.Minute, iniRekey: time.Hour, iniBytes: 100 * mb,
			respLife: 66 * time.Minute, respRekey: time.Hour, respBytes: 10 * mb, wantNotify: true, wantSecs: 3960,
			wantKB: 10 * 1024, wantHardByte: 10 * mb},
		{name: "equal", iniLife: 66 * time.Minute, iniRekey: time.Hour, respLife: 66 * time.Minute, respRekey: time.Hour,
			wantSecs: 3960},
		{name: "responder longer", iniLife: 20 * time.Minute, iniRekey: 15 * time.Minute, iniBytes: 10 * mb,
			respLife: 2 * time.Hour, respRekey: 100 * time.Minute, respBytes: 100 * mb, wantSecs: 1200, wantKB: 10 * 1024, wantHardByte: 10 * mb},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
			ca, cb := a.eng.conns["to-b"].Children[0], b.eng.conns["to-a"].Children[0]
			ca.LifeTime, ca.RekeyTime, ca.LifeBytes = tc.iniLife, tc.iniRekey, tc.iniBytes
			cb.LifeTime, cb.RekeyTime, cb.LifeBytes = tc.respLife, tc.respRekey, tc.respBytes
			if tc.iniBytes != 0 {
				ca.RekeyBytes = tc.iniBytes * 9 / 10
			}
			if tc.respBytes != 0 {
				cb.RekeyBytes = tc.respBytes * 9 / 10
			}
			msgs := captureQM2(t, w, a, b)
			initiate(t, w, a, "to-b")
			_, x, y := checkPair(t, a, b)
			if len(*msgs) != 1 {
				t.Fatalf("captured %d quick mode messages 2, want 1", len(*msgs))
			}
			m := (*msgs)[0]
			if !m.hashOK {
				t.Fatal("HASH(2) does not cover the payloads after it")
			}
			var notes []*isakmp.Notify
			for _, p := range m.d.Payloads {
				if n, ok := p.(*isakmp.Notify); ok && n.NotifyType == isakmp.NotifyResponderLifetime {
					notes = append(notes, n)
				}
			}
			if !tc.wantNotify {
				if len(notes) != 0 {
					t.Fatalf("RESPONDER-LIFETIME sent although the responder's lifetime is not shorter: %x", notes[0].Data)
				}
			} else {
				if len(notes) != 1 {
					t.Fatalf("%d RESPONDER-LIFETIME notifies, want 1", len(notes))
				}
				n := notes[0]
				if n.Protocol != isakmp.ProtoESP || n.DOI != isakmp.DOIIPsec || len(n.SPI) != 4 || binary.BigEndian.Uint32(n.SPI) != y.In.SPI {
					t.Fatalf("notify protocol %d DOI %d SPI %x, want ESP, IPsec DOI, responder's inbound SPI %08x", n.Protocol, n.DOI, n.SPI, y.In.SPI)
				}
				as, err := decodeAttrs(n.Data)
				if err != nil {
					t.Fatal(err)
				}
				if secs, kb := lifeAttrs(t, as); secs != tc.wantSecs || kb != tc.wantKB {
					t.Fatalf("notify says %d s, %d KB; want %d s, %d KB", secs, kb, tc.wantSecs, tc.wantKB)
				}
			}
			saP := m.d.Payloads[1].(*isakmp.SA)
			if secs, kb := lifeAttrs(t, saP.Proposals[0].Transforms[0].Attributes); secs != tc.wantSecs || kb != tc.wantKB {
				t.Fatalf("echoed transform says %d s, %d KB; want %d s, %d KB", secs, kb, tc.wantSecs, tc.wantKB)
			}
			for _, c := range [...]struct {
				who string
				l   uint64
				b   uint64
				exp int64
			}{{"initiator", x.Lifetime.HardSeconds, x.Lifetime.HardBytes, x.ExpireAt}, {"responder", y.Lifetime.HardSeconds, y.Lifetime.HardBytes, y.ExpireAt}} {
				if c.l != tc.wantSecs || c.b != tc.wantHardByte {
					t.Errorf("%s: pair lifetime %d s, %d bytes; want %d s, %d bytes", c.who, c.l, c.b, tc.wantSecs, tc.wantHardByte)
				}
				if want := w.now.Add(time.Duration(tc.wantSecs) * time.Second).UnixNano(); c.exp != want {
					t.Errorf("%s: expires at %v, want %v", c.who, time.Unix(0, c.exp).UTC(), time.Unix(0, want).UTC())
				}
			}
			if x.RekeyAt == 0 || x.RekeyAt >= x.ExpireAt || x.Lifetime.SoftSeconds >= x.Lifetime.HardSeconds {
				t.Fatalf("initiator rekeys at %v (soft %d s), after its pair expires at %v (hard %d s)",
					time.Unix(0, x.RekeyAt).UTC(), x.Lifetime.SoftSeconds, time.Unix(0, x.ExpireAt).UTC(), x.Lifetime.HardSeconds)
			}
			if x.Lifetime.HardBytes != 0 && x.Lifetime.SoftBytes >= x.Lifetime.HardBytes {
				t.Fatalf("initiator's soft byte limit %d is not below the hard one %d", x.Lifetime.SoftBytes, x.Lifetime.HardBytes)
			}
			// The pair is rekeyed before it expires, and traffic never
			// runs on an expired pair: advance to just past the rekey.
			w.advance(time.Duration(x.RekeyAt-w.now.UnixNano()) + time.Second)
			w.advance(a.eng.cfg.RekeyGrace + time.Second) // the old pair goes
			_, x2, _ := checkPair(t, a, b)
			if x2.In.SPI == x.In.SPI {
				t.Fatal("the pair was not rekeyed before its (shortened) lifetime ran out")
			}
		})
	}
}

// decodeAttrs decodes a notify's attribute list (test helper, strict).
func decodeAttrs(b []byte) ([]isakmp.Attribute, error) {
	var as []isakmp.Attribute
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errShort
		}
		t := binary.BigEndian.Uint16(b)
		if t&0x8000 != 0 {
			as = append(as, isakmp.BasicAttr(t&0x7fff, binary.BigEndian.Uint16(b[2:])))
			b = b[4:]
			continue
		}
		l := int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+l {
			return nil, errShort
		}
		as = append(as, isakmp.VarAttr(t, b[4:4+l]))
		b = b[4+l:]
	}
	return as, nil
}

type shortErr struct{}

func (shortErr) Error() string { return "attribute list truncated" }

var errShort error = shortErr{}

func TestResponderLifeRule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		life     time.Duration
		bytes    uint64
		propSecs uint32
		propKB   uint64
		wantSecs uint32
		wantKB   uint64
		wantCut  bool
	}{
		{"no lifetime proposed, ours shorter than the 28800 s default", time.Hour, 0, 0, 0, 3600, 0, true},
		{"no lifetime proposed, ours longer than the default", 10 * time.Hour, 0, 0, 0, 28800, 0, false},
		{"proposed longer", 20 * time.Minute, 0, 7200, 0, 1200, 0, true},
		{"proposed shorter", 2 * time.Hour, 0, 600, 0, 600, 0, false},
		{"below one kilobyte counts as one", time.Hour, 100, 3600, 0, 3600, 1, true},
		{"proposed volume smaller", time.Hour, 10 << 20, 3600, 1000, 3600, 1000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := responderLife(&config.Child{LifeTime: tc.life, LifeBytes: tc.bytes}, p2Attrs{lifeSecs: tc.propSecs, lifeKB: tc.propKB})
			if l.secs != tc.wantSecs || l.kb != tc.wantKB || l.cut != tc.wantCut {
				t.Fatalf("got %d s, %d KB, cut %v; want %d s, %d KB, cut %v", l.secs, l.kb, l.cut, tc.wantSecs, tc.wantKB, tc.wantCut)
			}
			// What the responder encodes, the initiator decodes.
			data, err := isakmp.AppendAttributes(nil, l.attrs())
			if err != nil {
				t.Fatal(err)
			}
			if secs, kb := responderLifetime(data); secs != l.secs || kb != l.kb {
				t.Fatalf("round trip: %d s, %d KB; want %d s, %d KB", secs, kb, l.secs, l.kb)
			}
		})
	}
}

func TestResponderLifetimeDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		secs uint32
		kb   uint64
	}{
		{"empty", nil, 0, 0},
		{"seconds basic", []byte{0x80, 1, 0, 1, 0x80, 2, 0x0e, 0x10}, 3600, 0},
		{"seconds variable", []byte{0x80, 1, 0, 1, 0, 2, 0, 4, 0, 1, 0x51, 0x80}, 86400, 0},
		{"kilobytes only", []byte{0x80, 1, 0, 2, 0, 2, 0, 4, 0, 0x10, 0, 0}, 0, 0x100000},
		{"both", []byte{0x80, 1, 0, 1, 0x80, 2, 0x04, 0xb0, 0x80, 1, 0, 2, 0x80, 2, 0x27, 0x10}, 1200, 10000},
		{"truncated variable keeps what came before", []byte{0x80, 1, 0, 1, 0x80, 2, 0x04, 0xb0, 0, 2, 0, 8, 1}, 1200, 0},
		{"oversized variable", []byte{0x80, 1, 0, 1, 0, 2, 0, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 0, 0},
		{"trailing bytes", []byte{0x80, 1, 0, 1, 0x80, 2, 0, 60, 0xff}, 60, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if secs, kb := responderLifetime(tc.data); secs != tc.secs || kb != tc.kb {
				t.Fatalf("got %d s, %d KB; want %d s, %d KB", secs, kb, tc.secs, tc.kb)
			}
		})
	}
}

// The initiator honours RESPONDER-LIFETIME on its own: here the echoed
// transform is put back to the initiator's proposal (7200 s, re-hashed and
// re-encrypted), so the notify is all that tells of the responder's 1200 s.
func TestInitiatorHonoursResponderLifetimeNotify(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	ca, cb := a.eng.conns["to-b"].Children[0], b.eng.conns["to-a"].Children[0]
	ca.LifeTime, ca.RekeyTime = 2*time.Hour, 100*time.Minute
	cb.LifeTime, cb.RekeyTime = 20*time.Minute, 15*time.Minute
	rewritten := 0
	w.drop = func(p Packet) bool {
		h, err := isakmp.ParseHeader(p.Data)
		if err != nil || h.Exchange != isakmp.ExchangeQuick || p.Remote.Addr() != a.addr {
			return false
		}
		s := a.eng.ikes[[16]byte(append(h.ICookie[:], h.RCookie[:]...))]
		x := s.xchg[h.MessageID]
		d, _, err := s.decrypt(h, p.Data[isakmp.HeaderLen:], x.iv)
		if err != nil {
			t.Fatalf("cannot decrypt quick mode message 2: %v", err)
		}
		saP := d.Payloads[1].(*isakmp.SA)
		tr := &saP.Proposals[0].Transforms[0]
		tr.Attributes = append([]isakmp.Attribute{basic(isakmp.AttrSALifeType, isakmp.LifeSeconds), basic(isakmp.AttrSALifeDuration, 7200)},
			slices.DeleteFunc(tr.Attributes, func(at isakmp.Attribute) bool {
				return at.Type == isakmp.AttrSALifeType || at.Type == isakmp.AttrSALifeDuration
			})...)
		_, rest, err := isakmp.AppendPayloads(nil, d.Payloads[1:])
		if err != nil {
			t.Fatal(err)
		}
		hash := ikecrypto.QMHash2(s.prf, s.rec.SKEYIDa, h.MessageID, x.ni, rest)
		msg, _, err := s.encrypt(h, append([]isakmp.Payload{&isakmp.Hash{Data: hash}}, d.Payloads[1:]...), x.iv)
		if err != nil || len(msg) != len(p.Data) {
			t.Fatalf("re-encrypted message: %d bytes (was %d), err %v", len(msg), len(p.Data), err)
		}
		copy(p.Data, msg)
		rewritten++
		return false
	}
	initiate(t, w, a, "to-b")
	if rewritten != 1 {
		t.Fatalf("rewrote %d messages, want 1", rewritten)
	}
	_, x, y := checkPair(t, a, b)
	if x.Lifetime.HardSeconds != 1200 || y.Lifetime.HardSeconds != 1200 || x.ExpireAt != y.ExpireAt {
		t.Fatalf("initiator %d s (expires %v), responder %d s (expires %v); want both 1200 s",
			x.Lifetime.HardSeconds, time.Unix(0, x.ExpireAt).UTC(), y.Lifetime.HardSeconds, time.Unix(0, y.ExpireAt).UTC())
	}
	if x.RekeyAt >= x.ExpireAt {
		t.Fatal("initiator rekeys after the pair expires")
	}
}

// FuzzResponderLifetime: any notify body decodes without panicking, and
// what it yields survives our own encoding.
func FuzzResponderLifetime(f *testing.F) {
	f.Add([]byte{0x80, 1, 0, 1, 0x80, 2, 0x04, 0xb0, 0x80, 1, 0, 2, 0x80, 2, 0x27, 0x10})
	f.Add([]byte{0x80, 1, 0, 1, 0, 2, 0, 4, 0, 1, 0x51, 0x80})
	f.Add([]byte{0, 2, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		secs, kb := responderLifetime(data)
		enc, err := isakmp.AppendAttributes(nil, childLife{secs: secs, kb: kb}.attrs())
		if err != nil {
			t.Fatal(err)
		}
		if s2, k2 := responderLifetime(enc); s2 != secs || k2 != kb {
			t.Fatalf("%d s, %d KB re-encoded decodes as %d s, %d KB", secs, kb, s2, k2)
		}
	})
}
