package ikev1

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/isakmp"
	"ikegw/ike/sa"
)

var (
	addrA = netip.MustParseAddr("192.0.2.1")
	addrB = netip.MustParseAddr("198.51.100.2")
	t0    = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
)

func mustIKE(t testing.TB, s string) []config.IKEProposal {
	t.Helper()
	p, err := config.ParseIKEProposal(s, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustESP(t testing.TB, s string) []config.ESPProposal {
	t.Helper()
	p, err := config.ParseESPProposal(s, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func conn(t testing.TB, name string, local, remote netip.Addr, psk, ike, esp string, lts, rts string) *config.Connection {
	return &config.Connection{
		Name: name, Local: local, Remote: remote, LocalPort: 500, RemotePort: 500,
		Auth: "psk", PSK: config.Secret(psk), Proposals: mustIKE(t, ike),
		IKELifetime: 8 * time.Hour, DPDDelay: 30 * time.Second, DPDTimeout: 150 * time.Second, DPDAction: config.DPDClear,
		Retransmit: config.RetransmitConfig{Timeout: 4 * time.Second, Tries: 5, Base: 1.8},
		Children: []*config.Child{{
			Name: "net", Mode: sa.Tunnel, ESPProposals: mustESP(t, esp),
			LocalTS:   []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(lts)}},
			RemoteTS:  []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(rts)}},
			RekeyTime: time.Hour, LifeTime: 66 * time.Minute,
		}},
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("IKEGW_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// node is an engine with the side effects of its actions recorded.
type node struct {
	name      string
	eng       *Engine
	addr      netip.Addr
	store     map[[16]byte]*sa.IKESA
	kids      map[uint32]*sa.ChildSA
	installed map[uint32]*sa.ChildSA
	timers    map[Timer]time.Time
	// order checks: a Send may follow a Persist in the same list only;
	// sentBeforePersist counts violations of "persist first" for messages
	// that finish an exchange.
	lists [][]Action
	// failPersist, when it returns true for a Persist, makes it fail like
	// the runtime's: nothing else of that list but the timers runs, and
	// the engine hears of it (PersistFailed).
	failPersist func(Persist) bool
}

func newNode(t testing.TB, name string, addr netip.Addr, conns ...*config.Connection) *node {
	e, err := New(Config{Connections: conns, Log: testLogger(t).With("node", name)})
	if err != nil {
		t.Fatal(err)
	}
	return &node{name: name, eng: e, addr: addr, store: map[[16]byte]*sa.IKESA{}, kids: map[uint32]*sa.ChildSA{},
		installed: map[uint32]*sa.ChildSA{}, timers: map[Timer]time.Time{}}
}

// apply records the actions and returns the packets to deliver.
func (n *node) apply(acts []Action) []Packet {
	n.lists = append(n.lists, acts)
	if n.failPersist != nil {
		for _, a := range acts {
			if p, ok := a.(Persist); ok && n.failPersist(p) {
				for _, a := range acts {
					switch v := a.(type) {
					case ArmTimer:
						n.timers[v.Timer] = v.At
					case StopTimer:
						delete(n.timers, v.Timer)
					}
				}
				n.lists[len(n.lists)-1] = nil
				n.eng.PersistFailed(p)
				return nil
			}
		}
	}
	var pkts []Packet
	for _, a := range acts {
		switch v := a.(type) {
		case Persist:
			for _, r := range v.IKE {
				n.store[r.Cookies.Key()] = r
			}
			for _, c := range v.Children {
				n.kids[c.In.SPI] = c
			}
			for _, c := range v.DeleteIKE {
				delete(n.store, c.Key())
			}
			for _, s := range v.DeleteChildren {
				delete(n.kids, s)
			}
		case Send:
			if !v.Keepalive {
				pkts = append(pkts, v.Packet)
			}
		case InstallChild:
			n.installed[v.Child.In.SPI] = v.Child
		case DeleteChild:
			delete(n.installed, v.Child.In.SPI)
		case ArmTimer:
			n.timers[v.Timer] = v.At
		case StopTimer:
			delete(n.timers, v.Timer)
		}
	}
	return pkts
}

type world struct {
	t     testing.TB
	nodes map[netip.Addr]*node
	now   time.Time
	// drop returns true for packets to lose.
	drop func(p Packet) bool
	// natPort, if set, rewrites packets from this address to look as if
	// they crossed a NAT (source port changed).
	sent int
}

func newWorld(t testing.TB, ns ...*node) *world {
	w := &world{t: t, nodes: map[netip.Addr]*node{}, now: t0}
	for _, n := range ns {
		w.nodes[n.addr] = n
	}
	return w
}

// deliver runs packets to quiescence.
func (w *world) deliver(from *node, pkts []Packet) {
	queue := make([]struct {
		from *node
		p    Packet
	}, 0)
	for _, p := range pkts {
		queue = append(queue, struct {
			from *node
			p    Packet
		}{from, p})
	}
	for steps := 0; len(queue) > 0; steps++ {
		if steps > 1000 {
			w.t.Fatal("packet storm: more than 1000 deliveries")
		}
		q := queue[0]
		queue = queue[1:]
		w.sent++
		if w.drop != nil && w.drop(q.p) {
			continue
		}
		to := w.nodes[q.p.Remote.Addr()]
		if to == nil {
			w.t.Fatalf("packet to unknown node %s", q.p.Remote)
		}
		local := q.p.Local
		if !local.IsValid() {
			local = netip.AddrPortFrom(q.from.addr, 500)
		}
		in := Packet{Local: q.p.Remote, Remote: local, Data: append([]byte(nil), q.p.Data...)}
		for _, p := range to.apply(to.eng.HandlePacket(w.now, in)) {
			queue = append(queue, struct {
				from *node
				p    Packet
			}{to, p})
		}
	}
}

// fire runs due timers of every node until none is due at w.now.
func (w *world) fire() {
	for i := 0; i < 100; i++ {
		fired := false
		for _, n := range w.sortedNodes() {
			var due []Timer
			for t, at := range n.timers {
				if !at.After(w.now) {
					due = append(due, t)
				}
			}
			sort.Slice(due, func(i, j int) bool { return fmt.Sprint(due[i]) < fmt.Sprint(due[j]) })
			for _, t := range due {
				if at, ok := n.timers[t]; !ok || at.After(w.now) {
					continue
				}
				delete(n.timers, t)
				fired = true
				w.deliver(n, n.apply(n.eng.HandleTimer(w.now, t)))
			}
		}
		if !fired {
			return
		}
	}
}

func (w *world) sortedNodes() []*node {
	var ns []*node
	for _, n := range w.nodes {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i].name < ns[j].name })
	return ns
}

func (w *world) advance(d time.Duration) {
	w.now = w.now.Add(d)
	w.fire()
}

func initiate(t testing.TB, w *world, n *node, conn string) {
	t.Helper()
	acts, err := n.eng.Initiate(w.now, conn)
	if err != nil {
		t.Fatal(err)
	}
	w.deliver(n, n.apply(acts))
}

func onlyIKE(t testing.TB, n *node) sa.IKESA {
	t.Helper()
	var est []sa.IKESA
	for _, s := range n.eng.IKESAs() {
		if s.State == sa.IKEEstablished {
			est = append(est, s)
		}
	}
	if len(est) != 1 {
		t.Fatalf("%s: %d established IKE SAs, want 1", n.name, len(est))
	}
	return est[0]
}

func installedChildren(n *node) []*sa.ChildSA {
	var out []*sa.ChildSA
	for _, c := range n.installed {
		if c.State == sa.ChildInstalled {
			out = append(out, c)
		}
	}
	return out
}

// checkPair checks that two nodes agree on one IKE SA and one IPsec pair.
func checkPair(t testing.TB, a, b *node) (sa.IKESA, *sa.ChildSA, *sa.ChildSA) {
	t.Helper()
	ia, ib := onlyIKE(t, a), onlyIKE(t, b)
	if ia.Cookies != ib.Cookies {
		t.Fatalf("cookies differ: %s vs %s", ia.Cookies, ib.Cookies)
	}
	if !bytes.Equal(ia.SKEYIDa, ib.SKEYIDa) || !bytes.Equal(ia.EncKey, ib.EncKey) || !bytes.Equal(ia.IVBase, ib.IVBase) {
		t.Fatal("phase 1 keys or IV base differ")
	}
	if a.store[ia.Cookies.Key()] == nil || b.store[ib.Cookies.Key()] == nil {
		t.Fatal("established IKE SA was not persisted")
	}
	ca, cb := installedChildren(a), installedChildren(b)
	if len(ca) != 1 || len(cb) != 1 {
		t.Fatalf("installed pairs: %d and %d, want 1 each", len(ca), len(cb))
	}
	x, y := ca[0], cb[0]
	if x.In.SPI != y.Out.SPI || x.Out.SPI != y.In.SPI {
		t.Fatalf("SPIs not crossed: %08x/%08x vs %08x/%08x", x.In.SPI, x.Out.SPI, y.In.SPI, y.Out.SPI)
	}
	if !bytes.Equal(x.In.EncrKey, y.Out.EncrKey) || !bytes.Equal(x.Out.EncrKey, y.In.EncrKey) ||
		!bytes.Equal(x.In.IntegKey, y.Out.IntegKey) || !bytes.Equal(x.Out.IntegKey, y.In.IntegKey) {
		t.Fatal("ESP keys do not match across the pair")
	}
	if bytes.Equal(x.In.EncrKey, x.Out.EncrKey) {
		t.Fatal("inbound and outbound keys are equal")
	}
	if a.kids[x.In.SPI] == nil || b.kids[y.In.SPI] == nil {
		t.Fatal("installed pair was not persisted")
	}
	return ia, x, y
}

// checkPersistBeforeSend: in every action list, no Send precedes a Persist
// (commit before send, DESIGN.md invariant 1).
func checkPersistBeforeSend(t testing.TB, n *node) {
	t.Helper()
	for i, l := range n.lists {
		sent := false
		for _, a := range l {
			switch a.(type) {
			case Send:
				sent = true
			case Persist:
				if sent {
					t.Fatalf("%s: action list %d persists after sending: %#v", n.name, i, l)
				}
			}
		}
	}
}

func pairNodes(t testing.TB, ike, esp string) (*node, *node, *world) {
	a := newNode(t, "a", addrA, conn(t, "to-b", addrA, addrB, "secret-psk-1", ike, esp, "10.1.0.0/16", "10.2.0.0/16"))
	b := newNode(t, "b", addrB, conn(t, "to-a", addrB, addrA, "secret-psk-1", ike, esp, "10.2.0.0/16", "10.1.0.0/16"))
	return a, b, newWorld(t, a, b)
}

func TestMainModeQuickMode(t *testing.T) {
	for _, tc := range []struct{ ike, esp string }{
		{"aes128-sha1-modp2048", "aes128-sha1"},
		{"aes256-sha256-modp2048", "aes256-sha256"},
		{"aes256-sha384-ecp384", "aes256-sha384-ecp384"},
		{"aes128-sha256-curve25519", "aes128gcm16-curve25519"},
		{"aes256-sha512-ecp521", "aes256gcm16"},
		{"aes192-sha256-ecp256", "aes128-sha512-modp3072"},
	} {
		t.Run(tc.ike+"/"+tc.esp, func(t *testing.T) {
			a, b, w := pairNodes(t, tc.ike, tc.esp)
			initiate(t, w, a, "to-b")
			ike, x, _ := checkPair(t, a, b)
			if ike.Role != sa.Initiator {
				t.Fatalf("role %v", ike.Role)
			}
			if x.Mode != sa.Tunnel || x.LocalTS[0].Prefix.String() != "10.1.0.0/16" {
				t.Fatalf("pair %+v", x)
			}
			checkPersistBeforeSend(t, a)
			checkPersistBeforeSend(t, b)
			if a.eng.halfOpen != 0 || b.eng.halfOpen != 0 {
				t.Fatalf("half-open counters not released: %d %d", a.eng.halfOpen, b.eng.halfOpen)
			}
		})
	}
}

func TestAggressiveMode(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	a.eng.conns["to-b"].Aggressive = true
	// Not enabled on the responder: refused.
	initiate(t, w, a, "to-b")
	if len(b.eng.IKESAs()) != 0 || len(a.store) != 0 {
		t.Fatal("aggressive mode accepted without being enabled")
	}
	b.eng.conns["to-a"].Aggressive = true
	w.advance(time.Minute)
	initiate(t, w, a, "to-b")
	checkPair(t, a, b)
}

func TestWrongPSK(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	b.eng.conns["to-a"].PSK = config.Secret("another-secret")
	initiate(t, w, a, "to-b")
	for i := 0; i < 10; i++ {
		w.advance(30 * time.Second)
	}
	if n := len(a.eng.IKESAs()) + len(b.eng.IKESAs()); n != 0 {
		t.Fatalf("%d IKE SAs left after a wrong PSK", n)
	}
	if len(a.store)+len(b.store)+len(a.kids)+len(b.kids) != 0 {
		t.Fatal("state persisted after a wrong PSK")
	}
	if b.eng.halfOpen != 0 {
		t.Fatalf("half-open count %d", b.eng.halfOpen)
	}
	if st := b.eng.Stats(); st.Phase1Failed == 0 || st.Phase1FailedBy[FailAuth] != st.Phase1Failed {
		t.Fatalf("failure not counted as an authentication failure: %d failed, by reason %v", st.Phase1Failed, st.Phase1FailedBy)
	}
}

func TestNoProposalChosen(t *testing.T) {
	a := newNode(t, "a", addrA, conn(t, "to-b", addrA, addrB, "k", "aes128-sha1-modp2048", "aes128-sha1", "10.1.0.0/16", "10.2.0.0/16"))
	b := newNode(t, "b", addrB, conn(t, "to-a", addrB, addrA, "k", "aes256-sha512-ecp384", "aes128-sha1", "10.2.0.0/16", "10.1.0.0/16"))
	w := newWorld(t, a, b)
	initiate(t, w, a, "to-b")
	if len(a.eng.IKESAs()) != 0 {
		t.Fatal("initiator kept its SA after NO-PROPOSAL-CHOSEN")
	}
	if n := b.eng.Stats().Phase1FailedBy[FailNoProposal]; n != 1 {
		t.Fatalf("responder counted %d no-proposal failures, want 1", n)
	}
	if n := a.eng.Stats().Phase1FailedBy[FailPeerRefused]; n != 1 {
		t.Fatalf("initiator counted %d refusals by the peer, want 1", n)
	}
}

func TestRetransmissionsAnsweredFromCache(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	// Lose the first copy of every message B sends.
	seen := map[string]bool{}
	w.drop = func(p Packet) bool {
		if p.Local.Addr() != addrB {
			return false
		}
		k := string(p.Data)
		if seen[k] {
			return false
		}
		seen[k] = true
		return true
	}
	initiate(t, w, a, "to-b")
	for i := 0; i < 10; i++ {
		w.advance(5 * time.Second)
	}
	checkPair(t, a, b)
	if b.eng.Stats().AnsweredFromCache == 0 {
		t.Fatal("no retransmission was answered from cache")
	}
	if got := len(b.eng.IKESAs()); got != 1 {
		t.Fatalf("responder has %d IKE SAs: retransmissions were renegotiated", got)
	}
	for _, n := range []*node{a, b} {
		if ike, child := n.eng.Counts(); ike != len(n.eng.IKESAs()) || child != len(n.eng.ChildSAs()) || child == 0 {
			t.Errorf("Counts() = %d, %d; IKESAs %d, ChildSAs %d", ike, child, len(n.eng.IKESAs()), len(n.eng.ChildSAs()))
		}
	}
}

func TestDPD(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	initiate(t, w, a, "to-b")
	checkPair(t, a, b)
	w.advance(31 * time.Second)
	w.advance(31 * time.Second)
	if a.eng.Stats().DPDSent == 0 || a.eng.Stats().DPDAcked == 0 || b.eng.Stats().DPDAcked == 0 {
		t.Fatalf("DPD not exchanged both ways: a %+v b %+v", a.eng.Stats(), b.eng.Stats())
	}
	// One R-U-THERE per delay while they are answered, not one per
	// retransmission interval.
	if got := a.eng.Stats().DPDSent; got != 2 {
		t.Fatalf("%d R-U-THEREs in 62 s with a 30 s delay, want 2", got)
	}
	ia := onlyIKE(t, a)
	if a.store[ia.Cookies.Key()].DPDOurSeq != ia.DPDOurSeq {
		t.Fatal("DPD sequence number used before it was persisted")
	}
	// B dies: A's DPD times out and clears everything.
	w.drop = func(p Packet) bool { return true }
	for i := 0; i < 12; i++ {
		w.advance(30 * time.Second)
	}
	if len(a.eng.IKESAs()) != 0 || len(a.installed) != 0 || len(a.store) != 0 || len(a.kids) != 0 {
		t.Fatalf("DPD timeout left state: %d IKE, %d installed, %d stored", len(a.eng.IKESAs()), len(a.installed), len(a.store))
	}
	if a.eng.Stats().DPDTimeouts != 1 {
		t.Fatalf("dpd timeouts %d", a.eng.Stats().DPDTimeouts)
	}
}

func TestQuickModeRekeyBothRoles(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes128-sha256-modp2048")
	initiate(t, w, a, "to-b")
	_, x1, _ := checkPair(t, a, b)
	// The initiator rekeys at its rekey time; the old pair goes after the grace period.
	w.advance(time.Hour + time.Second)
	w.advance(11 * time.Second)
	_, x2, _ := checkPair(t, a, b)
	if x2.In.SPI == x1.In.SPI {
		t.Fatal("pair was not rekeyed")
	}
	// The responder rekeys on request.
	acts, err := b.eng.RekeyChildSA(w.now, installedChildren(b)[0].In.SPI)
	if err != nil {
		t.Fatal(err)
	}
	w.deliver(b, b.apply(acts))
	w.advance(11 * time.Second)
	_, x3, _ := checkPair(t, a, b)
	if x3.In.SPI == x2.In.SPI {
		t.Fatal("responder-started rekey did not replace the pair")
	}
	checkPersistBeforeSend(t, a)
	checkPersistBeforeSend(t, b)
}

func TestDeleteBothWays(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	initiate(t, w, a, "to-b")
	checkPair(t, a, b)
	acts, err := b.eng.Terminate(w.now, "to-a")
	if err != nil {
		t.Fatal(err)
	}
	w.deliver(b, b.apply(acts))
	if len(a.eng.IKESAs()) != 0 || len(a.installed) != 0 || len(a.store) != 0 || len(a.kids) != 0 {
		t.Fatal("peer's delete did not remove our state")
	}
	initiate(t, w, a, "to-b")
	checkPair(t, a, b)
	acts, _ = a.eng.Terminate(w.now, "to-b")
	w.deliver(a, a.apply(acts))
	if len(b.eng.IKESAs()) != 0 || len(b.installed) != 0 {
		t.Fatal("delete from the initiator did not remove the responder's state")
	}
}

// TestResume is the takeover in miniature: a new engine built only from
// the persisted records continues the SA: DPD and a rekey work, and the
// peer never renegotiates phase 1.
func TestResume(t *testing.T) {
	for _, role := range []string{"initiator", "responder"} {
		t.Run(role, func(t *testing.T) {
			a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
			initiate(t, w, a, "to-b")
			ike, _, _ := checkPair(t, a, b)
			victim, peer := a, b
			if role == "responder" {
				victim, peer = b, a
			}
			// Kill the victim: a new engine from its persisted records only.
			var ikes []*sa.IKESA
			var kids []*sa.ChildSA
			for _, r := range victim.store {
				ikes = append(ikes, r)
			}
			for _, c := range victim.kids {
				kids = append(kids, c)
			}
			fresh := newNode(t, victim.name, victim.addr, victim.eng.cfg.Connections...)
			acts, err := fresh.eng.Restore(w.now, ikes, kids, RestoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			fresh.apply(acts)
			for _, c := range kids {
				fresh.installed[c.In.SPI] = c
			}
			w.nodes[victim.addr] = fresh
			if role == "initiator" {
				a = fresh
			} else {
				b = fresh
			}
			// DPD from both sides, then a rekey from the restored node.
			w.advance(31 * time.Second)
			w.advance(31 * time.Second)
			if fresh.eng.Stats().DPDAcked == 0 || peer.eng.Stats().DPDAcked == 0 {
				t.Fatalf("DPD after restore failed: fresh %+v peer %+v", fresh.eng.Stats(), peer.eng.Stats())
			}
			acts, err = fresh.eng.RekeyChildSA(w.now, installedChildren(fresh)[0].In.SPI)
			if err != nil {
				t.Fatal(err)
			}
			w.deliver(fresh, fresh.apply(acts))
			w.advance(11 * time.Second)
			ike2, _, _ := checkPair(t, a, b)
			if ike2.Cookies != ike.Cookies {
				t.Fatal("phase 1 was renegotiated")
			}
			if peer.eng.Stats().Phase1Done != 1 {
				t.Fatalf("peer completed %d phase 1s, want 1", peer.eng.Stats().Phase1Done)
			}
		})
	}
}

func TestNATTraversalFloats(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	// B pretends to be behind a NAT (strongSwan's kernel-libipsec does the same).
	b.eng.conns["to-a"].ForceEncap = true
	initiate(t, w, a, "to-b")
	ike, x, y := checkPair(t, a, b)
	if !ike.NATRemote || ike.NATLocal || !ike.Floated || ike.Local.Port() != 4500 || ike.Remote.Port() != 4500 {
		t.Fatalf("initiator NAT state: %+v", ike)
	}
	if x.EncapLocalPort != 4500 || x.EncapRemotePort != 4500 || y.EncapLocalPort != 4500 {
		t.Fatalf("ESP not UDP-encapsulated: %d/%d", x.EncapLocalPort, x.EncapRemotePort)
	}
	ib := onlyIKE(t, b)
	// B only pretends: it knows it is not behind a NAT, but it floated.
	if ib.NATLocal || !ib.Floated || ib.Local.Port() != 4500 {
		t.Fatalf("responder NAT state: %+v", ib)
	}
}

func TestReauthentication(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	a.eng.conns["to-b"].IKELifetime = 2 * time.Hour
	a.eng.conns["to-b"].Children[0].RekeyTime = 10 * time.Hour
	a.eng.conns["to-b"].Children[0].LifeTime = 11 * time.Hour
	b.eng.conns["to-a"].Children[0].LifeTime = 11 * time.Hour
	initiate(t, w, a, "to-b")
	ike1, _, _ := checkPair(t, a, b)
	for i := 0; i < 120; i++ {
		w.advance(time.Minute)
	}
	ike2, _, _ := checkPair(t, a, b)
	if ike2.Cookies == ike1.Cookies {
		t.Fatal("IKE SA was not reauthenticated")
	}
	if len(a.store) != 1 || len(b.store) != 1 {
		t.Fatalf("old IKE SA not removed: %d / %d stored", len(a.store), len(b.store))
	}
	// The reauthenticating side counts it, and the pair moved by a Quick
	// Mode under the new SA counts as a rekey.
	if st := a.eng.Stats(); st.IKEReauths != 1 || st.ChildRekeys != 1 {
		t.Fatalf("reauthentications %d, rekeys %d, want 1 and 1", st.IKEReauths, st.ChildRekeys)
	}
}

func TestGarbageNeverPanics(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	initiate(t, w, a, "to-b")
	ike, _, _ := checkPair(t, a, b)
	h := isakmp.Header{ICookie: ike.Cookies.I, RCookie: ike.Cookies.R, Version: isakmp.Version1}
	for _, x := range []isakmp.ExchangeType{isakmp.ExchangeMain, isakmp.ExchangeQuick, isakmp.ExchangeInfo, isakmp.ExchangeAggressive} {
		for _, n := range []int{0, 1, 15, 16, 17, 64} {
			hh := h
			hh.Exchange = x
			hh.Flags = isakmp.FlagEncryption
			hh.MessageID = 77
			hh.NextPayload = isakmp.PayloadHash
			hh.Length = uint32(isakmp.HeaderLen + n)
			msg := hh.AppendTo(nil)
			msg = append(msg, bytes.Repeat([]byte{0x41}, n)...)
			b.eng.HandlePacket(w.now, Packet{Local: ike.Remote, Remote: ike.Local, Data: msg})
		}
	}
	if b.eng.Stats().Malformed == 0 {
		t.Fatal("garbage not counted as malformed")
	}
	checkPair(t, a, b)
}

// Reqids are reused once no pair holds them, so they stay in the small
// range a kernel data plane owns, and the indexes forget deleted SAs.
func TestReqidReuseAndIndexes(t *testing.T) {
	a, b, w := pairNodes(t, "aes128-sha256-ecp256", "aes128-sha256")
	for i := 0; i < 5; i++ {
		initiate(t, w, a, "to-b")
		_, x, y := checkPair(t, a, b)
		if x.Reqid != 1 || y.Reqid != 1 {
			t.Fatalf("round %d: reqids %d/%d, want 1 (reused)", i, x.Reqid, y.Reqid)
		}
		acts, err := a.eng.Terminate(w.now, "to-b")
		if err != nil {
			t.Fatal(err)
		}
		w.deliver(a, a.apply(acts))
		w.advance(time.Second)
	}
	for _, n := range []*node{a, b} {
		if len(n.eng.ikes)+len(n.eng.children)+len(n.eng.idx.halfByI)+len(n.eng.idx.ikesByPeer)+
			len(n.eng.idx.kidsByPeer)+len(n.eng.idx.kidsBySel)+len(n.eng.idx.reqidOf)+len(n.eng.idx.reqidRefs) != 0 {
			t.Fatalf("%s: state left after deletes: %d ikes, %d children, index %+v", n.name, len(n.eng.ikes), len(n.eng.children), n.eng.idx)
		}
	}
}

// The responder's Main Mode message 6 is lost and the responder dies right
// after committing the SA: the new active, built from the records, answers
// the initiator's retransmitted message 5 from the replicated cache, and
// phase 1 completes with the same cookies.
func TestResumeAnswersLostMessage6(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	lost := false
	w.drop = func(p Packet) bool {
		h, err := isakmp.ParseHeader(p.Data)
		if err == nil && !lost && p.Local.Addr() == addrB && h.Exchange == isakmp.ExchangeMain && h.Flags&isakmp.FlagEncryption != 0 {
			lost = true // message 6
			return true
		}
		return false
	}
	initiate(t, w, a, "to-b")
	if !lost || len(b.store) != 1 {
		t.Fatalf("setup: message 6 lost=%v, responder persisted %d IKE SAs", lost, len(b.store))
	}
	var ikes []*sa.IKESA
	for _, r := range b.store {
		ikes = append(ikes, r)
	}
	fresh := newNode(t, "b", addrB, b.eng.cfg.Connections...)
	acts, err := fresh.eng.Restore(w.now, ikes, nil, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fresh.apply(acts)
	w.nodes[addrB] = fresh
	w.advance(5 * time.Second) // the initiator retransmits message 5
	w.advance(time.Minute)     // and its Quick Mode completes
	ike, _, _ := checkPair(t, a, fresh)
	if ike.Cookies != ikes[0].Cookies {
		t.Fatal("phase 1 was renegotiated")
	}
	if fresh.eng.Stats().AnsweredFromCache == 0 {
		t.Fatal("the retransmitted message 5 was not answered from the replicated cache")
	}
	for _, x := range onlyIKE(t, fresh).Exchanges {
		if x.MessageID == 0 {
			t.Fatal("the message 6 cache outlived the peer's first Quick Mode")
		}
	}
}

// A responder whose initiator never rekeys replaces the pair itself before
// it expires, under the same IKE SA, with no gap.
func TestResponderRekeysBeforeExpiry(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	a.eng.conns["to-b"].Children[0].RekeyTime = 10 * time.Hour // the initiator does not rekey in time
	initiate(t, w, a, "to-b")
	ike1, x1, _ := checkPair(t, a, b)
	// Lifetime 66 min (both sides): the responder rekeys at 95%, about 62.7 min.
	for i := 0; i < 64; i++ {
		w.advance(time.Minute)
	}
	w.advance(11 * time.Second)
	ike2, x2, _ := checkPair(t, a, b)
	if x2.In.SPI == x1.In.SPI || ike2.Cookies != ike1.Cookies {
		t.Fatalf("pair not rekeyed by the responder under the same IKE SA (SPI %08x -> %08x)", x1.In.SPI, x2.In.SPI)
	}
	if a.eng.Stats().Phase2Done < 2 {
		t.Fatalf("initiator saw %d quick modes", a.eng.Stats().Phase2Done)
	}
}

// A child with two local and two remote selectors is negotiated as four
// Quick Modes, one pair per combination (IKEv1 carries one ID pair per
// exchange), and each pair is rekeyed on its own with its selectors.
func TestMultipleSelectorsOnePairEach(t *testing.T) {
	ts := func(ps ...string) []sa.TrafficSelector {
		var out []sa.TrafficSelector
		for _, p := range ps {
			out = append(out, sa.TrafficSelector{Prefix: netip.MustParsePrefix(p)})
		}
		return out
	}
	ca := conn(t, "to-b", addrA, addrB, "secret-psk-1", "aes256-sha256-modp2048", "aes256-sha256", "10.1.0.0/16", "10.2.0.0/16")
	ca.Children[0].LocalTS = ts("10.1.0.0/16", "10.3.0.0/24")
	ca.Children[0].RemoteTS = ts("10.2.0.0/16", "10.4.0.0/24")
	cb := conn(t, "to-a", addrB, addrA, "secret-psk-1", "aes256-sha256-modp2048", "aes256-sha256", "10.2.0.0/16", "10.1.0.0/16")
	cb.Children[0].LocalTS = ts("10.2.0.0/16", "10.4.0.0/24")
	cb.Children[0].RemoteTS = ts("10.1.0.0/16", "10.3.0.0/24")
	a, b := newNode(t, "a", addrA, ca), newNode(t, "b", addrB, cb)
	w := newWorld(t, a, b)
	initiate(t, w, a, "to-b")
	check := func(when string) map[uint32]bool {
		t.Helper()
		got := map[string]uint32{}
		spis := map[uint32]bool{}
		for _, c := range installedChildren(a) {
			if len(c.LocalTS) != 1 || len(c.RemoteTS) != 1 {
				t.Fatalf("%s: pair with %d/%d selectors", when, len(c.LocalTS), len(c.RemoteTS))
			}
			got[c.LocalTS[0].Prefix.String()+"="+c.RemoteTS[0].Prefix.String()] = c.In.SPI
			spis[c.In.SPI] = true
		}
		for _, want := range []string{"10.1.0.0/16=10.2.0.0/16", "10.1.0.0/16=10.4.0.0/24", "10.3.0.0/24=10.2.0.0/16", "10.3.0.0/24=10.4.0.0/24"} {
			if _, ok := got[want]; !ok {
				t.Fatalf("%s: no pair for %s; installed %v", when, want, got)
			}
		}
		if len(got) != 4 || len(installedChildren(b)) != 4 {
			t.Fatalf("%s: %d pairs on the initiator, %d on the responder, want 4 each", when, len(got), len(installedChildren(b)))
		}
		for _, c := range installedChildren(b) {
			if !spis[c.Out.SPI] {
				t.Fatalf("%s: responder pair %08x has no initiator counterpart", when, c.Out.SPI)
			}
		}
		return spis
	}
	before := check("established")
	if n := a.eng.Stats().Phase2Done; n != 4 {
		t.Fatalf("%d quick modes, want 4", n)
	}
	// Rekey (1 h) and let the old pairs go.
	for i := 0; i < 62; i++ {
		w.advance(time.Minute)
	}
	after := check("rekeyed")
	for spi := range after {
		if before[spi] {
			t.Fatalf("pair %08x was not rekeyed", spi)
		}
	}
	if ra, rb := a.eng.Stats().ChildRekeys, b.eng.Stats().ChildRekeys; ra != 4 || rb != 4 {
		t.Fatalf("rekeys counted: initiator %d, responder %d, want 4 each", ra, rb)
	}
}

// Pairs that expire together are deleted with one INFORMATIONAL carrying
// all their SPIs, sent deleteCoalesce later, not one message each (a
// burst of them makes strongSwan lose its own Quick Mode in flight).
func TestExpiringPairsShareOneDelete(t *testing.T) {
	ts := func(ps ...string) []sa.TrafficSelector {
		var out []sa.TrafficSelector
		for _, p := range ps {
			out = append(out, sa.TrafficSelector{Prefix: netip.MustParsePrefix(p)})
		}
		return out
	}
	ca := conn(t, "to-b", addrA, addrB, "secret-psk-1", "aes256-sha256-modp2048", "aes256-sha256", "10.1.0.0/16", "10.2.0.0/16")
	ca.Children[0].LocalTS, ca.Children[0].RemoteTS = ts("10.1.0.0/16", "10.3.0.0/24"), ts("10.2.0.0/16", "10.4.0.0/24")
	cb := conn(t, "to-a", addrB, addrA, "secret-psk-1", "aes256-sha256-modp2048", "aes256-sha256", "10.2.0.0/16", "10.1.0.0/16")
	cb.Children[0].LocalTS, cb.Children[0].RemoteTS = ts("10.2.0.0/16", "10.4.0.0/24"), ts("10.1.0.0/16", "10.3.0.0/24")
	a, b := newNode(t, "a", addrA, ca), newNode(t, "b", addrB, cb)
	w := newWorld(t, a, b)
	initiate(t, w, a, "to-b")
	kids := installedChildren(a)
	if len(kids) != 4 || len(installedChildren(b)) != 4 {
		t.Fatalf("%d and %d pairs, want 4 each", len(kids), len(installedChildren(b)))
	}
	sends := func(acts []Action) (n int) {
		for _, x := range acts {
			if _, ok := x.(Send); ok {
				n++
			}
		}
		return n
	}
	var flush *Timer
	for _, c := range kids {
		acts := a.eng.HandleTimer(w.now, Timer{Kind: TimerChildExpire, SPI: c.In.SPI})
		if n := sends(acts); n != 0 {
			t.Fatalf("expiry of %08x sent %d messages at once", c.In.SPI, n)
		}
		for _, x := range acts {
			if ar, ok := x.(ArmTimer); ok && ar.Timer.Kind == TimerDeleteFlush {
				if !ar.At.Equal(w.now.Add(deleteCoalesce)) {
					t.Fatalf("flush armed for %v, want now + %v", ar.At.Sub(w.now), deleteCoalesce)
				}
				tm := ar.Timer
				flush = &tm
			}
		}
		a.apply(acts)
	}
	if flush == nil {
		t.Fatal("no delete flush armed")
	}
	acts := a.eng.HandleTimer(w.now.Add(deleteCoalesce), *flush)
	if n := sends(acts); n != 1 {
		t.Fatalf("flush sent %d messages, want one for all four pairs", n)
	}
	w.deliver(a, a.apply(acts))
	if n := len(installedChildren(b)); n != 0 {
		t.Fatalf("the peer still holds %d pairs after the DELETE", n)
	}
	if d := b.eng.Stats().Deletes; d != 4 {
		t.Fatalf("peer counted %d deletes, want 4", d)
	}
}
