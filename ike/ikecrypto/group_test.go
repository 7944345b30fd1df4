package ikecrypto

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
)

// RFC 5903 §8.1, §8.2 and §8.3: the initiator's and responder's private
// values i and r, their public values g^i and g^r (x | y, as in the KE
// payload), and the shared secret (the x coordinate of g^ir).
func TestECPKnownAnswers(t *testing.T) {
	tests := []struct {
		name          string
		id            uint16
		i, gix, giy   string
		r, grx, gry   string
		girx          string
		publen, zsize int
	}{
		{"RFC 5903 §8.1 ECP-256", GroupECP256,
			"c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
			"dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180",
			"5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
			"c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
			"d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63",
			"56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
			"d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
			64, 32},
		{"RFC 5903 §8.2 ECP-384", GroupECP384,
			"099f3c7034d4a2c699884d73a375a67f7624ef7c6b3c0f160647b67414dce655e35b538041e649ee3faef896783ab194",
			"667842d7d180ac2cde6f74f37551f55755c7645c20ef73e31634fe72b4c55ee6de3ac808acb4bdb4c88732aee95f41aa",
			"9482ed1fc0eeb9cafc4984625ccfc23f65032149e0e144ada024181535a0f38eeb9fcff3c2c947dae69b4c634573a81c",
			"41cb0779b4bdb85d47846725fbec3c9430fab46cc8dc5060855cc9bda0aa2942e0308312916b8ed2960e4bd55a7448fc",
			"e558dbef53eecde3d3fccfc1aea08a89a987475d12fd950d83cfa41732bc509d0d1ac43a0336def96fda41d0774a3571",
			"dcfbec7aacf3196472169e838430367f66eebe3c6e70c416dd5f0c68759dd1fff83fa40142209dff5eaad96db9e6386c",
			"11187331c279962d93d604243fd592cb9d0a926f422e47187521287e7156c5c4d603135569b9e9d09cf5d4a270f59746",
			96, 48},
		{"RFC 5903 §8.3 ECP-521", GroupECP521,
			"0037ade9319a89f4dabdb3ef411aaccca5123c61acab57b5393dce47608172a095aa85a30fe1c2952c6771d937ba9777f5957b2639bab072462f68c27a57382d4a52",
			"0015417e84dbf28c0ad3c278713349dc7df153c897a1891bd98bab4357c9ecbee1e3bf42e00b8e380aeae57c2d107564941885942af5a7f4601723c4195d176ced3e",
			"017cae20b6641d2eeb695786d8c946146239d099e18e1d5a514c739d7cb4a10ad8a788015ac405d7799dc75e7b7d5b6cf2261a6a7f1507438bf01beb6ca3926f9582",
			"0145ba99a847af43793fdd0e872e7cdfa16be30fdc780f97bccc3f078380201e9c677d600b343757a3bdbf2a3163e4c2f869cca7458aa4a4effc311f5cb151685eb9",
			"00d0b3975ac4b799f5bea16d5e13e9af971d5e9b984c9f39728b5e5739735a219b97c356436adc6e95bb0352f6be64a6c2912d4ef2d0433ced2b6171640012d9460f",
			"015c68226383956e3bd066e797b623c27ce0eac2f551a10c2c724d9852077b87220b6536c5c408a1d2aebb8e86d678ae49cb57091f4732296579ab44fcd17f0fc56a",
			"01144c7d79ae6956bc8edb8e7c787c4521cb086fa64407f97894e5e6b2d79b04d1427e73ca4baa240a34786859810c06b3c715a3a8cc3151f2bee417996d19f3ddea",
			132, 66},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := GroupByID(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if g.ID() != tc.id || g.PublicLen() != tc.publen {
				t.Fatalf("ID, PublicLen = %d, %d; want %d, %d", g.ID(), g.PublicLen(), tc.id, tc.publen)
			}
			i, r := unhex(t, tc.i), unhex(t, tc.r)
			gi := append(unhex(t, tc.gix), unhex(t, tc.giy)...)
			gr := append(unhex(t, tc.grx), unhex(t, tc.gry)...)
			z := unhex(t, tc.girx)
			checkKeyAgreement(t, g, i, gi, r, gr, z)
			if len(z) != tc.zsize {
				t.Fatalf("shared secret length %d, want %d", len(z), tc.zsize)
			}
		})
	}
}

