package runtime

import (
	"bytes"
	"encoding/binary"
	"log/slog"
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

func TestGSORuns(t *testing.T) {
	mk := func(sizes ...int) [][]byte {
		var p [][]byte
		for _, n := range sizes {
			p = append(p, make([]byte, n))
		}
		return p
	}
	for _, c := range []struct {
		sizes []int
		ends  []int
	}{
		{[]int{100}, []int{1}},
		{[]int{100, 100, 100}, []int{3}},
		{[]int{100, 100, 60, 100}, []int{3, 4}}, // a shorter packet ends a run
		{[]int{100, 120, 120}, []int{1, 3}},     // a longer one starts a new run
		{[]int{60000, 5000, 5000}, []int{2, 3}}, // 65,000 bytes at most
		{[]int{60000, 6000, 6000}, []int{1, 3}},
	} {
		got := gsoRuns(mk(c.sizes...))
		if len(got) != len(c.ends) {
			t.Fatalf("%v: runs end at %v, want %v", c.sizes, got, c.ends)
		}
		for i := range got {
			if got[i] != c.ends[i] {
				t.Fatalf("%v: runs end at %v, want %v", c.sizes, got, c.ends)
			}
		}
	}
	many := mk(make([]int, 100)...)
	for i := range many {
		many[i] = make([]byte, 100)
	}
	if got := gsoRuns(many); len(got) != 2 || got[0] != maxGSOSegments {
		t.Fatalf("100 packets: runs end at %v", got)
	}
}

type espSink struct{ got chan []byte }

func (e *espSink) HandleInbound(pkt []byte, from netip.AddrPort) {
	e.got <- append([]byte(nil), pkt...)
}

func (e *espSink) HandleInboundBatch(pkts [][]byte, from []netip.AddrPort) {
	for _, p := range pkts {
		e.got <- append([]byte(nil), p...)
	}
}

// Packets sent with UDP segmentation offload arrive at a batch reader
// (recvmmsg, UDP_GRO) one by one, whole and in order, IKE on the same
// socket still reaches the engine's queue, and NAT-T keepalives are
// counted.
func TestBatchReaderGSOToGRO(t *testing.T) {
	rs, err := listen(netip.MustParseAddrPort("127.0.0.1:0"), true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs.addr = rs.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	sink := &espSink{got: make(chan []byte, 1024)}
	recv := &Runtime{cfg: Config{ESP: sink}, done: make(chan struct{}), events: make(chan event, 16), log: slog.New(slog.DiscardHandler), socks: []*socket{rs}}
	recv.wg.Add(1)
	go recv.batchReader(rs, sink)
	defer func() { close(recv.done); rs.close(); recv.wg.Wait() }()

	ss, err := listen(netip.MustParseAddrPort("127.0.0.1:0"), true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	send := &Runtime{socks: []*socket{ss}}
	var pkts [][]byte
	var dsts []netip.AddrPort
	for i := 0; i < 150; i++ {
		n := 1200
		if i == 149 {
			n = 333
		}
		p := bytes.Repeat([]byte{byte(i)}, n)
		binary.BigEndian.PutUint32(p, 0x1000+uint32(i)) // an SPI: not a non-ESP marker
		pkts = append(pkts, p)
		dsts = append(dsts, rs.addr)
	}
	// UDP may drop what the receive buffer cannot hold while the reader
	// waits for a CPU: send in chunks that fit, each read before the next.
	const chunk = 50
	for i := range pkts {
		if i%chunk == 0 {
			end := min(i+chunk, len(pkts))
			if n, err := send.SendESPBatch(pkts[i:end], dsts[i:end]); err != nil || n != end-i {
				t.Fatalf("sent %d of %d: %v", n, end-i, err)
			}
		}
		select {
		case p := <-sink.got:
			if !bytes.Equal(p, pkts[i]) {
				t.Fatalf("packet %d: got %d bytes starting %x, want %d bytes starting %x", i, len(p), p[:4], len(pkts[i]), pkts[i][:4])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d packets arrived (gro %v, gso off %v)", i, len(pkts), rs.gro, ss.gsoOff.Load())
		}
	}
	// IKE (non-ESP marker) and a keepalive on the same socket.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(rs.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0xff})
	c.Write(append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{7}, 40)...))
	select {
	case ev := <-recv.events:
		if ev.pkt == nil || len(ev.pkt.Data) != 40 || ev.pkt.Local != rs.addr {
			t.Fatalf("IKE event %+v", ev.pkt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("IKE message not queued for the engine")
	}
	if k := recv.Stats().Keepalives; k != 1 {
		t.Fatalf("%d keepalives counted", k)
	}
	if e := recv.Stats().ESPPackets; e != uint64(len(pkts)) {
		t.Fatalf("%d ESP packets counted, want %d", e, len(pkts))
	}
	// Linux >= 5.0 has both; the test is meant to cover them.
	if !rs.gro || ss.gsoOff.Load() {
		t.Fatalf("offloads not used: UDP_GRO %v, UDP_SEGMENT refused %v", rs.gro, ss.gsoOff.Load())
	}
}
