// Package esp encodes and decodes ESP packets (RFC 4303) for one direction
// of an IPsec SA: AES-CBC with HMAC-SHA1-96 / SHA2-256-128 / SHA2-384-192 /
// SHA2-512-256 (RFC 3602, RFC 2404, RFC 4868) and AES-GCM with a 16-byte ICV
// (RFC 4106). It works in place on caller-owned buffers and allocates
// nothing per packet.
//
// It owns only the packet layout and the crypto. It never decides whether a
// packet may be sent or accepted: sequence numbers, the anti-replay window
// and policy checks belong to the caller (xfrm/userspace). Extended sequence
// numbers are not supported: sequence numbers are 32 bits.
package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

// Wire sizes.
const (
	HeaderLen    = 8                                 // SPI and sequence number
	MaxIVLen     = aes.BlockSize                     // AES-CBC IV; AES-GCM uses 8
	MaxHeadroom  = HeaderLen + MaxIVLen              // room before the payload Seal needs at most
	MaxICVLen    = 32                                // HMAC-SHA2-512-256
	MaxTailroom  = aes.BlockSize - 1 + 2 + MaxICVLen // padding, pad length, next header, ICV
	gcmIVLen     = 8
	gcmSaltLen   = 4
	gcmICVLen    = 16
	trailerFixed = 2 // pad length and next header
)

// Next header values of interest (IANA protocol numbers).
const (
	NextIPv4     = 4
	NextIPv6     = 41
	NextNoHeader = 59 // dummy packet (RFC 4303 §2.6): discard silently
)

// Errors returned by Open, Seal and ParseHeader. Decode errors are sentinels
// (no allocation per bad packet); the caller adds where the packet came from.
var (
	ErrTruncated = errors.New("esp: packet too short for header, IV, trailer and ICV")
	ErrLength    = errors.New("esp: ciphertext length is not a multiple of the cipher block size")
	ErrAuth      = errors.New("esp: integrity check failed")
	ErrPadding   = errors.New("esp: malformed padding (RFC 4303 §2.4)")
	ErrBuffer    = errors.New("esp: buffer capacity too small for the sealed packet")
	ErrSeqZero   = errors.New("esp: sequence number 0 is never sent (RFC 4303 §3.3.3)")
)

type algKind uint8

const (
	kindCBC algKind = iota + 1
	kindGCM
)

// SA is the crypto state of one direction of an IPsec SA. It is immutable
// after New and safe for concurrent use: Seal and Open may run in parallel.
type SA struct {
	spi       uint32
	kind      algKind
	ivLen     int
	icvLen    int
	blockSize int // padding alignment

	aead cipher.AEAD // GCM
	salt [gcmSaltLen]byte

	block cipher.Block // CBC
	ivGen cipher.Block // CBC IV generator: IV = AES_ivKey(ivPrefix | seq)
	ivPre [8]byte

	scratch sync.Pool // *scratch
}

type scratch struct {
	mac   hash.Hash
	sum   [64]byte
	iv    [aes.BlockSize]byte
	nonce [gcmSaltLen + gcmIVLen]byte
	enc   ivSetter // nil when the standard library's CBC cannot be re-IVed
	dec   ivSetter
}

// ivSetter is the standard library's reusable CBC mode (as crypto/tls uses it).
type ivSetter interface {
	cipher.BlockMode
	SetIV([]byte)
}

// cbc returns a CBC mode keyed by b with sc.iv as its IV, reusing the
// pooled one when possible.
func (sc *scratch) cbc(b cipher.Block, encrypt bool) cipher.BlockMode {
	m := sc.dec
	if encrypt {
		m = sc.enc
	}
	if m != nil {
		m.SetIV(sc.iv[:])
		return m
	}
	if encrypt {
		return cipher.NewCBCEncrypter(b, sc.iv[:])
	}
	return cipher.NewCBCDecrypter(b, sc.iv[:])
}

