package ikecrypto

import (
	"crypto/rand"
	"testing"
)

// benchGroup measures one side of a Diffie-Hellman exchange: GenerateKey
// plus Shared with the peer's public value.
func benchGroup(b *testing.B, id uint16) {
	g, err := GroupByID(id)
	if err != nil {
		b.Fatal(err)
	}
	_, peer, err := g.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		priv, _, err := g.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := g.Shared(priv, peer); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGroup14(b *testing.B) { benchGroup(b, GroupMODP2048) }
func BenchmarkGroup19(b *testing.B) { benchGroup(b, GroupECP256) }
func BenchmarkGroup31(b *testing.B) { benchGroup(b, GroupCurve25519) }

// BenchmarkPRF is one HMAC-SHA2-256 over a Quick Mode HASH(3)-sized input.
func BenchmarkPRF(b *testing.B) {
	p, _ := NewPRF(HashSHA256)
	key := make([]byte, 32)
	ni, nr := make([]byte, 32), make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		QMHash3(p, key, 0x12345678, ni, nr)
	}
}

// BenchmarkKEYMAT derives 64 bytes (AES-256 + HMAC-SHA2-256 keys) for one SPI.
func BenchmarkKEYMAT(b *testing.B) {
	p, _ := NewPRF(HashSHA256)
	d := make([]byte, 32)
	spi := []byte{1, 2, 3, 4}
	ni, nr := make([]byte, 32), make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		KEYMAT(p, d, nil, 3, spi, ni, nr, 64)
	}
}

// BenchmarkCBC encrypts 1 KiB with AES-256-CBC.
func BenchmarkCBC(b *testing.B) {
	c, _ := NewCipher(EncrAES, 256)
	key, iv, msg := make([]byte, 32), make([]byte, 16), make([]byte, 1024)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Encrypt(key, iv, msg); err != nil {
			b.Fatal(err)
		}
	}
}
