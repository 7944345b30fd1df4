package runtime

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

func udpSink(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func readN(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		m, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), n, err)
		}
		got = append(got, append([]byte(nil), buf[:m]...))
	}
	return got
}

// SendESPBatch sends every packet to its own destination, in order, from
// a wildcard socket with the source the peer's IKE traffic uses, and from
// a socket bound to one address.
func TestSendESPBatch(t *testing.T) {
	for _, bind := range []string{"0.0.0.0:0", "127.0.0.1:0"} {
		t.Run(bind, func(t *testing.T) {
			s, err := listen(netip.MustParseAddrPort(bind), true, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			r := &Runtime{socks: []*socket{s}}
			a, addrA := udpSink(t)
			b, addrB := udpSink(t)
			r.srcFor.Store(addrA.Addr(), netip.MustParseAddr("127.0.0.1"))
			var pkts [][]byte
			var dsts []netip.AddrPort
			for i := 0; i < 7; i++ {
				pkts = append(pkts, bytes.Repeat([]byte{byte(i + 1)}, 100+i))
				d := addrA
				if i == 3 || i == 4 {
					d = addrB
				}
				dsts = append(dsts, d)
			}
			n, err := r.SendESPBatch(pkts, dsts)
			if err != nil || n != len(pkts) {
				t.Fatalf("sent %d of %d: %v", n, len(pkts), err)
			}
			gotA, gotB := readN(t, a, 5), readN(t, b, 2)
			want := func(got [][]byte, idx ...int) {
				for j, i := range idx {
					if !bytes.Equal(got[j], pkts[i]) {
						t.Fatalf("datagram %d is %x..., want packet %d", j, got[j][:4], i)
					}
				}
			}
			want(gotA, 0, 1, 2, 5, 6)
			want(gotB, 3, 4)
		})
	}
}

func TestSendESPBatchErrors(t *testing.T) {
	r := &Runtime{}
	if _, err := r.SendESPBatch([][]byte{{1}}, nil); err == nil {
		t.Fatal("accepted packets without destinations")
	}
	n, err := r.SendESPBatch([][]byte{{1}}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")})
	if err == nil || n != 0 {
		t.Fatalf("no socket: sent %d, err %v", n, err)
	}
}
