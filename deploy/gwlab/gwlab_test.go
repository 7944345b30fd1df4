package gwlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ikegw/deploy/lab"
)

// ikegwdBin is the ikegwd binary every test of the package uses.
var ikegwdBin string

// TestMain builds ikegwd from this tree, or uses the binary named by
// $IKEGW_LAB_IKEGWD (e.g. one built from another checkout).
func TestMain(m *testing.M) {
	if bin := os.Getenv("IKEGW_LAB_IKEGWD"); bin != "" {
		ikegwdBin = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "gwlab-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ikegwdBin = filepath.Join(dir, "ikegwd")
	if out, err := exec.Command("go", "build", "-o", ikegwdBin, "ikegw/cmd/ikegwd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ikegwd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// clusteredIkegwd skips when the ikegwd binary predates the clustered mode
// (its config has no cluster section): nothing of the lab can run then.
func clusteredIkegwd(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "probe.yaml")
	cfg := "node: {name: probe, state_dir: " + dir + "}\ncluster: {}\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(ikegwdBin, "check-config", p).CombinedOutput()
	if strings.Contains(string(out), "field cluster not found") {
		t.Skip("gwlab: this ikegwd has no clustered mode (config has no cluster section): " + strings.TrimSpace(string(out)))
	}
}

// Every generated config passes `ikegwd check-config`, for both cluster
// shapes, and says what the lab relies on.
func TestConfigsPassCheckConfig(t *testing.T) {
	clusteredIkegwd(t)
	for _, shape := range []struct {
		gateways int
		witness  bool
	}{{2, true}, {3, false}} {
		t.Run(fmt.Sprintf("%dgw-witness=%v", shape.gateways, shape.witness), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "psk"), []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
				t.Fatal(err)
			}
			members := plan(dir, shape.gateways, shape.witness)
			if want := 3; len(members) != want {
				t.Fatalf("%d members, want %d", len(members), want)
			}
			p := configParams{Dir: dir, Dataplane: "userspace", DPDDelay: 10 * time.Second, LogLevel: "info", Members: members,
				Heartbeat: 200 * time.Millisecond, Election: 200 * time.Millisecond, Lease: 100 * time.Millisecond}
			for _, m := range members {
				cfg := nodeConfig(p, m)
				if err := os.WriteFile(m.Config, []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := CheckConfig(context.Background(), ikegwdBin, m.Config); err != nil {
					t.Fatalf("%v\nconfig:\n%s", err, cfg)
				}
				for _, want := range []string{"bootstrap_expect: 3", fmt.Sprintf("raft_bind: %s:%d", m.Cluster, RaftPort), "heartbeat_timeout: 200ms", "leader_lease: 100ms"} {
					if !strings.Contains(cfg, want) {
						t.Errorf("%s: config lacks %q:\n%s", m.Name, want, cfg)
					}
				}
				_, joinLine, _ := strings.Cut(cfg, "join: ")
				joinLine, _, _ = strings.Cut(joinLine, "\n")
				for _, o := range members {
					join := fmt.Sprintf("%s:%d", o.Cluster, GossipPort)
					if got := strings.Contains(joinLine, join); got != (o.Name != m.Name) {
						t.Errorf("%s: joins %s: %v, want %v", m.Name, join, got, o.Name != m.Name)
					}
				}
				if got := strings.Contains(cfg, "vips:"); got == m.Witness {
					t.Errorf("%s (witness %v): has VIPs %v", m.Name, m.Witness, got)
				}
			}
		})
	}
}

func TestPlanAddresses(t *testing.T) {
	m := plan("/x", 3, false)
	want := []struct{ name, cl, out, in string }{
		{"gw1", "10.99.0.1", "192.0.2.11/24", "10.1.0.11/24"},
		{"gw2", "10.99.0.2", "192.0.2.12/24", "10.1.0.12/24"},
		{"gw3", "10.99.0.3", "192.0.2.13/24", "10.1.0.13/24"},
	}
	for i, w := range want {
		if m[i].Name != w.name || m[i].Cluster.String() != w.cl || m[i].Outside.String() != w.out || m[i].Inside.String() != w.in {
			t.Errorf("member %d: %+v, want %+v", i, m[i], w)
		}
		if m[i].Socket != "/x/"+w.name+"/admin.sock" {
			t.Errorf("member %d socket %s", i, m[i].Socket)
		}
	}
	w := plan("/x", 2, true)
	if len(w) != 3 || !w[2].Witness || w[2].Name != "witness" || w[2].Cluster.String() != "10.99.0.3" || w[2].Outside.IsValid() {
		t.Errorf("2 gateways + witness: %+v", w)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Gateways: 2, Bin: ikegwdBin}, "two voters"},
		{Options{Gateways: 1, Witness: true, Bin: ikegwdBin}, "Gateways 1"},
		{Options{Gateways: 9, Bin: ikegwdBin}, "Gateways 9"},
		{Options{Witness: true}, "Bin"},
		{Options{Witness: true, Bin: "/nonexistent/ikegwd"}, "not an executable"},
		{Options{Witness: true, Bin: ikegwdBin, Dataplane: "dpdk"}, `Dataplane "dpdk"`},
		{Options{Witness: true, Bin: ikegwdBin, LogLevel: "loud"}, `LogLevel "loud"`},
		{Options{Witness: true, Bin: ikegwdBin, DPDDelay: time.Millisecond}, "DPDDelay"},
		{Options{Witness: true, Bin: ikegwdBin, LeaderLease: time.Millisecond}, "Raft timing 1ms"},
		{Options{Witness: true, Bin: ikegwdBin, CounterSync: 5 * time.Millisecond}, "CounterSync 5ms"},
	} {
		_, err := Build(context.Background(), tc.o)
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%+v) = %v, want ErrOptions mentioning %q", tc.o, err, tc.want)
		}
	}
}

