// Package deploy_test checks the example configurations and the systemd
// unit shipped in deploy/.
package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestExamplesCheckConfig runs `ikegwd check-config` on every example
// node file, with /etc/ikegw/ moved to a temporary directory holding the
// PSK files the examples name (mode 0600).
func TestExamplesCheckConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ikegwd")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "ikegwd")
	if out, err := exec.Command("go", "build", "-o", bin, "ikegw/cmd/ikegwd").CombinedOutput(); err != nil {
		t.Fatalf("go build ikegwd: %v\n%s", err, out)
	}
	etc := filepath.Join(tmp, "etc") + "/"
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "branch1.psk"), []byte("example-psk-not-a-real-one"), 0o600); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("examples/*/*.yaml")
	if err != nil || len(files) < 6 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(tmp, strings.ReplaceAll(f, "/", "_"))
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(data), "/etc/ikegw/", etc)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "check-config", p).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": ok (node ") {
				t.Fatalf("check-config %s: %v\n%s", f, err, out)
			}
		})
	}
	// A broken file must fail, or this test proves nothing.
	bad := filepath.Join(tmp, "bad.yaml")
	os.WriteFile(bad, []byte("node: {name: x, state_dir: relative}\n"), 0o600)
	if out, err := exec.Command(bin, "check-config", bad).CombinedOutput(); err == nil {
		t.Fatalf("check-config accepted a bad file: %s", out)
	}
}

// TestUnit checks the systemd unit's essentials.
func TestUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/ikegwd.service")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"Type=notify", "NotifyAccess=all", "ikegwd supervise -c /etc/ikegw/ikegwd.yaml",
		"ExecStopPost=/usr/local/sbin/ikegwd cleanup", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"ProtectSystem=strict", "StateDirectory=ikegw", "RuntimeDirectory=ikegw"} {
		if !strings.Contains(s, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command("systemd-analyze", "verify", "--man=no", "systemd/ikegwd.service").CombinedOutput(); err != nil &&
			strings.Contains(string(out), "Unknown key") {
			t.Errorf("systemd-analyze: %s", out)
		}
	}
}

// TestDashboard checks that the Grafana dashboard is valid JSON and that
// every metric it queries is one ikegwd exports.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/ikegw.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/ikegw.json: %v", err)
	}
	src, err := os.ReadFile("../cmd/internal/daemon/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`ikegw_([a-z_]+)`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllStringSubmatch(tg.Expr, -1) {
				n++
				name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m[1], "_bucket"), "_sum"), "_count") // histogram series
				if !strings.Contains(string(src), `desc("`+m[1]+`"`) && !strings.Contains(string(src), `desc("`+name+`"`) {
					t.Errorf("panel %q queries ikegw_%s, which ikegwd does not export", p.Title, m[1])
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d metric references in the dashboard", n)
	}
}
