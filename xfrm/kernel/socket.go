package kernel

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// EnableESPInUDP turns conn (the IKE socket on port 4500) into the kernel's
// ESP-in-UDP decapsulation point (RFC 3948): UDP_ENCAP with
// UDP_ENCAP_ESPINUDP. From then on, what arrives on the port is sorted by
// the kernel before the socket sees it:
//
//   - ESP (the first four bytes are a non-zero SPI) is decapsulated and
//     handed to XFRM; the socket never sees it (without a matching SA it is
//     dropped).
//   - A NAT-keepalive (one byte, 0xFF) is dropped by the kernel.
//   - Everything else, that is IKE with its four-byte non-ESP marker (zero),
//     is delivered to the socket unchanged, marker included: readers must
//     strip the four zero bytes, and writers must prepend them.
//
// The SAs using the socket must carry UDP encapsulation with its port
// (sa.ChildSA.EncapLocalPort). Needs CAP_NET_ADMIN only for the SAs, not
// for the option.
func EnableESPInUDP(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("xfrm/kernel: UDP_ENCAP on %s: %w", conn.LocalAddr(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP)
	}); err != nil {
		return fmt.Errorf("xfrm/kernel: UDP_ENCAP on %s: %w", conn.LocalAddr(), err)
	}
	if serr != nil {
		return fmt.Errorf("xfrm/kernel: UDP_ENCAP=ESPINUDP on %s: %w", conn.LocalAddr(), serr)
	}
	return nil
}

// BypassPolicy exempts conn from IPsec policies in both directions with
// per-socket XFRM policies (IP_XFRM_POLICY on IPv4 sockets,
// IPV6_XFRM_POLICY on IPv6 ones), so IKE traffic between the same addresses
// as a tunnel's selectors is never encrypted or dropped by them. An IPv6
// socket that also carries IPv4 (dual-stack: IPV6_V6ONLY off and not bound
// to an IPv6 address) is refused: the kernel takes only IPV6_XFRM_POLICY on
// it, and that policy does not cover its IPv4-mapped traffic; use one
// socket per family. Needs CAP_NET_ADMIN.
func BypassPolicy(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("xfrm/kernel: bypass policy on %s: %w", conn.LocalAddr(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = bypass(int(fd)) }); err != nil {
		return fmt.Errorf("xfrm/kernel: bypass policy on %s: %w", conn.LocalAddr(), err)
	}
	if serr != nil {
		return fmt.Errorf("xfrm/kernel: bypass policy on %s: %w", conn.LocalAddr(), serr)
	}
	return nil
}

func bypass(fd int) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("SO_DOMAIN: %w", err)
	}
	type lvl struct {
		level, opt int
		family     uint16
		name       string
	}
	var levels []lvl
	v4 := lvl{unix.IPPROTO_IP, unix.IP_XFRM_POLICY, unix.AF_INET, "IP_XFRM_POLICY"}
	switch domain {
	case unix.AF_INET:
		levels = []lvl{v4}
	case unix.AF_INET6:
		levels = []lvl{{unix.IPPROTO_IPV6, unix.IPV6_XFRM_POLICY, unix.AF_INET6, "IPV6_XFRM_POLICY"}}
		only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
		if only == 0 {
			sa, err := unix.Getsockname(fd)
			if err != nil {
				return fmt.Errorf("getsockname: %w", err)
			}
			a, ok := sa.(*unix.SockaddrInet6)
			if !ok || netip.AddrFrom16(a.Addr).Is4In6() || netip.AddrFrom16(a.Addr).IsUnspecified() {
				return fmt.Errorf("dual-stack socket (IPV6_V6ONLY off): the kernel's IPv6 socket policy does not cover its IPv4 traffic; use one socket per family")
			}
		}
	default:
		return fmt.Errorf("socket family %d is not IPv4 or IPv6", domain)
	}
	for _, l := range levels {
		for _, dir := range []uint8{policyIn, policyOut} {
			p := nl.XfrmUserpolicyInfo{Dir: dir, Action: 0 /* XFRM_POLICY_ALLOW */}
			p.Sel.Family = l.family
			p.Lft = nl.XfrmLifetimeCfg{SoftByteLimit: xfrmInf, HardByteLimit: xfrmInf, SoftPacketLimit: xfrmInf, HardPacketLimit: xfrmInf}
			if err := unix.SetsockoptString(fd, l.level, l.opt, string(p.Serialize())); err != nil {
				return fmt.Errorf("%s dir %d: %w", l.name, dir, err)
			}
		}
	}
	return nil
}
