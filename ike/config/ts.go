package config

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"ikegw/ike/sa"
)

// ErrBadTS is wrapped by every traffic selector parse error.
var ErrBadTS = errors.New("bad traffic selector")

var protoNames = map[string]uint8{
	"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
	"ipv6-icmp": 58, "icmp6": 58, "icmpv6": 58, "sctp": 132,
}

// protoCanon is the name FormatTS prints for a protocol number.
var protoCanon = map[uint8]string{
	1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 132: "sctp",
}

// portProtos are the protocols whose selectors may carry a port.
var portProtos = map[uint8]bool{6: true, 17: true, 132: true}

// ParseTS parses a traffic selector in strongSwan's spelling: a prefix
// ("10.1.0.0/16") or an address (a /32 or /128), optionally followed by the
// protocol and port in brackets: "10.1.0.5/32[udp/53]", "10.1.0.0/16[tcp]",
// "10.1.0.0/16[6/443]". The protocol is a name (tcp, udp, sctp, icmp,
// icmp6, gre, ...), a number or %any/any; the port a number or %any/any,
// and needs tcp, udp or sctp. A prefix with host bits set is refused.
func ParseTS(s string) (sa.TrafficSelector, error) {
	var ts sa.TrafficSelector
	addrPart, rest, hasBracket := strings.Cut(s, "[")
	addrPart = strings.TrimSpace(addrPart)
	if addrPart == "" {
		return ts, errf(ErrBadTS, "%q: no address or prefix", s)
	}
	if strings.Contains(addrPart, "-") {
		return ts, errf(ErrBadTS, "%q: address ranges are not supported; use a prefix", s)
	}
	if strings.Contains(addrPart, "/") {
		p, err := netip.ParsePrefix(addrPart)
		if err != nil {
			return ts, errf(ErrBadTS, "%q: not a prefix", s)
		}
		if p.Addr().Is4In6() {
			return ts, errf(ErrBadTS, "%q: IPv4-mapped IPv6 prefixes are not supported; write the IPv4 prefix", s)
		}
		if m := p.Masked(); m != p {
			return ts, errf(ErrBadTS, "%q: host bits set (did you mean %s?)", s, m)
		}
		ts.Prefix = p
	} else {
		a, err := netip.ParseAddr(addrPart)
		if err != nil || a.Zone() != "" {
			return ts, errf(ErrBadTS, "%q: not an address or prefix", s)
		}
		a = a.Unmap()
		ts.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	if !hasBracket {
		return ts, nil
	}
	inner, ok := strings.CutSuffix(rest, "]")
	if !ok || strings.ContainsAny(inner, "[]") {
		return ts, errf(ErrBadTS, "%q: protocol/port must be written [proto] or [proto/port]", s)
	}
	protoS, portS, hasPort := strings.Cut(inner, "/")
	protoS = strings.ToLower(strings.TrimSpace(protoS))
	switch protoS {
	case "", "%any", "any":
	default:
		if n, ok := protoNames[protoS]; ok {
			ts.Protocol = n
		} else if n, err := strconv.ParseUint(protoS, 10, 8); err == nil {
			ts.Protocol = uint8(n)
		} else {
			return ts, errf(ErrBadTS, "%q: unknown protocol %q", s, protoS)
		}
	}
	if !hasPort {
		return ts, nil
	}
	portS = strings.ToLower(strings.TrimSpace(portS))
	switch portS {
	case "", "%any", "any":
		return ts, nil
	}
	if strings.Contains(portS, "-") {
		return ts, errf(ErrBadTS, "%q: port ranges are not supported", s)
	}
	n, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return ts, errf(ErrBadTS, "%q: port %q is not a number 0..65535", s, portS)
	}
	if n != 0 && !portProtos[ts.Protocol] {
		return ts, errf(ErrBadTS, "%q: a port needs protocol tcp, udp or sctp", s)
	}
	ts.Port = uint16(n)
	return ts, nil
}

// FormatTS prints a traffic selector as ParseTS reads it.
func FormatTS(ts sa.TrafficSelector) string {
	s := ts.Prefix.String()
	if ts.Protocol == 0 && ts.Port == 0 {
		return s
	}
	proto := strconv.Itoa(int(ts.Protocol))
	if n, ok := protoCanon[ts.Protocol]; ok {
		proto = n
	}
	if ts.Protocol == 0 {
		proto = "%any"
	}
	if ts.Port == 0 {
		return s + "[" + proto + "]"
	}
	return s + "[" + proto + "/" + strconv.Itoa(int(ts.Port)) + "]"
}
