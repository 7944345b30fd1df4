package ikecrypto

import (
	"crypto/ecdh"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
)

// Group is a Diffie-Hellman group, named by its ISAKMP group description
// attribute value. Implementations hold no key material and are safe for
// concurrent use.
type Group interface {
	// ID is the group description attribute value (RFC 2409 Appendix A,
	// IANA "Group Description").
	ID() uint16
	// PublicLen is the length in bytes of the public value in a KE payload.
	PublicLen() int
	// GenerateKey returns a fresh private key (opaque bytes of fixed length,
	// safe to replicate and to pass back to Shared on another node) and the
	// public value as sent in the KE payload. rand is read for the private
	// key (pass crypto/rand.Reader).
	GenerateKey(rand io.Reader) (priv, pub []byte, err error)
	// PublicFromPrivate returns the KE payload public value of a private
	// key produced by GenerateKey (or given by a test vector).
	PublicFromPrivate(priv []byte) ([]byte, error)
	// Shared validates the peer's public value (length, point on curve,
	// 1 < y < p-1 for MODP) and returns g^xy in IKEv1's encoding (MODP:
	// left-padded to the prime length; ECP: the x coordinate; Curve25519:
	// 32 bytes).
	Shared(priv, peerPub []byte) ([]byte, error)
}

// Group description attribute values supported by GroupByID.
const (
	GroupMODP1024   uint16 = 2  // RFC 2409 §6.2, legacy
	GroupMODP1536   uint16 = 5  // RFC 3526 §2, legacy
	GroupMODP2048   uint16 = 14 // RFC 3526 §3
	GroupMODP3072   uint16 = 15 // RFC 3526 §4
	GroupMODP4096   uint16 = 16 // RFC 3526 §5
	GroupECP256     uint16 = 19 // RFC 5903
	GroupECP384     uint16 = 20 // RFC 5903
	GroupECP521     uint16 = 21 // RFC 5903
	GroupCurve25519 uint16 = 31 // RFC 8031
)

// IsLegacyGroup reports whether a group is supported only for compatibility
// with old peers (MODP 1024 and 1536): configuration should demand an
// explicit opt-in.
func IsLegacyGroup(id uint16) bool { return id == GroupMODP1024 || id == GroupMODP1536 }

// GroupName names a group as strongSwan's proposal keywords do
// ("modp2048", "ecp256", "curve25519"), or "group(N)" when unknown.
func GroupName(id uint16) string {
	switch id {
	case GroupMODP1024:
		return "modp1024"
	case GroupMODP1536:
		return "modp1536"
	case GroupMODP2048:
		return "modp2048"
	case GroupMODP3072:
		return "modp3072"
	case GroupMODP4096:
		return "modp4096"
	case GroupECP256:
		return "ecp256"
	case GroupECP384:
		return "ecp384"
	case GroupECP521:
		return "ecp521"
	case GroupCurve25519:
		return "curve25519"
	}
	return fmt.Sprintf("group(%d)", id)
}

var groups = map[uint16]Group{}

func init() {
	for id, h := range modpPrimeHex {
		b, err := hex.DecodeString(h)
		if err != nil {
			panic("ikecrypto: bad built-in MODP prime for group " + fmt.Sprint(id))
		}
		p := new(big.Int).SetBytes(b)
		groups[id] = &modpGroup{id: id, p: p, pMinus1: new(big.Int).Sub(p, big.NewInt(1)), size: len(b), expBits: modpExponentBits(len(b) * 8)}
	}
	groups[GroupECP256] = &ecpGroup{id: GroupECP256, curve: ecdh.P256(), coord: 32}
	groups[GroupECP384] = &ecpGroup{id: GroupECP384, curve: ecdh.P384(), coord: 48}
	groups[GroupECP521] = &ecpGroup{id: GroupECP521, curve: ecdh.P521(), coord: 66, topMask: 0x01}
	groups[GroupCurve25519] = x25519Group{}
}

// GroupByID returns the group for a group description attribute value, or
// an error wrapping ErrUnsupported.
func GroupByID(id uint16) (Group, error) {
	if g, ok := groups[id]; ok {
		return g, nil
	}
	reason := "unknown group"
	switch id {
	case 1:
		reason = "MODP 768 is never supported"
	case 22, 23, 24:
		reason = "MODP groups with prime order subgroups (RFC 5114) are not supported"
	}
	return nil, &AlgorithmError{Kind: "group", ID: int(id), Reason: reason}
}

