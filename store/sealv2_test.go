package store

import (
	"bytes"
	"errors"
	"testing"
)

// Seal writes the v2 layout (a key per blob); blobs of the v1 layout, which
// earlier builds wrote, still open; tampering with the salt is detected.
func TestSealLayouts(t *testing.T) {
	key := bytes.Repeat([]byte{7}, ClusterKeySize)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("bucket/key")
	b := s.Seal([]byte("secret"), ad)
	if b[0] != sealV2 || len(b) != SealOverhead+len("secret") {
		t.Fatalf("layout %d, %d bytes", b[0], len(b))
	}
	if b2 := s.Seal([]byte("secret"), ad); bytes.Equal(b[1:1+saltSize], b2[1:1+saltSize]) {
		t.Fatal("two blobs share a salt")
	}
	if pt, err := s.Open(b, ad); err != nil || string(pt) != "secret" {
		t.Fatalf("open v2: %q %v", pt, err)
	}
	b[3] ^= 1 // the salt: another blob key
	if _, err := s.Open(b, ad); !errors.Is(err, ErrSealed) {
		t.Fatalf("tampered salt: %v", err)
	}
	v1 := s.aeads[0].Seal([]byte{sealV1}, nil, []byte("old record"), ad)
	if pt, err := s.Open(v1, ad); err != nil || string(pt) != "old record" {
		t.Fatalf("open v1: %q %v", pt, err)
	}
	if s.openedWithCurrent(v1, ad) {
		t.Fatal("a v1 blob counts as current: Reseal would keep it")
	}
	// Rotation: a blob sealed under the previous key opens, and is not current.
	s2, err := NewSealer(bytes.Repeat([]byte{9}, ClusterKeySize), key)
	if err != nil {
		t.Fatal(err)
	}
	old := s.Seal([]byte("x"), ad)
	if _, err := s2.Open(old, ad); err != nil || s2.openedWithCurrent(old, ad) {
		t.Fatalf("previous-key blob: %v, current=%v", err, s2.openedWithCurrent(old, ad))
	}
	if _, err := s2.Open([]byte{3, 0, 0}, ad); !errors.Is(err, ErrMalformedSealed) {
		t.Fatalf("short unknown layout: %v", err)
	}
}
