package isakmp

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// ErrNotPrefix is the cause when an ID is not an address, a subnet or a
// range that is exactly one prefix.
var ErrNotPrefix = errors.New("ID is not an address prefix")

// IDFromPrefix returns the ID of a traffic selector: IPV4_ADDR or IPV6_ADDR
// for a single-address prefix (/32, /128), else IPV4_ADDR_SUBNET or
// IPV6_ADDR_SUBNET with the masked address and the netmask. An invalid
// prefix gives an ID of type 0 with no data (its Prefix method fails).
func IDFromPrefix(p netip.Prefix, proto uint8, port uint16) ID {
	id := ID{Protocol: proto, Port: port}
	if !p.IsValid() {
		return id
	}
	p = p.Masked()
	a := p.Addr()
	is4 := a.Is4()
	if p.Bits() == a.BitLen() {
		id.IDType = IDIPv6Addr
		if is4 {
			id.IDType = IDIPv4Addr
		}
		id.Data = a.AsSlice()
		return id
	}
	id.IDType = IDIPv6Subnet
	if is4 {
		id.IDType = IDIPv4Subnet
	}
	mask := make([]byte, a.BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	id.Data = append(a.AsSlice(), mask...)
	return id
}

// Prefix returns the address prefix an ID names: /32 or /128 for an
// address, the (masked) subnet for a subnet with a contiguous netmask, and
// for a range the prefix that covers exactly that range. Any other ID, or a
// malformed one, gives an error wrapping ErrNotPrefix or ErrBadPayload.
func (id ID) Prefix() (netip.Prefix, error) {
	n := 0
	switch id.IDType {
	case IDIPv4Addr, IDIPv4Subnet, IDIPv4Range:
		n = 4
	case IDIPv6Addr, IDIPv6Subnet, IDIPv6Range:
		n = 16
	default:
		return netip.Prefix{}, &Error{Payload: PayloadID, Err: fmt.Errorf("%w: type %s", ErrNotPrefix, id.IDType)}
	}
	want := n
	if id.IDType != IDIPv4Addr && id.IDType != IDIPv6Addr {
		want = 2 * n
	}
	if len(id.Data) != want {
		return netip.Prefix{}, errf(PayloadID, 0, ErrBadPayload, "%s with %d data bytes, want %d", id.IDType, len(id.Data), want)
	}
	a, _ := netip.AddrFromSlice(id.Data[:n])
	switch id.IDType {
	case IDIPv4Addr, IDIPv6Addr:
		return netip.PrefixFrom(a, a.BitLen()), nil
	case IDIPv4Subnet, IDIPv6Subnet:
		ones, ok := maskBits(id.Data[n:])
		if !ok {
			return netip.Prefix{}, errf(PayloadID, 0, ErrNotPrefix, "%s netmask %s is not contiguous", id.IDType, hex.EncodeToString(id.Data[n:]))
		}
		return netip.PrefixFrom(a, ones).Masked(), nil
	}
	end, _ := netip.AddrFromSlice(id.Data[n:])
	for ones := 0; ones <= a.BitLen(); ones++ {
		p := netip.PrefixFrom(a, ones)
		if p.Masked().Addr() == a && lastAddr(p) == end {
			return p, nil
		}
	}
	return netip.Prefix{}, errf(PayloadID, 0, ErrNotPrefix, "range %s-%s is not one prefix", a, end)
}

// maskBits returns the number of leading ones of a contiguous netmask.
func maskBits(m []byte) (int, bool) {
	ones := 0
	i := 0
	for i < len(m) && m[i] == 0xff {
		ones += 8
		i++
	}
	if i < len(m) {
		c := bits.LeadingZeros8(^m[i])
		if m[i] != byte(0xff<<(8-c)) {
			return 0, false
		}
		ones += c
		i++
	}
	for ; i < len(m); i++ {
		if m[i] != 0 {
			return 0, false
		}
	}
	return ones, true
}

// lastAddr returns the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String renders the ID for logs, e.g. "IPV4_ADDR_SUBNET 10.0.0.0/24
// proto 17 port 500" or "FQDN vpn.example.com".
func (id ID) String() string {
	var sb strings.Builder
	sb.WriteString(id.IDType.String())
	sb.WriteByte(' ')
	switch id.IDType {
	case IDIPv4Addr, IDIPv6Addr, IDIPv4Subnet, IDIPv6Subnet:
		if p, err := id.Prefix(); err == nil {
			if id.IDType == IDIPv4Addr || id.IDType == IDIPv6Addr {
				sb.WriteString(p.Addr().String())
			} else {
				sb.WriteString(p.String())
			}
		} else {
			sb.WriteString("0x" + hex.EncodeToString(id.Data))
		}
	case IDIPv4Range, IDIPv6Range:
		n := 4
		if id.IDType == IDIPv6Range {
			n = 16
		}
		if len(id.Data) == 2*n {
			a, _ := netip.AddrFromSlice(id.Data[:n])
			b, _ := netip.AddrFromSlice(id.Data[n:])
			sb.WriteString(a.String() + "-" + b.String())
		} else {
			sb.WriteString("0x" + hex.EncodeToString(id.Data))
		}
	case IDFQDN, IDUserFQDN:
		sb.WriteString(strconv.Quote(string(id.Data)))
	default:
		sb.WriteString("0x" + hex.EncodeToString(id.Data))
	}
	if id.Protocol != 0 || id.Port != 0 {
		fmt.Fprintf(&sb, " proto %d port %d", id.Protocol, id.Port)
	}
	return sb.String()
}
