package ikev1

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
	"ikegw/ike/pki"
	"ikegw/ike/sa"
)

// sigLab is a CA with certificates for the two test nodes.
type sigLab struct {
	ca, other *pki.CA
	kt        pki.KeyType
}

func newSigLab(t *testing.T, kt pki.KeyType) *sigLab {
	t.Helper()
	ca, err := pki.NewCA("engine test CA", kt, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other CA", kt, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &sigLab{ca: ca, other: other, kt: kt}
}

// pubkey turns c into a certificate authenticated connection with a
// certificate from ca for addr (IP SAN and DNS name).
func (l *sigLab) pubkey(t *testing.T, c *config.Connection, ca *pki.CA, leaf pki.Leaf, crls ...*x509.RevocationList) *x509.Certificate {
	t.Helper()
	leaf.KeyType = l.kt
	cert, key, err := ca.Issue(leaf)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := pki.NewTrust([]*x509.Certificate{l.ca.Cert}, crls)
	if err != nil {
		t.Fatal(err)
	}
	c.Auth, c.PSK = config.AuthPubkey, nil
	c.RemoteID = config.Identity{Type: config.IDAny}
	c.Pubkey = &config.PubkeyAuth{Certs: []*x509.Certificate{cert}, Key: config.PrivateKey{Signer: key}, Trust: tr, SendCert: config.SendCertAlways}
	return cert
}

func sigPair(t *testing.T, kt pki.KeyType) (*sigLab, *node, *node, *world) {
	l := newSigLab(t, kt)
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	w.now = time.Now().Truncate(time.Second)
	l.pubkey(t, a.eng.conns["to-b"], l.ca, pki.Leaf{CommonName: "a", IPs: []net.IP{net.IP(addrA.AsSlice())}})
	l.pubkey(t, b.eng.conns["to-a"], l.ca, pki.Leaf{CommonName: "b", DNSNames: []string{"b.example"}})
	return l, a, b, w
}

func TestSignatureAuth(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.RSA2048, pki.ECDSA256, pki.ECDSA384} {
		t.Run(string(kt), func(t *testing.T) {
			_, a, b, w := sigPair(t, kt)
			initiate(t, w, a, "to-b")
			ia, _, _ := checkPair(t, a, b)
			ib := onlyIKE(t, b)
			wantAuth := map[pki.KeyType]uint16{pki.RSA2048: pki.AuthRSASig, pki.ECDSA256: pki.AuthECDSA256, pki.ECDSA384: pki.AuthECDSA384}[kt]
			if ia.Proposal.AuthMethod != wantAuth || ib.Proposal.AuthMethod != wantAuth {
				t.Fatalf("auth method %d/%d, want %d", ia.Proposal.AuthMethod, ib.Proposal.AuthMethod, wantAuth)
			}
			certA := a.eng.conns["to-b"].Pubkey.Certs[0]
			certB := b.eng.conns["to-a"].Pubkey.Certs[0]
			if !bytes.Equal(ia.PeerCertSHA256, pki.Fingerprint(certB)) || !bytes.Equal(ib.PeerCertSHA256, pki.Fingerprint(certA)) {
				t.Fatal("peer certificate fingerprints not recorded")
			}
			if ib.RemoteID.Type != pki.IDDERASN1DN || !bytes.Equal(ib.RemoteID.Data, certA.RawSubject) {
				t.Fatalf("responder's peer identity %+v", ib.RemoteID)
			}
			for _, n := range []*node{a, b} {
				for _, r := range n.store {
					if len(r.PeerCertSHA256) != 32 {
						t.Fatalf("%s: persisted record lacks the peer cert fingerprint", n.name)
					}
				}
			}
		})
	}
}