// RFC 7748 §6.1 (the Curve25519 Diffie-Hellman example), used by RFC 8031.
func TestCurve25519KnownAnswer(t *testing.T) {
	g, err := GroupByID(GroupCurve25519)
	if err != nil {
		t.Fatal(err)
	}
	checkKeyAgreement(t, g,
		unhex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
		unhex(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
		unhex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
		unhex(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
		unhex(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"))
}

func checkKeyAgreement(t *testing.T, g Group, i, gi, r, gr, z []byte) {
	t.Helper()
	if got, err := g.PublicFromPrivate(i); err != nil || !bytes.Equal(got, gi) {
		t.Fatalf("PublicFromPrivate(i) = %x, %v; want %x", got, err, gi)
	}
	if got, err := g.PublicFromPrivate(r); err != nil || !bytes.Equal(got, gr) {
		t.Fatalf("PublicFromPrivate(r) = %x, %v; want %x", got, err, gr)
	}
	if got, err := g.Shared(i, gr); err != nil || !bytes.Equal(got, z) {
		t.Fatalf("Shared(i, g^r) = %x, %v; want %x", got, err, z)
	}
	if got, err := g.Shared(r, gi); err != nil || !bytes.Equal(got, z) {
		t.Fatalf("Shared(r, g^i) = %x, %v; want %x", got, err, z)
	}
	// GenerateKey reads the private key from rand: fed the vector's private
	// key, it must produce the vector's public value.
	priv, pub, err := g.GenerateKey(bytes.NewReader(i))
	if err != nil || !bytes.Equal(priv, i) || !bytes.Equal(pub, gi) {
		t.Fatalf("GenerateKey(reader of i) = %x, %x, %v; want %x, %x", priv, pub, err, i, gi)
	}
}

// The MODP primes must be what RFC 2409 §6.2 and RFC 3526 define:
// 2^n - 2^(n-64) - 1 + 2^64 * k for some k, so the top and bottom 64 bits
// are all ones, and a safe prime (p and (p-1)/2 prime). A single wrong digit
// fails the primality tests.
func TestMODPPrimes(t *testing.T) {
	bits := map[uint16]int{2: 1024, 5: 1536, 14: 2048, 15: 3072, 16: 4096}
	for id, n := range bits {
		g, err := GroupByID(id)
		if err != nil {
			t.Fatal(err)
		}
		m := g.(*modpGroup)
		p := m.p
		if p.BitLen() != n || g.PublicLen() != n/8 {
			t.Errorf("group %d: %d bits, PublicLen %d; want %d bits", id, p.BitLen(), g.PublicLen(), n)
		}
		ones := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 64), big.NewInt(1))
		if new(big.Int).And(p, ones).Cmp(ones) != 0 {
			t.Errorf("group %d: low 64 bits not all ones", id)
		}
		if new(big.Int).Rsh(p, uint(n-64)).Cmp(ones) != 0 {
			t.Errorf("group %d: high 64 bits not all ones", id)
		}
		q := new(big.Int).Rsh(p, 1)
		if !p.ProbablyPrime(4) || !q.ProbablyPrime(4) {
			t.Errorf("group %d: not a safe prime", id)
		}
	}
}

// Every group: two parties with fresh keys agree on the shared secret, in
// the group's encoding and length.
func TestGroupsAgree(t *testing.T) {
	for _, id := range []uint16{2, 5, 14, 15, 16, 19, 20, 21, 31} {
		g, err := GroupByID(id)
		if err != nil {
			t.Fatal(err)
		}
		if g.ID() != id {
			t.Fatalf("GroupByID(%d).ID() = %d", id, g.ID())
		}
		a, ga, err := g.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b, gb, err := g.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if len(ga) != g.PublicLen() || len(gb) != g.PublicLen() {
			t.Fatalf("group %d: public lengths %d, %d; want %d", id, len(ga), len(gb), g.PublicLen())
		}
		if bytes.Equal(a, b) || bytes.Equal(ga, gb) {
			t.Fatalf("group %d: two fresh keys are equal", id)
		}
		zab, err := g.Shared(a, gb)
		if err != nil {
			t.Fatal(err)
		}
		zba, err := g.Shared(b, ga)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(zab, zba) {
			t.Fatalf("group %d: shared secrets differ", id)
		}
		if pub, err := g.PublicFromPrivate(a); err != nil || !bytes.Equal(pub, ga) {
			t.Fatalf("group %d: PublicFromPrivate does not give GenerateKey's public value", id)
		}
		want := map[uint16]int{2: 128, 5: 192, 14: 256, 15: 384, 16: 512, 19: 32, 20: 48, 21: 66, 31: 32}[id]
		if len(zab) != want {
			t.Fatalf("group %d: shared secret %d bytes, want %d", id, len(zab), want)
		}
		if strings.HasPrefix(GroupName(id), "group(") {
			t.Fatalf("group %d has no name", id)
		}
	}
}

// MODP: leading zero bytes in the public value and the shared secret are
// kept (left-padded to the prime length, as IKEv1 requires). 2^x with a
// small x has a short big-endian form.
func TestMODPPadding(t *testing.T) {
	g, _ := GroupByID(GroupMODP2048)
	priv := make([]byte, 256)
	priv[255] = 8 // x = 8: g^x = 256, two significant bytes
	pub, err := g.PublicFromPrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	if len(pub) != 256 || pub[254] != 1 || pub[255] != 0 || !bytes.Equal(pub[:254], make([]byte, 254)) {
		t.Fatalf("PublicFromPrivate(8) = %x, want 256 = 0x0100 left-padded to 256 bytes", pub)
	}
	peer := make([]byte, 256)
	peer[255] = 3
	z, err := g.Shared(priv, peer) // 3^8 = 6561 = 0x19a1
	if err != nil {
		t.Fatal(err)
	}
	if len(z) != 256 || z[254] != 0x19 || z[255] != 0xa1 || !bytes.Equal(z[:254], make([]byte, 254)) {
		t.Fatalf("Shared = %x, want 0x19a1 left-padded", z)
	}
}

func TestMODPRefusesInvalidPublic(t *testing.T) {
	for _, id := range []uint16{GroupMODP1024, GroupMODP2048} {
		g, _ := GroupByID(id)
		p := g.(*modpGroup).p
		size := g.PublicLen()
		pad := func(v *big.Int) []byte { return v.FillBytes(make([]byte, size)) }
		priv, _, err := g.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			pub  []byte
			why  string
		}{
			{"zero", pad(big.NewInt(0)), "1 < y < p-1"},
			{"one", pad(big.NewInt(1)), "1 < y < p-1"},
			{"p-1", pad(new(big.Int).Sub(p, big.NewInt(1))), "1 < y < p-1"},
			{"p", pad(p), "1 < y < p-1"},
			{"p+1", pad(new(big.Int).Add(p, big.NewInt(1))), "1 < y < p-1"},
			{"all ones", bytes.Repeat([]byte{0xff}, size), "1 < y < p-1"},
			{"short", pad(big.NewInt(5))[1:], "want"},
			{"long", append([]byte{0}, pad(big.NewInt(5))...), "want"},
			{"empty", nil, "0 bytes"},
		} {
			z, err := g.Shared(priv, tc.pub)
			if z != nil || !errors.Is(err, ErrInvalidPublicValue) || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("group %d %s: Shared = %x, %v; want ErrInvalidPublicValue saying %q", id, tc.name, z, err, tc.why)
			}
		}
		// The boundaries just inside are accepted.
		for _, y := range []*big.Int{big.NewInt(2), new(big.Int).Sub(p, big.NewInt(2))} {
			if _, err := g.Shared(priv, pad(y)); err != nil {
				t.Errorf("group %d: y = %v refused: %v", id, y, err)
			}
		}
	}
}

