package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/lab"
)

// run executes ikegwctl in-process and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	c := root()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.Execute()
	return out.String(), err
}

func TestUnreachableIsExit2(t *testing.T) {
	_, err := run(t, "--socket", filepath.Join(t.TempDir(), "none.sock"), "status")
	var u unreachable
	if !errors.As(err, &u) {
		t.Fatalf("want unreachable (exit 2), got %v", err)
	}
	if _, err := run(t, "-o", "yaml", "status"); err == nil || errors.As(err, &u) {
		t.Fatalf("bad --output: %v", err)
	}
	if _, err := run(t, "--addr", "127.0.0.1:1", "status"); err == nil || !strings.Contains(err.Error(), "--cert") {
		t.Fatalf("--addr without --cert: %v", err)
	}
}

func TestCertsCommands(t *testing.T) {
	dir := t.TempDir()
	if out, err := run(t, "certs", "--dir", dir, "nodes", "gw1=10.0.0.1", "gw2=10.0.0.2,10.0.1.2"); err != nil || !strings.Contains(out, "gw1, gw2") {
		t.Fatalf("certs nodes: %v %s", err, out)
	}
	if _, err := run(t, "certs", "--dir", dir, "nodes", "gw3=nope"); err == nil {
		t.Fatal("bad IP accepted")
	}
	if out, err := run(t, "certs", "--dir", dir, "client", "--admin", "op"); err != nil || !strings.Contains(out, "admin true") {
		t.Fatalf("certs client: %v %s", err, out)
	}
	if _, err := run(t, "certs", "--dir", dir, "client", "op"); err == nil {
		t.Fatal("client certificate overwritten")
	}
	fi, err := os.Stat(filepath.Join(dir, "client-op-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode: %v %v", fi, err)
	}
}

// TestAgainstIkegwd runs a standalone ikegwd in a namespace and drives it
// through its admin socket.
func TestAgainstIkegwd(t *testing.T) {
	lab.RequireRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "ikegwd")
	if out, err := exec.Command("go", "build", "-o", bin, "ikegw/cmd/ikegwd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := lab.NewT(t)
	ns, err := l.NewNS(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	const psk = "ikegwctl-test-psk-never-shown"
	if err := os.WriteFile(filepath.Join(dir, "psk"), []byte(psk), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "keygen", "--out", filepath.Join(dir, "cluster.key")).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	sock := filepath.Join(dir, "admin.sock")
	cfg := "node: {name: gw1, state_dir: " + dir + "/state, cluster_key_file: " + dir + "/cluster.key}\n" +
		"ike: {listen: [127.0.0.1], port: 5500, natt_port: 5501}\ndataplane: {kind: userspace, tun: ikegw%d}\n" +
		"admin: {socket: " + sock + "}\nconnections:\n  - name: peer\n    local_addrs: 127.0.0.1\n    remote_addrs: 127.0.0.2\n" +
		"    psk_file: " + dir + "/psk\n    proposals: [aes256-sha256-modp2048]\n" +
		"    children:\n      - {name: net, local_ts: [10.1.0.0/16], remote_ts: [10.2.0.0/16], esp_proposals: [aes256-sha256]}\n"
	cfgPath := filepath.Join(dir, "ikegwd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ns.Start("ikegwd", bin, "run", "-c", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if p.Exited() || ctx.Err() != nil {
			t.Fatalf("ikegwd did not open its socket: %s", p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := "--socket=" + sock

	out, err := run(t, s, "-o", "json", "status")
	var st api.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Node != "gw1" || st.Role != "standalone" || st.Dataplane != "userspace" {
		t.Fatalf("status: %v %s", err, out)
	}
	if out, err := run(t, s, "status"); err != nil || !strings.Contains(out, "standalone") {
		t.Fatalf("status table: %v %s", err, out)
	}
	out, err = run(t, s, "-o", "json", "members", "list")
	var m api.Members
	if err != nil || json.Unmarshal([]byte(out), &m) != nil || len(m.Members) != 1 || m.Active != "gw1" {
		t.Fatalf("members: %v %s", err, out)
	}
	if out, err := run(t, s, "sas", "list"); err != nil || !strings.Contains(out, "CONNECTION") {
		t.Fatalf("sas list: %v %s", err, out)
	}
	if _, err := run(t, s, "sas", "show", "c0ffee"); err == nil || !strings.Contains(err.Error(), "no such SA") {
		t.Fatalf("sas show of a missing SA: %v", err)
	}
	if _, err := run(t, s, "sas", "show", "xyz"); err == nil {
		t.Fatal("sas show accepted a bad ID")
	}
	out, err = run(t, s, "config", "show")
	if err != nil || !strings.Contains(out, "name: peer") || strings.Contains(out, psk) {
		t.Fatalf("config show: %v %s", err, out)
	}
	if out, err := run(t, s, "config", "validate", cfgPath); err != nil || !strings.Contains(out, "ok (node gw1") {
		t.Fatalf("config validate: %v %s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("node: {name: x, state_dir: relative}\n"), 0o600)
	var u unreachable
	if _, err := run(t, s, "config", "validate", bad); err == nil || errors.As(err, &u) || !strings.Contains(err.Error(), "state_dir") {
		t.Fatalf("config validate of a bad file: %v", err)
	}
	snap := filepath.Join(dir, "db.snap")
	if out, err := run(t, s, "snapshot", "save", snap); err != nil || !strings.Contains(out, "bytes") {
		t.Fatalf("snapshot save: %v %s", err, out)
	}
	if b, err := os.ReadFile(snap); err != nil || len(b) == 0 || bytes.Contains(b, []byte(psk)) {
		t.Fatalf("snapshot file: %d bytes, %v", len(b), err)
	}
	if _, err := run(t, s, "snapshot", "save", snap); err == nil {
		t.Fatal("snapshot overwrote a file")
	}
	if _, err := run(t, s, "failover"); err == nil || !strings.Contains(err.Error(), "not a cluster gateway") {
		t.Fatalf("failover on a standalone node: %v", err)
	}
	for _, args := range [][]string{{"config", "apply", cfgPath}, {"members", "join", "127.0.0.1:1"}, {"members", "remove", "gw2"}} {
		if _, err := run(t, append([]string{s}, args...)...); err == nil || errors.As(err, &u) || !strings.Contains(err.Error(), "not a cluster member") {
			t.Fatalf("%v on a standalone node: %v", args, err)
		}
	}
	if out, err := run(t, s, "config", "show"); err != nil || !strings.Contains(out, "no cluster-wide configuration") {
		t.Fatalf("config show header: %v %s", err, out)
	}
	if _, err := run(t, s, "terminate", "nosuch"); err == nil {
		t.Fatal("terminate of an unknown connection succeeded")
	}
	// The metrics on the admin socket.
	cl, base, err := func() (*http.Client, string, error) { socket = sock; addr = ""; return client() }()
	if err != nil {
		t.Fatal(err)
	}
	res, err := cl.Get(base + api.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	var mb bytes.Buffer
	mb.ReadFrom(res.Body)
	res.Body.Close()
	if !strings.Contains(mb.String(), `ikegw_child_sas{state="INSTALLED"} 0`) || strings.Contains(mb.String(), psk) {
		t.Fatalf("metrics:\n%s", mb.String())
	}
}
