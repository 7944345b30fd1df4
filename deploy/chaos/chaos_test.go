package chaos

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/lab"
	"ikegw/ike/config"
)

// holdRange is each kind's documented hold, inclusive.
var holdRange = map[Kind][2]time.Duration{
	KillDaemon: {0, 0}, KillNode: {time.Second, 5 * time.Second}, Partition: {time.Second, 10 * time.Second},
	Loss: {5 * time.Second, 15 * time.Second}, Stop: {time.Second, 3 * time.Second},
}

func TestPlanIsAFunctionOfTheSeed(t *testing.T) {
	a := Plan(42, 50, AllKinds, true)
	b := Plan(42, 50, AllKinds, true)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different plans:\n%v\n%v", a, b)
	}
	if c := Plan(43, 50, AllKinds, true); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same plan %v", a)
	}
	seen := map[Kind]bool{}
	for i, f := range a {
		seen[f.Kind] = true
		if f.Lead < 500*time.Millisecond || f.Lead > 2*time.Second {
			t.Errorf("fault %d %v: lead %v outside 0.5..2 s", i, f, f.Lead)
		}
		r := holdRange[f.Kind]
		lo, hi := r[0], r[1]
		if f.Hold < lo || f.Hold > hi {
			t.Errorf("fault %d %v: hold %v outside %v..%v", i, f, f.Hold, lo, hi)
		}
		switch f.Kind {
		case Stop:
			if f.Target != TargetActive {
				t.Errorf("fault %d %v: SIGSTOP hits the active", i, f)
			}
		case Loss:
			if f.Target != TargetCluster {
				t.Errorf("fault %d %v: loss is on the cluster segment", i, f)
			}
		case KillDaemon:
			if f.Target != TargetActive && f.Target != TargetStandby {
				t.Errorf("fault %d %v: a daemon death hits a gateway", i, f)
			}
		}
	}
	if len(seen) != len(AllKinds) {
		t.Errorf("50 rounds drew only %v", seen)
	}
	for _, f := range Plan(1, 100, []Kind{KillNode, Partition}, false) {
		if f.Kind != KillNode && f.Kind != Partition {
			t.Fatalf("kind %s drawn, not asked for", f.Kind)
		}
		if f.Target == TargetWitness {
			t.Fatalf("%v: a witness target without a witness", f)
		}
	}
}

func TestParseKinds(t *testing.T) {
	got, err := ParseKinds("all")
	if err != nil || !slices.Equal(got, AllKinds) {
		t.Fatalf("all: %v, %v", got, err)
	}
	got, err = ParseKinds("loss, stop,loss")
	if err != nil || !slices.Equal(got, []Kind{Loss, Stop}) {
		t.Fatalf("loss, stop,loss: %v, %v", got, err)
	}
	for _, bad := range []string{"", "sigkill", "loss,,stop"} {
		if _, err := ParseKinds(bad); !errors.Is(err, ErrOptions) {
			t.Errorf("%q: err %v, want ErrOptions", bad, err)
		}
	}
	if _, err := ParseKinds("sigkill"); err == nil || !strings.Contains(err.Error(), `"sigkill"`) {
		t.Errorf("the error does not name the bad kind: %v", err)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "Bin"},
		{Options{Bin: "x", Peers: 21}, "Peers 21"},
		{Options{Bin: "x", Tunnels: 1}, "Tunnels 1"},
		{Options{Bin: "x", Tunnels: 151}, "Tunnels 151"},
		{Options{Bin: "x", NoWitness: true}, "without a witness"},
		{Options{Bin: "x", Kinds: []Kind{"boom"}}, `"boom"`},
		{Options{Bin: "x", Rounds: -1}, "Rounds -1"},
		{Options{Bin: "x", PeerExchanges: -1}, "PeerExchanges -1"},
	} {
		err := tc.o.setDefaults()
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want ErrOptions naming %q", tc.o, err, tc.want)
		}
	}
	o := Options{Bin: "x"}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Rounds != 20 || o.Peers != 4 || o.Tunnels != 50 || o.Seed == 0 || len(o.Kinds) != len(AllKinds) {
		t.Errorf("defaults: %+v", o)
	}
}

var tun = Tunnel{Peer: "cp1", Conn: "gw", Child: "t02", ICookie: "aa01", RCookie: "bb02", SPIIn: "c0000001", SPIOut: "c0000002"}

func view(ikes [][2]string, kids ...api.ChildSA) api.SAs {
	var v api.SAs
	for _, c := range ikes {
		v.IKE = append(v.IKE, api.IKESA{ICookie: c[0], RCookie: c[1]})
	}
	v.Children = kids
	return v
}

