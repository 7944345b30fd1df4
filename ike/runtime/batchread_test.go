package runtime

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The batch reader's buffers are separate, full-size and capped: writing
// one to its capacity leaves its neighbours alone.
func TestReadBuffers(t *testing.T) {
	bufs, release := readBuffers(4, readBufSize)
	defer release()
	if len(bufs) != 4 {
		t.Fatalf("%d buffers, want 4", len(bufs))
	}
	for i, b := range bufs {
		if len(b) != readBufSize || cap(b) != readBufSize {
			t.Fatalf("buffer %d: len %d cap %d, want %d", i, len(b), cap(b), readBufSize)
		}
		for j := range b {
			b[j] = byte(i + 1)
		}
	}
	for i, b := range bufs {
		if b[0] != byte(i+1) || b[len(b)-1] != byte(i+1) {
			t.Fatalf("buffer %d overwritten: first %d last %d", i, b[0], b[len(b)-1])
		}
	}
}

// An IKE message as large as a UDP datagram on loopback gets to the engine
// whole through the batch reader, before and after ESP packets on the same
// socket.
func TestBatchReaderLargeIKE(t *testing.T) {
	rs, err := listen(netip.MustParseAddrPort("127.0.0.1:0"), true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs.addr = rs.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	sink := &espSink{got: make(chan []byte, 16)}
	recv := &Runtime{cfg: Config{ESP: sink}, done: make(chan struct{}), events: make(chan event, 16), log: slog.New(slog.DiscardHandler), socks: []*socket{rs}}
	recv.wg.Add(1)
	go recv.batchReader(rs, sink)
	defer func() { close(recv.done); rs.close(); recv.wg.Wait() }()

	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(rs.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ike := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0x5a}, 65000)...)
	esp := append([]byte{0, 0, 0x10, 1}, bytes.Repeat([]byte{0xe5}, 96)...)
	for i, d := range [][]byte{esp, ike, esp} {
		if _, err := c.Write(d); err != nil {
			t.Fatalf("datagram %d (%d bytes): %v", i, len(d), err)
		}
	}
	for i := 0; i < 2; i++ {
		select {
		case p := <-sink.got:
			if !bytes.Equal(p, esp) {
				t.Fatalf("ESP packet %d: %d bytes, want %d", i, len(p), len(esp))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("ESP packet %d did not arrive", i)
		}
	}
	select {
	case ev := <-recv.events:
		if ev.pkt == nil || !bytes.Equal(ev.pkt.Data, ike[4:]) {
			t.Fatalf("IKE message: got %d bytes, want %d", len(ev.pkt.Data), len(ike)-4)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("IKE message not queued for the engine")
	}
}
