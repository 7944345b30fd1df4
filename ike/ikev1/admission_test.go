package ikev1

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/sa"
)

// countingHandler records the messages of every log record.
type countingHandler struct {
	mu    sync.Mutex
	recs  []slog.Record
	level slog.Level
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

// admissionNodes returns initiator a (a known peer of b: b has a
// connection with a's exact address) and responder b, which also accepts
// anybody on a wildcard connection, with the given limits.
func admissionNodes(t *testing.T, cfg Config) (*node, *node, *world, *countingHandler) {
	t.Helper()
	a := newNode(t, "a", addrA, conn(t, "to-b", addrA, addrB, "secret-psk-1", "aes128-sha256-modp2048", "aes128-sha256", "10.1.0.0/16", "10.2.0.0/16"))
	h := &countingHandler{level: slog.LevelInfo}
	cfg.Connections = append(cfg.Connections,
		conn(t, "to-a", addrB, addrA, "secret-psk-1", "aes128-sha256-modp2048", "aes128-sha256", "10.2.0.0/16", "10.1.0.0/16"),
		conn(t, "anyone", addrB, netip.Addr{}, "another-psk", "aes128-sha256-modp2048", "aes128-sha256", "10.2.0.0/16", "10.3.0.0/16"))
	cfg.Log = slog.New(h)
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := &node{name: "b", eng: e, addr: addrB, store: map[[16]byte]*sa.IKESA{}, kids: map[uint32]*sa.ChildSA{},
		installed: map[uint32]*sa.ChildSA{}, timers: map[Timer]time.Time{}}
	return a, b, newWorld(t, a, b), h
}

// mainMode1 returns a Main Mode message 1 as a's engine writes it.
func mainMode1(t *testing.T) []byte {
	t.Helper()
	a := newNode(t, "gen", addrA, conn(t, "to-b", addrA, addrB, "k", "aes128-sha256-modp2048", "aes128-sha256", "10.1.0.0/16", "10.2.0.0/16"))
	acts, err := a.eng.Initiate(t0, "to-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range a.apply(acts) {
		return p.Data
	}
	t.Fatal("Initiate sent nothing")
	return nil
}

// spoof delivers n copies of msg1 with fresh initiator cookies from the
// sources src(i) to b and discards b's replies (nobody answers them).
func spoof(b *node, now time.Time, msg1 []byte, n int, src func(i int) netip.Addr) {
	for i := 0; i < n; i++ {
		d := append([]byte(nil), msg1...)
		binary.BigEndian.PutUint64(d[0:8], uint64(i)+0x5000_0000_0000_0000)
		b.apply(b.eng.HandlePacket(now, Packet{Local: netip.AddrPortFrom(addrB, 500), Remote: netip.AddrPortFrom(src(i), 500), Data: d}))
	}
}

func manySources(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 66, byte(i >> 8), byte(i)})
}

func TestAdmissionFloodKeepsReservedShare(t *testing.T) {
	a, b, w, logs := admissionNodes(t, Config{MaxHalfOpen: 64, ReservedHalfOpen: 16, MaxHalfOpenPerSource: 4})
	msg1 := mainMode1(t)
	spoof(b, w.now, msg1, 1000, manySources)
	total, unknown := b.eng.HalfOpen()
	if total != 48 || unknown != 48 {
		t.Fatalf("after the flood: %d half-open, %d of unknown sources; want 48 (64 minus the 16 reserved)", total, unknown)
	}
	st := b.eng.Stats()
	if st.DroppedHalfOpenLimit != 1000-48 || st.Dropped < st.DroppedHalfOpenLimit {
		t.Fatalf("DroppedHalfOpenLimit %d (Dropped %d), want %d", st.DroppedHalfOpenLimit, st.Dropped, 1000-48)
	}
	// The known peer still completes phase 1 and Quick Mode.
	initiate(t, w, a, "to-b")
	ia := onlyIKE(t, a)
	if b.eng.ikes[ia.Cookies.Key()] == nil || !b.eng.ikes[ia.Cookies.Key()].established() {
		t.Fatal("the known peer's phase 1 did not complete on the responder during the flood")
	}
	if len(installedChildren(a)) != 1 {
		t.Fatalf("known peer: %d pairs installed, want 1", len(installedChildren(a)))
	}
	// Remote-triggered Warns are limited: a few lines, then one summary.
	if n := logs.count("phase 1 request dropped"); n != logBurst {
		t.Fatalf("%d drop lines logged for %d drops, want %d", n, st.DroppedHalfOpenLimit, logBurst)
	}
	if logs.count("log lines suppressed") != 0 {
		t.Fatal("summary before the interval ended")
	}
	w.advance(defaultLogInterval)
	spoof(b, w.now, msg1, 1, manySources) // any later packet flushes the summary
	if n := logs.count("log lines suppressed"); n != 1 {
		t.Fatalf("%d summary lines, want 1", n)
	}
	if b.eng.Stats().LogSuppressed == 0 {
		t.Fatal("LogSuppressed not counted")
	}
	// The half-open SAs time out and every count goes back to zero.
	w.advance(time.Minute)
	if total, unknown := b.eng.HalfOpen(); total != 0 || unknown != 0 || len(b.eng.adm.perSrc) != 0 || len(b.eng.adm.entries) != 0 || b.eng.adm.order.Len() != 0 {
		t.Fatalf("after the timeout: %d half-open (%d unknown), %d sources, %d entries, %d queued",
			total, unknown, len(b.eng.adm.perSrc), len(b.eng.adm.entries), b.eng.adm.order.Len())
	}
	if n := logs.count("phase 1 did not complete in time"); n != logBurst {
		t.Fatalf("%d half-open timeouts logged for 48 spoofed SAs, want %d", n, logBurst)
	}
}