// modpGroup is a MODP group with generator 2 over a safe prime.
type modpGroup struct {
	id      uint16
	p       *big.Int
	pMinus1 *big.Int
	size    int // prime length in bytes
	expBits int // length of the private exponents we generate
}

// modpExponentBits is the private exponent length for a safe-prime MODP
// group: at least twice the group's security strength (NIST SP 800-56A
// Rev. 3 §5.6.1.1.1 for safe-prime groups; strengths from SP 800-57
// Part 1 Table 2), rounded up, never under 256 bits. A full-length
// exponent adds no security and costs 4 to 16 times the work.
func modpExponentBits(primeBits int) int {
	switch {
	case primeBits <= 2048:
		return 256 // 1024: 80-bit, 1536: 96-bit, 2048: 112-bit strength
	case primeBits <= 3072:
		return 320 // 128-bit strength
	case primeBits <= 4096:
		return 384 // about 152-bit strength
	}
	return 512
}

var (
	bigOne = big.NewInt(1)
	bigTwo = big.NewInt(2)
)

func (g *modpGroup) ID() uint16     { return g.id }
func (g *modpGroup) PublicLen() int { return g.size }
func (g *modpGroup) String() string { return GroupName(g.id) }

// privInt decodes and range-checks a private exponent: 1 < x < p-1.
func (g *modpGroup) privInt(priv []byte) (*big.Int, error) {
	if len(priv) != g.size {
		return nil, fmt.Errorf("group %s: %w: private key is %d bytes, want %d", g, ErrInvalidPrivateKey, len(priv), g.size)
	}
	x := new(big.Int).SetBytes(priv)
	if x.Cmp(bigOne) <= 0 || x.Cmp(g.pMinus1) >= 0 {
		return nil, fmt.Errorf("group %s: %w: private exponent out of range", g, ErrInvalidPrivateKey)
	}
	return x, nil
}

func (g *modpGroup) GenerateKey(rand io.Reader) (priv, pub []byte, err error) {
	// x uniform in [2, 2^expBits): far below p-1, so in range (the
	// exponent is encoded over the prime's length like any other).
	buf := make([]byte, g.expBits/8)
	for range 1000 {
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, nil, fmt.Errorf("group %s: reading random private key: %w", g, err)
		}
		x := new(big.Int).SetBytes(buf)
		if x.Cmp(bigOne) <= 0 || x.Cmp(g.pMinus1) >= 0 {
			continue
		}
		priv = x.FillBytes(make([]byte, g.size))
		pub = new(big.Int).Exp(bigTwo, x, g.p).FillBytes(make([]byte, g.size))
		return priv, pub, nil
	}
	return nil, nil, fmt.Errorf("group %s: random source gave no private key in range after 1000 tries", g)
}

func (g *modpGroup) PublicFromPrivate(priv []byte) ([]byte, error) {
	x, err := g.privInt(priv)
	if err != nil {
		return nil, err
	}
	return new(big.Int).Exp(bigTwo, x, g.p).FillBytes(make([]byte, g.size)), nil
}

func (g *modpGroup) Shared(priv, peerPub []byte) ([]byte, error) {
	if len(peerPub) != g.size {
		return nil, fmt.Errorf("group %s: %w: public value is %d bytes, want %d", g, ErrInvalidPublicValue, len(peerPub), g.size)
	}
	y := new(big.Int).SetBytes(peerPub)
	if y.Cmp(bigOne) <= 0 || y.Cmp(g.pMinus1) >= 0 {
		return nil, fmt.Errorf("group %s: %w: public value not in 1 < y < p-1", g, ErrInvalidPublicValue)
	}
	x, err := g.privInt(priv)
	if err != nil {
		return nil, err
	}
	z := new(big.Int).Exp(y, x, g.p)
	if z.Cmp(bigOne) <= 0 {
		return nil, fmt.Errorf("group %s: %w: shared secret is degenerate", g, ErrInvalidPublicValue)
	}
	return z.FillBytes(make([]byte, g.size)), nil
}

// ecpGroup is a NIST prime curve with RFC 5903 encodings: the public value
// is x | y (no 0x04 prefix), the shared secret is x alone.
type ecpGroup struct {
	id      uint16
	curve   ecdh.Curve
	coord   int  // coordinate (and scalar) length in bytes
	topMask byte // mask for the first scalar byte (P-521), 0 for none
}

