package runtime

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
)

// flakyPersister fails the commits fail accepts, up to failures times.
type flakyPersister struct {
	mu       sync.Mutex
	fail     func(ikev1.Persist) bool
	failures int
	failed   int
	ok       int
	children map[uint32]bool
}

var errTestQuorum = errors.New("test: no quorum")

func (p *flakyPersister) Persist(_ context.Context, ps ikev1.Persist) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed < p.failures && p.fail != nil && p.fail(ps) {
		p.failed++
		return errTestQuorum
	}
	p.ok++
	if p.children == nil {
		p.children = map[uint32]bool{}
	}
	for _, c := range ps.Children {
		p.children[c.In.SPI] = true
	}
	return nil
}

func (p *flakyPersister) setFail(f func(ikev1.Persist) bool, n int) {
	p.mu.Lock()
	p.fail, p.failures, p.failed = f, n, 0
	p.mu.Unlock()
}

type testDP struct {
	mu        sync.Mutex
	installed map[uint32]bool
}

func (d *testDP) InstallChild(_ context.Context, c *sa.ChildSA) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.installed == nil {
		d.installed = map[uint32]bool{}
	}
	d.installed[c.In.SPI] = true
	return nil
}
func (d *testDP) DeleteChild(context.Context, *sa.ChildSA) error { return nil }
func (d *testDP) Counters(context.Context) (map[uint32]sa.Counters, error) {
	return nil, nil
}
func (d *testDP) has(spi uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.installed[spi]
}