func TestKnows(t *testing.T) {
	ike := [][2]string{{"aa01", "bb02"}}
	good := api.ChildSA{ICookie: "aa01", RCookie: "bb02", SPIIn: "c0000002", SPIOut: "c0000001"}
	for _, tc := range []struct {
		name        string
		v           api.SAs
		ike, child  bool
		wantMissing string
	}{
		{"same", view(ike, good), true, true, ""},
		{"upper case hex", view([][2]string{{"AA01", "BB02"}}, api.ChildSA{ICookie: "AA01", RCookie: "BB02", SPIIn: "C0000002", SPIOut: "C0000001"}), true, true, ""},
		{"other cookies", view([][2]string{{"aa01", "bb03"}}, good), false, true, "no IKE SA"},
		{"SPIs not crossed", view(ike, api.ChildSA{ICookie: "aa01", RCookie: "bb02", SPIIn: "c0000001", SPIOut: "c0000002"}), true, false, "no child"},
		{"new inbound SPI", view(ike, api.ChildSA{ICookie: "aa01", RCookie: "bb02", SPIIn: "c0000009", SPIOut: "c0000001"}), true, false, "no child"},
		{"child of another IKE SA", view(ike, api.ChildSA{ICookie: "ff", RCookie: "bb02", SPIIn: "c0000002", SPIOut: "c0000001"}), true, false, "no child"},
		{"empty", api.SAs{}, false, false, "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ike, child := Knows(tc.v, tun)
			if ike != tc.ike || child != tc.child {
				t.Fatalf("Knows = %v, %v; want %v, %v", ike, child, tc.ike, tc.child)
			}
			miss := Unknown(map[string]api.SAs{"gw2": tc.v}, []Tunnel{tun})
			if tc.wantMissing == "" {
				if len(miss) != 0 {
					t.Fatalf("Unknown = %v, want none", miss)
				}
				return
			}
			if len(miss) != 1 || !strings.HasPrefix(miss[0], "gw2: cp1 gw/t02") || !strings.Contains(miss[0], tc.wantMissing) {
				t.Fatalf("Unknown = %v, want one line for gw2 saying %q", miss, tc.wantMissing)
			}
		})
	}
}

func TestPeerTunnelsAndPhase1(t *testing.T) {
	sas := []lab.IKESA{
		{Name: "gw", UniqueID: 3, State: "ESTABLISHED", InitiatorSPI: "aa01", ResponderSPI: "bb02", Children: []lab.ChildSA{
			{Name: "t01", State: "INSTALLED", SPIIn: "c1", SPIOut: "c2"},
			{Name: "t02", State: "DELETING", SPIIn: "c3", SPIOut: "c4"},
		}},
		{Name: "other", UniqueID: 4, State: "ESTABLISHED", Children: []lab.ChildSA{{Name: "x", State: "INSTALLED"}}},
	}
	got := PeerTunnels("cp1", "gw", sas)
	want := []Tunnel{{Peer: "cp1", Conn: "gw", Child: "t01", ICookie: "aa01", RCookie: "bb02", SPIIn: "c1", SPIOut: "c2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PeerTunnels = %+v, want %+v", got, want)
	}
	base := Phase1{UniqueID: 3, ICookie: "aa01", RCookie: "bb02"}
	if d := CheckPhase1(base, "gw", sas); d != "" {
		t.Fatalf("same IKE SA reported: %s", d)
	}
	renegotiated := []lab.IKESA{{Name: "gw", UniqueID: 5, State: "ESTABLISHED", InitiatorSPI: "cc03", ResponderSPI: "dd04"}}
	if d := CheckPhase1(base, "gw", renegotiated); !strings.Contains(d, "#3 aa01_i bb02_r") || !strings.Contains(d, "#5 cc03_i dd04_r ESTABLISHED") {
		t.Fatalf("renegotiation: %q", d)
	}
	second := append(slices.Clone(sas), lab.IKESA{Name: "gw", UniqueID: 6, State: "CONNECTING", InitiatorSPI: "ee05", ResponderSPI: "0000000000000000"})
	if d := CheckPhase1(base, "gw", second); !strings.Contains(d, "#6 ee05_i") || !strings.Contains(d, "CONNECTING") {
		t.Fatalf("a second IKE SA: %q", d)
	}
	if d := CheckPhase1(base, "gw", nil); !strings.Contains(d, "now: none") {
		t.Fatalf("no IKE SA: %q", d)
	}
}

func TestSeqMonitor(t *testing.T) {
	m := NewSeqMonitor()
	views := func(act, rep uint64) map[string]api.SAs {
		return map[string]api.SAs{
			"gw1": {Children: []api.ChildSA{{SPIOut: "C0000001", OutSeq: act}}},
			"gw2": {Children: []api.ChildSA{{SPIOut: "c0000001", OutSeq: rep}}},
		}
	}
	if bad := m.Observe(1, "gw1", views(1000, 900)); len(bad) != 0 {
		t.Fatalf("first round: %v", bad)
	}
	// gw2 takes over: installs last synced + margin, above everything.
	if bad := m.Observe(2, "gw2", views(950, 1500)); len(bad) != 0 {
		t.Fatalf("takeover with a margin: %v", bad)
	}
	// The new active's counter below the old active's: went back.
	bad := m.Observe(3, "gw2", views(1600, 1400))
	if len(bad) != 1 || !strings.Contains(bad[0], "gw2 (active)") || !strings.Contains(bad[0], "1400 < 1500") {
		t.Fatalf("active went back: %v", bad)
	}
	// A replicated counter below an earlier replicated one.
	bad = m.Observe(4, "gw2", views(1500, 1700))
	if len(bad) != 1 || !strings.Contains(bad[0], "gw1 (replicated)") || !strings.Contains(bad[0], "1500 < 1600") {
		t.Fatalf("replicated went back: %v", bad)
	}
}