func TestECPRefusesInvalidPublic(t *testing.T) {
	for _, id := range []uint16{GroupECP256, GroupECP384, GroupECP521} {
		g, _ := GroupByID(id)
		priv, pub, err := g.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		offCurve := bytes.Clone(pub)
		offCurve[len(offCurve)-1] ^= 1
		withPrefix := append([]byte{4}, pub...)
		for _, tc := range []struct {
			name string
			pub  []byte
		}{
			{"off curve", offCurve},
			{"all zero (infinity)", make([]byte, len(pub))},
			{"all ones", bytes.Repeat([]byte{0xff}, len(pub))},
			{"with 0x04 prefix", withPrefix},
			{"x only", pub[:len(pub)/2]},
			{"empty", nil},
		} {
			z, err := g.Shared(priv, tc.pub)
			if z != nil || !errors.Is(err, ErrInvalidPublicValue) {
				t.Errorf("group %d %s: Shared = %x, %v; want ErrInvalidPublicValue", id, tc.name, z, err)
			}
		}
	}
}

// RFC 7748 §6.1 / RFC 8031 §2.3: a low-order peer value gives the all-zero
// secret and must be refused.
func TestCurve25519RefusesLowOrder(t *testing.T) {
	g, _ := GroupByID(GroupCurve25519)
	priv, _, err := g.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 32)
	one[0] = 1
	for name, pub := range map[string][]byte{
		"zero":  make([]byte, 32),
		"one":   one,
		"short": make([]byte, 31),
		"long":  make([]byte, 33),
		// A point of order 8 (from the list of Curve25519 low-order points).
		"order 8": unhex(t, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
	} {
		z, err := g.Shared(priv, pub)
		if z != nil || !errors.Is(err, ErrInvalidPublicValue) {
			t.Errorf("%s: Shared = %x, %v; want ErrInvalidPublicValue", name, z, err)
		}
	}
}