// New prepares one direction of an SA. The directions's Encr/Integ names
// and key lengths are the kernel's (see ike/sa); an algorithm this package
// does not implement gives an error wrapping xfrm.ErrUnsupported. The key
// material is copied into the cipher state; d is not retained.
func New(d *sa.SADir) (*SA, error) {
	s := &SA{spi: d.SPI}
	lens := xfrm.EncrKeyLen(d.Encr)
	keyOK := false
	for _, l := range lens {
		keyOK = keyOK || l == len(d.EncrKey)
	}
	switch d.Encr {
	case sa.EncrAESGCM:
		if !keyOK {
			return nil, fmt.Errorf("esp: spi 0x%08x: %s key material is %d bytes, want key|4-byte salt (20, 28 or 36)", d.SPI, d.Encr, len(d.EncrKey))
		}
		if d.Integ != "" {
			return nil, fmt.Errorf("esp: spi 0x%08x: %s takes no integrity algorithm, got %q", d.SPI, d.Encr, d.Integ)
		}
		if d.TruncBits != 0 && d.TruncBits != 8*gcmICVLen {
			return nil, fmt.Errorf("%w: esp: spi 0x%08x: %s with a %d-bit ICV (only 128)", xfrm.ErrUnsupported, d.SPI, d.Encr, d.TruncBits)
		}
		n := len(d.EncrKey) - gcmSaltLen
		b, err := aes.NewCipher(d.EncrKey[:n])
		if err != nil {
			return nil, fmt.Errorf("esp: spi 0x%08x: %s: %w", d.SPI, d.Encr, err)
		}
		s.aead, err = cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("esp: spi 0x%08x: %s: %w", d.SPI, d.Encr, err)
		}
		copy(s.salt[:], d.EncrKey[n:])
		s.kind, s.ivLen, s.icvLen, s.blockSize = kindGCM, gcmIVLen, gcmICVLen, 4
		s.scratch.New = func() any { return new(scratch) }
		return s, nil
	case sa.EncrAESCBC:
		if !keyOK {
			return nil, fmt.Errorf("esp: spi 0x%08x: %s key is %d bytes, want 16, 24 or 32", d.SPI, d.Encr, len(d.EncrKey))
		}
	case "":
		return nil, fmt.Errorf("esp: spi 0x%08x: no encryption algorithm", d.SPI)
	default:
		return nil, fmt.Errorf("%w: esp: spi 0x%08x: encryption algorithm %q (userspace ESP has AES-CBC and AES-GCM)", xfrm.ErrUnsupported, d.SPI, d.Encr)
	}
	var newHash func() hash.Hash
	switch d.Integ {
	case sa.IntegSHA1:
		newHash = sha1.New
	case sa.IntegSHA256:
		newHash = sha256.New
	case sa.IntegSHA384:
		newHash = sha512.New384
	case sa.IntegSHA512:
		newHash = sha512.New
	case "":
		return nil, fmt.Errorf("esp: spi 0x%08x: %s needs an integrity algorithm", d.SPI, d.Encr)
	default:
		return nil, fmt.Errorf("%w: esp: spi 0x%08x: integrity algorithm %q", xfrm.ErrUnsupported, d.SPI, d.Integ)
	}
	keyLen, trunc := xfrm.IntegParams(d.Integ)
	if len(d.IntegKey) != keyLen {
		return nil, fmt.Errorf("esp: spi 0x%08x: %s key is %d bytes, want %d", d.SPI, d.Integ, len(d.IntegKey), keyLen)
	}
	if d.TruncBits != 0 && int(d.TruncBits) != trunc {
		return nil, fmt.Errorf("%w: esp: spi 0x%08x: %s truncated to %d bits (only %d)", xfrm.ErrUnsupported, d.SPI, d.Integ, d.TruncBits, trunc)
	}
	var err error
	if s.block, err = aes.NewCipher(d.EncrKey); err != nil {
		return nil, fmt.Errorf("esp: spi 0x%08x: %s: %w", d.SPI, d.Encr, err)
	}
	var ivKey [16]byte
	if _, err := rand.Read(ivKey[:]); err != nil {
		return nil, fmt.Errorf("esp: spi 0x%08x: IV key: %w", d.SPI, err)
	}
	if _, err := rand.Read(s.ivPre[:]); err != nil {
		return nil, fmt.Errorf("esp: spi 0x%08x: IV prefix: %w", d.SPI, err)
	}
	s.ivGen, _ = aes.NewCipher(ivKey[:])
	s.kind, s.ivLen, s.icvLen, s.blockSize = kindCBC, aes.BlockSize, trunc/8, aes.BlockSize
	integKey := append([]byte(nil), d.IntegKey...)
	zero := make([]byte, aes.BlockSize)
	s.scratch.New = func() any {
		sc := &scratch{mac: hmac.New(newHash, integKey)}
		sc.enc, _ = cipher.NewCBCEncrypter(s.block, zero).(ivSetter)
		sc.dec, _ = cipher.NewCBCDecrypter(s.block, zero).(ivSetter)
		return sc
	}
	return s, nil
}

