package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ikegw/cluster/certs"
)

func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	run := func(args ...string) (string, error) {
		c := root()
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(append([]string{"certs", "--dir", dir}, args...))
		err := c.Execute()
		return out.String(), err
	}
	out, err := run("gw1=10.99.0.1", "witness=10.99.0.3,fd00::3")
	if err != nil || !strings.Contains(out, "issued now: gw1, witness") {
		t.Fatalf("certs: %v: %s", err, out)
	}
	for _, n := range []string{"gw1", "witness"} {
		if _, _, err := certs.NodeFiles(dir, n).Load(); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		fi, err := os.Stat(certs.NodeFiles(dir, n).Key)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s key mode: %v %v", n, fi.Mode(), err)
		}
	}
	// Again: nothing is overwritten, a new node is added.
	out, err = run("gw1=10.99.0.1", "gw2=10.99.0.2")
	if err != nil || !strings.Contains(out, "issued now: gw2") {
		t.Fatalf("second run: %v: %s", err, out)
	}
	for _, bad := range []string{"gw3", "gw3=", "gw3=not-an-ip"} {
		if _, err := run(bad); err == nil {
			t.Errorf("certs %q accepted", bad)
		}
	}
}
