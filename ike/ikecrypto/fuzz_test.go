package ikecrypto

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// FuzzGroupShared feeds arbitrary peer public values (the KE payload a
// remote peer controls) to every fast group: Shared must never panic, must
// refuse with ErrInvalidPublicValue, or return a secret of the group's size.
func FuzzGroupShared(f *testing.F) {
	ids := []uint16{GroupMODP1024, GroupECP256, GroupECP384, GroupECP521, GroupCurve25519}
	privs := make(map[uint16][]byte)
	for _, id := range ids {
		g, err := GroupByID(id)
		if err != nil {
			f.Fatal(err)
		}
		priv, pub, err := g.GenerateKey(rand.Reader)
		if err != nil {
			f.Fatal(err)
		}
		privs[id] = priv
		f.Add(uint8(len(privs)-1), pub)
		f.Add(uint8(len(privs)-1), make([]byte, g.PublicLen()))
	}
	f.Add(uint8(1), []byte{4, 1, 2})
	f.Fuzz(func(t *testing.T, which uint8, pub []byte) {
		id := ids[int(which)%len(ids)]
		g, _ := GroupByID(id)
		z, err := g.Shared(privs[id], pub)
		if err != nil {
			if z != nil || !errors.Is(err, ErrInvalidPublicValue) {
				t.Fatalf("group %d: Shared = %x, %v", id, z, err)
			}
			return
		}
		want := map[uint16]int{GroupMODP1024: 128, GroupECP256: 32, GroupECP384: 48, GroupECP521: 66, GroupCurve25519: 32}[id]
		if len(z) != want || len(pub) != g.PublicLen() {
			t.Fatalf("group %d: accepted %d-byte value, secret %d bytes", id, len(pub), len(z))
		}
	})
}

// FuzzCipherDecrypt: arbitrary ciphertexts, keys and IVs never panic;
// well-formed ones round-trip.
func FuzzCipherDecrypt(f *testing.F) {
	f.Add(uint8(0), make([]byte, 32), make([]byte, 16), make([]byte, 32))
	f.Add(uint8(1), make([]byte, 24), make([]byte, 8), make([]byte, 9))
	f.Fuzz(func(t *testing.T, which uint8, key, iv, msg []byte) {
		c, err := NewCipher(EncrAES, 256)
		if which%2 == 1 {
			c, err = NewCipher(Encr3DES, 0)
		}
		if err != nil {
			t.Fatal(err)
		}
		plain, err := c.Decrypt(key, iv, msg)
		if err != nil {
			if !errors.Is(err, ErrInvalidLength) {
				t.Fatalf("Decrypt error %v is not ErrInvalidLength", err)
			}
			return
		}
		back, err := c.Encrypt(key, iv, plain)
		if err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("Encrypt(Decrypt(m)) = %x, %v; want %x", back, err, msg)
		}
	})
}
