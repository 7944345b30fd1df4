package ikecrypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"net/netip"
	"testing"
)

// Edge cases of the derivations; the known answers from strongSwan are in
// kdf_strongswan_test.go.

func TestExpandKeyEdges(t *testing.T) {
	p, _ := NewPRF(HashSHA1)
	e := bytes.Repeat([]byte{7}, 20)
	for _, need := range []int{-1, 0} {
		if k := ExpandKey(p, e, need); k == nil || len(k) != 0 {
			t.Errorf("ExpandKey(need %d) = %x, want empty", need, k)
		}
	}
	// Long enough: a prefix, and a copy (changing it leaves SKEYID_e alone).
	k := ExpandKey(p, e, 20)
	if !bytes.Equal(k, e) {
		t.Fatalf("ExpandKey(20) = %x, want SKEYID_e", k)
	}
	k[0] ^= 1
	if e[0] != 7 {
		t.Fatal("ExpandKey returned SKEYID_e itself, not a copy")
	}
	// Too short: K1 = prf(SKEYID_e, 0x00), K2 = prf(SKEYID_e, K1), ...
	m := hmac.New(sha1.New, e)
	m.Write([]byte{0})
	k1 := m.Sum(nil)
	m = hmac.New(sha1.New, e)
	m.Write(k1)
	k2 := m.Sum(nil)
	m = hmac.New(sha1.New, e)
	m.Write(k2)
	k3 := m.Sum(nil)
	want := append(append(append([]byte{}, k1...), k2...), k3...)
	for _, need := range []int{21, 32, 40, 41, 60} {
		if got := ExpandKey(p, e, need); !bytes.Equal(got, want[:need]) || cap(got) != need {
			t.Errorf("ExpandKey(%d) = %x (cap %d), want %x", need, got, cap(got), want[:need])
		}
	}
}

func TestKEYMATEdges(t *testing.T) {
	p, _ := NewPRF(HashSHA256)
	d := bytes.Repeat([]byte{1}, 32)
	spi := []byte{0xc0, 0xff, 0xee, 0x01}
	ni, nr := bytes.Repeat([]byte{2}, 16), bytes.Repeat([]byte{3}, 16)
	if k := KEYMAT(p, d, nil, 3, spi, ni, nr, 0); k == nil || len(k) != 0 {
		t.Errorf("KEYMAT(need 0) = %x, want empty", k)
	}
	// K1 alone, then K1 | K2 with K2 = prf(d, K1 | protocol | SPI | Ni | Nr).
	seed := bytes.Join([][]byte{{3}, spi, ni, nr}, nil)
	m := hmac.New(sha256.New, d)
	m.Write(seed)
	k1 := m.Sum(nil)
	m = hmac.New(sha256.New, d)
	m.Write(k1)
	m.Write(seed)
	k2 := m.Sum(nil)
	if got := KEYMAT(p, d, nil, 3, spi, ni, nr, 20); !bytes.Equal(got, k1[:20]) {
		t.Errorf("KEYMAT(20) = %x, want %x", got, k1[:20])
	}
	if got := KEYMAT(p, d, nil, 3, spi, ni, nr, 64); !bytes.Equal(got, append(k1, k2...)) {
		t.Errorf("KEYMAT(64) = %x, want K1 | K2", got)
	}
	// Another SPI or protocol gives other keys.
	a := KEYMAT(p, d, nil, 3, spi, ni, nr, 32)
	if bytes.Equal(a, KEYMAT(p, d, nil, 3, []byte{0xc0, 0xff, 0xee, 0x02}, ni, nr, 32)) ||
		bytes.Equal(a, KEYMAT(p, d, nil, 2, spi, ni, nr, 32)) ||
		bytes.Equal(a, KEYMAT(p, d, []byte{9}, 3, spi, ni, nr, 32)) {
		t.Error("KEYMAT ignores SPI, protocol or g(qm)^xy")
	}
}

