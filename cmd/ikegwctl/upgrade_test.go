package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"ikegw/cmd/api"
)

// fakeCluster is an admin API answering as node self of a cluster.
type fakeCluster struct {
	mu        sync.Mutex
	self      string
	members   api.Members
	failovers []string // to= of each POST /v1/failover
}

func (f *fakeCluster) serve(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewEncoder(w).Encode(api.Status{Node: f.self, Role: api.RoleStandby,
			Cluster: &api.ClusterStatus{CommitIndex: 50, AppliedIndex: 50, LastIndex: 50}})
	})
	mux.HandleFunc("GET "+api.PathMembers, func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewEncoder(w).Encode(f.members)
	})
	mux.HandleFunc("POST "+api.PathFailover, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		to := r.URL.Query().Get("to")
		f.failovers = append(f.failovers, to)
		json.NewEncoder(w).Encode(api.Failover{From: f.self, To: to, Leader: to})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func members(active string, versions map[string]string) api.Members {
	m := api.Members{Active: active, EffectiveMaxCommand: 8}
	for _, id := range []string{"gw1", "gw2", "witness"} {
		role := "gateway"
		if id == "witness" {
			role = "witness"
		}
		m.Members = append(m.Members, api.Member{ID: id, Role: role, Version: versions[id], MaxCommand: 8, Status: "alive",
			Voter: true, InRaft: true, Leader: id == active, Active: id == active})
	}
	return m
}

func TestUpgradePlanAndNext(t *testing.T) {
	f := &fakeCluster{self: "gw2", members: members("gw1", map[string]string{"gw1": "1.0.0", "gw2": "1.0.0", "witness": "1.0.0"})}
	sock := f.serve(t)

	out, err := run(t, "--socket", sock, "upgrade", "plan", "--target", "1.1.0")
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	for _, want := range []string{"target version: 1.1.0 (given with --target)", "effective max command: 8", "MAX COMMAND",
		"1. restart gw2", "2. restart witness", "3. hand the active role over from gw1 to the upgraded standby gw2", "4. restart gw1",
		"next step allowed now"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, "--socket", sock, "-o", "json", "upgrade", "plan")
	var p api.UpgradePlan
	if err != nil || json.Unmarshal([]byte(out), &p) != nil || !p.Done || p.Target != "1.0.0" || p.TargetFrom != "newest" {
		t.Fatalf("plan -o json without a target (nothing newer): %v %+v\n%s", err, p, out)
	}

	// Next: restart the standby gw2.
	out, err = run(t, "--socket", sock, "upgrade", "next", "--target", "1.1.0")
	if err != nil || !strings.Contains(out, "now: restart gw2 (gateway, now 1.0.0) with the 1.1.0 binary") {
		t.Fatalf("next: %v\n%s", err, out)
	}

	// gw2 restarted but not back yet: refused, exit code 3.
	f.mu.Lock()
	f.members = members("gw1", map[string]string{"gw1": "1.0.0", "gw2": "1.1.0", "witness": "1.0.0"})
	f.members.Members[1].Status = "failed"
	f.mu.Unlock()
	out, err = run(t, "--socket", sock, "upgrade", "next")
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != ExitRefused || !errors.Is(err, api.ErrUpgradeRefused) || !strings.Contains(err.Error(), "member gw2 is failed") {
		t.Fatalf("next with gw2 down: %v\n%s", err, out)
	}

	// Only the active is old: the handover must be asked of the active.
	f.mu.Lock()
	f.members = members("gw1", map[string]string{"gw1": "1.0.0", "gw2": "1.1.0", "witness": "1.1.0"})
	f.mu.Unlock()
	out, err = run(t, "--socket", sock, "upgrade", "next")
	if err == nil || errors.As(err, &ec) || !strings.Contains(err.Error(), "run it against gw1 (the active node), not gw2") {
		t.Fatalf("handover asked of a standby: %v\n%s", err, out)
	}
	f.mu.Lock()
	f.self = "gw1"
	f.mu.Unlock()
	out, err = run(t, "--socket", sock, "-o", "json", "upgrade", "next")
	var res NextResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || !res.Performed || res.Step == nil || res.Step.Kind != api.StepHandover || res.Step.To != "gw2" {
		t.Fatalf("handover: %v %+v\n%s", err, res, out)
	}
	f.mu.Lock()
	got := strings.Join(f.failovers, ",")
	f.mu.Unlock()
	if got != "gw2" {
		t.Fatalf("failover requests %q, want one to gw2", got)
	}

	// All upgraded: done.
	f.mu.Lock()
	f.members = members("gw2", map[string]string{"gw1": "1.1.0", "gw2": "1.1.0", "witness": "1.1.0"})
	f.mu.Unlock()
	out, err = run(t, "--socket", sock, "upgrade", "next")
	if err != nil || !strings.Contains(out, "upgrade done: every member runs 1.1.0") {
		t.Fatalf("done: %v\n%s", err, out)
	}
	out, err = run(t, "--socket", sock, "members", "list")
	if err != nil || !strings.Contains(out, "effective max command: 8") {
		t.Fatalf("members list: %v\n%s", err, out)
	}
}
