package xfrm

import (
	"crypto/subtle"
	"fmt"
	"slices"

	"ikegw/ike/sa"
)

// ProtoESP is the IP protocol number of ESP, the only protocol a pair may use.
const ProtoESP = 50

// InvalidChildError says which field of a ChildSA record is malformed and
// why. It wraps ErrInvalidChild. It never contains key material.
type InvalidChildError struct {
	SPI     uint32 // inbound SPI of the record (0 when that is the problem)
	Field   string // e.g. "Out.EncrKey", "RemoteTS[1]"
	Problem string
}

func (e *InvalidChildError) Error() string {
	return fmt.Sprintf("xfrm: child SA spi=0x%08x: %s: %s", e.SPI, e.Field, e.Problem)
}

// Unwrap makes errors.Is(err, ErrInvalidChild) true.
func (e *InvalidChildError) Unwrap() error { return ErrInvalidChild }

// EncrKeyLen returns the valid lengths in bytes of the key material of a
// kernel-named encryption algorithm (for AES-GCM: key plus the 4-byte salt),
// or nil when the name is unknown.
func EncrKeyLen(encr string) []int {
	switch encr {
	case sa.EncrAESCBC:
		return []int{16, 24, 32}
	case sa.EncrAESGCM:
		return []int{20, 28, 36}
	case sa.Encr3DES:
		return []int{24}
	case sa.EncrNull:
		return []int{0}
	}
	return nil
}

// IntegParams returns the key length in bytes and the ICV length in bits of
// a kernel-named integrity algorithm (RFC 2404, RFC 4868), or 0, 0 when the
// name is unknown.
func IntegParams(integ string) (keyLen, truncBits int) {
	switch integ {
	case sa.IntegSHA1:
		return 20, 96
	case sa.IntegSHA256:
		return 32, 128
	case sa.IntegSHA384:
		return 48, 192
	case sa.IntegSHA512:
		return 64, 256
	}
	return 0, 0
}

