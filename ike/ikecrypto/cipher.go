package ikecrypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"fmt"
)

// EncrAlg is an ISAKMP phase 1 encryption algorithm attribute value (RFC 2409
// Appendix A, IANA "IPSEC Encryption Algorithm").
type EncrAlg uint16

// Supported encryption algorithms. DES (1) is never supported.
const (
	Encr3DES EncrAlg = 5
	EncrAES  EncrAlg = 7
)

const encrDES EncrAlg = 1

// String names the algorithm as RFC 2409 / IANA do.
func (e EncrAlg) String() string {
	switch e {
	case encrDES:
		return "DES-CBC"
	case Encr3DES:
		return "3DES-CBC"
	case EncrAES:
		return "AES-CBC"
	}
	return fmt.Sprintf("encr(%d)", uint16(e))
}

// IsLegacyEncr reports whether alg is supported only for compatibility with
// old peers (3DES): configuration should demand an explicit opt-in.
func IsLegacyEncr(alg EncrAlg) bool { return alg == Encr3DES }

// Cipher is a negotiated phase 1 block cipher in CBC mode. It holds no key:
// the key is passed to every call, so a Cipher is safe for concurrent use.
type Cipher struct {
	alg    EncrAlg
	keyLen int // bytes
	block  int // bytes
}

// NewCipher returns the CBC cipher for the negotiated algorithm and key
// length attribute (in bits). AES takes 128, 192 or 256; a key length of 0 is
// an error for AES (the caller supplies the default it negotiated). 3DES takes
// 0 (no attribute) or 192.
func NewCipher(alg EncrAlg, keyBits int) (*Cipher, error) {
	switch alg {
	case EncrAES:
		switch keyBits {
		case 128, 192, 256:
			return &Cipher{alg: alg, keyLen: keyBits / 8, block: aes.BlockSize}, nil
		case 0:
			return nil, &AlgorithmError{Kind: "key length", ID: keyBits, Reason: "AES-CBC needs an explicit key length (128, 192 or 256 bits)"}
		}
		return nil, &AlgorithmError{Kind: "key length", ID: keyBits, Reason: "AES-CBC takes 128, 192 or 256 bits"}
	case Encr3DES:
		if keyBits != 0 && keyBits != 192 {
			return nil, &AlgorithmError{Kind: "key length", ID: keyBits, Reason: "3DES-CBC takes 192 bits (or no key length attribute)"}
		}
		return &Cipher{alg: alg, keyLen: 24, block: des.BlockSize}, nil
	case encrDES:
		return nil, &AlgorithmError{Kind: "encryption", ID: int(alg), Reason: "DES is never supported"}
	}
	return nil, &AlgorithmError{Kind: "encryption", ID: int(alg), Reason: "unknown encryption algorithm"}
}

// Alg is the encryption algorithm.
func (c *Cipher) Alg() EncrAlg { return c.alg }

// KeyLen is the key length in bytes.
func (c *Cipher) KeyLen() int { return c.keyLen }

// BlockSize is the cipher block (and IV) length in bytes.
func (c *Cipher) BlockSize() int { return c.block }

// String names the cipher and key length, e.g. "AES-CBC-256".
func (c *Cipher) String() string { return fmt.Sprintf("%s-%d", c.alg, c.keyLen*8) }

func (c *Cipher) newBlock(op string, key, iv, data []byte) (cipher.Block, error) {
	if len(key) != c.keyLen {
		return nil, fmt.Errorf("%s %s: %w", c, op, lengthError("key", len(key), fmt.Sprint(c.keyLen)))
	}
	if len(iv) != c.block {
		return nil, fmt.Errorf("%s %s: %w", c, op, lengthError("IV", len(iv), fmt.Sprint(c.block)))
	}
	if len(data) == 0 || len(data)%c.block != 0 {
		return nil, fmt.Errorf("%s %s: %w", c, op, lengthError("input", len(data), fmt.Sprintf("a non-zero multiple of %d (caller pads)", c.block)))
	}
	var (
		b   cipher.Block
		err error
	)
	switch c.alg {
	case EncrAES:
		b, err = aes.NewCipher(key)
	case Encr3DES:
		b, err = des.NewTripleDESCipher(key)
	default:
		return nil, &AlgorithmError{Kind: "encryption", ID: int(c.alg), Reason: "Cipher not created by NewCipher"}
	}
	if err != nil {
		// Unreachable with the lengths checked above; never echo the key.
		return nil, fmt.Errorf("%s %s: %w: key rejected by the block cipher", c, op, ErrInvalidLength)
	}
	return b, nil
}

// Encrypt returns the CBC encryption of plaintext under key and iv, without
// padding: len(plaintext) must be a multiple of BlockSize (the caller pads, as
// RFC 2409 §5.3 lets the ISAKMP layer do). The result is a new slice; the
// inputs are not modified. The next IV is the last block of the result.
func (c *Cipher) Encrypt(key, iv, plaintext []byte) ([]byte, error) {
	b, err := c.newBlock("encrypt", key, iv, plaintext)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(plaintext))
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, plaintext)
	return out, nil
}

// Decrypt returns the CBC decryption of ciphertext under key and iv, without
// removing padding. len(ciphertext) must be a multiple of BlockSize. The
// result is a new slice; the inputs are not modified, so the caller can take
// the next IV (the last ciphertext block) after the call.
func (c *Cipher) Decrypt(key, iv, ciphertext []byte) ([]byte, error) {
	b, err := c.newBlock("decrypt", key, iv, ciphertext)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, ciphertext)
	return out, nil
}