func TestSeqFailureLines(t *testing.T) {
	log := "03:34:40 06[ESP] " + SeqFailure + ":\n    remote seq 12, local 40\n03:34:40 07[ESP] " + SeqFailure + ":\n03:34:41 x\n"
	got := SeqFailureLines(log)
	want := []string{"03:34:40 06[ESP] " + SeqFailure + ": remote seq 12, local 40", "03:34:40 07[ESP] " + SeqFailure + ":"}
	if !slices.Equal(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := SeqFailureLines("nothing here\n"); len(got) != 0 {
		t.Fatalf("%q", got)
	}
}

// The gateways' connection file decodes, names every peer's connection
// and accepts each tunnel's selectors.
func TestGatewayConfig(t *testing.T) {
	dir := t.TempDir()
	body := gatewayConfig(dir, 3, 10*time.Second)
	if err := writePSK(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(writeFile(t, dir, "c.yaml", body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	var names []string
	for _, c := range cfg.Connections {
		names = append(names, c.Name)
	}
	if want := []string{"peer", "chaos-p1", "chaos-p2", "chaos-p3"}; !slices.Equal(names, want) {
		t.Fatalf("connections %v, want %v", names, want)
	}
	c := cfg.Connection("chaos-p2")
	if c.Remote != peerOutside(2).Addr() || c.DPDDelay != 10*time.Second || len(c.Children) != 1 {
		t.Fatalf("chaos-p2: %s", c.Redacted())
	}
	ch := c.Children[0]
	for i := 1; i <= 150; i++ {
		if !ch.LocalTS[0].Prefix.Contains(insideHost(i)) {
			t.Fatalf("tunnel %d: %s is outside the gateway's local_ts %v", i, insideHost(i), ch.LocalTS)
		}
	}
	if ch.RemoteTS[0].Prefix != peerNet(2) {
		t.Fatalf("remote_ts %v, want %v", ch.RemoteTS, peerNet(2))
	}
	if strings.Contains(string(body), "secret") {
		t.Fatal("the file carries a secret")
	}
}

func TestWriteTable(t *testing.T) {
	r := &Result{Seed: 9, Samples: 100, Rounds: []RoundResult{
		{Round: 0, Tunnels: 21},
		{Round: 1, Fault: Fault{Kind: Partition, Target: TargetActive, Hold: 2500 * time.Millisecond}, Node: "gw1", Tunnels: 20, ChurnOK: 7, ChurnErr: 1, Violations: 1},
	}, Violations: []Violation{{Round: 1, Check: "vip", What: "two gateways held a VIP at once", Evidence: "192.0.2.10 held by gw1 and gw2"}}}
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"seed 9", "(setup)", "partition active 2.5s", "gw1", "total", "1 VIOLATIONS", "round 1: vip: two gateways", "evidence: 192.0.2.10 held by gw1 and gw2"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if r.OK() {
		t.Error("OK with a violation")
	}
}

func TestPeerSwanConfig(t *testing.T) {
	sc := peerSwanConfig(3, 50, lab.Secret("s3cr3t-psk-value"), 10*time.Second, 16)
	conf, err := sc.StrongswanConf("/x/charon.log")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(conf, "max_ikev1_exchanges = 16") {
		t.Errorf("strongswan.conf lacks max_ikev1_exchanges = 16:\n%s", conf)
	}
	sw, err := sc.SwanctlConf()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"192.0.2.123", "t01", "t50", "10.23.0.0/24", "10.1.0.150/32"} {
		if !strings.Contains(sw, want) {
			t.Errorf("swanctl.conf lacks %q", want)
		}
	}
	if d := peerSwanConfig(1, 2, "x", time.Second, 0); d.Charon != nil {
		t.Errorf("0 exchanges set charon options %v", d.Charon)
	}
}

func TestStale(t *testing.T) {
	v := api.SAs{Children: []api.ChildSA{
		{State: "INSTALLED", SPIIn: "C0000002", SPIOut: "c0000001"}, // the peer's tun
		{State: "INSTALLED", SPIIn: "c0000009", SPIOut: "c0000008"}, // nobody's
		{State: "REKEYED", SPIIn: "c0000007", SPIOut: "c0000006"},   // waiting for its delete
	}}
	if n := Stale(v, []Tunnel{tun}); n != 1 {
		t.Fatalf("Stale = %d, want 1", n)
	}
	if n := Stale(v, nil); n != 2 {
		t.Fatalf("Stale without tunnels = %d, want 2", n)
	}
}