func (g *ecpGroup) ID() uint16     { return g.id }
func (g *ecpGroup) PublicLen() int { return 2 * g.coord }
func (g *ecpGroup) String() string { return GroupName(g.id) }

func (g *ecpGroup) privKey(priv []byte) (*ecdh.PrivateKey, error) {
	if len(priv) != g.coord {
		return nil, fmt.Errorf("group %s: %w: private key is %d bytes, want %d", g, ErrInvalidPrivateKey, len(priv), g.coord)
	}
	k, err := g.curve.NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w: scalar zero or not below the curve order", g, ErrInvalidPrivateKey)
	}
	return k, nil
}

func (g *ecpGroup) GenerateKey(rand io.Reader) (priv, pub []byte, err error) {
	for range 1000 {
		buf := make([]byte, g.coord)
		if _, err := io.ReadFull(rand, buf); err != nil {
			return nil, nil, fmt.Errorf("group %s: reading random private key: %w", g, err)
		}
		if g.topMask != 0 {
			buf[0] &= g.topMask
		}
		k, err := g.curve.NewPrivateKey(buf)
		if err != nil {
			continue // zero or >= order: draw again
		}
		return buf, k.PublicKey().Bytes()[1:], nil
	}
	return nil, nil, fmt.Errorf("group %s: random source gave no valid scalar after 1000 tries", g)
}

func (g *ecpGroup) PublicFromPrivate(priv []byte) ([]byte, error) {
	k, err := g.privKey(priv)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes()[1:], nil
}

func (g *ecpGroup) Shared(priv, peerPub []byte) ([]byte, error) {
	if len(peerPub) != 2*g.coord {
		return nil, fmt.Errorf("group %s: %w: public value is %d bytes, want %d", g, ErrInvalidPublicValue, len(peerPub), 2*g.coord)
	}
	k, err := g.privKey(priv)
	if err != nil {
		return nil, err
	}
	enc := make([]byte, 1+len(peerPub))
	enc[0] = 4
	copy(enc[1:], peerPub)
	pk, err := g.curve.NewPublicKey(enc)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w: point not on the curve", g, ErrInvalidPublicValue)
	}
	z, err := k.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w: %v", g, ErrInvalidPublicValue, err)
	}
	return z, nil
}

// x25519Group is Curve25519 (RFC 7748) as RFC 8031 uses it: 32-byte public
// values and shared secrets; an all-zero shared secret is refused.
type x25519Group struct{}

func (x25519Group) ID() uint16     { return GroupCurve25519 }
func (x25519Group) PublicLen() int { return 32 }
func (x25519Group) String() string { return GroupName(GroupCurve25519) }

func (g x25519Group) privKey(priv []byte) (*ecdh.PrivateKey, error) {
	if len(priv) != 32 {
		return nil, fmt.Errorf("group %s: %w: private key is %d bytes, want 32", g, ErrInvalidPrivateKey, len(priv))
	}
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", g, ErrInvalidPrivateKey)
	}
	return k, nil
}

func (g x25519Group) GenerateKey(rand io.Reader) (priv, pub []byte, err error) {
	priv = make([]byte, 32)
	if _, err := io.ReadFull(rand, priv); err != nil {
		return nil, nil, fmt.Errorf("group %s: reading random private key: %w", g, err)
	}
	pub, err = g.PublicFromPrivate(priv)
	if err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}

func (g x25519Group) PublicFromPrivate(priv []byte) ([]byte, error) {
	k, err := g.privKey(priv)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

func (g x25519Group) Shared(priv, peerPub []byte) ([]byte, error) {
	if len(peerPub) != 32 {
		return nil, fmt.Errorf("group %s: %w: public value is %d bytes, want 32", g, ErrInvalidPublicValue, len(peerPub))
	}
	k, err := g.privKey(priv)
	if err != nil {
		return nil, err
	}
	pk, err := ecdh.X25519().NewPublicKey(peerPub)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w: %v", g, ErrInvalidPublicValue, err)
	}
	z, err := k.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w: low-order point (all-zero shared secret)", g, ErrInvalidPublicValue)
	}
	return z, nil
}

var (
	_ Group = (*modpGroup)(nil)
	_ Group = (*ecpGroup)(nil)
	_ Group = x25519Group{}
)
