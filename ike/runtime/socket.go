package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// socket is one UDP socket for IKE (port 500) or NAT-T (port 4500). Bound
// to a wildcard address it learns each packet's destination from
// IP_PKTINFO and sets the source of each reply the same way.
type socket struct {
	conn  *net.UDPConn
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
	addr  netip.AddrPort // bound address
	natt  bool
	is6   bool
	exact bool // bound to a specific address

	gsoOff atomic.Bool // the kernel refused UDP_SEGMENT (udpgso.go)
	gro    bool        // UDP_GRO is on: reads may hold several datagrams
}

// listen opens a UDP socket on addr. freeBind sets IP_FREEBIND so the
// socket can be bound to a virtual IP the node does not (yet) hold.
func listen(addr netip.AddrPort, natt, freeBind bool, hook func(*net.UDPConn, bool) error) (*socket, error) {
	network := "udp4"
	is6 := addr.Addr().Is6() && !addr.Addr().Is4In6()
	if is6 {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				serr = err
				return
			}
			if freeBind {
				if is6 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
				}
				if serr != nil {
					return
				}
			}
			if is6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("runtime: listen on %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	s := &socket{conn: conn, addr: addr, natt: natt, is6: is6, exact: !addr.Addr().IsUnspecified()}
	if is6 {
		s.p6 = ipv6.NewPacketConn(conn)
		if err := s.p6.SetControlMessage(ipv6.FlagDst, true); err != nil {
			conn.Close()
			return nil, fmt.Errorf("runtime: IPV6_RECVPKTINFO on %s: %w", addr, err)
		}
	} else {
		s.p4 = ipv4.NewPacketConn(conn)
		if err := s.p4.SetControlMessage(ipv4.FlagDst, true); err != nil {
			conn.Close()
			return nil, fmt.Errorf("runtime: IP_PKTINFO on %s: %w", addr, err)
		}
	}
	if hook != nil {
		if err := hook(conn, natt); err != nil {
			conn.Close()
			return nil, fmt.Errorf("runtime: socket hook on %s: %w", addr, err)
		}
	}
	return s, nil
}

// read receives one datagram and says to which local address it came.
func (s *socket) read(buf []byte) (n int, local, remote netip.AddrPort, err error) {
	var src net.Addr
	var dst net.IP
	if s.is6 {
		var cm *ipv6.ControlMessage
		n, cm, src, err = s.p6.ReadFrom(buf)
		if cm != nil {
			dst = cm.Dst
		}
	} else {
		var cm *ipv4.ControlMessage
		n, cm, src, err = s.p4.ReadFrom(buf)
		if cm != nil {
			dst = cm.Dst
		}
	}
	if err != nil {
		return 0, local, remote, err
	}
	ua, ok := src.(*net.UDPAddr)
	if !ok {
		return 0, local, remote, errors.New("runtime: datagram without a UDP source")
	}
	remote = ua.AddrPort()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	la := s.addr.Addr()
	if !s.exact && dst != nil {
		if a, ok := netip.AddrFromSlice(dst); ok {
			la = a.Unmap()
		}
	}
	return n, netip.AddrPortFrom(la, s.addr.Port()), remote, nil
}

// write sends one datagram from local (when known) to remote.
func (s *socket) write(b []byte, local netip.Addr, remote netip.AddrPort) error {
	dst := net.UDPAddrFromAddrPort(remote)
	var err error
	if s.is6 {
		var cm *ipv6.ControlMessage
		if !s.exact && local.IsValid() && !local.IsUnspecified() {
			cm = &ipv6.ControlMessage{Src: local.AsSlice()}
		}
		_, err = s.p6.WriteTo(b, cm, dst)
	} else {
		var cm *ipv4.ControlMessage
		if !s.exact && local.IsValid() && !local.IsUnspecified() {
			cm = &ipv4.ControlMessage{Src: local.AsSlice()}
		}
		_, err = s.p4.WriteTo(b, cm, dst)
	}
	return err
}

func (s *socket) close() error { return s.conn.Close() }
