package ikecrypto

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
	"hash"
)

// HashAlg is an ISAKMP phase 1 hash algorithm attribute value (RFC 2409
// Appendix A, IANA "IPSEC Hash Algorithm").
type HashAlg uint16

// Supported hash algorithms. MD5 (1) is never supported.
const (
	HashSHA1   HashAlg = 2
	HashSHA256 HashAlg = 4
	HashSHA384 HashAlg = 5
	HashSHA512 HashAlg = 6
)

const hashMD5 HashAlg = 1

// New returns the constructor of the hash, or an error wrapping
// ErrUnsupported for unknown algorithms and for MD5.
func (h HashAlg) New() (func() hash.Hash, error) {
	switch h {
	case HashSHA1:
		return sha1.New, nil
	case HashSHA256:
		return sha256.New, nil
	case HashSHA384:
		return sha512.New384, nil
	case HashSHA512:
		return sha512.New, nil
	case hashMD5:
		return nil, &AlgorithmError{Kind: "hash", ID: int(h), Reason: "MD5 is never supported"}
	}
	return nil, &AlgorithmError{Kind: "hash", ID: int(h), Reason: "unknown hash algorithm"}
}

// Size is the digest length in bytes, 0 for unsupported algorithms.
func (h HashAlg) Size() int {
	switch h {
	case HashSHA1:
		return sha1.Size
	case HashSHA256:
		return sha256.Size
	case HashSHA384:
		return sha512.Size384
	case HashSHA512:
		return sha512.Size
	}
	return 0
}

// String names the algorithm as RFC 2409 / IANA do.
func (h HashAlg) String() string {
	switch h {
	case hashMD5:
		return "MD5"
	case HashSHA1:
		return "SHA1"
	case HashSHA256:
		return "SHA2-256"
	case HashSHA384:
		return "SHA2-384"
	case HashSHA512:
		return "SHA2-512"
	}
	return fmt.Sprintf("hash(%d)", uint16(h))
}

// Prf is the IKEv1 pseudo-random function: HMAC with the negotiated hash
// (the default when no PRF attribute is negotiated, RFC 2409 §4), plus the
// plain hash used for IVs and NAT-D. A Prf holds no key and no state: it is
// safe for concurrent use. Create it with NewPRF; the zero value is not
// usable.
type Prf struct {
	alg HashAlg
	new func() hash.Hash
}

// NewPRF returns the PRF of the negotiated hash algorithm.
func NewPRF(h HashAlg) (*Prf, error) {
	f, err := h.New()
	if err != nil {
		return nil, err
	}
	return &Prf{alg: h, new: f}, nil
}

// Alg is the hash algorithm of the PRF.
func (p *Prf) Alg() HashAlg { return p.alg }

// Size is the PRF (and hash) output length in bytes.
func (p *Prf) Size() int { return p.alg.Size() }

// String names the PRF, e.g. "HMAC-SHA2-256".
func (p *Prf) String() string { return "HMAC-" + p.alg.String() }

// Sum returns HMAC(key, data[0] | data[1] | ...).
func (p *Prf) Sum(key []byte, data ...[]byte) []byte {
	m := hmac.New(p.new, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// Hash returns hash(data[0] | data[1] | ...), the plain negotiated hash.
func (p *Prf) Hash(data ...[]byte) []byte {
	m := p.new()
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// Equal reports whether a and b are equal, in time that depends only on
// their lengths. Use it to compare received hashes (HASH_I, HASH_R, Quick
// Mode hashes, NAT-D).
func Equal(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}
