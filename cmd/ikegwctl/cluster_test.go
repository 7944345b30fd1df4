package main

// Operations against a real cluster: 3 gateways and a witness (4 voters)
// in network namespaces (deploy/gwlab), a strongSwan peer pinging through
// the tunnel, and ikegwctl driving the admin sockets.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildCluster builds ikegwd and a lab, removed at cleanup (its logs are
// printed when the test failed).
func buildCluster(t *testing.T, o gwlab.Options) *gwlab.Lab {
	t.Helper()
	lab.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "ikegwd")
	if out, err := exec.Command("go", "build", "-o", bin, "ikegw/cmd/ikegwd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	o.Bin = bin
	o.Dir = t.TempDir()
	o.Logger = slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dump := func() {
		logs, _ := filepath.Glob(filepath.Join(o.Dir, "logs", "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			s := string(b)
			if len(s) > 8000 {
				s = "..." + s[len(s)-8000:]
			}
			t.Logf("--- %s (tail) ---\n%s", filepath.Base(f), s)
		}
	}
	l, err := gwlab.Build(context.Background(), o)
	if err != nil {
		dump()
		t.Fatalf("building the lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dump()
		}
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	return l
}

// ctl runs ikegwctl against a node's admin socket.
func ctl(t *testing.T, l *gwlab.Lab, node string, args ...string) (string, error) {
	t.Helper()
	n, err := l.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, append([]string{"--socket", n.Socket}, args...)...)
}

func ctlJSON(t *testing.T, l *gwlab.Lab, node string, out any, args ...string) error {
	t.Helper()
	s, err := ctl(t, l, node, append([]string{"-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(s), out)
}

// poll calls f every 100 ms until it returns nil or ctx ends.
func poll(ctx context.Context, what string, f func() error) error {
	var last error
	for {
		if last = f(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitPing waits for a ping reply through the tunnel sent after since.
func waitPing(ctx context.Context, l *gwlab.Lab, since time.Time) error {
	return poll(ctx, "a ping reply through the tunnel", func() error {
		rec := l.Pinger().Snapshot()
		for _, r := range rec.Replies {
			if r.Sent.After(since) {
				return nil
			}
		}
		return errors.New("no reply yet")
	})
}

// onLeader runs f with the current Raft leader's name until f succeeds or
// fails for another reason than leadership having moved (the role may move
// under load; a request refused for that commits nothing).
func onLeader(ctx context.Context, l *gwlab.Lab, f func(leader string) error) error {
	var last error
	for {
		leader := ""
		for _, s := range l.Status(ctx) {
			if s.Err == nil && s.Status.Cluster != nil && s.Status.Cluster.State == "Leader" && s.Status.Cluster.LeaderReady {
				leader = s.Name
			}
		}
		if leader != "" {
			last = f(leader)
			if last == nil || !strings.Contains(last.Error(), "not the Raft leader") && !strings.Contains(last.Error(), "not the active gateway") {
				return last
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a leader to serve the request: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// onActive is onLeader for requests the active gateway serves.
func onActive(ctx context.Context, l *gwlab.Lab, f func(active string) error) error {
	var last error
	for {
		if a, err := l.Active(ctx); err == nil {
			last = f(a)
			if last == nil || !strings.Contains(last.Error(), "not the active gateway") && !strings.Contains(last.Error(), "not the Raft leader") {
				return last
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for an active gateway to serve the request: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func gateways(l *gwlab.Lab) []string {
	var out []string
	for _, n := range l.Nodes() {
		if !n.Witness {
			out = append(out, n.Name)
		}
	}
	return out
}

// extraConn is a second connection the applied file adds.
func extraConn(psk, esp string) string {
	return fmt.Sprintf(`  - name: extra
    local_addrs: %s
    remote_addrs: 192.0.2.200
    psk_file: %q
    proposals: [aes128-sha256-modp2048]
    children:
      - {name: net2, local_ts: [10.1.0.0/24], remote_ts: [10.3.0.0/24], esp_proposals: [%s]}
`, gwlab.OutsideVIP.Addr(), psk, esp)
}

// TestClusterOperations: config apply reaches every gateway and survives
// a failover; a bad file changes nothing; a standby is removed (the active
// node and removals on a follower are refused), the cluster keeps working
// and fails over, and the node is joined back by address.
func TestClusterOperations(t *testing.T) {
	l := buildCluster(t, gwlab.Options{Gateways: 3, Witness: true})
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	var active string
	must(t, poll(ctx, "an active gateway", func() (err error) { active, err = l.Active(ctx); return err }))

	// --- config apply ---
	first, _ := l.Node(gateways(l)[0])
	file, err := os.ReadFile(first.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(file), "\n") || !strings.Contains(string(file), "\nconnections:\n") {
		t.Fatalf("the lab's config does not end with its connections:\n%s", file)
	}
	psk := filepath.Join(l.Dir(), "psk")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	good := filepath.Join(t.TempDir(), "good.yaml")
	must(t, os.WriteFile(bad, append(file, extraConn(psk, "aes999-sha1")...), 0o600))
	must(t, os.WriteFile(good, append(file, extraConn(psk, "aes128-sha256")...), 0o600))

	var u unreachable
	_, err = ctl(t, l, active, "config", "apply", bad)
	if err == nil || errors.As(err, &u) || !strings.Contains(err.Error(), "aes999") || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("a bad file: %v", err)
	}
	var a api.ConfigApplied
	must(t, onLeader(ctx, l, func(leader string) error { return ctlJSON(t, l, leader, &a, "config", "apply", good) }))
	if a.Version != 1 || !slices.Contains(a.Connections, "extra") || !slices.Contains(a.Ignored, "node") || a.RaftIndex == 0 {
		t.Fatalf("apply answered %+v", a)
	}
	for _, gw := range gateways(l) {
		must(t, poll(ctx, gw+" to run version 1", func() error {
			var st api.Status
			if err := ctlJSON(t, l, gw, &st, "status"); err != nil {
				return err
			}
			if st.Cluster == nil || st.Cluster.ConfigVersion != 1 || !slices.Contains(st.Connection, "extra") {
				return fmt.Errorf("status %+v", st.Connection)
			}
			return nil
		}))
		out, err := ctl(t, l, gw, "config", "show")
		// Every node names the same entry: the one the apply committed.
		if err != nil || !strings.Contains(out, fmt.Sprintf("cluster-wide version 1, loaded at Raft index %d ", a.RaftIndex)) || !strings.Contains(out, "name: extra") {
			t.Fatalf("config show on %s: %v\n%s", gw, err, out)
		}
	}
	// The running engine has it (an unknown connection is a 404; terminate
	// of a known one without SAs sends nothing).
	must(t, onActive(ctx, l, func(a string) error {
		if _, err := ctl(t, l, a, "initiate", "nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
			return fmt.Errorf("initiate of an unknown connection: %v", err)
		}
		_, err := ctl(t, l, a, "terminate", "extra")
		return err
	}))
	if out, err := ctl(t, l, active, "-o", "json", "config", "show"); err != nil || !strings.Contains(out, `"version": 1`) {
		t.Fatalf("config show -o json: %v %s", err, out)
	}

	// A planned failover (ikegwctl failover on the active): the new active
	// builds its engine with the applied version.
	var before string
	must(t, onActive(ctx, l, func(a string) error {
		before = a
		_, err := ctl(t, l, a, "failover")
		return err
	}))
	must(t, poll(ctx, "a new active", func() error {
		a, err := l.Active(ctx)
		if err != nil || a == before {
			return fmt.Errorf("active %q %v", a, err)
		}
		return nil
	}))
	must(t, waitPing(ctx, l, time.Now()))
	must(t, onActive(ctx, l, func(a string) error {
		if a == before {
			return errors.New("not the active gateway yet: the old one again")
		}
		_, err := ctl(t, l, a, "terminate", "extra")
		return err
	}))

	// The new active's metrics count its takeover(s) and the config
	// version, export failure reasons, and show no PSK. (Under load the
	// role may move more than once: counts are at least one.)
	pskText, err := os.ReadFile(psk)
	must(t, err)
	metric := func(body, series string) (float64, bool) {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
		if m == nil {
			return 0, false
		}
		var v float64
		fmt.Sscan(m[1], &v)
		return v, true
	}
	must(t, poll(ctx, "the active's metrics", func() error {
		a, err := l.Active(ctx)
		if err != nil {
			return err
		}
		an, _ := l.Node(a)
		socket, addr = an.Socket, ""
		cl, base, err := client()
		if err != nil {
			return err
		}
		res, err := cl.Get(base + api.PathMetrics)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		mb := string(b)
		if strings.Contains(mb, strings.TrimSpace(string(pskText))) {
			t.Fatal("the PSK appears in the metrics")
		}
		for _, series := range []string{`ikegw_takeovers_total{result="ok"}`, "ikegw_config_version", `ikegw_takeover_duration_seconds_count{phase="total"}`} {
			if v, ok := metric(mb, series); !ok || v < 1 {
				return fmt.Errorf("%s: %s = %v (exported: %t)", a, series, v, ok)
			}
		}
		for _, series := range []string{"ikegw_raft_commit_seconds_count", `ikegw_ike_handshake_failures_total{phase="1",reason="auth"}`} {
			if _, ok := metric(mb, series); !ok {
				return fmt.Errorf("%s: no %s", a, series)
			}
		}
		return nil
	}))

	// --- members remove / join ---
	if _, err := ctl(t, l, "witness", "members", "remove", "nosuch"); err == nil {
		t.Fatal("remove of an unknown node succeeded")
	}
	must(t, onActive(ctx, l, func(a string) error {
		if _, err := ctl(t, l, a, "members", "remove", a); err == nil || !strings.Contains(err.Error(), "active gateway") {
			return fmt.Errorf("removing the active node: %v", err)
		}
		return nil
	}))
	// A standby is removed through the leader; a follower names the leader.
	var victim, other string
	must(t, onLeader(ctx, l, func(leader string) error {
		a, err := l.Active(ctx)
		if err != nil {
			return fmt.Errorf("not the active gateway: %v", err)
		}
		var standbys []string
		for _, gw := range gateways(l) {
			if gw != a && gw != leader {
				standbys = append(standbys, gw)
			}
		}
		if len(standbys) != 2 {
			return fmt.Errorf("not the Raft leader: leader %s and active %s differ", leader, a)
		}
		victim, other = standbys[0], standbys[1]
		if _, err := ctl(t, l, other, "members", "remove", victim); err == nil || !strings.Contains(err.Error(), "ask the leader") {
			return fmt.Errorf("remove on a follower: %v", err)
		}
		if _, err := ctl(t, l, leader, "members", "remove", "nosuch"); err == nil || !strings.Contains(err.Error(), "not in the Raft configuration") {
			return fmt.Errorf("remove an unknown node: %v", err)
		}
		out, err := ctl(t, l, leader, "members", "remove", victim)
		if err == nil && !strings.Contains(out, victim+" removed") {
			return fmt.Errorf("remove %s answered:\n%s", victim, out)
		}
		return err
	}))
	var ms api.Members
	must(t, ctlJSON(t, l, other, &ms, "members", "list"))
	for _, m := range ms.Members {
		if m.ID == victim && m.InRaft {
			t.Fatalf("%s still in Raft after removal: %+v", victim, m)
		}
	}
	must(t, poll(ctx, victim+" to know it was removed", func() error {
		var st api.Status
		if err := ctlJSON(t, l, victim, &st, "status"); err != nil {
			return err
		}
		if st.Cluster == nil || !st.Cluster.Removed {
			return errors.New("not removed yet")
		}
		return nil
	}))
	// Three voters remain ({active, other, witness}); the cluster fails
	// over to the other standby.
	must(t, onActive(ctx, l, func(a string) error {
		if a == other {
			return nil
		}
		_, err := ctl(t, l, a, "failover", "--to", other)
		return err
	}))
	must(t, poll(ctx, other+" active", func() error {
		a, err := l.Active(ctx)
		if err != nil || a != other {
			return fmt.Errorf("active %q %v", a, err)
		}
		return nil
	}))
	must(t, waitPing(ctx, l, time.Now()))

	// Join it back by address: it restarts with no join list (so only the
	// admin's join brings it in) and the new leader adds it.
	vn, _ := l.Node(victim)
	cfg, err := os.ReadFile(vn.ConfigPath)
	must(t, err)
	cfg = regexp.MustCompile(`(?m)^  join: \[.*\]$`).ReplaceAll(cfg, []byte("  join: []"))
	must(t, os.WriteFile(vn.ConfigPath, cfg, 0o600))
	restarted := make(chan error, 1)
	go func() { restarted <- l.Restart(ctx, victim) }()
	gossip := fmt.Sprintf("%s:%d", vn.ClusterAddr, gwlab.GossipPort)
	must(t, poll(ctx, "members join "+gossip, func() error {
		_, err := ctl(t, l, other, "members", "join", gossip)
		return err
	}))
	if err := <-restarted; err != nil {
		t.Fatalf("restart of %s: %v", victim, err)
	}
	must(t, ctlJSON(t, l, other, &ms, "members", "list"))
	voters := 0
	for _, m := range ms.Members {
		if m.Voter {
			voters++
		}
		if m.ID == victim && (!m.Voter || m.Status != "alive") {
			t.Fatalf("%s after join: %+v", victim, m)
		}
	}
	if voters != 4 {
		t.Fatalf("%d voters after the join, want 4: %+v", voters, ms.Members)
	}
	// It catches up with the cluster-wide configuration too.
	must(t, poll(ctx, victim+" to run version 1", func() error {
		var st api.Status
		if err := ctlJSON(t, l, victim, &st, "status"); err != nil {
			return err
		}
		if st.Cluster == nil || st.Cluster.ConfigVersion != 1 || st.Cluster.Removed {
			return fmt.Errorf("cluster status %+v", st.Cluster)
		}
		return nil
	}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
