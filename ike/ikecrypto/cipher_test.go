package ikecrypto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// CBC known answers.
//   - AES: NIST SP 800-38A Appendix F.2.1-F.2.6 (CBC-AES128/192/256 Encrypt
//     and Decrypt share key, IV, plaintext and ciphertext).
//   - 3DES: NIST CAVP TDES Multi-block Message Test (TCBCMMT) examples, as
//     carried in strongSwan's
//     src/libstrongswan/plugins/test_vectors/test_vectors/3des_cbc.c.
func TestCBCKnownAnswers(t *testing.T) {
	const sp80038aPlain = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
	const sp80038aIV = "000102030405060708090a0b0c0d0e0f"
	tests := []struct {
		name       string
		alg        EncrAlg
		bits       int
		key, iv    string
		plain, enc string
	}{
		{"SP800-38A F.2.1/F.2.2 AES-128", EncrAES, 128, "2b7e151628aed2a6abf7158809cf4f3c", sp80038aIV, sp80038aPlain,
			"7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2 73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7"},
		{"SP800-38A F.2.3/F.2.4 AES-192", EncrAES, 192, "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", sp80038aIV, sp80038aPlain,
			"4f021db243bc633d7178183a9fa071e8 b4d9ada9ad7dedf4e5e738763f69145a 571b242012fb7ae07fa9baac3df102e0 08b0e27988598881d920a9e64f5615cd"},
		{"SP800-38A F.2.5/F.2.6 AES-256", EncrAES, 256, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", sp80038aIV, sp80038aPlain,
			"f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d 39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b"},
		{"TCBCMMT example 1 3DES", Encr3DES, 0, "627f460e08104a1043cd265d5840eaf1313edf97df2a8a8c", "8e29f75ea77e5475",
			"326a494cd33fe756", "b22b8d66de970692"},
		{"TCBCMMT example 2 3DES", Encr3DES, 192, "37ae5ebf46dff2dc0754b94f31cbb3855e7fd36dc870bfae", "3d1de3cc132e3b65",
			"84401f78fe6c10876d8ea23094ea5309", "7b1f7c7e3b1c948ebd04a75ffba7d2f5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCipher(tc.alg, tc.bits)
			if err != nil {
				t.Fatal(err)
			}
			key, iv, plain, enc := unhex(t, tc.key), unhex(t, tc.iv), unhex(t, tc.plain), unhex(t, tc.enc)
			if c.KeyLen() != len(key) || c.BlockSize() != len(iv) {
				t.Fatalf("KeyLen, BlockSize = %d, %d; want %d, %d", c.KeyLen(), c.BlockSize(), len(key), len(iv))
			}
			keep := bytes.Clone(plain)
			keepIV := bytes.Clone(iv)
			got, err := c.Encrypt(key, iv, plain)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, enc) {
				t.Fatalf("Encrypt = %x, want %x", got, enc)
			}
			if !bytes.Equal(plain, keep) || !bytes.Equal(iv, keepIV) {
				t.Fatal("Encrypt modified its input")
			}
			back, err := c.Decrypt(key, iv, enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, plain) {
				t.Fatalf("Decrypt = %x, want %x", back, plain)
			}
			// CBC chaining: decrypting the tail with the previous cipher
			// block as IV gives the tail of the plaintext (how IKEv1 carries
			// the IV from message to message).
			if bs := c.BlockSize(); len(enc) > bs {
				tail, err := c.Decrypt(key, enc[:bs], enc[bs:])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(tail, plain[bs:]) {
					t.Fatalf("chained Decrypt = %x, want %x", tail, plain[bs:])
				}
			}
		})
	}
}

func TestNewCipherRefuses(t *testing.T) {
	for _, tc := range []struct {
		alg    EncrAlg
		bits   int
		reason string
	}{
		{EncrAES, 0, "explicit key length"},
		{EncrAES, 64, "128, 192 or 256"},
		{EncrAES, 512, "128, 192 or 256"},
		{EncrAES, -128, "128, 192 or 256"},
		{Encr3DES, 128, "192 bits"},
		{1, 0, "DES is never supported"},
		{1, 64, "DES is never supported"},
		{0, 0, "unknown"},
		{12, 128, "unknown"},
	} {
		c, err := NewCipher(tc.alg, tc.bits)
		if c != nil || err == nil {
			t.Errorf("NewCipher(%v, %d) = %v, %v; want error", tc.alg, tc.bits, c, err)
			continue
		}
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("NewCipher(%v, %d): %v does not wrap ErrUnsupported", tc.alg, tc.bits, err)
		}
		if !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("NewCipher(%v, %d): error %q does not say %q", tc.alg, tc.bits, err, tc.reason)
		}
	}
}

func TestCipherBadLengths(t *testing.T) {
	aes, _ := NewCipher(EncrAES, 256)
	des3, _ := NewCipher(Encr3DES, 0)
	secret := bytes.Repeat([]byte{0x5a}, 32)
	for _, tc := range []struct {
		name         string
		c            *Cipher
		key, iv, msg []byte
		what         string
	}{
		{"aes short key", aes, secret[:16], make([]byte, 16), make([]byte, 16), "key is 16 bytes"},
		{"aes long IV", aes, secret, make([]byte, 20), make([]byte, 16), "IV is 20 bytes"},
		{"aes nil IV", aes, secret, nil, make([]byte, 16), "IV is 0 bytes"},
		{"aes unpadded", aes, secret, make([]byte, 16), make([]byte, 17), "input is 17 bytes"},
		{"aes empty", aes, secret, make([]byte, 16), nil, "input is 0 bytes"},
		{"3des 16 byte block", des3, secret[:24], make([]byte, 8), make([]byte, 12), "input is 12 bytes"},
		{"3des AES key", des3, secret, make([]byte, 8), make([]byte, 8), "key is 32 bytes"},
	} {
		for op, f := range map[string]func(k, iv, m []byte) ([]byte, error){"encrypt": tc.c.Encrypt, "decrypt": tc.c.Decrypt} {
			out, err := f(tc.key, tc.iv, tc.msg)
			if out != nil || !errors.Is(err, ErrInvalidLength) {
				t.Errorf("%s %s: got %x, %v; want ErrInvalidLength", tc.name, op, out, err)
				continue
			}
			if !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), op) {
				t.Errorf("%s %s: error %q does not say %q and %q", tc.name, op, err, tc.what, op)
			}
			if strings.Contains(err.Error(), "5a5a") {
				t.Errorf("%s %s: error %q leaks the key", tc.name, op, err)
			}
		}
	}
}

func TestCipherNamesAndLegacy(t *testing.T) {
	c, _ := NewCipher(EncrAES, 192)
	if c.String() != "AES-CBC-192" || c.Alg() != EncrAES {
		t.Errorf("String, Alg = %q, %v", c.String(), c.Alg())
	}
	d, _ := NewCipher(Encr3DES, 0)
	if d.String() != "3DES-CBC-192" || d.KeyLen() != 24 || d.BlockSize() != 8 {
		t.Errorf("3DES: %q KeyLen %d BlockSize %d", d.String(), d.KeyLen(), d.BlockSize())
	}
	if !IsLegacyEncr(Encr3DES) || IsLegacyEncr(EncrAES) {
		t.Error("IsLegacyEncr: want 3DES legacy, AES not")
	}
	if EncrAlg(1).String() != "DES-CBC" || EncrAlg(99).String() != "encr(99)" {
		t.Errorf("EncrAlg names: %q %q", EncrAlg(1), EncrAlg(99))
	}
}
