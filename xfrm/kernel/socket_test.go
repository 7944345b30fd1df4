package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEnableESPInUDP checks the documented delivery on an ESPINUDP socket:
// keepalives and ESP are taken by the kernel, IKE arrives with its non-ESP
// marker. A plain socket, the control, gets all three.
func TestEnableESPInUDP(t *testing.T) {
	for _, encap := range []bool{true, false} {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		if encap {
			if err := EnableESPInUDP(rx); err != nil {
				t.Fatal(err)
			}
		}
		// Unconnected, so an ICMP error cannot fail a later write.
		tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		esp := binary.BigEndian.AppendUint32(nil, 0x12345678) // SPI
		esp = binary.BigEndian.AppendUint32(esp, 1)           // sequence number
		esp = append(esp, make([]byte, 32)...)
		ike := append([]byte{0, 0, 0, 0}, "ISAKMP header..."...)
		for _, p := range [][]byte{{0xff}, esp, ike} {
			if _, err := tx.WriteToUDP(p, rx.LocalAddr().(*net.UDPAddr)); err != nil {
				t.Fatal(err)
			}
		}
		_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1500)
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case encap && !bytes.Equal(buf[:n], ike):
			t.Errorf("ESPINUDP socket: first datagram % x, want the IKE message with its marker", buf[:n])
		case !encap && !bytes.Equal(buf[:n], []byte{0xff}):
			t.Errorf("plain socket: first datagram % x, want the keepalive", buf[:n])
		}
	}
}

// TestBypassPolicy: with "block" policies between two namespaces (out in
// A, in in B), sockets with the bypass still send and receive, plain ones
// cannot send and receive nothing. Policies install without kernel ESP, so
// this runs on the host too. (Loopback traffic never sees XFRM policies:
// the kernel marks lo disable_xfrm/disable_policy.)
func TestBypassPolicy(t *testing.T) {
	needRoot(t)
	nsA, pathA, nsB, pathB := newVethPair(t)
	run(t, "ip", "-n", nsA, "xfrm", "policy", "add", "src", "192.0.2.1/32", "dst", "192.0.2.2/32", "dir", "out", "action", "block")
	run(t, "ip", "-n", nsB, "xfrm", "policy", "add", "src", "192.0.2.1/32", "dst", "192.0.2.2/32", "dir", "in", "action", "block")
	listen := func(path string, ip net.IP, bypass bool) *net.UDPConn {
		var c *net.UDPConn
		inNS(t, path, func() {
			var err error
			if c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip}); err != nil {
				t.Fatal(err)
			}
		})
		t.Cleanup(func() { c.Close() })
		if bypass {
			if err := BypassPolicy(c); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	a, b := net.IPv4(192, 0, 2, 1), net.IPv4(192, 0, 2, 2)
	txPlain, txBypass := listen(pathA, a, false), listen(pathA, a, true)
	rxPlain, rxBypass := listen(pathB, b, false), listen(pathB, b, true)
	var v6, v6only *net.UDPConn
	inNS(t, pathA, func() {
		var err error
		if v6, err = net.ListenUDP("udp", &net.UDPAddr{}); err != nil { // dual-stack
			t.Fatal(err)
		}
		if v6only, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
			t.Fatal(err)
		}
	})
	defer v6.Close()
	defer v6only.Close()
	if err := BypassPolicy(v6only); err != nil {
		t.Errorf("IPv6 socket: %v", err)
	}
	if err := BypassPolicy(v6); err == nil || !strings.Contains(err.Error(), "dual-stack") {
		t.Errorf("dual-stack socket: %v, want a refusal naming it dual-stack", err)
	}

	if _, err := txPlain.WriteToUDP([]byte("x"), rxBypass.LocalAddr().(*net.UDPAddr)); !errors.Is(err, unix.EPERM) {
		t.Errorf("plain socket under an outbound block policy: send error %v, want EPERM", err)
	}
	if _, err := txBypass.WriteToUDP([]byte("to-plain"), rxPlain.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatalf("bypassed send: %v", err)
	}
	if _, err := txBypass.WriteToUDP([]byte("to-bypass"), rxBypass.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatalf("bypassed send: %v", err)
	}
	buf := make([]byte, 64)
	_ = rxBypass.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := rxBypass.Read(buf)
	if err != nil || string(buf[:n]) != "to-bypass" {
		t.Fatalf("bypassed receive: %q, %v", buf[:n], err)
	}
	// The datagram to the plain socket was sent before the one that
	// arrived; the inbound block policy dropped it.
	_ = rxPlain.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := rxPlain.Read(buf); err == nil {
		t.Errorf("plain socket received %q through an inbound block policy", buf[:n])
	}
}
