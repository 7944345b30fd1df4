package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
)

func TestParseAddrList(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
		err   string
	}{
		{in: "10.0.0.1", limit: 5, want: "10.0.0.1"},
		{in: "10.0.0.254-10.0.1.1", limit: 10, want: "10.0.0.254 10.0.0.255 10.0.1.0 10.0.1.1"},
		{in: "10.0.0.0/30,10.1.0.1", limit: 10, want: "10.0.0.0 10.0.0.1 10.0.0.2 10.0.0.3 10.1.0.1"},
		{in: "10.0.0.0/16", limit: 3, want: "10.0.0.0 10.0.0.1 10.0.0.2"},
		{in: "fd00::1-fd00::3", limit: 10, want: "fd00::1 fd00::2 fd00::3"},
		{in: "10.0.0.5-10.0.0.1", limit: 10, err: "end before start"},
		{in: "10.0.0.1-fd00::1", limit: 10, err: "mixed address families"},
		{in: "10.0.0.1,,10.0.0.2", limit: 10, err: "empty item"},
		{in: "10.0.0.300", limit: 10, err: "address \"10.0.0.300\""},
		{in: "10.0.0.0/33", limit: 10, err: "prefix"},
	} {
		got, err := ParseAddrList(tc.in, tc.limit)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAddrList(%q) error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAddrList(%q): %v", tc.in, err)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if strings.Join(s, " ") != tc.want {
			t.Errorf("ParseAddrList(%q) = %v, want %s", tc.in, s, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := percentile(d, q); got != want {
			t.Errorf("percentile(%v) = %v, want %v", q, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "psk")
	if err := os.WriteFile(psk, []byte("secret-psk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, format, _, err := parseFlags([]string{"-target", "10.77.0.1", "-local", "10.78.0.1-10.78.0.9", "-tunnels", "5", "-psk-file", psk, "-o", "json"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if format != "json" || string(o.PSK) != "secret-psk" || len(o.Local) != 5 || o.Target != netip.MustParseAddr("10.77.0.1") {
		t.Errorf("parsed %q %q %v %v", format, o.PSK, o.Local, o.Target)
	}
	for _, args := range [][]string{
		{"-local", "10.0.0.1", "-psk-file", psk},                                   // no target
		{"-target", "10.0.0.1", "-psk-file", psk},                                  // no local
		{"-target", "10.0.0.1", "-local", "10.0.0.2"},                              // no psk
		{"-target", "x", "-local", "10.0.0.2", "-psk-file", psk},                   // bad target
		{"-target", "10.0.0.1", "-local", "10.0.0.2", "-psk-file", psk, "-o", "x"}, // bad format
		{"-target", "10.0.0.1", "-local", "10.0.0.2", "-psk-file", psk, "-port", "70000"},
	} {
		if _, _, _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	// Too few addresses for the tunnels is refused by Run before any socket.
	o.Tunnels = 10
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "own source address") {
		t.Errorf("Run with 5 addresses for 10 tunnels: %v", err)
	}
}

func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// installCounter is the responder's persistence and data plane.
type installCounter struct{ n chan *sa.ChildSA }

func (c installCounter) Persist(context.Context, ikev1.Persist) error { return nil }
func (c installCounter) InstallChild(_ context.Context, s *sa.ChildSA) error {
	c.n <- s
	return nil
}
func (c installCounter) DeleteChild(context.Context, *sa.ChildSA) error           { return nil }
func (c installCounter) Counters(context.Context) (map[uint32]sa.Counters, error) { return nil, nil }

// TestRunLoopback sets up 20 tunnels from 127.0.0.2..21 against an ikegw
// responder runtime on 127.0.0.1 (unprivileged ports), through the real
// runtime and sockets, and checks the result and the JSON output.
func TestRunLoopback(t *testing.T) {
	rport, lport := freeUDPPort(t), freeUDPPort(t)
	rnatt, lnatt := freeUDPPort(t), freeUDPPort(t)
	const tunnels = 20
	psk := "loopback-psk-0123"

	ike, _ := config.ParseIKEProposal("aes128-sha256-ecp256", false)
	esp, _ := config.ParseESPProposal("aes128-sha256", false)
	respConn := &config.Connection{
		Name: "resp", Local: netip.MustParseAddr("127.0.0.1"), LocalPort: rport, RemotePort: lport,
		Auth: config.AuthPSK, PSK: config.Secret(psk), Proposals: ike, IKELifetime: time.Hour, RemoteID: config.Identity{Type: config.IDAny},
		Children: []*config.Child{{Name: "net", Mode: sa.Tunnel, ESPProposals: esp,
			LocalTS:   []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.99.0.0/24")}},
			RemoteTS:  []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.200.0.0/16")}},
			RekeyTime: time.Hour, LifeTime: 2 * time.Hour}},
	}
	eng, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{respConn}})
	if err != nil {
		t.Fatal(err)
	}
	dp := installCounter{n: make(chan *sa.ChildSA, tunnels*2)}
	rt, err := runtime.New(runtime.Config{Engine: eng, Listen: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Port: rport, NATTPort: rnatt,
		Persister: dp, DataPlane: dp, CounterSync: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })

	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	if err := os.WriteFile(pskFile, []byte(psk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, engines := range []int{1, 2} {
		var out, errOut bytes.Buffer
		code := mainErr([]string{"-target", "127.0.0.1", "-port", itoa(rport), "-natt-port", itoa(rnatt),
			"-local", "127.0.0.2-127.0.0.254", "-local-port", itoa(lport), "-local-natt-port", itoa(lnatt),
			"-tunnels", itoa(tunnels), "-concurrency", "4", "-engines", itoa(engines), "-psk-file", pskFile, "-duration", "60s", "-tunnel-timeout", "20s", "-o", "json"}, &out, &errOut)
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
		}
		var res Result
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out.String())
		}
		t.Logf("%s", out.String())
		if res.OK != tunnels || res.Failed != 0 || res.TunnelsPerS <= 0 || res.P50ms <= 0 || res.P99ms < res.P50ms {
			t.Errorf("result %+v", res)
		}
		if strings.Contains(errOut.String(), psk) || strings.Contains(out.String(), psk) {
			t.Error("the PSK appears in the output")
		}
		// The responder installed one pair per tunnel, each from its own
		// source address and with its own /32 traffic selector.
		peers := map[netip.Addr]bool{}
		tss := map[netip.Prefix]bool{}
		for range tunnels {
			select {
			case c := <-dp.n:
				peers[c.Out.Dst] = true
				for _, ts := range c.RemoteTS {
					tss[ts.Prefix] = true
				}
			case <-time.After(10 * time.Second):
				t.Fatal("responder installed fewer pairs than the generator reported")
			}
		}
		if len(peers) != tunnels || len(tss) != tunnels {
			t.Errorf("responder saw %d peers and %d remote selectors, want %d each", len(peers), len(tss), tunnels)
		}

	}
}

func itoa[T ~uint16 | ~int](v T) string { return strconv.Itoa(int(v)) }