func TestGroupRefusesBadPrivate(t *testing.T) {
	for _, tc := range []struct {
		id   uint16
		priv []byte
	}{
		{GroupMODP2048, make([]byte, 255)},
		{GroupMODP2048, make([]byte, 256)},                    // x = 0
		{GroupMODP2048, bytes.Repeat([]byte{0xff}, 256)},      // x >= p
		{GroupECP256, make([]byte, 32)},                       // zero scalar
		{GroupECP256, bytes.Repeat([]byte{0xff}, 32)},         // >= order
		{GroupECP256, make([]byte, 31)},                       // length
		{GroupECP521, append([]byte{2}, make([]byte, 65)...)}, // >= order
		{GroupCurve25519, make([]byte, 16)},                   // length
	} {
		g, _ := GroupByID(tc.id)
		if pub, err := g.PublicFromPrivate(tc.priv); pub != nil || !errors.Is(err, ErrInvalidPrivateKey) {
			t.Errorf("group %d priv %x: PublicFromPrivate = %x, %v; want ErrInvalidPrivateKey", tc.id, tc.priv, pub, err)
		}
		_, peer, err := g.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if z, err := g.Shared(tc.priv, peer); z != nil || !errors.Is(err, ErrInvalidPrivateKey) {
			t.Errorf("group %d priv %x: Shared = %x, %v; want ErrInvalidPrivateKey", tc.id, tc.priv, z, err)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy source broken") }

func TestGenerateKeyRandomFailure(t *testing.T) {
	for _, id := range []uint16{2, 14, 19, 21, 31} {
		g, _ := GroupByID(id)
		priv, pub, err := g.GenerateKey(failingReader{})
		if priv != nil || pub != nil || err == nil || !strings.Contains(err.Error(), "entropy source broken") {
			t.Errorf("group %d: GenerateKey(failing reader) = %x, %x, %v", id, priv, pub, err)
		}
		priv, pub, err = g.GenerateKey(bytes.NewReader([]byte{1, 2, 3}))
		if priv != nil || pub != nil || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("group %d: GenerateKey(short reader) = %x, %x, %v", id, priv, pub, err)
		}
	}
	// A reader that only ever yields out-of-range scalars is not looped on
	// forever.
	g, _ := GroupByID(GroupECP256)
	if _, _, err := g.GenerateKey(zeroReader{}); err == nil {
		t.Error("GenerateKey(zero reader) succeeded")
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestGroupByIDRefuses(t *testing.T) {
	for id, reason := range map[uint16]string{
		0: "unknown", 1: "MODP 768 is never supported", 3: "unknown", 4: "unknown",
		22: "RFC 5114", 24: "RFC 5114", 32: "unknown", 0xffff: "unknown",
	} {
		g, err := GroupByID(id)
		if g != nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), reason) {
			t.Errorf("GroupByID(%d) = %v, %v; want ErrUnsupported saying %q", id, g, err, reason)
		}
	}
}

func TestIsLegacyGroup(t *testing.T) {
	for id, want := range map[uint16]bool{2: true, 5: true, 14: false, 15: false, 16: false, 19: false, 20: false, 21: false, 31: false} {
		if IsLegacyGroup(id) != want {
			t.Errorf("IsLegacyGroup(%d) = %v, want %v", id, !want, want)
		}
	}
	if GroupName(14) != "modp2048" || GroupName(31) != "curve25519" || GroupName(99) != "group(99)" {
		t.Errorf("GroupName: %q %q %q", GroupName(14), GroupName(31), GroupName(99))
	}
}