func TestNATD(t *testing.T) {
	p, _ := NewPRF(HashSHA256)
	ckyI, ckyR := []byte("initcky!"), []byte("respcky!")
	hash := func(parts ...[]byte) []byte {
		h := sha256.New()
		for _, x := range parts {
			h.Write(x)
		}
		return h.Sum(nil)
	}
	v4 := netip.MustParseAddrPort("192.0.2.1:4500")
	want4 := hash(ckyI, ckyR, []byte{192, 0, 2, 1}, []byte{0x11, 0x94})
	if got := NATD(p, ckyI, ckyR, v4); !bytes.Equal(got, want4) {
		t.Errorf("NATD(%v) = %x, want %x", v4, got, want4)
	}
	// An IPv4-mapped IPv6 address is the IPv4 address on the wire.
	if got := NATD(p, ckyI, ckyR, netip.MustParseAddrPort("[::ffff:192.0.2.1]:4500")); !bytes.Equal(got, want4) {
		t.Errorf("NATD(IPv4-mapped) = %x, want the IPv4 hash %x", got, want4)
	}
	v6 := netip.MustParseAddrPort("[2001:db8::1]:500")
	a16 := v6.Addr().As16()
	want6 := hash(ckyI, ckyR, a16[:], []byte{0x01, 0xf4})
	if got := NATD(p, ckyI, ckyR, v6); !bytes.Equal(got, want6) {
		t.Errorf("NATD(%v) = %x, want %x", v6, got, want6)
	}
	// A zone is not part of the address bytes.
	if got := NATD(p, ckyI, ckyR, netip.MustParseAddrPort("[fe80::1%eth0]:500")); !bytes.Equal(got, NATD(p, ckyI, ckyR, netip.MustParseAddrPort("[fe80::1]:500"))) {
		t.Error("NATD depends on the IPv6 zone")
	}
	if got := NATD(p, ckyI, ckyR, netip.AddrPort{}); len(got) != p.Size() {
		t.Errorf("NATD(invalid address) = %x, want a hash", got)
	}
}

func TestIVTruncation(t *testing.T) {
	p, _ := NewPRF(HashSHA512)
	gxi, gxr := []byte("gxi"), []byte("gxr")
	full := p.Hash(gxi, gxr)
	for _, bs := range []int{8, 16} {
		iv := Phase1IV(p, gxi, gxr, bs)
		if !bytes.Equal(iv, full[:bs]) || cap(iv) != bs {
			t.Errorf("Phase1IV(block %d) = %x (cap %d), want %x", bs, iv, cap(iv), full[:bs])
		}
	}
	// The block size is clamped to the hash: never a panic.
	if iv := Phase1IV(p, gxi, gxr, 100); len(iv) != p.Size() {
		t.Errorf("Phase1IV(block 100) is %d bytes, want %d", len(iv), p.Size())
	}
	last := []byte("last block 16 by")
	iv := ExchangeIV(p, last, 0x01020304, 16)
	if want := p.Hash(last, []byte{1, 2, 3, 4})[:16]; !bytes.Equal(iv, want) {
		t.Errorf("ExchangeIV = %x, want %x", iv, want)
	}
}

// Quick Mode and Informational hashes: the inputs are concatenated in RFC
// 2409 order (checked against strongSwan in kdf_strongswan_test.go); here,
// that InfoHash is QMHash1 and the message ID is big-endian.
func TestPhase2HashLayout(t *testing.T) {
	p, _ := NewPRF(HashSHA1)
	a := []byte("skeyid_a")
	rest := []byte("payloads after HASH")
	if !bytes.Equal(InfoHash(p, a, 0xdeadbeef, rest), QMHash1(p, a, 0xdeadbeef, rest)) {
		t.Error("InfoHash differs from QMHash1")
	}
	if want := p.Sum(a, []byte{0xde, 0xad, 0xbe, 0xef}, rest); !bytes.Equal(QMHash1(p, a, 0xdeadbeef, rest), want) {
		t.Error("QMHash1 is not prf(SKEYID_a, M-ID | rest)")
	}
	if want := p.Sum(a, []byte{0, 0xde, 0xad, 0xbe, 0xef, 'i', 'r'}); !bytes.Equal(QMHash3(p, a, 0xdeadbeef, []byte("i"), []byte("r")), want) {
		t.Error("QMHash3 is not prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)")
	}
	if want := p.Sum([]byte("ninr"), []byte("gxy")); !bytes.Equal(SKEYIDSig(p, []byte("ni"), []byte("nr"), []byte("gxy")), want) {
		t.Error("SKEYIDSig is not prf(Ni_b | Nr_b, g^xy)")
	}
}