// Validate checks that c is a well-formed ESP pair that some data plane could
// install: SPIs, addresses, algorithms with their key and ICV lengths, mode,
// traffic selectors and encapsulation ports. It does not check that a given
// data plane supports it. The error is an *InvalidChildError naming the
// field. A TruncBits of 0 means the algorithm's standard ICV length.
func Validate(c *sa.ChildSA) error {
	if c == nil {
		return &InvalidChildError{Field: "record", Problem: "nil"}
	}
	bad := func(field, format string, args ...any) error {
		return &InvalidChildError{SPI: c.In.SPI, Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if c.Protocol != ProtoESP {
		return bad("Protocol", "%d is not ESP (50)", c.Protocol)
	}
	if c.Mode != sa.Tunnel && c.Mode != sa.Transport {
		return bad("Mode", "unknown mode %d", uint8(c.Mode))
	}
	if c.In.SPI == c.Out.SPI && c.In.Dst == c.Out.Dst {
		return bad("Out.SPI", "same SPI 0x%08x and destination as the inbound SA", c.Out.SPI)
	}
	for _, d := range []struct {
		name string
		dir  *sa.SADir
	}{{"In", &c.In}, {"Out", &c.Out}} {
		if err := validateDir(c, d.name, d.dir); err != nil {
			return err
		}
	}
	if c.In.Src != c.Out.Dst || c.In.Dst != c.Out.Src {
		return bad("In.Src/In.Dst", "inbound %s->%s is not the reverse of outbound %s->%s",
			c.In.Src, c.In.Dst, c.Out.Src, c.Out.Dst)
	}
	if (c.EncapLocalPort == 0) != (c.EncapRemotePort == 0) {
		return bad("EncapLocalPort/EncapRemotePort", "both or neither must be set (local %d, remote %d)",
			c.EncapLocalPort, c.EncapRemotePort)
	}
	for _, side := range []struct {
		name string
		ts   []sa.TrafficSelector
	}{{"LocalTS", c.LocalTS}, {"RemoteTS", c.RemoteTS}} {
		if len(side.ts) == 0 {
			return bad(side.name, "no traffic selector")
		}
		for i, ts := range side.ts {
			field := fmt.Sprintf("%s[%d]", side.name, i)
			if !ts.Prefix.IsValid() {
				return bad(field, "invalid prefix")
			}
			if ts.Prefix.Masked() != ts.Prefix {
				return bad(field, "prefix %s has host bits set", ts.Prefix)
			}
			if ts.Prefix.Addr().Zone() != "" {
				return bad(field, "prefix %s has a zone", ts.Prefix)
			}
			if ts.Port != 0 && ts.Protocol != 6 && ts.Protocol != 17 && ts.Protocol != 132 && ts.Protocol != 136 {
				return bad(field, "port %d with protocol %d that has no ports", ts.Port, ts.Protocol)
			}
		}
	}
	if c.Mode == sa.Transport {
		for i, ts := range c.LocalTS {
			if ts.Prefix.Addr().Is4() != c.Out.Src.Is4() {
				return bad(fmt.Sprintf("LocalTS[%d]", i), "transport mode selector %s is not of the outer address family", ts.Prefix)
			}
		}
		for i, ts := range c.RemoteTS {
			if ts.Prefix.Addr().Is4() != c.Out.Dst.Is4() {
				return bad(fmt.Sprintf("RemoteTS[%d]", i), "transport mode selector %s is not of the outer address family", ts.Prefix)
			}
		}
	}
	if n := len(c.Counters.ReplayBitmap); n > 1<<10 {
		return bad("Counters.ReplayBitmap", "%d words, more than 1024", n)
	}
	return nil
}

func validateDir(c *sa.ChildSA, name string, d *sa.SADir) error {
	bad := func(field, format string, args ...any) error {
		return &InvalidChildError{SPI: c.In.SPI, Field: name + "." + field, Problem: fmt.Sprintf(format, args...)}
	}
	if d.SPI < 256 {
		return bad("SPI", "0x%08x is reserved (RFC 4303 §2.1: SPIs 0-255)", d.SPI)
	}
	if !d.Src.IsValid() || !d.Dst.IsValid() {
		return bad("Src/Dst", "outer address missing")
	}
	if d.Src.Is4() != d.Dst.Is4() || d.Src.Is4In6() || d.Dst.Is4In6() {
		return bad("Src/Dst", "outer addresses %s and %s are not of one family", d.Src, d.Dst)
	}
	if d.Src.Zone() != "" || d.Dst.Zone() != "" {
		return bad("Src/Dst", "outer address with a zone")
	}
	lens := EncrKeyLen(d.Encr)
	if lens == nil {
		return bad("Encr", "unknown algorithm %q", d.Encr)
	}
	if !slices.Contains(lens, len(d.EncrKey)) {
		return bad("EncrKey", "%d bytes for %s, want one of %v", len(d.EncrKey), d.Encr, lens)
	}
	if d.Encr == sa.EncrAESGCM {
		if d.Integ != "" || len(d.IntegKey) != 0 {
			return bad("Integ", "%s is an AEAD and takes no integrity algorithm (got %q)", d.Encr, d.Integ)
		}
		if d.TruncBits != 0 && d.TruncBits != 128 {
			return bad("TruncBits", "%d for %s, want 128 (ICV 16)", d.TruncBits, d.Encr)
		}
		return nil
	}
	if d.Integ == "" {
		return bad("Integ", "%s needs an integrity algorithm", d.Encr)
	}
	keyLen, trunc := IntegParams(d.Integ)
	if keyLen == 0 {
		return bad("Integ", "unknown algorithm %q", d.Integ)
	}
	if len(d.IntegKey) != keyLen {
		return bad("IntegKey", "%d bytes for %s, want %d", len(d.IntegKey), d.Integ, keyLen)
	}
	if d.TruncBits != 0 && int(d.TruncBits) != trunc {
		return bad("TruncBits", "%d for %s, want %d", d.TruncBits, d.Integ, trunc)
	}
	return nil
}

// SamePair reports whether a and b describe the same installed pair in the
// sense of DataPlane.InstallChild's idempotence rule: equal SPIs, outer
// addresses, algorithms, keys, ICV lengths, mode, selectors, encapsulation
// ports, reqid and lifetimes. Counters and bookkeeping (names, state, times)
// are not compared. It compares keys in constant time.
func SamePair(a, b *sa.ChildSA) bool {
	return a.Mode == b.Mode && a.Protocol == b.Protocol && a.Reqid == b.Reqid &&
		sameDir(&a.In, &b.In) && sameDir(&a.Out, &b.Out) &&
		slices.Equal(a.LocalTS, b.LocalTS) && slices.Equal(a.RemoteTS, b.RemoteTS) &&
		a.EncapLocalPort == b.EncapLocalPort && a.EncapRemotePort == b.EncapRemotePort &&
		a.Lifetime == b.Lifetime
}

func sameDir(a, b *sa.SADir) bool {
	return a.SPI == b.SPI && a.Src == b.Src && a.Dst == b.Dst &&
		a.Encr == b.Encr && a.Integ == b.Integ && a.TruncBits == b.TruncBits &&
		subtle.ConstantTimeCompare(a.EncrKey, b.EncrKey) == 1 &&
		subtle.ConstantTimeCompare(a.IntegKey, b.IntegKey) == 1
}