func TestSignatureAuthRefusals(t *testing.T) {
	cases := []struct {
		name, reason string
		setup        func(t *testing.T, l *sigLab, a, b *node)
	}{
		{"expired", "peer certificate expired", func(t *testing.T, l *sigLab, a, b *node) {
			l.pubkey(t, a.eng.conns["to-b"], l.ca, pki.Leaf{CommonName: "a",
				NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		}},
		{"other CA", "not issued by a trusted CA", func(t *testing.T, l *sigLab, a, b *node) {
			l.pubkey(t, a.eng.conns["to-b"], l.other, pki.Leaf{CommonName: "a"})
		}},
		{"identity mismatch", "does not match its certificate", func(t *testing.T, l *sigLab, a, b *node) {
			a.eng.conns["to-b"].LocalID = config.Identity{Type: config.IDFQDN, Data: []byte("not-a.example")}
		}},
		{"revoked", "revoked by CRL", func(t *testing.T, l *sigLab, a, b *node) {
			cert := l.pubkey(t, a.eng.conns["to-b"], l.ca, pki.Leaf{CommonName: "a"})
			crl, err := l.ca.CRL(cert)
			if err != nil {
				t.Fatal(err)
			}
			l.pubkey(t, b.eng.conns["to-a"], l.ca, pki.Leaf{CommonName: "b"}, crl)
		}},
		{"wrong key", "signature does not verify", func(t *testing.T, l *sigLab, a, b *node) {
			k, err := pki.NewKey(l.kt)
			if err != nil {
				t.Fatal(err)
			}
			a.eng.conns["to-b"].Pubkey.Key = config.PrivateKey{Signer: k}
		}},
	}
	for _, kt := range []pki.KeyType{pki.RSA2048, pki.ECDSA256} {
		for _, c := range cases {
			t.Run(string(kt)+"/"+c.name, func(t *testing.T) {
				l, a, b, w := sigPair(t, kt)
				c.setup(t, l, a, b)
				var logs bytes.Buffer
				b.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
				initiate(t, w, a, "to-b")
				for i := 0; i < 8; i++ {
					w.advance(30 * time.Second)
				}
				if n := len(b.eng.IKESAs()); n != 0 {
					t.Fatalf("responder kept %d IKE SAs", n)
				}
				if len(b.store)+len(b.kids) != 0 {
					t.Fatal("responder persisted state")
				}
				if st := b.eng.Stats(); st.Phase1Failed == 0 || st.Phase1FailedBy[FailAuth] == 0 {
					t.Fatalf("refusal not counted as an authentication failure: %v", st.Phase1FailedBy)
				}
				if !strings.Contains(logs.String(), c.reason) {
					t.Fatalf("responder log lacks %q:\n%s", c.reason, logs.String())
				}
			})
		}
	}
}

// TestSignatureAuthResume: a standby restored from the records of a
// certificate authenticated SA keeps the fingerprint and continues the SA
// (DPD) without a new phase 1.
func TestSignatureAuthResume(t *testing.T) {
	_, a, b, w := sigPair(t, pki.ECDSA256)
	initiate(t, w, a, "to-b")
	ike, _, _ := checkPair(t, a, b)
	var ikes []*sa.IKESA
	var kids []*sa.ChildSA
	for _, r := range b.store {
		ikes = append(ikes, r)
	}
	for _, c := range b.kids {
		kids = append(kids, c)
	}
	fresh := newNode(t, "b", addrB, b.eng.cfg.Connections...)
	acts, err := fresh.eng.Restore(w.now, ikes, kids, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fresh.apply(acts)
	for _, c := range kids {
		fresh.installed[c.In.SPI] = c
	}
	w.nodes[addrB] = fresh
	w.advance(31 * time.Second)
	w.advance(31 * time.Second)
	if fresh.eng.Stats().DPDAcked == 0 {
		t.Fatalf("DPD after restore failed: %+v", fresh.eng.Stats())
	}
	r := onlyIKE(t, fresh)
	if r.Cookies != ike.Cookies || !bytes.Equal(r.PeerCertSHA256, pki.Fingerprint(a.eng.conns["to-b"].Pubkey.Certs[0])) {
		t.Fatal("restored SA lost its cookies or peer certificate fingerprint")
	}
	if a.eng.Stats().Phase1Done != 1 {
		t.Fatalf("initiator completed %d phase 1s", a.eng.Stats().Phase1Done)
	}
}

func TestVerifySigAuthWithoutCert(t *testing.T) {
	l := newSigLab(t, pki.ECDSA256)
	c := &config.Connection{}
	l.pubkey(t, c, l.ca, pki.Leaf{CommonName: "x"})
	id := localID(c, addrA)
	d := isakmp.Decoded{Payloads: []isakmp.Payload{&id, &isakmp.Signature{Data: []byte{1, 2}}}, Raw: [][]byte{nil, nil}}
	if _, why, _ := verifySigAuth(c, d, &id, make([]byte, 32), time.Now()); why != "peer sent no X.509 certificate" {
		t.Fatalf("reason %q", why)
	}
	d = isakmp.Decoded{Payloads: []isakmp.Payload{&id}, Raw: [][]byte{nil}}
	if _, why, _ := verifySigAuth(c, d, &id, make([]byte, 32), time.Now()); why != "no SIG payload" {
		t.Fatalf("reason %q", why)
	}
}

// TestSignatureAuthDNRemoteID: a remote_id typed as a DN (stored as DER by
// config) matches the peer's certificate subject in its ID payload, ignoring
// case; a DN naming someone else refuses phase 1 with a log line.
func TestSignatureAuthDNRemoteID(t *testing.T) {
	for _, c := range []struct {
		remote string
		ok     bool
	}{
		{"O=IKEGW LAB, CN=A", true},
		{"/O=ikegw lab/CN=a", true},
		{"O=ikegw lab, CN=someone-else", false},
	} {
		t.Run(c.remote, func(t *testing.T) {
			_, a, b, w := sigPair(t, pki.ECDSA256)
			id, err := config.ParseIdentity(c.remote)
			if err != nil {
				t.Fatal(err)
			}
			b.eng.conns["to-a"].RemoteID = id
			var logs bytes.Buffer
			b.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
			initiate(t, w, a, "to-b")
			if c.ok {
				checkPair(t, a, b)
				return
			}
			for i := 0; i < 8; i++ {
				w.advance(30 * time.Second)
			}
			if n := len(b.eng.IKESAs()); n != 0 {
				t.Fatalf("responder kept %d IKE SAs", n)
			}
			if !strings.Contains(logs.String(), "is not the one configured") ||
				!strings.Contains(logs.String(), `configured \"O=ikegw lab, CN=someone-else\" (DER_ASN1_DN)`) {
				t.Fatalf("responder log lacks the reason:\n%s", logs.String())
			}
		})
	}
}

// peerInfo builds the encrypted informational a peer sends with an error
// notify under s's phase 1 keys, its IV derived from ivBase (a wrong hash
// when forge is set).
func peerInfo(t *testing.T, s *ikeSA, ivBase []byte, forge bool) []byte {
	t.Helper()
	const mid = 0x01020304
	n := &isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP, NotifyType: isakmp.NotifyAuthenticationFailed, SPI: cookieSPI(s.rec.Cookies)}
	_, rest, err := isakmp.AppendPayloads(nil, []isakmp.Payload{n})
	if err != nil {
		t.Fatal(err)
	}
	hash := ikecrypto.InfoHash(s.prf, s.rec.SKEYIDa, mid, rest)
	if forge {
		hash[0] ^= 1
	}
	iv := ikecrypto.ExchangeIV(s.prf, ivBase, mid, s.cipher.BlockSize())
	msg, _, err := s.encrypt(s.header(isakmp.ExchangeInfo, mid), []isakmp.Payload{&isakmp.Hash{Data: hash}, n}, iv)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func onlySA(t *testing.T, n *node) *ikeSA {
	t.Helper()
	if len(n.eng.ikes) != 1 {
		t.Fatalf("%s has %d IKE SAs, want 1", n.name, len(n.eng.ikes))
	}
	for _, s := range n.eng.ikes {
		return s
	}
	return nil
}

// TestPeerRefusesOurCertificate: a peer that does not accept our
// certificate answers message 5 (we initiate) or message 6 (we respond)
// with an encrypted AUTHENTICATION_FAILED, as strongSwan does. We end the
// phase 1 (or delete the SA we believed established) with a log line
// instead of retransmitting or keeping a dead SA; a forged one is ignored.
func TestPeerRefusesOurCertificate(t *testing.T) {
	t.Run("initiator", func(t *testing.T) {
		l, a, _, w := sigPair(t, pki.ECDSA256)
		l.pubkey(t, a.eng.conns["to-b"], l.other, pki.Leaf{CommonName: "a"}) // b refuses it
		var logs bytes.Buffer
		a.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
		w.drop = isInfo // b's own refusal: this test sends its own
		initiate(t, w, a, "to-b")
		s := onlySA(t, a)
		if s.established() || s.p1 == nil || s.p1.step != 5 {
			t.Fatalf("initiator not waiting for message 6")
		}
		pkt := func(forge bool) Packet {
			return Packet{Local: s.rec.Local, Remote: s.rec.Remote, Data: peerInfo(t, s, s.p1.iv, forge)}
		}
		a.apply(a.eng.HandlePacket(w.now, pkt(true)))
		if len(a.eng.ikes) != 1 {
			t.Fatal("a forged informational ended phase 1")
		}
		a.apply(a.eng.HandlePacket(w.now, pkt(false)))
		if len(a.eng.ikes) != 0 {
			t.Fatal("phase 1 kept after the peer's AUTHENTICATION_FAILED")
		}
		if a.eng.Stats().Phase1FailedBy[FailPeerRefused] != 1 {
			t.Fatalf("failures %v", a.eng.Stats().Phase1FailedBy)
		}
		if !strings.Contains(logs.String(), "phase 1 refused by the peer") || !strings.Contains(logs.String(), "AUTHENTICATION-FAILED") {
			t.Fatalf("log:\n%s", logs.String())
		}
	})
	t.Run("responder", func(t *testing.T) {
		_, a, b, w := sigPair(t, pki.ECDSA256)
		initiate(t, w, a, "to-b")
		checkPair(t, a, b)
		var logs bytes.Buffer
		b.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
		s := onlySA(t, b)
		in := func(forge bool) Packet {
			return Packet{Local: s.rec.Local, Remote: s.rec.Remote, Data: peerInfo(t, s, s.rec.IVBase, forge)}
		}
		b.apply(b.eng.HandlePacket(w.now, in(true)))
		if len(b.eng.ikes) != 1 {
			t.Fatal("a forged informational deleted the SA")
		}
		b.apply(b.eng.HandlePacket(w.now, in(false)))
		if len(b.eng.ikes) != 0 || len(b.store) != 0 || len(b.kids) != 0 {
			t.Fatalf("after the peer's AUTHENTICATION_FAILED: %d SAs, %d persisted, %d children", len(b.eng.ikes), len(b.store), len(b.kids))
		}
		if !strings.Contains(logs.String(), "phase 1 refused by the peer after our last message") {
			t.Fatalf("log:\n%s", logs.String())
		}
	})
}

// isInfo reports whether a packet is an ISAKMP informational exchange.
func isInfo(p Packet) bool {
	d := p.Data
	if len(d) >= 4 && d[0]|d[1]|d[2]|d[3] == 0 {
		d = d[4:] // non-ESP marker
	}
	return len(d) > 18 && isakmp.ExchangeType(d[18]) == isakmp.ExchangeInfo
}

// TestSignatureRefusalTellsPeer: the engine refusing a certificate tells
// the peer, as strongSwan does: a refused message 5 gets an
// AUTHENTICATION_FAILED (the initiator gives up at once, with that
// reason), a refused message 6 a DELETE (the responder drops the SA it
// believed established).
func TestSignatureRefusalTellsPeer(t *testing.T) {
	t.Run("message 5", func(t *testing.T) {
		l, a, b, w := sigPair(t, pki.RSA2048)
		l.pubkey(t, a.eng.conns["to-b"], l.other, pki.Leaf{CommonName: "a"})
		initiate(t, w, a, "to-b") // no time passes: no retransmission
		if len(a.eng.ikes)+len(b.eng.ikes) != 0 {
			t.Fatalf("SAs left: initiator %d, responder %d", len(a.eng.ikes), len(b.eng.ikes))
		}
		if a.eng.Stats().Phase1FailedBy[FailPeerRefused] != 1 || b.eng.Stats().Phase1FailedBy[FailAuth] != 1 {
			t.Fatalf("failures: initiator %v, responder %v", a.eng.Stats().Phase1FailedBy, b.eng.Stats().Phase1FailedBy)
		}
	})
	t.Run("message 6", func(t *testing.T) {
		l, a, b, w := sigPair(t, pki.RSA2048)
		l.pubkey(t, b.eng.conns["to-a"], l.other, pki.Leaf{CommonName: "b"})
		var logs bytes.Buffer
		b.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
		initiate(t, w, a, "to-b")
		if len(a.eng.ikes)+len(b.eng.ikes) != 0 || len(b.store)+len(b.kids) != 0 {
			t.Fatalf("SAs left: initiator %d, responder %d (%d persisted)", len(a.eng.ikes), len(b.eng.ikes), len(b.store))
		}
		if a.eng.Stats().Phase1FailedBy[FailAuth] != 1 || !strings.Contains(logs.String(), "peer deleted the IKE SA") {
			t.Fatalf("initiator failures %v; responder log:\n%s", a.eng.Stats().Phase1FailedBy, logs.String())
		}
	})
	t.Run("wrong PSK: nothing sent", func(t *testing.T) {
		a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
		b.eng.conns["to-a"].PSK = []byte("not the same key at all")
		sent := 0
		w.drop = func(p Packet) bool {
			if isInfo(p) {
				sent++
			}
			return false
		}
		initiate(t, w, a, "to-b")
		if sent != 0 {
			t.Fatalf("%d informationals after a message that does not decrypt", sent)
		}
	})
}

// TestAuthPRF: HASH_I/HASH_R use the negotiated PRF, except with ECDSA,
// where the curve's hash rules (strongSwan does the same; a P-384 key
// under a SHA-256 proposal otherwise fails to verify).
func TestAuthPRF(t *testing.T) {
	sha1PRF, err := ikecrypto.NewPRF(ikecrypto.HashSHA1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method uint16
		want   ikecrypto.HashAlg
	}{
		{1, ikecrypto.HashSHA1},
		{pki.AuthRSASig, ikecrypto.HashSHA1},
		{pki.AuthECDSA256, ikecrypto.HashSHA256},
		{pki.AuthECDSA384, ikecrypto.HashSHA384},
		{pki.AuthECDSA521, ikecrypto.HashSHA512},
	} {
		s := &ikeSA{prf: sha1PRF}
		s.rec.Proposal.AuthMethod = c.method
		if got := s.authPRF().Alg(); got != c.want {
			t.Errorf("auth method %d: HASH PRF %v, want %v", c.method, got, c.want)
		}
	}
}

// TestSignatureAuthCurveHash: ECDSA keys under a proposal whose hash is
// not the curve's still authenticate (both ends use the curve's hash).
func TestSignatureAuthCurveHash(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.ECDSA256, pki.ECDSA384} {
		t.Run(string(kt), func(t *testing.T) {
			l := newSigLab(t, kt)
			a, b, w := pairNodes(t, "aes128-sha1-modp2048", "aes128-sha1")
			w.now = time.Now().Truncate(time.Second)
			l.pubkey(t, a.eng.conns["to-b"], l.ca, pki.Leaf{CommonName: "a"})
			l.pubkey(t, b.eng.conns["to-a"], l.ca, pki.Leaf{CommonName: "b"})
			initiate(t, w, a, "to-b")
			checkPair(t, a, b)
		})
	}
}

// TestSignatureAuthAggressive: Aggressive Mode with certificates, RSA and
// ECDSA: CR in messages 1 and 2, [CERT] SIG in 2 and 3; and a refused
// initiator certificate in message 3 leaves neither side with an SA.
func TestSignatureAuthAggressive(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.RSA2048, pki.ECDSA256, pki.ECDSA384} {
		for _, sendCert := range []string{config.SendCertAlways, config.SendCertIfAsked} {
			t.Run(string(kt)+"/"+sendCert, func(t *testing.T) {
				_, a, b, w := sigPair(t, kt)
				for _, c := range []*config.Connection{a.eng.conns["to-b"], b.eng.conns["to-a"]} {
					c.Aggressive = true
					c.Pubkey.SendCert = sendCert
				}
				initiate(t, w, a, "to-b")
				ia, _, _ := checkPair(t, a, b)
				ib := onlyIKE(t, b)
				certA := a.eng.conns["to-b"].Pubkey.Certs[0]
				certB := b.eng.conns["to-a"].Pubkey.Certs[0]
				if !bytes.Equal(ia.PeerCertSHA256, pki.Fingerprint(certB)) || !bytes.Equal(ib.PeerCertSHA256, pki.Fingerprint(certA)) {
					t.Fatal("peer certificate fingerprints not recorded")
				}
				if a.eng.Stats().Phase1Done != 1 {
					t.Fatalf("phase 1s: %d", a.eng.Stats().Phase1Done)
				}
			})
		}
	}
	t.Run("refused", func(t *testing.T) {
		l, a, b, w := sigPair(t, pki.ECDSA256)
		for _, c := range []*config.Connection{a.eng.conns["to-b"], b.eng.conns["to-a"]} {
			c.Aggressive = true
		}
		l.pubkey(t, a.eng.conns["to-b"], l.other, pki.Leaf{CommonName: "a"})
		a.eng.conns["to-b"].Aggressive = true
		var logs bytes.Buffer
		b.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
		initiate(t, w, a, "to-b")
		if len(a.eng.ikes)+len(b.eng.ikes) != 0 || len(b.store) != 0 {
			t.Fatalf("SAs left: initiator %d, responder %d", len(a.eng.ikes), len(b.eng.ikes))
		}
		if !strings.Contains(logs.String(), "peer certificate not issued by a trusted CA") {
			t.Fatalf("responder log:\n%s", logs.String())
		}
	})
}

// TestSignatureReauthentication: a reauthentication (a new phase 1 before
// the IKE SA's lifetime ends) validates the peer's certificate again: it
// succeeds with the fingerprint recorded anew, and fails, with the reason
// logged, once the responder's CRL revokes the initiator's certificate.
func TestSignatureReauthentication(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		t.Run(fmt.Sprintf("revoked=%t", revoke), func(t *testing.T) {
			l, a, b, w := sigPair(t, pki.ECDSA256)
			ca, cb := a.eng.conns["to-b"], b.eng.conns["to-a"]
			ca.IKELifetime = 2 * time.Hour
			ca.Children[0].RekeyTime, ca.Children[0].LifeTime = 10*time.Hour, 11*time.Hour
			cb.Children[0].LifeTime = 11 * time.Hour
			initiate(t, w, a, "to-b")
			ike1, _, _ := checkPair(t, a, b)
			var logs bytes.Buffer
			b.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
			if revoke {
				crl, err := l.ca.CRL(ca.Pubkey.Certs[0])
				if err != nil {
					t.Fatal(err)
				}
				if cb.Pubkey.Trust, err = pki.NewTrust([]*x509.Certificate{l.ca.Cert}, []*x509.RevocationList{crl}); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 110; i++ {
				w.advance(time.Minute)
			}
			if !revoke {
				ike2, _, _ := checkPair(t, a, b)
				if ike2.Cookies == ike1.Cookies || !bytes.Equal(onlyIKE(t, b).PeerCertSHA256, pki.Fingerprint(ca.Pubkey.Certs[0])) {
					t.Fatal("not reauthenticated with the certificate")
				}
				return
			}
			if b.eng.Stats().Phase1FailedBy[FailAuth] == 0 || !strings.Contains(logs.String(), "peer certificate revoked by CRL") {
				t.Fatalf("reauthentication with a revoked certificate not refused: %v\n%s", b.eng.Stats().Phase1FailedBy, logs.String())
			}
			for _, s := range b.eng.IKESAs() {
				if s.Cookies != ike1.Cookies {
					t.Fatalf("responder holds a new IKE SA %s", s.Cookies)
				}
			}
		})
	}
}
