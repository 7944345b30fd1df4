package runtime

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// msg1 returns a minimal ISAKMP header of the given exchange type with
// responder cookie rc (the pre-filter reads nothing else).
func msg1(exchange byte, rc uint64) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint64(b[0:8], 0x1122334455667788)
	binary.BigEndian.PutUint64(b[8:16], rc)
	b[16], b[17], b[18] = 1, 0x10, exchange
	binary.BigEndian.PutUint32(b[24:28], 28)
	return b
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestAdmitter(cfg Admission, known ...netip.Addr) (*admitter, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}
	set := map[netip.Addr]bool{}
	for _, k := range known {
		set[k] = true
	}
	return newAdmitter(cfg, func(a netip.Addr) bool { return set[a] }, clk.now), clk
}

func TestIsPhase1Request(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"main mode message 1", msg1(2, 0), true},
		{"aggressive mode message 1", msg1(4, 0), true},
		{"main mode message 3", msg1(2, 42), false},
		{"quick mode", msg1(32, 42), false},
		{"informational without responder cookie", msg1(5, 0), false},
		{"short", msg1(2, 0)[:27], false},
		{"empty", nil, false},
	} {
		if got := isPhase1Request(tc.b); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAdmissionPerSource(t *testing.T) {
	a, clk := newTestAdmitter(Admission{SourceRate: 2, SourceBurst: 4, GlobalRate: -1})
	src := netip.MustParseAddr("203.0.113.7")
	ok := 0
	for i := 0; i < 100; i++ {
		if a.admit(msg1(2, 0), src) {
			ok++
		}
	}
	if ok != 4 || a.droppedSource.Load() != 96 {
		t.Fatalf("burst: %d admitted, %d dropped; want 4 and 96", ok, a.droppedSource.Load())
	}
	// Other sources and other packets are not affected.
	if !a.admit(msg1(2, 0), netip.MustParseAddr("203.0.113.8")) {
		t.Fatal("another source was limited")
	}
	if !a.admit(msg1(2, 99), src) || !a.admit(msg1(32, 99), src) {
		t.Fatal("a packet of an existing exchange was limited")
	}
	// Tokens come back at the rate.
	clk.add(time.Second)
	ok = 0
	for i := 0; i < 10; i++ {
		if a.admit(msg1(4, 0), src) {
			ok++
		}
	}
	if ok != 2 {
		t.Fatalf("after 1 s at 2/s: %d admitted, want 2", ok)
	}
	if p := a.takePending(); p["source_rate"] != 96+8 {
		t.Fatalf("pending drops %v", p)
	}
	if p := a.takePending(); p != nil {
		t.Fatalf("pending drops not reset: %v", p)
	}
}

func TestAdmissionIPv6SharesPrefix(t *testing.T) {
	a, _ := newTestAdmitter(Admission{SourceRate: 1, SourceBurst: 1, GlobalRate: -1})
	if !a.admit(msg1(2, 0), netip.MustParseAddr("2001:db8:1:2::1")) {
		t.Fatal("first request refused")
	}
	if a.admit(msg1(2, 0), netip.MustParseAddr("2001:db8:1:2::ffff")) {
		t.Fatal("a second address of the same /64 has its own bucket")
	}
	if !a.admit(msg1(2, 0), netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatal("another /64 shares the bucket")
	}
}

func TestAdmissionGlobalAndKnown(t *testing.T) {
	peer := netip.MustParseAddr("192.0.2.1")
	a, clk := newTestAdmitter(Admission{GlobalRate: 100}, peer)
	ok := 0
	for i := 0; i < 20000; i++ { // one second of a 20,000/s spoofed flood
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if a.admit(msg1(2, 0), src) {
			ok++
		}
		if i%200 == 0 {
			clk.add(10 * time.Millisecond)
		}
	}
	// 100 of burst plus 100/s over the second.
	if ok < 100 || ok > 201 {
		t.Fatalf("%d of 20000 spoofed requests admitted with a global rate of 100/s", ok)
	}
	if a.droppedGlobal.Load() != uint64(20000-ok) {
		t.Fatalf("DroppedGlobalRate %d, want %d", a.droppedGlobal.Load(), 20000-ok)
	}
	// The known peer is never held back by the flood.
	for i := 0; i < 50; i++ {
		if !a.admit(msg1(2, 0), peer) {
			t.Fatalf("known peer's request %d dropped", i)
		}
	}
	if n := a.tracked(); n != 16384 {
		t.Fatalf("%d sources tracked, want the table size 16384", n)
	}
}

func TestAdmissionTableBounded(t *testing.T) {
	a, _ := newTestAdmitter(Admission{Sources: 64, SourceRate: 1, SourceBurst: 1, GlobalRate: -1})
	hot := netip.MustParseAddr("198.51.100.1")
	if !a.admit(msg1(2, 0), hot) {
		t.Fatal("first request refused")
	}
	for i := 0; i < 1000; i++ {
		a.admit(msg1(2, 0), netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
		if a.admit(msg1(2, 0), hot) {
			t.Fatalf("a source seen again and again lost its bucket (round %d)", i)
		}
	}
	if n := a.tracked(); n != 64 {
		t.Fatalf("%d sources tracked, want 64", n)
	}
}

// BenchmarkAdmissionSpoofed is the pre-filter's cost per spoofed message 1
// from a new source (the table full and churning) once the global bucket
// is empty: the steady state of a flood.
func BenchmarkAdmissionSpoofed(b *testing.B) {
	a := newAdmitter(Admission{GlobalRate: 1}, func(netip.Addr) bool { return false }, time.Now)
	m := msg1(2, 0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.admit(m, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
}

func TestReportDrops(t *testing.T) {
	h := &recHandler{}
	log := slog.New(h)
	a, _ := newTestAdmitter(Admission{SourceRate: 1, SourceBurst: 1, GlobalRate: -1})
	var l logLimiter
	reportDrops(log, a, &l, time.Second)
	if len(h.msgs) != 0 {
		t.Fatalf("a summary without drops: %v", h.msgs)
	}
	src := netip.MustParseAddr("203.0.113.1")
	for range 3 {
		a.admit(msg1(2, 0), src)
	}
	for i := range 8 {
		if got, want := l.allow("send"), i < logBurst; got != want {
			t.Fatalf("line %d of a kind: allowed %v, want %v", i, got, want)
		}
	}
	reportDrops(log, a, &l, time.Second)
	if len(h.msgs) != 1 || !strings.Contains(h.msgs[0], "dropped_source_rate=2") || !strings.Contains(h.msgs[0], "log_suppressed_send=3") {
		t.Fatalf("summary %q", h.msgs)
	}
	if !l.allow("send") {
		t.Fatal("the log limiter did not start a new interval after the summary")
	}
}

type recHandler struct{ msgs []string }

func (h *recHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recHandler) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value); return true })
	h.msgs = append(h.msgs, sb.String())
	return nil
}
func (h *recHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recHandler) WithGroup(string) slog.Handler      { return h }
