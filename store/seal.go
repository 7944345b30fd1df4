package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// ClusterKeySize is the size of the cluster key in bytes.
const ClusterKeySize = 32

// The first byte of every sealed blob names its layout. A new layout takes a
// new value; Open refuses values it does not know.
//
//   - sealV1: AES-256-GCM under the key derived with sealKeyInfo, 12-byte
//     random nonce. Read only: one key may seal at most 2^32 blobs with
//     random nonces, and counter syncs reseal every record each second.
//   - sealV2 (written): a fresh AES-256-GCM key per blob, derived with HKDF
//     from the sealing key and a 16-byte random salt stored in the blob,
//     then a 12-byte random nonce. No per-key message bound to manage.
const (
	sealV1      byte = 1
	sealV2      byte = 2
	sealVersion      = sealV2
	saltSize         = 16
)

// sealKeyInfo separates the sealing key from any other use of the cluster key.
const sealKeyInfo = "ikegw store seal v1"

const (
	nonceSize = 12
	tagSize   = 16
	// SealOverhead is how many bytes Seal adds to a plaintext.
	SealOverhead = 1 + saltSize + nonceSize + tagSize
	minSealed    = 1 + nonceSize + tagSize // a v1 blob of an empty plaintext
)

var (
	// ErrSealed is returned by Open when the blob does not authenticate with
	// any of the Sealer's keys (or its additional data differs).
	ErrSealed = errors.New("store: sealed data does not open with the cluster key: wrong key?")
	// ErrMalformedSealed is returned by Open when the blob is not a sealed
	// blob at all: too short, or an unknown layout version.
	ErrMalformedSealed = errors.New("store: malformed sealed data")
)

// Sealer seals and opens small blobs (SA records, Raft command payloads)
// under the cluster key with AES-256-GCM. A sealed blob is
//
//	version (1 byte) | salt (16 random bytes) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
//
// Seal always uses the current key; Open tries the current key, then each
// previous key, so a cluster can rotate its key: nodes first learn the new
// key as current with the old one as previous, then data is resealed (see
// DB.Reseal), then the old key is dropped.
//
// Every blob is sealed under its own key (HKDF of the sealing key and a
// random salt), so there is no bound on how many blobs one cluster key seals.
//
// A Sealer is safe for concurrent use. It never prints its keys.
type Sealer struct {
	aeads []cipher.AEAD // v1: [0] is current, the rest previous keys in order
	subs  [][]byte      // v2: the sealing keys the per-blob keys derive from
}

// NewSealer returns a Sealer whose current key is key; previous keys are
// tried by Open after it, in order. Every key must be ClusterKeySize bytes.
func NewSealer(key []byte, previous ...[]byte) (*Sealer, error) {
	s := &Sealer{}
	for i, k := range append([][]byte{key}, previous...) {
		if len(k) != ClusterKeySize {
			what := "current key"
			if i > 0 {
				what = fmt.Sprintf("previous key %d", i)
			}
			return nil, fmt.Errorf("store: sealer: %s is %d bytes, want %d", what, len(k), ClusterKeySize)
		}
		sub, err := hkdf.Key(sha256.New, k, nil, sealKeyInfo, 32)
		if err != nil {
			return nil, fmt.Errorf("store: sealer: derive key: %w", err)
		}
		block, err := aes.NewCipher(sub)
		if err != nil {
			return nil, fmt.Errorf("store: sealer: %w", err)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, fmt.Errorf("store: sealer: %w", err)
		}
		s.aeads = append(s.aeads, aead)
		s.subs = append(s.subs, sub)
	}
	return s, nil
}

// blobAEAD derives the AEAD of one v2 blob from a sealing key and its salt.
func blobAEAD(sub, salt []byte) (cipher.AEAD, error) {
	var k [32]byte
	blobKey(&k, sub, salt, sealKeyInfoV2)
	block, err := aes.NewCipher(k[:])
	clear(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

var sealKeyInfoV2 = []byte("ikegw store seal v2 blob key")

// String never shows key material.
func (s *Sealer) String() string {
	return fmt.Sprintf("store.Sealer{keys: %d}", len(s.aeads))
}

// GoString never shows key material.
func (s *Sealer) GoString() string { return s.String() }

// Seal encrypts and authenticates plaintext, binding additionalData (which is
// not stored: Open must be given the same). It returns a new slice.
func (s *Sealer) Seal(plaintext, additionalData []byte) []byte {
	out := make([]byte, 1+saltSize, SealOverhead+len(plaintext))
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		panic("store: seal: random source failed: " + err.Error()) // crypto/rand does not fail on Linux
	}
	a, err := blobAEAD(s.subs[0], out[1:1+saltSize])
	if err != nil {
		panic("store: seal: " + err.Error()) // fixed sizes: cannot happen
	}
	return a.Seal(out, nil, plaintext, additionalData)
}

// Open authenticates and decrypts a blob made by Seal with the same
// additionalData. It returns ErrMalformedSealed for something that is not a
// sealed blob and ErrSealed when no key opens it.
func (s *Sealer) Open(sealed, additionalData []byte) ([]byte, error) {
	pt, _, err := s.open(sealed, additionalData)
	return pt, err
}

// open also says which key (index) opened the blob.
func (s *Sealer) open(sealed, additionalData []byte) ([]byte, int, error) {
	if len(sealed) < minSealed {
		return nil, -1, fmt.Errorf("%w: %d bytes, shorter than the %d-byte minimum", ErrMalformedSealed, len(sealed), minSealed)
	}
	switch sealed[0] {
	case sealV1:
		for i, a := range s.aeads {
			if pt, err := a.Open(nil, nil, sealed[1:], additionalData); err == nil {
				if pt == nil {
					pt = []byte{}
				}
				return pt, i, nil
			}
		}
	case sealV2:
		if len(sealed) < SealOverhead {
			return nil, -1, fmt.Errorf("%w: %d bytes, shorter than the %d-byte minimum", ErrMalformedSealed, len(sealed), SealOverhead)
		}
		salt, body := sealed[1:1+saltSize], sealed[1+saltSize:]
		for i, sub := range s.subs {
			a, err := blobAEAD(sub, salt)
			if err != nil {
				return nil, -1, err
			}
			if pt, err := a.Open(nil, nil, body, additionalData); err == nil {
				if pt == nil {
					pt = []byte{}
				}
				return pt, i, nil
			}
		}
	default:
		return nil, -1, fmt.Errorf("%w: layout version %d, this build knows %d and %d", ErrMalformedSealed, sealed[0], sealV1, sealV2)
	}
	return nil, -1, ErrSealed
}

// openedWithCurrent reports whether sealed is in the current layout and
// opens with the current key (used by Reseal to skip blobs that need no
// work).
func (s *Sealer) openedWithCurrent(sealed, additionalData []byte) bool {
	if len(sealed) == 0 || sealed[0] != sealVersion {
		return false
	}
	_, i, err := s.open(sealed, additionalData)
	return err == nil && i == 0
}
