package ikev1

import (
	"errors"
	"fmt"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/isakmp"
	"ikegw/ike/pki"
)

// certEncodingX509Sig is the CERT/CR encoding "X.509 Certificate -
// Signature" (RFC 2408 §3.9).
const certEncodingX509Sig = 4

// certRequests returns a CR payload per trusted CA of a certificate
// authenticated connection (none for PSK).
func certRequests(c *config.Connection) []isakmp.Payload {
	if !usesSig(c) || c.Pubkey.Trust == nil {
		return nil
	}
	var ps []isakmp.Payload
	for _, dn := range c.Pubkey.Trust.CADNs() {
		ps = append(ps, &isakmp.CertRequest{Encoding: certEncodingX509Sig, Authority: dn})
	}
	return ps
}

// authPayloads returns the payloads of Main Mode message 5 or 6 after ID:
// HASH for PSK; CERT (always, or when the peer asked) and SIG over the hash
// for certificates.
func authPayloads(c *config.Connection, p *phase1, id *isakmp.ID, hash []byte) ([]isakmp.Payload, error) {
	if !usesSig(c) {
		return []isakmp.Payload{id, &isakmp.Hash{Data: hash}}, nil
	}
	sig, err := pki.Sign(c.Pubkey.Key.Signer, hash)
	if err != nil {
		return nil, err
	}
	ps := []isakmp.Payload{id}
	if c.Pubkey.SendCert != config.SendCertIfAsked || p.peerCR {
		for _, cert := range c.Pubkey.Certs {
			ps = append(ps, &isakmp.Cert{Encoding: certEncodingX509Sig, Data: cert.Raw})
		}
	}
	return append(ps, &isakmp.Signature{Data: sig}), nil
}

// verifySigAuth checks the peer's certificate chain, that the certificate
// vouches for the peer's ID, and the SIG over hash. It returns the
// certificate's SHA-256 fingerprint, or the reason for refusing.
func verifySigAuth(c *config.Connection, d isakmp.Decoded, id *isakmp.ID, hash []byte, now time.Time) ([]byte, string, error) {
	var ders [][]byte
	for _, cp := range all[*isakmp.Cert](d) {
		if cp.Encoding == certEncodingX509Sig {
			ders = append(ders, cp.Data)
		}
	}
	sp, _, okS := first[*isakmp.Signature](d)
	if !okS {
		return nil, "no SIG payload", nil
	}
	if len(ders) == 0 {
		return nil, "peer sent no X.509 certificate", nil
	}
	cert, err := c.Pubkey.Trust.Verify(ders, now)
	if err != nil {
		switch {
		case errors.Is(err, pki.ErrExpired):
			return nil, "peer certificate expired or not yet valid", err
		case errors.Is(err, pki.ErrRevoked):
			return nil, "peer certificate revoked by CRL", err
		case errors.Is(err, pki.ErrUnknownCA):
			return nil, "peer certificate not issued by a trusted CA", err
		}
		return nil, "peer certificate refused", err
	}
	if err := pki.MatchIdentity(cert, uint8(id.IDType), id.Data); err != nil {
		return nil, fmt.Sprintf("peer identity %s does not match its certificate", id), err
	}
	if err := pki.VerifySig(cert.PublicKey, hash, sp.Data); err != nil {
		return nil, "signature does not verify", err
	}
	return pki.Fingerprint(cert), "", nil
}

// sigAuthOK checks the peer's certificate and its signature over want
// (HASH_I or HASH_R) and records the certificate's fingerprint. On a
// refusal it tells the peer, encrypted under iv (nil: the peer cannot be
// told yet; peerDone: the peer believes phase 1 complete), fails the phase
// 1 with the reason and reports false.
func (e *Engine) sigAuthOK(now time.Time, o *out, s *ikeSA, pkt Packet, d isakmp.Decoded, id *isakmp.ID, want, iv []byte, peerDone bool) bool {
	fp, why, err := verifySigAuth(s.conn, d, id, want, now)
	if why != "" {
		e.refusePhase1(o, s, pkt, iv, peerDone)
		e.phase1AuthFailed(o, s, pkt, why, err)
		return false
	}
	s.rec.PeerCertSHA256 = fp
	return true
}

// refusePhase1 tells the peer that its Main Mode message 5 or 6, which
// decrypted under the phase 1 keys, is refused (its certificate, signature
// or identity), as strongSwan does: a refused message 5 gets an
// AUTHENTICATION_FAILED notify (the initiator, waiting for message 6, gives
// up at once with that reason instead of retransmitting), a refused message
// 6 a DELETE of the ISAKMP SA (the responder believes phase 1 done and
// would otherwise keep it until DPD; in Aggressive Mode, message 3, the
// caller asks for the notify instead). The informational is encrypted with
// the IV of its message ID from lastBlock, the last ciphertext block of the
// refused message, and carries HASH(1). It is sent from and to the
// addresses of the refused packet.
func (e *Engine) refusePhase1(o *out, s *ikeSA, pkt Packet, lastBlock []byte, peerDone bool) {
	if s.cipher == nil || s.rec.SKEYIDa == nil || len(lastBlock) == 0 {
		return
	}
	var p isakmp.Payload = &isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP,
		NotifyType: isakmp.NotifyAuthenticationFailed, SPI: cookieSPI(s.rec.Cookies)}
	if peerDone {
		p = &isakmp.Delete{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP, SPIs: [][]byte{cookieSPI(s.rec.Cookies)}}
	}
	mid := e.newMsgID(s)
	_, rest, err := isakmp.AppendPayloads(nil, []isakmp.Payload{p})
	if err != nil {
		e.log.Error("phase 1: cannot encode the refusal", "sa", s.String(), "err", err)
		return
	}
	hash := ikecrypto.InfoHash(s.prf, s.rec.SKEYIDa, mid, rest)
	iv := ikecrypto.ExchangeIV(s.prf, lastBlock, mid, s.cipher.BlockSize())
	msg, _, err := s.encrypt(s.header(isakmp.ExchangeInfo, mid), []isakmp.Payload{&isakmp.Hash{Data: hash}, p}, iv)
	if err != nil {
		e.log.Error("phase 1: cannot encrypt the refusal", "sa", s.String(), "err", err)
		return
	}
	o.send(pkt.Local, pkt.Remote, msg)
	e.stats.Sent++
}

// authPRF is the PRF of HASH_I and HASH_R: the negotiated one, except with
// ECDSA signatures, where the hash is tied to the curve (RFC 4754: SHA-256
// for P-256, SHA-384 for P-384, SHA-512 for P-521) whatever the proposal
// says, as strongSwan computes it. SKEYID itself still comes from the
// negotiated PRF.
func (s *ikeSA) authPRF() *ikecrypto.Prf {
	var h ikecrypto.HashAlg
	switch s.rec.Proposal.AuthMethod {
	case pki.AuthECDSA256:
		h = ikecrypto.HashSHA256
	case pki.AuthECDSA384:
		h = ikecrypto.HashSHA384
	case pki.AuthECDSA521:
		h = ikecrypto.HashSHA512
	default:
		return s.prf
	}
	if s.prf != nil && s.prf.Alg() == h {
		return s.prf
	}
	p, err := ikecrypto.NewPRF(h)
	if err != nil {
		return s.prf // not reached: the three are supported
	}
	return p
}
