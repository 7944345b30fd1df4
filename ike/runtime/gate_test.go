package runtime

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"ikegw/ike/ikev1"
)

// switchGate is a Gate a test opens and closes.
type switchGate struct{ open atomic.Bool }

func (g *switchGate) MaySend() bool { return g.open.Load() }

// TestSendGate: with the gate open IKE messages, single ESP packets and ESP
// batches leave; closed, none does, ESP sends answer ErrGateClosed and
// every dropped packet is counted; open again, sending resumes.
func TestSendGate(t *testing.T) {
	s, err := listen(netip.MustParseAddrPort("127.0.0.1:0"), true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	g := &switchGate{}
	g.open.Store(true)
	nattPort := s.addr.Port()
	r := &Runtime{socks: []*socket{s}, cfg: Config{Gate: g, NATTPort: nattPort}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sink, dst := udpSink(t)
	ike := ikev1.Send{Packet: ikev1.Packet{Local: s.addr, Remote: dst, Data: []byte("ike message, not encrypted, 28+ bytes long")}}
	sendAll := func() error {
		r.send(ike)
		if err := r.SendESP([]byte{1, 2, 3, 4}, dst); err != nil {
			return err
		}
		_, err := r.SendESPBatch([][]byte{{5}, {6}, {7}}, []netip.AddrPort{dst, dst, dst})
		return err
	}
	if err := sendAll(); err != nil {
		t.Fatal(err)
	}
	readN(t, sink, 5)

	g.open.Store(false)
	r.send(ike)
	if err := r.SendESP([]byte{1, 2, 3, 4}, dst); !errors.Is(err, ErrGateClosed) {
		t.Fatalf("SendESP with the gate closed: %v, want ErrGateClosed", err)
	}
	if n, err := r.SendESPBatch([][]byte{{5}, {6}, {7}}, []netip.AddrPort{dst, dst, dst}); n != 0 || !errors.Is(err, ErrGateClosed) {
		t.Fatalf("SendESPBatch with the gate closed: %d sent, %v; want 0, ErrGateClosed", n, err)
	}
	if got := r.Stats().GateDrops; got != 5 {
		t.Fatalf("GateDrops %d, want 5 (1 IKE, 1 ESP, a batch of 3)", got)
	}
	sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := sink.ReadFromUDP(make([]byte, 2048)); err == nil {
		t.Fatalf("a %d-byte datagram left through a closed gate", n)
	}

	g.open.Store(true)
	if err := sendAll(); err != nil {
		t.Fatal(err)
	}
	readN(t, sink, 5)
	if got := r.Stats().GateDrops; got != 5 {
		t.Fatalf("GateDrops %d after reopening, want still 5", got)
	}
}
