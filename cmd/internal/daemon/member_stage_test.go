package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"ikegw/ike/sa"
	"ikegw/xfrm"
	"ikegw/xfrm/userspace"
)

// chanTUN is an in-memory TUN device: the test injects packets the kernel
// would route into it.
type chanTUN struct {
	in   chan []byte
	once sync.Once
	done chan struct{}
}

func (d *chanTUN) Read(b []byte) (int, error) {
	select {
	case p := <-d.in:
		return copy(b, p), nil
	case <-d.done:
		return 0, os.ErrClosed
	}
}
func (d *chanTUN) Write(b []byte) (int, error) { return len(b), nil }
func (d *chanTUN) Name() string                { return "stagetun" }
func (d *chanTUN) Close() error                { d.once.Do(func() { close(d.done) }); return nil }

// sentESP records what the data plane sends.
type sentESP struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (s *sentESP) SendESP(b []byte, _ netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkts = append(s.pkts, append([]byte(nil), b...))
	return nil
}

func (s *sentESP) sent() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.pkts...)
}

func stageTestChild(outSeq uint64) *sa.ChildSA {
	key := func(seed byte) []byte {
		b := make([]byte, 36)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b
	}
	local, peer := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	return &sa.ChildSA{Version: sa.RecordVersion, Connection: "c", Child: "net", State: sa.ChildInstalled, Reqid: 1,
		Mode: sa.Tunnel, Protocol: xfrm.ProtoESP, EncapLocalPort: 4500, EncapRemotePort: 4500,
		In:       sa.SADir{SPI: 0xc0000001, Src: peer, Dst: local, Encr: sa.EncrAESGCM, EncrKey: key(1), TruncBits: 128},
		Out:      sa.SADir{SPI: 0xc0000002, Src: local, Dst: peer, Encr: sa.EncrAESGCM, EncrKey: key(2), TruncBits: 128},
		LocalTS:  []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.1.0.0/24")}},
		RemoteTS: []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.2.0.0/24")}},
		Counters: sa.Counters{OutSeq: outSeq},
	}
}

// icmpPacket is an IPv4 echo request from 10.1.0.1 to 10.2.0.1.
func icmpPacket(id uint16) []byte {
	b := make([]byte, 28)
	b[0], b[8], b[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], id)
	copy(b[12:], []byte{10, 1, 0, 1})
	copy(b[16:], []byte{10, 2, 0, 1})
	b[20] = 8
	return b
}

// TestStageDuringCommitSendsNothingBeforeTheCommit: while the jumped
// counters are being committed the pairs are staged (installed, listed)
// but nothing the data plane reads is sent; a failed commit leaves nothing
// sent; after a commit, install activates the pairs and the first packet
// carries the jumped sequence number + 1.
func TestStageDuringCommitSendsNothingBeforeTheCommit(t *testing.T) {
	for _, commitErr := range []error{nil, errors.New("no quorum")} {
		name := "committed"
		if commitErr != nil {
			name = "commit-failed"
		}
		t.Run(name, func(t *testing.T) {
			e, dev, out, log := stageEngine(t)
			const jump = 1 << 24
			live := []*sa.ChildSA{stageTestChild(jump)}
			started, release := make(chan struct{}), make(chan struct{})
			commit := func(context.Context) error {
				close(started)
				<-release
				return commitErr
			}
			type result struct {
				end time.Time
				err error
			}
			res := make(chan result, 1)
			ctx := context.Background()
			go func() {
				end, _, err := stageDuringCommit(ctx, e, log, commit, live)
				res <- result{end, err}
			}()
			<-started
			waitUntil(t, "the pair staged", func() bool { ids, _ := e.Installed(ctx); return len(ids) == 1 })
			for i := range 3 {
				dev.in <- icmpPacket(uint16(i))
			}
			waitUntil(t, "three packets refused", func() bool { return e.EngineStats().NoPolicy == 3 })
			if n := len(out.sent()); n != 0 {
				t.Fatalf("%d ESP packets sent while the commit was in flight", n)
			}
			close(release)
			r := <-res
			if !errors.Is(r.err, commitErr) {
				t.Fatalf("stageDuringCommit: %v, want %v", r.err, commitErr)
			}
			if commitErr != nil {
				if n := len(out.sent()); n != 0 {
					t.Fatalf("%d ESP packets sent after a failed commit", n)
				}
				return
			}
			m := &member{dp: e, log: log}
			m.install(ctx, live)
			dev.in <- icmpPacket(9)
			waitUntil(t, "a packet sent after activation", func() bool { return len(out.sent()) == 1 })
			if seq := binary.BigEndian.Uint32(out.sent()[0][4:8]); seq != jump+1 {
				t.Fatalf("first packet after the takeover carries sequence number %d, want %d", seq, jump+1)
			}
		})
	}
}

// TestHandoverStagingSendsNothing: the target of a planned handover stages
// its pairs ahead of the takeover (member.stageLocked): with a Stager they
// encrypt nothing (a packet that reaches this node, e.g. handed over by
// standby forwarding, is not sent with the jumped counters) until the
// takeover activates them (member.install), and then with the first
// sequence number above the jump. A data plane without staging installs
// them at once, as before.
func TestHandoverStagingSendsNothing(t *testing.T) {
	e, dev, out, log := stageEngine(t)
	const jump = 1 << 20
	live := []*sa.ChildSA{stageTestChild(jump)}
	ctx := context.Background()
	m := &member{dp: e, log: log}
	m.stagePairs(ctx, live)
	if ids, _ := e.Installed(ctx); len(ids) != 1 {
		t.Fatalf("%d pairs staged, want 1", len(ids))
	}
	for i := range 2 {
		dev.in <- icmpPacket(uint16(i))
	}
	waitUntil(t, "two packets refused", func() bool { return e.EngineStats().NoPolicy == 2 })
	if n := len(out.sent()); n != 0 {
		t.Fatalf("%d ESP packets sent by a staged handover target", n)
	}
	m.install(ctx, live)
	dev.in <- icmpPacket(7)
	waitUntil(t, "a packet sent after the takeover", func() bool { return len(out.sent()) == 1 })
	if seq := binary.BigEndian.Uint32(out.sent()[0][4:8]); seq != jump+1 {
		t.Fatalf("first packet after the takeover carries sequence number %d, want %d", seq, jump+1)
	}

	plain := &installOnly{DataPlane: e} // the engine without its Stager methods
	if _, ok := xfrm.DataPlane(plain).(xfrm.Stager); ok {
		t.Fatal("installOnly is a Stager")
	}
	if err := stagePairs(ctx, plain, live); err != nil || plain.installed != 1 {
		t.Fatalf("a data plane without staging: %d installed (%v), want 1", plain.installed, err)
	}
}

// installOnly is a data plane without staging that counts installs.
type installOnly struct {
	xfrm.DataPlane
	installed int
}

func (d *installOnly) InstallChild(context.Context, *sa.ChildSA) error { d.installed++; return nil }

// stageEngine is a userspace engine on an in-memory TUN device that
// records what it sends, closed when the test ends.
func stageEngine(t *testing.T) (*userspace.Engine, *chanTUN, *sentESP, *slog.Logger) {
	t.Helper()
	dev := &chanTUN{in: make(chan []byte, 8), done: make(chan struct{})}
	out := &sentESP{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := userspace.New(userspace.Config{Sender: out, Device: dev, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, dev, out, log
}