// freeUDPPort returns a port free on every address in addrs.
func freeUDPPort(t *testing.T, addrs ...string) uint16 {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp4", addrs[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		ok := true
		for _, a := range addrs {
			c, err := net.ListenPacket("udp4", net.JoinHostPort(a, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			return uint16(port)
		}
	}
	t.Fatal("no free UDP port")
	return 0
}

// TestUnsavedRepliesNeverLeave drives the executor: the messages of a
// batch whose commit failed are not sent, and are not sent later by an
// action list without a commit (the engine may answer a retransmission
// from its cache before it hears of the failure); an action list that
// commits sends them, after which they are ordinary again. Other messages
// are not affected.
func TestUnsavedRepliesNeverLeave(t *testing.T) {
	rx, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	eng, err := ikev1.New(ikev1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ps := &flakyPersister{}
	port, natt := freeUDPPort(t, "127.0.0.1"), freeUDPPort(t, "127.0.0.1")
	r, err := New(Config{Engine: eng, Listen: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Port: port, NATTPort: natt,
		Persister: ps, DataPlane: &testDP{}, CounterSync: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	from := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	send := func(d string) ikev1.Action {
		return ikev1.Send{Packet: ikev1.Packet{Local: from, Remote: to, Data: []byte(d)}}
	}
	next := func() string {
		t.Helper()
		b := make([]byte, 100)
		_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := rx.ReadFrom(b)
		if err != nil {
			t.Fatalf("reading what the runtime sent: %v", err)
		}
		return string(b[:n])
	}
	reply := ikev1.Persist{IKE: []*sa.IKESA{{Connection: "c"}}}

	ps.setFail(func(ikev1.Persist) bool { return true }, 1)
	r.execute([]job{{acts: []ikev1.Action{reply, send("reply")}}, {acts: []ikev1.Action{send("other in the batch")}}})
	r.execute([]job{{acts: []ikev1.Action{send("reply")}}}) // from the cache, no commit
	r.execute([]job{{acts: []ikev1.Action{send("marker 1")}}})
	if got := next(); got != "marker 1" {
		t.Fatalf("first datagram %q, want marker 1 (the reply and its batch must not leave)", got)
	}
	if st := r.Stats(); st.PersistErrors != 1 || st.UnsavedDrops != 1 {
		t.Fatalf("stats %+v: want 1 persist error and 1 unsaved drop", st)
	}
	r.failMu.Lock()
	queued := len(r.failed)
	r.failMu.Unlock()
	if queued != 1 {
		t.Fatalf("%d failed Persists queued for the engine, want 1", queued)
	}
	// Committed again: it leaves, and is an ordinary message afterwards.
	r.execute([]job{{acts: []ikev1.Action{reply, send("reply")}}})
	r.execute([]job{{acts: []ikev1.Action{send("reply")}}})
	for i, want := range []string{"reply", "reply"} {
		if got := next(); got != want {
			t.Fatalf("datagram %d: %q, want %q", i, got, want)
		}
	}
	if st := r.Stats(); st.UnsavedDrops != 1 {
		t.Fatalf("%d unsaved drops after the new commit, want still 1", st.UnsavedDrops)
	}
}

// TestQuickModeAnsweredAfterFailedCommit runs two runtimes over loopback
// (127.0.0.1 initiates, 127.0.0.2 responds). The responder's commit of its
// Quick Mode reply fails, as it does while a node loses its quorum: the
// reply is not sent; the initiator retransmits, and the responder answers
// once its new commit succeeded, with the pair of the first answer,
// installed in its data plane. Phase 1 is not renegotiated.
func TestQuickModeAnsweredAfterFailedCommit(t *testing.T) {
	aAddr, bAddr := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	port, natt := freeUDPPort(t, "127.0.0.1", "127.0.0.2"), freeUDPPort(t, "127.0.0.1", "127.0.0.2")
	mk := func(name string, local, remote netip.Addr, lts, rts string, ps Persister, dp DataPlane) *Runtime {
		ike, err := config.ParseIKEProposal("aes128-sha256-ecp256", false)
		if err != nil {
			t.Fatal(err)
		}
		esp, err := config.ParseESPProposal("aes128-sha256", false)
		if err != nil {
			t.Fatal(err)
		}
		c := &config.Connection{Name: name, Local: local, Remote: remote, LocalPort: port, RemotePort: port,
			Auth: "psk", PSK: config.Secret("test-psk-unsaved"), Proposals: ike,
			IKELifetime: time.Hour, DPDAction: config.DPDClear,
			Retransmit: config.RetransmitConfig{Timeout: 300 * time.Millisecond, Tries: 8, Base: 1.2},
			Children: []*config.Child{{Name: "net", Mode: sa.Tunnel, ESPProposals: esp,
				LocalTS:   []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(lts)}},
				RemoteTS:  []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(rts)}},
				RekeyTime: time.Hour, LifeTime: 2 * time.Hour}}}
		eng, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{c}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(Config{Engine: eng, Listen: []netip.Addr{local}, Port: port, NATTPort: natt,
			Persister: ps, DataPlane: dp, CounterSync: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		go r.Run(context.Background())
		return r
	}
	bPS, bDP := &flakyPersister{}, &testDP{}
	bPS.setFail(func(p ikev1.Persist) bool { return len(p.Children) > 0 }, 1) // the Quick Mode reply
	a := mk("to-b", aAddr, bAddr, "10.1.0.0/16", "10.2.0.0/16", &flakyPersister{}, &testDP{})
	b := mk("to-a", bAddr, aAddr, "10.2.0.0/16", "10.1.0.0/16", bPS, bDP)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Initiate(ctx, "to-b"); err != nil {
		t.Fatal(err)
	}
	var aKids, bKids []sa.ChildSA
	var aIKE []sa.IKESA
	for {
		var err error
		aIKE, aKids, err = a.Snapshot(ctx)
		if err == nil {
			_, bKids, err = b.Snapshot(ctx)
		}
		if err != nil {
			t.Fatalf("no Quick Mode completed: %v", err)
		}
		if len(aKids) == 1 && len(bKids) == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if aKids[0].In.SPI != bKids[0].Out.SPI || aKids[0].Out.SPI != bKids[0].In.SPI {
		t.Fatalf("SPIs differ: a in %08x out %08x, b in %08x out %08x", aKids[0].In.SPI, aKids[0].Out.SPI, bKids[0].In.SPI, bKids[0].Out.SPI)
	}
	if len(aIKE) != 1 {
		t.Fatalf("initiator has %d IKE SAs, want 1 (no phase 1 renegotiation)", len(aIKE))
	}
	bPS.mu.Lock()
	failed, committed := bPS.failed, bPS.children[bKids[0].In.SPI]
	bPS.mu.Unlock()
	if failed != 1 || !committed {
		t.Fatalf("responder: %d failed commits, pair committed %v: want the first failed and the pair committed", failed, committed)
	}
	if !bDP.has(bKids[0].In.SPI) {
		t.Fatal("responder's pair not installed in its data plane")
	}
	var resaved uint64
	if err := b.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		resaved = e.Stats().Resaved
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.PersistErrors != 1 || resaved != 1 {
		t.Fatalf("responder: %d persist errors, %d replies resaved: want 1 and 1", st.PersistErrors, resaved)
	}
}