// rec builds a ping record: one request every 10 ms from t0, answered
// after rtt unless listed in lost; late lists requests answered at a given
// time instead.
func rec(t0 time.Time, n int, rtt time.Duration, lost map[int]bool, late map[int]time.Time) lab.PingRecord {
	r := lab.PingRecord{Start: t0, Sent: n}
	for i := range n {
		sent := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		if lost[i] {
			continue
		}
		got := sent.Add(rtt)
		if at, ok := late[i]; ok {
			got = at
		}
		r.Replies = append(r.Replies, lab.Reply{Seq: i, Sent: sent, Received: got})
	}
	return r
}

func TestMeasureOutage(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	lostRange := func(a, b int) map[int]bool {
		m := map[int]bool{}
		for i := a; i <= b; i++ {
			m[i] = true
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		r       lab.PingRecord
		at, end time.Time
		want    Outage
	}{
		{
			name: "no loss", r: rec(t0, 200, ms(1), nil, nil), at: t0.Add(ms(500)), end: t0.Add(ms(1900)),
			want: Outage{Gap: ms(10), Lost: 0, Resumed: true},
		},
		{
			// Requests 50..79 lost: last reply before is #49 at 491 ms,
			// next #80 at 801 ms.
			name: "30 lost", r: rec(t0, 200, ms(1), lostRange(50, 79), nil), at: t0.Add(ms(495)), end: t0.Add(ms(1900)),
			want: Outage{Gap: ms(310), Lost: 30, Resumed: true},
		},
		{
			// #49 was sent before the failure (490 ms) and answered in
			// flight at 700 ms: it does not end the outage, and is not lost.
			name: "in flight", r: rec(t0, 200, ms(1), lostRange(50, 79), map[int]time.Time{49: t0.Add(ms(700))}),
			at: t0.Add(ms(495)), end: t0.Add(ms(1900)),
			want: Outage{Gap: ms(801 - 481), Lost: 30, Resumed: true},
		},
		{
			name: "never resumed", r: rec(t0, 200, ms(1), lostRange(50, 199), nil), at: t0.Add(ms(495)), end: t0.Add(ms(1995)),
			want: Outage{Gap: ms(1995 - 491), Lost: 150, Resumed: false},
		},
		{
			// A second, longer dark spell after the first resumption
			// counts: it is the largest gap around the failure.
			name: "second gap", r: rec(t0, 200, ms(1), func() map[int]bool { m := lostRange(50, 59); maps(m, lostRange(100, 149)); return m }(), nil),
			at: t0.Add(ms(495)), end: t0.Add(ms(1995)),
			want: Outage{Gap: ms(1501 - 991), Lost: 60, Resumed: true},
		},
		{
			// The pinger itself stalled: requests 50.. went out 300 ms
			// late (all answered). The reply gap is the stall; SendGap
			// says so.
			name: "pinger stalled", r: func() lab.PingRecord {
				r := lab.PingRecord{Start: t0, Sent: 100}
				for i := range 100 {
					sent := t0.Add(time.Duration(i) * 10 * time.Millisecond)
					if i >= 50 {
						sent = sent.Add(ms(300))
					}
					r.SentTimes = append(r.SentTimes, sent)
					r.Replies = append(r.Replies, lab.Reply{Seq: i, Sent: sent, Received: sent.Add(ms(1))})
				}
				return r
			}(),
			at: t0.Add(ms(495)), end: t0.Add(ms(1500)),
			want: Outage{Gap: ms(310), Lost: 0, Resumed: true, SendGap: ms(310)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MeasureOutage(tc.r, tc.at, tc.end); got != tc.want {
				t.Errorf("MeasureOutage = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func maps(dst, src map[int]bool) {
	for k, v := range src {
		dst[k] = v
	}
}

func TestReportString(t *testing.T) {
	r := Report{Kind: NodeDeath, Killed: "gw1", NewActive: "gw2", Outage: Outage{Gap: 412 * time.Millisecond, Lost: 38, Resumed: true},
		PeerSAUnchanged: true, SPIsUnchanged: false}
	s := r.String()
	for _, want := range []string{"(node-death) of gw1 -> gw2", "outage:            412 ms", "lost pings:        38", "peer IKE SA same:  yes", "child SPIs same:   no"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if r.OK() {
		t.Error("a report with changed SPIs is OK")
	}
	r.SPIsUnchanged = true
	if !r.OK() {
		t.Error("a seamless report is not OK")
	}
}
