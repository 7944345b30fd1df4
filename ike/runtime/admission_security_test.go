package runtime

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
)

type nopPersister struct{}

func (nopPersister) Persist(context.Context, ikev1.Persist) error { return nil }

type nopDataPlane struct{}

func (nopDataPlane) InstallChild(context.Context, *sa.ChildSA) error { return nil }
func (nopDataPlane) DeleteChild(context.Context, *sa.ChildSA) error  { return nil }
func (nopDataPlane) Counters(context.Context) (map[uint32]sa.Counters, error) {
	return nil, nil
}

// TestRuntimeRateLimitsPhase1Requests: a real runtime on loopback drops
// the message 1 flood of one unknown source in its reader, before the
// engine, and counts it; later messages of the source are not limited.
func TestRuntimeRateLimitsPhase1Requests(t *testing.T) {
	ike, err := config.ParseIKEProposal("aes128-sha256-ecp256", false)
	if err != nil {
		t.Fatal(err)
	}
	anyone := &config.Connection{Name: "anyone", LocalPort: 500, RemotePort: 500, Auth: "psk", PSK: config.Secret("k"), Proposals: ike}
	eng, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{anyone}})
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	rt, err := New(Config{Engine: eng, Listen: []netip.Addr{lo}, Port: freePort(t), NATTPort: freePort(t), Persister: nopPersister{}, DataPlane: nopDataPlane{},
		CounterSync: -1, Admission: Admission{SourceRate: 0.001, SourceBurst: 10, GlobalRate: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(rt.socks[0].conn.LocalAddr().(*net.UDPAddr).AddrPort()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 100 {
		m := msg1(2, 0)
		m[7] = byte(i)
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 { // not message 1: never rate-limited
		if _, err := c.Write(msg1(2, uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var es ikev1.Stats
		if err := rt.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { es = e.Stats(); return nil, nil }); err != nil {
			t.Fatal(err)
		}
		st := rt.Stats()
		if st.DroppedSourceRate == 90 && es.Received == 15 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runtime dropped %d (want 90), engine received %d (want 10 admitted + 5 others)", st.DroppedSourceRate, es.Received)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a UDP port that was free on loopback a moment ago.
func freePort(t *testing.T) uint16 {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// TestRuntimeSpoofedRepliesLeaveNoState: answering message 1 from many
// sources (here loopback addresses, as a spoofed flood would look) leaves
// no per-source entry in the runtime's source cache: only peers that got
// as far as encrypted messages are remembered.
func TestRuntimeSpoofedRepliesLeaveNoState(t *testing.T) {
	ike, err := config.ParseIKEProposal("aes128-sha256-ecp256", false)
	if err != nil {
		t.Fatal(err)
	}
	anyone := &config.Connection{Name: "anyone", LocalPort: 500, RemotePort: 500, Auth: "psk", PSK: config.Secret("k"), Proposals: ike}
	eng, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{anyone}})
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	rt, err := New(Config{Engine: eng, Listen: []netip.Addr{lo}, Port: freePort(t), NATTPort: freePort(t), Persister: nopPersister{},
		DataPlane: nopDataPlane{}, CounterSync: -1, Admission: Admission{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// A real message 1 the engine answers, from ikegw's own initiator.
	ini, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{{Name: "x", Local: lo, Remote: lo, LocalPort: 500, RemotePort: 500,
		Auth: "psk", PSK: config.Secret("k"), Proposals: ike}}})
	if err != nil {
		t.Fatal(err)
	}
	acts, err := ini.Initiate(time.Now(), "x")
	if err != nil {
		t.Fatal(err)
	}
	var msg []byte
	for _, a := range acts {
		if s, ok := a.(ikev1.Send); ok {
			msg = s.Data
		}
	}
	dst := net.UDPAddrFromAddrPort(rt.socks[0].conn.LocalAddr().(*net.UDPAddr).AddrPort())
	const sources = 40
	for i := range sources {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(i+1))}, dst)
		if err != nil {
			t.Fatal(err)
		}
		m := append([]byte(nil), msg...)
		m[0] = byte(i + 1) // a cookie of its own
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var es ikev1.Stats
		if err := rt.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { es = e.Stats(); return nil, nil }); err != nil {
			t.Fatal(err)
		}
		if es.Sent >= sources {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine answered %d of %d message 1", es.Sent, sources)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The replies have been written once the executor is idle again.
	if err := rt.Do(ctx, func(time.Time, *ikev1.Engine) ([]ikev1.Action, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	n := 0
	rt.srcFor.Range(func(_, _ any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d source cache entries after answering %d unauthenticated message 1", n, sources)
	}
	if st := rt.Stats(); st.SendErrors != 0 {
		t.Fatalf("%d send errors", st.SendErrors)
	}
}
