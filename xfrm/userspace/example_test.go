package userspace_test

import (
	"context"
	"log"
	"net"
	"net/netip"

	"ikegw/ike/sa"
	"ikegw/xfrm/userspace"
)

// ikeSocket stands for the IKE runtime's socket on port 4500.
type ikeSocket struct{ c *net.UDPConn }

func (s ikeSocket) SendESP(b []byte, dst netip.AddrPort) error {
	_, err := s.c.WriteToUDPAddrPort(b, dst)
	return err
}

// Example shows the wiring: the IKE runtime owns the socket on 4500, hands
// the engine every datagram that is ESP (RFC 3948 demultiplexing) and keeps
// the IKE messages for itself.
func Example() {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: 4500})
	if err != nil {
		log.Fatal(err)
	}
	e, err := userspace.New(userspace.Config{Sender: ikeSocket{conn}, MTU: 1400})
	if err != nil {
		log.Fatal(err) // no TUN here: userspace.Probe() tells beforehand
	}
	defer e.Close()
	var child *sa.ChildSA // from Quick Mode, or from the replicated store at takeover
	if err := e.InstallChild(context.Background(), child); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if userspace.IsESP(buf[:n]) {
			e.HandleInbound(buf[:n], from)
			continue
		}
		// buf[4:n] is an IKE message (after the non-ESP marker), or a
		// NAT-keepalive.
	}
}
