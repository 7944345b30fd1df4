package ikecrypto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// HMAC known answers through Prf.Sum.
//   - SHA1: RFC 2202 §3, test cases 1-4, 6.
//   - SHA2-256/384/512: RFC 4231 §4.2-4.8, test cases 1-4, 6, 7 (case 5 is
//     a truncated output, not a PRF value). The SHA2-384 values are also in
//     strongSwan's src/libstrongswan/plugins/test_vectors/test_vectors/sha2_hmac.c.
func TestPrfSumKnownAnswers(t *testing.T) {
	key131 := repeat(0xaa, 131)
	key80 := repeat(0xaa, 80)
	seq25 := unhex(t, "0102030405060708090a0b0c0d0e0f10111213141516171819")
	msg6 := []byte("Test Using Larger Than Block-Size Key - Hash Key First")
	msg7 := []byte("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.")
	tests := []struct {
		name string
		alg  HashAlg
		key  []byte
		data []byte
		want string
	}{
		{"rfc2202-1", HashSHA1, repeat(0x0b, 20), []byte("Hi There"), "b617318655057264e28bc0b6fb378c8ef146be00"},
		{"rfc2202-2", HashSHA1, []byte("Jefe"), []byte("what do ya want for nothing?"), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"},
		{"rfc2202-3", HashSHA1, repeat(0xaa, 20), repeat(0xdd, 50), "125d7342b9ac11cd91a39af48aa17b4f63f175d3"},
		{"rfc2202-4", HashSHA1, seq25, repeat(0xcd, 50), "4c9007f4026250c6bc8414f9bf50c86c2d7235da"},
		{"rfc2202-6", HashSHA1, key80, msg6, "aa4ae5e15272d00e95705637ce8a3b55ed402112"},

		{"rfc4231-1-sha256", HashSHA256, repeat(0x0b, 20), []byte("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
		{"rfc4231-2-sha256", HashSHA256, []byte("Jefe"), []byte("what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{"rfc4231-3-sha256", HashSHA256, repeat(0xaa, 20), repeat(0xdd, 50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
		{"rfc4231-4-sha256", HashSHA256, seq25, repeat(0xcd, 50), "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
		{"rfc4231-6-sha256", HashSHA256, key131, msg6, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
		{"rfc4231-7-sha256", HashSHA256, key131, msg7, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},

		{"rfc4231-1-sha384", HashSHA384, repeat(0x0b, 20), []byte("Hi There"), "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"},
		{"rfc4231-3-sha384", HashSHA384, repeat(0xaa, 20), repeat(0xdd, 50), "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27"},
		{"rfc4231-4-sha384", HashSHA384, seq25, repeat(0xcd, 50), "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb"},
		{"rfc4231-6-sha384", HashSHA384, key131, msg6, "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952"},
		{"rfc4231-7-sha384", HashSHA384, key131, msg7, "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e"},

		{"rfc4231-1-sha512", HashSHA512, repeat(0x0b, 20), []byte("Hi There"), "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"},
		{"rfc4231-2-sha512", HashSHA512, []byte("Jefe"), []byte("what do ya want for nothing?"), "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"},
		{"rfc4231-3-sha512", HashSHA512, repeat(0xaa, 20), repeat(0xdd, 50), "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb"},
		{"rfc4231-4-sha512", HashSHA512, seq25, repeat(0xcd, 50), "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"},
		{"rfc4231-6-sha512", HashSHA512, key131, msg6, "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"},
		{"rfc4231-7-sha512", HashSHA512, key131, msg7, "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPRF(tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, tc.want)
			if got := p.Sum(tc.key, tc.data); !bytes.Equal(got, want) {
				t.Fatalf("Sum = %x, want %x", got, want)
			}
			if p.Size() != len(want) {
				t.Fatalf("Size() = %d, want %d", p.Size(), len(want))
			}
			// The data may come in pieces: Sum(k, a, b) == Sum(k, a|b).
			cut := len(tc.data) / 3
			if got := p.Sum(tc.key, tc.data[:cut], nil, tc.data[cut:]); !bytes.Equal(got, want) {
				t.Fatalf("Sum in pieces = %x, want %x", got, want)
			}
		})
	}
}

// Plain hash known answers: the "abc" vectors of FIPS 180-2 Appendices
// A.1 (SHA-1), B.1 (SHA-256), D.1 (SHA-384) and C.1 (SHA-512).
func TestPrfHashKnownAnswers(t *testing.T) {
	tests := []struct {
		alg  HashAlg
		want string
	}{
		{HashSHA1, "a9993e364706816aba3e25717850c26c9cd0d89d"},
		{HashSHA256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{HashSHA384, "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"},
		{HashSHA512, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"},
	}
	for _, tc := range tests {
		p, err := NewPRF(tc.alg)
		if err != nil {
			t.Fatal(err)
		}
		want := unhex(t, tc.want)
		if got := p.Hash([]byte("a"), []byte("bc")); !bytes.Equal(got, want) {
			t.Errorf("%v: Hash(abc) = %x, want %x", tc.alg, got, want)
		}
		if tc.alg.Size() != len(want) {
			t.Errorf("%v: Size() = %d, want %d", tc.alg, tc.alg.Size(), len(want))
		}
	}
}

func TestHashAlgUnsupported(t *testing.T) {
	for _, tc := range []struct {
		alg    HashAlg
		reason string
	}{
		{1, "MD5 is never supported"},
		{0, "unknown"},
		{3, "unknown"},
		{7, "unknown"},
		{0xffff, "unknown"},
	} {
		if _, err := tc.alg.New(); err == nil {
			t.Errorf("hash %d: New succeeded, want error", tc.alg)
		}
		p, err := NewPRF(tc.alg)
		if p != nil || err == nil {
			t.Fatalf("hash %d: NewPRF = %v, %v; want nil, error", tc.alg, p, err)
		}
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("hash %d: error %v does not wrap ErrUnsupported", tc.alg, err)
		}
		var ae *AlgorithmError
		if !errors.As(err, &ae) || ae.Kind != "hash" || ae.ID != int(tc.alg) {
			t.Errorf("hash %d: error %#v is not an AlgorithmError naming the hash", tc.alg, err)
		}
		if !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("hash %d: error %q does not say %q", tc.alg, err, tc.reason)
		}
		if tc.alg.Size() != 0 {
			t.Errorf("hash %d: Size() = %d, want 0", tc.alg, tc.alg.Size())
		}
	}
}

func TestHashAlgString(t *testing.T) {
	for alg, want := range map[HashAlg]string{
		1: "MD5", HashSHA1: "SHA1", HashSHA256: "SHA2-256", HashSHA384: "SHA2-384", HashSHA512: "SHA2-512", 9: "hash(9)",
	} {
		if got := alg.String(); got != want {
			t.Errorf("HashAlg(%d).String() = %q, want %q", uint16(alg), got, want)
		}
	}
	p, _ := NewPRF(HashSHA256)
	if got := p.String(); got != "HMAC-SHA2-256" {
		t.Errorf("Prf.String() = %q", got)
	}
	if p.Alg() != HashSHA256 {
		t.Errorf("Prf.Alg() = %v", p.Alg())
	}
}

func TestEqual(t *testing.T) {
	a := []byte{1, 2, 3}
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{[]byte{1, 2, 3}, true},
		{[]byte{1, 2, 4}, false},
		{[]byte{1, 2}, false},
		{[]byte{1, 2, 3, 0}, false},
		{nil, false},
	} {
		if got := Equal(a, tc.b); got != tc.want {
			t.Errorf("Equal(%x, %x) = %v, want %v", a, tc.b, got, tc.want)
		}
	}
	if !Equal(nil, []byte{}) {
		t.Error("Equal(nil, empty) = false, want true")
	}
}
