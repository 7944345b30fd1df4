package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

// ClusterKeySize is the size of the cluster key in bytes.
const ClusterKeySize = 32

// sealVersion is the first byte of every sealed blob: the layout (AES-256-GCM,
// 12-byte random nonce, 16-byte tag, key derived with sealKeyInfo). A new
// layout takes a new value; Open refuses values it does not know.
const sealVersion byte = 1

// sealKeyInfo separates the sealing key from any other use of the cluster key.
const sealKeyInfo = "ikegw store seal v1"

const (
	nonceSize = 12
	tagSize   = 16
	// SealOverhead is how many bytes Seal adds to a plaintext.
	SealOverhead = 1 + nonceSize + tagSize
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
//	version (1 byte) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
//
// Seal always uses the current key; Open tries the current key, then each
// previous key, so a cluster can rotate its key: nodes first learn the new
// key as current with the old one as previous, then data is resealed (see
// DB.Reseal), then the old key is dropped.
//
// With random nonces one key must not seal more than 2^32 blobs; rotate the
// cluster key well before that.
//
// A Sealer is safe for concurrent use. It never prints its keys.
type Sealer struct {
	aeads []cipher.AEAD // [0] is current, the rest previous keys in order
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
	}
	return s, nil
}

// String never shows key material.
func (s *Sealer) String() string {
	return fmt.Sprintf("store.Sealer{keys: %d}", len(s.aeads))
}

// GoString never shows key material.
func (s *Sealer) GoString() string { return s.String() }

// Seal encrypts and authenticates plaintext, binding additionalData (which is
// not stored: Open must be given the same). It returns a new slice.
func (s *Sealer) Seal(plaintext, additionalData []byte) []byte {
	out := make([]byte, 1, SealOverhead+len(plaintext))
	out[0] = sealVersion
	return s.aeads[0].Seal(out, nil, plaintext, additionalData)
}

// Open authenticates and decrypts a blob made by Seal with the same
// additionalData. It returns ErrMalformedSealed for something that is not a
// sealed blob and ErrSealed when no key opens it.
func (s *Sealer) Open(sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < SealOverhead {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte minimum", ErrMalformedSealed, len(sealed), SealOverhead)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: layout version %d, this build knows %d", ErrMalformedSealed, sealed[0], sealVersion)
	}
	for _, a := range s.aeads {
		if pt, err := a.Open(nil, nil, sealed[1:], additionalData); err == nil {
			if pt == nil {
				pt = []byte{}
			}
			return pt, nil
		}
	}
	return nil, ErrSealed
}

// openedWithCurrent reports whether sealed opens with the current key (used
// by Reseal to skip blobs that need no work).
func (s *Sealer) openedWithCurrent(sealed, additionalData []byte) bool {
	if len(sealed) < SealOverhead || sealed[0] != sealVersion {
		return false
	}
	_, err := s.aeads[0].Open(nil, nil, sealed[1:], additionalData)
	return err == nil
}