// SPI returns the SA's SPI.
func (s *SA) SPI() uint32 { return s.spi }

// PayloadOffset is where Seal expects the payload in its buffer: after the
// ESP header and the IV. It is at most MaxHeadroom.
func (s *SA) PayloadOffset() int { return HeaderLen + s.ivLen }

// SealedLen is the length of the ESP packet Seal makes from n payload bytes.
func (s *SA) SealedLen(n int) int {
	return HeaderLen + s.ivLen + n + s.padLen(n) + trailerFixed + s.icvLen
}

// Overhead is the largest number of bytes ESP adds to a payload.
func (s *SA) Overhead() int { return HeaderLen + s.ivLen + s.blockSize - 1 + trailerFixed + s.icvLen }

func (s *SA) padLen(n int) int {
	return (s.blockSize - (n+trailerFixed)%s.blockSize) % s.blockSize
}

// Seal turns the n payload bytes at buf[PayloadOffset():] into an ESP packet
// with sequence number seq, in place, and returns it (buf[:SealedLen(n)]).
// cap(buf) must be at least SealedLen(n). nextHeader names the payload
// (NextIPv4 or NextIPv6 in tunnel mode).
func (s *SA) Seal(buf []byte, n int, seq uint32, nextHeader byte) ([]byte, error) {
	if n < 0 || cap(buf) < s.SealedLen(n) {
		return nil, ErrBuffer
	}
	// The IV is made in its place in the packet (no copy escapes to the
	// heap through the cipher interface).
	iv := buf[HeaderLen : HeaderLen+s.ivLen]
	if s.kind == kindCBC {
		copy(iv[:8], s.ivPre[:])
		binary.BigEndian.PutUint64(iv[8:], uint64(seq))
		s.ivGen.Encrypt(iv, iv)
	} else {
		// RFC 4106 §3.1: the IV must never repeat under a key; the
		// sequence number never does (no wrap, never goes back).
		binary.BigEndian.PutUint64(iv, uint64(seq))
	}
	return s.seal(buf, n, seq, nextHeader, iv)
}

func (s *SA) seal(buf []byte, n int, seq uint32, nextHeader byte, iv []byte) ([]byte, error) {
	if seq == 0 {
		return nil, ErrSeqZero
	}
	if n < 0 {
		return nil, ErrBuffer
	}
	total := s.SealedLen(n)
	if cap(buf) < total {
		return nil, ErrBuffer
	}
	buf = buf[:total]
	binary.BigEndian.PutUint32(buf[0:4], s.spi)
	binary.BigEndian.PutUint32(buf[4:8], seq)
	copy(buf[HeaderLen:], iv)
	off := HeaderLen + s.ivLen
	pad := s.padLen(n)
	p := off + n
	for i := 0; i < pad; i++ {
		buf[p+i] = byte(i + 1)
	}
	buf[p+pad] = byte(pad)
	buf[p+pad+1] = nextHeader
	s.encrypt(buf[:p+pad+trailerFixed+s.icvLen], iv)
	return buf, nil
}

