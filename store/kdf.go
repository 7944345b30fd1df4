package store

import (
	"crypto/sha256"
	"hash"
	"sync"
)

// The per-blob key of the v2 layout is HKDF-SHA256 (RFC 5869) of the
// sealing key with the blob's salt, 32 bytes: T(1) of HKDF-Expand, that is
//
//	PRK = HMAC-SHA256(salt, sealing key)
//	key = HMAC-SHA256(PRK, info | 0x01)
//
// crypto/hkdf computes the same, but allocates two HMACs (four SHA-256
// states) per call, and every sealed record, every counters merge and
// every Raft entry derives one key on each node: blobKey does it with
// pooled states and no allocation. TestBlobKeyIsHKDF checks it against
// crypto/hkdf and RFC 5869's vectors.

// kdfState is the scratch of one derivation.
type kdfState struct {
	h   hash.Hash
	pad [sha256.BlockSize]byte
	prk [sha256.Size]byte
	in  [sha256.Size]byte
}

var kdfPool = sync.Pool{New: func() any { return &kdfState{h: sha256.New()} }}

// one is HKDF-Expand's block counter for T(1).
var one = []byte{1}

// hmac writes HMAC-SHA256(key, a | b) to dst. key is at most one SHA-256
// block (a 16-byte salt or a 32-byte PRK).
func (st *kdfState) hmac(dst *[sha256.Size]byte, key, a, b []byte) {
	for i := range st.pad {
		st.pad[i] = 0x36
	}
	for i, k := range key {
		st.pad[i] ^= k
	}
	st.h.Reset()
	st.h.Write(st.pad[:])
	st.h.Write(a)
	st.h.Write(b)
	st.h.Sum(st.in[:0])
	for i := range st.pad {
		st.pad[i] ^= 0x36 ^ 0x5c
	}
	st.h.Reset()
	st.h.Write(st.pad[:])
	st.h.Write(st.in[:])
	st.h.Sum(dst[:0])
}

// blobKey writes HKDF-SHA256(secret, salt, info) truncated to 32 bytes
// (one output block) to dst. salt must not be longer than 64 bytes.
func blobKey(dst *[sha256.Size]byte, secret, salt, info []byte) {
	if len(salt) > sha256.BlockSize {
		panic("store: blob key salt longer than a SHA-256 block") // fixed sizes: cannot happen
	}
	st := kdfPool.Get().(*kdfState)
	if len(salt) == 0 {
		st.hmac(&st.prk, make([]byte, sha256.Size), secret, nil) // RFC 5869 §2.2: HashLen zeros
	} else {
		st.hmac(&st.prk, salt, secret, nil)
	}
	st.hmac(dst, st.prk[:], info, one)
	clear(st.pad[:])
	clear(st.prk[:])
	clear(st.in[:])
	st.h.Reset()
	kdfPool.Put(st)
}
