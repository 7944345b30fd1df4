package ikecrypto

import (
	"encoding/binary"
	"net/netip"
)

// Key and hash derivations of RFC 2409. Arguments named *B ("Ni_b", "SAi_b",
// "IDii_b") are payload bodies without the generic payload header, as RFC
// 2409 §5 defines them. Every function returns a new slice and never keeps
// or modifies its arguments. p must come from NewPRF.

// SKEYIDPSK is SKEYID for pre-shared key authentication (RFC 2409 §5):
// prf(pre-shared-key, Ni_b | Nr_b).
func SKEYIDPSK(p *Prf, psk, ni, nr []byte) []byte {
	return p.Sum(psk, ni, nr)
}

// SKEYIDSig is SKEYID for signature authentication (RFC 2409 §5):
// prf(Ni_b | Nr_b, g^xy).
func SKEYIDSig(p *Prf, ni, nr, gxy []byte) []byte {
	key := make([]byte, 0, len(ni)+len(nr))
	key = append(append(key, ni...), nr...)
	return p.Sum(key, gxy)
}

// DeriveSKEYIDs derives the keying material of the ISAKMP SA (RFC 2409 §5):
//
//	SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
//	SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
//	SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
func DeriveSKEYIDs(p *Prf, skeyid, gxy, ckyI, ckyR []byte) (d, a, e []byte) {
	d = p.Sum(skeyid, gxy, ckyI, ckyR, []byte{0})
	a = p.Sum(skeyid, d, gxy, ckyI, ckyR, []byte{1})
	e = p.Sum(skeyid, a, gxy, ckyI, ckyR, []byte{2})
	return d, a, e
}

// ExpandKey returns the phase 1 encryption key of need bytes (RFC 2409 §5.3
// and Appendix B). When SKEYID_e is long enough its first need bytes are the
// key; otherwise Ka = K1 | K2 | ... truncated, with K1 = prf(SKEYID_e, 0)
// (a single zero octet) and Kn = prf(SKEYID_e, Kn-1). need <= 0 gives an
// empty key.
func ExpandKey(p *Prf, skeyidE []byte, need int) []byte {
	if need <= 0 {
		return []byte{}
	}
	if len(skeyidE) >= need {
		return append([]byte(nil), skeyidE[:need]...)
	}
	out := make([]byte, 0, need+p.Size())
	k := p.Sum(skeyidE, []byte{0})
	out = append(out, k...)
	for len(out) < need {
		k = p.Sum(skeyidE, k)
		out = append(out, k...)
	}
	return out[:need:need]
}

// truncate returns b cut to n bytes (b itself when n is out of range: every
// supported hash is at least as long as every supported block).
func truncate(b []byte, n int) []byte {
	if n <= 0 || n > len(b) {
		return b
	}
	return b[:n:n]
}

// Phase1IV is the initial IV of phase 1 (RFC 2409 Appendix B):
// hash(g^xi | g^xr) truncated to blockSize.
func Phase1IV(p *Prf, gxi, gxr []byte, blockSize int) []byte {
	return truncate(p.Hash(gxi, gxr), blockSize)
}

// ExchangeIV is the initial IV of a Quick Mode or Informational exchange
// (RFC 2409 Appendix B): hash(last phase 1 CBC block | M-ID) truncated to
// blockSize, M-ID in network byte order.
func ExchangeIV(p *Prf, lastPhase1Block []byte, msgID uint32, blockSize int) []byte {
	return truncate(p.Hash(lastPhase1Block, be32(msgID)), blockSize)
}

// HashI is the initiator's phase 1 authentication hash (RFC 2409 §5):
// prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b).
func HashI(p *Prf, skeyid, gxi, gxr, ckyI, ckyR, saiB, idiiB []byte) []byte {
	return p.Sum(skeyid, gxi, gxr, ckyI, ckyR, saiB, idiiB)
}

// HashR is the responder's phase 1 authentication hash (RFC 2409 §5):
// prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b).
func HashR(p *Prf, skeyid, gxr, gxi, ckyR, ckyI, saiB, idirB []byte) []byte {
	return p.Sum(skeyid, gxr, gxi, ckyR, ckyI, saiB, idirB)
}

// QMHash1 is HASH(1) of Quick Mode (RFC 2409 §5.5):
// prf(SKEYID_a, M-ID | rest), rest being the message after the HASH payload.
func QMHash1(p *Prf, skeyidA []byte, msgID uint32, rest []byte) []byte {
	return p.Sum(skeyidA, be32(msgID), rest)
}

// QMHash2 is HASH(2) of Quick Mode (RFC 2409 §5.5):
// prf(SKEYID_a, M-ID | Ni_b | rest).
func QMHash2(p *Prf, skeyidA []byte, msgID uint32, niB, rest []byte) []byte {
	return p.Sum(skeyidA, be32(msgID), niB, rest)
}

// QMHash3 is HASH(3) of Quick Mode (RFC 2409 §5.5):
// prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b), 0 being a single zero octet.
func QMHash3(p *Prf, skeyidA []byte, msgID uint32, niB, nrB []byte) []byte {
	return p.Sum(skeyidA, []byte{0}, be32(msgID), niB, nrB)
}

// InfoHash is the HASH(1) of an Informational exchange (RFC 2409 §5.7):
// prf(SKEYID_a, M-ID | rest), rest being the N or D payload(s).
func InfoHash(p *Prf, skeyidA []byte, msgID uint32, rest []byte) []byte {
	return QMHash1(p, skeyidA, msgID, rest)
}

// KEYMAT derives need bytes of IPsec SA keying material for one SPI (RFC
// 2409 §5.5):
//
//	KEYMAT = K1 | K2 | K3 | ...
//	K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b)
//	Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b)
//
// gqm is the Quick Mode (PFS) shared secret, nil without PFS. spi is the SPI
// as sent in the proposal (4 bytes for ESP/AH). need <= 0 gives an empty
// result.
func KEYMAT(p *Prf, skeyidD, gqm []byte, protocol uint8, spi []byte, niB, nrB []byte, need int) []byte {
	if need <= 0 {
		return []byte{}
	}
	proto := []byte{protocol}
	out := make([]byte, 0, need+p.Size())
	k := p.Sum(skeyidD, gqm, proto, spi, niB, nrB)
	out = append(out, k...)
	for len(out) < need {
		k = p.Sum(skeyidD, k, gqm, proto, spi, niB, nrB)
		out = append(out, k...)
	}
	return out[:need:need]
}

// NATD is a NAT-D payload body (RFC 3947 §3.2):
// HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash, IP being 4 bytes
// for IPv4 (IPv4-mapped IPv6 addresses are hashed as IPv4) and 16 for IPv6,
// Port in network byte order. An invalid address hashes as no address bytes.
func NATD(p *Prf, ckyI, ckyR []byte, addr netip.AddrPort) []byte {
	ip := addr.Addr().Unmap()
	var a []byte
	if ip.IsValid() {
		a = ip.AsSlice()
	}
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], addr.Port())
	return p.Hash(ckyI, ckyR, a, port[:])
}

func be32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}
