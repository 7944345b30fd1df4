package vip

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Wire sizes.
const (
	arpLen     = 28      // Ethernet/IPv4 ARP body
	naLen      = 40 + 32 // IPv6 header + NA (24) + target link-layer option (8)
	ethPARP    = 0x0806
	ethPIPv6   = 0x86dd
	arpRequest = 1
	arpReply   = 2
	icmp6NA    = 136
	naRouter   = 0x80
	naOverride = 0x20
)

var (
	broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC  = [6]byte{0x33, 0x33, 0, 0, 0, 1}
	allNodes     = netip.MustParseAddr("ff02::1")
)

// target is a claimed VIP with the link facts its announcement needs,
// captured at claim time.
type target struct {
	vip     VIP
	ifindex int
	mac     net.HardwareAddr
	router  bool // IPv6 forwarding on the interface: set the R flag
}

// gratuitousARP builds an Ethernet/IPv4 ARP body announcing ip at mac:
// sender and target protocol address are both ip; a request has a zero
// target hardware address, a reply repeats mac there (Linux takes a
// broadcast reply as gratuitous only then).
func gratuitousARP(op uint16, mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // protocol: IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:])
	if op == arpReply {
		copy(b[18:24], mac)
	}
	copy(b[24:28], a[:])
	return b
}

// unsolicitedNA builds an IPv6 packet (header included) carrying an
// unsolicited Neighbor Advertisement for ip at mac (RFC 4861 7.2.6): from
// ip to ff02::1, hop limit 255, Override set, Solicited clear, Router as
// given, with a Target Link-Layer Address option.
func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr, router bool) []byte {
	b := make([]byte, naLen)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], naLen-40)
	b[6] = unix.IPPROTO_ICMPV6
	b[7] = 255
	src, dst := ip.As16(), allNodes.As16()
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])
	m := b[40:]
	m[0] = icmp6NA
	m[4] = naOverride
	if router {
		m[4] |= naRouter
	}
	copy(m[8:24], src[:])
	m[24], m[25] = 2, 1 // target link-layer address, 8 octets
	copy(m[26:32], mac)
	binary.BigEndian.PutUint16(m[2:], icmp6Checksum(src, dst, m))
	return b
}

// icmp6Checksum is the Internet checksum over the IPv6 pseudo-header and
// msg (whose checksum field must be zero).
func icmp6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var ph [8]byte
	binary.BigEndian.PutUint32(ph[0:], uint32(len(msg)))
	ph[7] = unix.IPPROTO_ICMPV6
	add(ph[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// packets returns the frames (payload, ethertype, destination MAC) one
// announcement round sends for t.
func (t target) packets(mode ARPMode) (out []frame) {
	if t.vip.Addr().Is4() {
		if mode == ARPBoth || mode == ARPRequest {
			out = append(out, frame{gratuitousARP(arpRequest, t.mac, t.vip.Addr()), ethPARP, broadcastMAC})
		}
		if mode == ARPBoth || mode == ARPReply {
			out = append(out, frame{gratuitousARP(arpReply, t.mac, t.vip.Addr()), ethPARP, broadcastMAC})
		}
		return out
	}
	return []frame{{unsolicitedNA(t.mac, t.vip.Addr(), t.router), ethPIPv6, allNodesMAC}}
}

type frame struct {
	payload []byte
	proto   uint16
	dst     [6]byte
}

// targets resolves the interfaces of the VIPs for announcements. A VIP
// whose interface has no 6-byte (Ethernet) address cannot be announced and
// is skipped with a log line.
func (m *Manager) targetsLocked() []target {
	var out []target
	for _, v := range m.vips {
		link, err := m.h.LinkByName(v.Interface)
		if err != nil {
			m.log.Warn("vip: cannot announce", "vip", v.String(), "err", err)
			continue
		}
		attrs := link.Attrs()
		if len(attrs.HardwareAddr) != 6 {
			m.log.Warn("vip: cannot announce: interface has no Ethernet address", "vip", v.String())
			continue
		}
		t := target{vip: v, ifindex: attrs.Index, mac: attrs.HardwareAddr}
		if v.Addr().Is6() {
			t.router = m.ipv6Forwarding(v.Interface)
		}
		out = append(out, t)
	}
	return out
}

// ipv6Forwarding reads net.ipv6.conf.IF.forwarding in the manager's
// namespace; false when it cannot be read.
func (m *Manager) ipv6Forwarding(iface string) bool {
	var on bool
	err := inNS(m.ns, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + iface + "/forwarding")
		if err != nil {
			return err
		}
		on = strings.TrimSpace(string(b)) == "1"
		return nil
	})
	if err != nil {
		m.log.Debug("vip: cannot read IPv6 forwarding; Router flag off", "interface", iface, "err", err)
	}
	return on
}

// announceRoundLocked sends one round for targets. Called with mu held.
func (m *Manager) announceRoundLocked(targets []target) {
	if m.sock < 0 {
		var fd int
		err := inNS(m.ns, func() error {
			var err error
			fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			return err
		})
		if err != nil {
			m.log.Warn("vip: cannot open packet socket for announcements", "err", fmt.Errorf("%w: %w", ErrAnnounce, err))
			return
		}
		m.sock = fd
	}
	for _, t := range targets {
		for _, f := range t.packets(m.announce.ARP) {
			sa := &unix.SockaddrLinklayer{Protocol: htons(f.proto), Ifindex: t.ifindex, Halen: 6}
			copy(sa.Addr[:], f.dst[:])
			if err := unix.Sendto(m.sock, f.payload, 0, sa); err != nil {
				m.log.Warn("vip: announcement not sent", "vip", t.vip.String(), "err", fmt.Errorf("%w: %w", ErrAnnounce, err))
				continue
			}
			m.sentByIf[t.vip.Interface]++
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// inNS runs f on an OS thread switched into ns (or directly when ns is not
// open). The thread is thrown away if it cannot be switched back.
func inNS(ns netns.NsHandle, f func() error) error {
	if !ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("vip: get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("vip: enter network namespace: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- ferr
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
