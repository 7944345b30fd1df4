package userspace

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// chanDevice is an in-memory TUN: the test injects packets the kernel would
// route into the device (in) and reads what the engine delivers (out).
type chanDevice struct {
	name string
	in   chan []byte
	out  chan []byte
	once sync.Once
	done chan struct{}
}

func newChanDevice(name string) *chanDevice {
	return &chanDevice{name: name, in: make(chan []byte, 64), out: make(chan []byte, 1024), done: make(chan struct{})}
}

func (d *chanDevice) Read(b []byte) (int, error) {
	select {
	case p := <-d.in:
		return copy(b, p), nil
	case <-d.done:
		return 0, os.ErrClosed
	}
}

func (d *chanDevice) Write(b []byte) (int, error) {
	select {
	case <-d.done:
		return 0, os.ErrClosed
	default:
	}
	d.out <- append([]byte(nil), b...)
	return len(b), nil
}

func (d *chanDevice) Name() string { return d.name }
func (d *chanDevice) Close() error { d.once.Do(func() { close(d.done) }); return nil }

// wire is a Sender that hands each packet to a peer engine, and records it.
type wire struct {
	mu   sync.Mutex
	peer *Engine
	from netip.AddrPort
	sent [][]byte
	drop bool
}

func (w *wire) SendESP(b []byte, dst netip.AddrPort) error {
	c := append([]byte(nil), b...)
	w.mu.Lock()
	w.sent = append(w.sent, append([]byte(nil), b...))
	peer, drop := w.peer, w.drop
	w.mu.Unlock()
	if peer != nil && !drop {
		peer.HandleInbound(c, w.from)
	}
	return nil
}

func (w *wire) setPeer(e *Engine) { w.mu.Lock(); w.peer = e; w.mu.Unlock() }

func (w *wire) last() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.sent[len(w.sent)-1]...)
}

// ipv4 builds an IPv4 packet (protocol proto) with an n-byte body whose
// first four bytes are ports for TCP/UDP.
func ipv4(src, dst string, proto uint8, body int, id uint16) []byte {
	b := make([]byte, 20+body)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:6], id)
	b[8], b[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	for i := 20; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func recv(t *testing.T, d *chanDevice) []byte {
	t.Helper()
	select {
	case p := <-d.out:
		return p
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no packet delivered", d.name)
		return nil
	}
}

// noRecv checks that nothing was delivered to s's device; call it after
// synchronous work (HandleInbound returns after queueing the packet for
// the device writer, which noRecv waits for).
func noRecv(t *testing.T, s *side) {
	t.Helper()
	s.e.in.waitIdle()
	d := s.dev
	if n := len(d.out); n != 0 {
		t.Fatalf("%s: %d unexpected packets delivered", d.name, n)
	}
}

// waitFor polls cond until it holds (5 s at most): for effects of the
// engine's own goroutines.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
