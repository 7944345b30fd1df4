package store

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// blobKey is HKDF-SHA256 with a 32-byte output: RFC 5869's test cases 1
// and 3 (their first 32 bytes: T(1)), and crypto/hkdf for every salt
// length the function takes.
func TestBlobKeyIsHKDF(t *testing.T) {
	vectors := []struct{ name, ikm, salt, info, okm string }{
		{"RFC 5869 A.1", "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9",
			"3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"},
		{"RFC 5869 A.3", "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
			"8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"},
	}
	for _, v := range vectors {
		var got [32]byte
		blobKey(&got, unhex(t, v.ikm), unhex(t, v.salt), unhex(t, v.info))
		if want := unhex(t, v.okm); !bytes.Equal(got[:], want) {
			t.Errorf("%s: got %x, want %x", v.name, got, want)
		}
	}
	for _, n := range []int{0, 1, 13, saltSize, 32, 63, 64} {
		for seed := range uint64(20) {
			secret := seededBytes(seed, 32)
			salt := seededBytes(seed+1000, n)
			info := seededBytes(seed+2000, int(seed)*7)
			want, err := hkdf.Key(sha256.New, secret, salt, string(info), 32)
			if err != nil {
				t.Fatal(err)
			}
			var got [32]byte
			blobKey(&got, secret, salt, info)
			if !bytes.Equal(got[:], want) {
				t.Fatalf("salt %d bytes, seed %d: got %x, crypto/hkdf %x", n, seed, got, want)
			}
		}
	}
}

func TestBlobKeyDoesNotAllocate(t *testing.T) {
	secret, salt := seededBytes(1, 32), seededBytes(2, saltSize)
	var k [32]byte
	blobKey(&k, secret, salt, sealKeyInfoV2) // fill the pool
	if n := testing.AllocsPerRun(100, func() { blobKey(&k, secret, salt, sealKeyInfoV2) }); n != 0 {
		t.Fatalf("%v allocations per key", n)
	}
}

// A v2 blob written by the build before blobKey (crypto/hkdf) still opens:
// the layout did not change.
func TestSealOpensEarlierV2Blob(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{0x42}, ClusterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	blob := unhex(t, "026c2b9295cd0fdeed59d7f7cf8a1a697d8617d1b09f92be69ddade69107d160ff55023a4a3877dacf1c19f9a12c5d820e00352e6d60f710586c22e74885f755ce7ad52a339c9861f82a2817d286934af4f21117a1f3a208438c31ef021705efd2d8")
	pt, err := s.Open(blob, []byte("child\x00\x00\x00\x10\x01"))
	if err != nil || string(pt) != "ikegw v2 blob written before the allocation-free HKDF" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
}

// The per-blob key derivation, against crypto/hkdf in the same run.
func BenchmarkBlobKey(b *testing.B) {
	secret, salt := seededBytes(1, 32), seededBytes(2, saltSize)
	b.Run("pooled", func(b *testing.B) {
		b.ReportAllocs()
		var k [32]byte
		for b.Loop() {
			blobKey(&k, secret, salt, sealKeyInfoV2)
		}
	})
	b.Run("crypto-hkdf", func(b *testing.B) {
		b.ReportAllocs()
		info := string(sealKeyInfoV2)
		for b.Loop() {
			if _, err := hkdf.Key(sha256.New, secret, salt, info, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
}