func TestAdmissionKnownPeerEvictsUnknown(t *testing.T) {
	a, b, w, _ := admissionNodes(t, Config{MaxHalfOpen: 32, ReservedHalfOpen: -1, MaxHalfOpenPerSource: 4})
	spoof(b, w.now, mainMode1(t), 100, manySources)
	if total, unknown := b.eng.HalfOpen(); total != 32 || unknown != 32 {
		t.Fatalf("flood: %d half-open (%d unknown), want the whole table (32)", total, unknown)
	}
	initiate(t, w, a, "to-b")
	onlyIKE(t, a)
	st := b.eng.Stats()
	if st.EvictedHalfOpen != 1 {
		t.Fatalf("EvictedHalfOpen %d, want 1", st.EvictedHalfOpen)
	}
	// The oldest spoofed SA went, the newest is still there.
	if b.eng.idx.halfByI[cookieOf(0)] != nil || b.eng.idx.halfByI[cookieOf(31)] == nil {
		t.Fatal("eviction did not take the oldest unknown half-open SA")
	}
	if total, _ := b.eng.HalfOpen(); total != 31 {
		t.Fatalf("%d half-open after the known peer completed, want 31", total)
	}
}

func cookieOf(i int) [8]byte {
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], uint64(i)+0x5000_0000_0000_0000)
	return c
}

func TestAdmissionPerSourceLimit(t *testing.T) {
	_, b, w, _ := admissionNodes(t, Config{MaxHalfOpen: 64, MaxHalfOpenPerSource: 4})
	one := netip.MustParseAddr("203.0.113.9")
	spoof(b, w.now, mainMode1(t), 10, func(int) netip.Addr { return one })
	if total, _ := b.eng.HalfOpen(); total != 4 {
		t.Fatalf("one source holds %d half-open SAs, want the per-source limit 4", total)
	}
	if st := b.eng.Stats(); st.DroppedSourceLimit != 6 {
		t.Fatalf("DroppedSourceLimit %d, want 6", st.DroppedSourceLimit)
	}
	// Addresses of one IPv6 /64 share the limit.
	spoof(b, w.now, mainMode1(t), 6, func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})
	})
	if total, _ := b.eng.HalfOpen(); total != 8 {
		t.Fatalf("%d half-open after 6 requests from one /64, want 4 + 4", total)
	}
	// Another source is not affected.
	spoof(b, w.now, mainMode1(t), 1, func(int) netip.Addr { return netip.MustParseAddr("203.0.113.10") })
	if total, _ := b.eng.HalfOpen(); total != 9 {
		t.Fatalf("%d half-open, want 9", total)
	}
}

func TestAdmissionKnownPeerSet(t *testing.T) {
	_, b, _, _ := admissionNodes(t, Config{})
	if !b.eng.KnownPeer(addrA) || !b.eng.KnownPeer(netip.AddrFrom16(addrA.As16())) {
		t.Fatal("the exact remote address of a connection is not a known peer")
	}
	if b.eng.KnownPeer(netip.MustParseAddr("10.66.0.1")) {
		t.Fatal("an address only a wildcard connection matches is a known peer")
	}
	if err := b.eng.Reconfigure(nil); err != nil {
		t.Fatal(err)
	}
	if b.eng.KnownPeer(addrA) {
		t.Fatal("known peers not updated by Reconfigure")
	}
	if _, err := New(Config{MaxHalfOpen: 10, ReservedHalfOpen: 10}); err == nil || !strings.Contains(err.Error(), "ReservedHalfOpen") {
		t.Fatalf("a reserved share as large as the limit: err %v", err)
	}
}

// BenchmarkSpoofedMainMode1 is the engine's cost of one spoofed Main Mode
// message 1 while the half-open table is full (the steady state of a
// flood) and while it still has room.
func BenchmarkSpoofedMainMode1(b *testing.B) {
	t := &testing.T{}
	msg1 := mainMode1(t)
	for _, full := range []bool{false, true} {
		name := "admitted"
		if full {
			name = "table-full"
		}
		b.Run(name, func(b *testing.B) {
			e, err := New(Config{Connections: []*config.Connection{conn(b, "anyone", addrB, netip.Addr{}, "k", "aes128-sha256-modp2048", "aes128-sha256", "10.2.0.0/16", "10.3.0.0/16")},
				MaxHalfOpen: 1 << 30, MaxHalfOpenPerSource: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			if full {
				e.cfg.MaxHalfOpen, e.cfg.ReservedHalfOpen = 1, 0
				e.halfOpen = 1
			}
			d := append([]byte(nil), msg1...)
			local := netip.AddrPortFrom(addrB, 500)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				binary.BigEndian.PutUint64(d[0:8], uint64(i)+1)
				e.HandlePacket(t0, Packet{Local: local, Remote: netip.AddrPortFrom(manySources(i), 500), Data: d})
				if !full && i%4096 == 4095 {
					e.ikes, e.idx, e.halfOpen, e.adm = map[[16]byte]*ikeSA{}, newIndex(), 0, newAdmission()
				}
			}
		})
	}
}
