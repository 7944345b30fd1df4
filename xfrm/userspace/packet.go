package userspace

import (
	"encoding/binary"
	"net/netip"

	"ikegw/ike/sa"
)

// flow is what a policy looks at in an inner IP packet.
type flow struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	hasPorts     bool
	version      uint8 // 4 or 6
}

// parseFlow reads the addresses, protocol and ports of an IPv4 or IPv6
// packet. IPv6 extension headers are not walked: the protocol is the first
// next header. Ports are read only from the first fragment.
func parseFlow(b []byte) (f flow, ok bool) {
	if len(b) < 1 {
		return f, false
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return f, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl || total > len(b) {
			return f, false
		}
		f.version, f.proto = 4, b[9]
		f.src = netip.AddrFrom4([4]byte(b[12:16]))
		f.dst = netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 {
			l4 = b[ihl:total]
		}
	case 6:
		if len(b) < 40 {
			return f, false
		}
		if 40+int(binary.BigEndian.Uint16(b[4:6])) > len(b) {
			return f, false
		}
		f.version, f.proto = 6, b[6]
		f.src = netip.AddrFrom16([16]byte(b[8:24]))
		f.dst = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return f, false
	}
	switch f.proto {
	case 6, 17, 132, 136: // TCP, UDP, SCTP, UDP-Lite
		if len(l4) >= 4 {
			f.sport = binary.BigEndian.Uint16(l4[0:2])
			f.dport = binary.BigEndian.Uint16(l4[2:4])
			f.hasPorts = true
		}
	}
	return f, true
}

// matchTS reports whether addr/port of a packet with protocol proto lies in
// one of the selectors.
func matchTS(ts []sa.TrafficSelector, addr netip.Addr, proto uint8, port uint16, hasPorts bool) bool {
	for i := range ts {
		t := &ts[i]
		if !t.Prefix.Contains(addr) {
			continue
		}
		if t.Protocol != 0 && t.Protocol != proto {
			continue
		}
		if t.Port != 0 && (!hasPorts || t.Port != port) {
			continue
		}
		return true
	}
	return false
}

// IsESP tells an ESP-in-UDP datagram on port 4500 from an IKE message
// (non-ESP marker: four zero bytes, RFC 3948 §2.2) and from a NAT-keepalive
// (a single 0xff byte, §2.3). Only ESP goes to HandleInbound.
func IsESP(udpPayload []byte) bool {
	if len(udpPayload) < 8 {
		return false // keepalive, or too short for an ESP header
	}
	return binary.BigEndian.Uint32(udpPayload[0:4]) != 0
}