// encrypt encrypts pkt[PayloadOffset():len(pkt)-icvLen] (payload and
// trailer, already in place) under iv and writes the ICV at the end. The
// header must already be written.
func (s *SA) encrypt(pkt []byte, iv []byte) {
	off := HeaderLen + s.ivLen
	plainEnd := len(pkt) - s.icvLen
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	if s.kind == kindGCM {
		copy(sc.nonce[:gcmSaltLen], s.salt[:])
		copy(sc.nonce[gcmSaltLen:], iv)
		s.aead.Seal(pkt[off:off], sc.nonce[:], pkt[off:plainEnd], pkt[:HeaderLen])
		return
	}
	copy(sc.iv[:], iv)
	sc.cbc(s.block, true).CryptBlocks(pkt[off:plainEnd], pkt[off:plainEnd])
	sc.mac.Reset()
	sc.mac.Write(pkt[:plainEnd])
	sum := sc.mac.Sum(sc.sum[:0])
	copy(pkt[plainEnd:], sum[:s.icvLen])
}

// ParseHeader returns the SPI and sequence number of an ESP packet (for the
// SA lookup and the cheap replay check before Open).
func ParseHeader(pkt []byte) (spi, seq uint32, err error) {
	if len(pkt) < HeaderLen {
		return 0, 0, ErrTruncated
	}
	return binary.BigEndian.Uint32(pkt[0:4]), binary.BigEndian.Uint32(pkt[4:8]), nil
}

// Open verifies and decrypts the ESP packet pkt in place and returns the
// payload (a sub-slice of pkt) and its next header. The header's SPI is not
// checked against the SA (the caller looked the SA up by it) and the
// sequence number is not checked at all (anti-replay is the caller's): both
// are covered by the ICV, so a packet that opens carries them as sent.
func (s *SA) Open(pkt []byte) (payload []byte, nextHeader byte, err error) {
	off := HeaderLen + s.ivLen
	minCT := trailerFixed
	if s.kind == kindCBC {
		minCT = aes.BlockSize
	}
	if len(pkt) < off+minCT+s.icvLen {
		return nil, 0, ErrTruncated
	}
	ctEnd := len(pkt) - s.icvLen
	if s.kind == kindCBC && (ctEnd-off)%aes.BlockSize != 0 {
		return nil, 0, ErrLength
	}
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	var pt []byte
	if s.kind == kindGCM {
		copy(sc.nonce[:gcmSaltLen], s.salt[:])
		copy(sc.nonce[gcmSaltLen:], pkt[HeaderLen:off])
		pt, err = s.aead.Open(pkt[off:off], sc.nonce[:], pkt[off:], pkt[:HeaderLen])
		if err != nil {
			return nil, 0, ErrAuth
		}
	} else {
		sc.mac.Reset()
		sc.mac.Write(pkt[:ctEnd])
		sum := sc.mac.Sum(sc.sum[:0])
		if !hmac.Equal(sum[:s.icvLen], pkt[ctEnd:]) {
			return nil, 0, ErrAuth
		}
		copy(sc.iv[:], pkt[HeaderLen:off])
		pt = pkt[off:ctEnd]
		sc.cbc(s.block, false).CryptBlocks(pt, pt)
	}
	nextHeader = pt[len(pt)-1]
	pad := int(pt[len(pt)-2])
	if pad+trailerFixed > len(pt) {
		return nil, 0, ErrPadding
	}
	body := len(pt) - trailerFixed - pad
	for i := 0; i < pad; i++ {
		if pt[body+i] != byte(i+1) {
			return nil, 0, ErrPadding
		}
	}
	return pt[:body], nextHeader, nil
}
