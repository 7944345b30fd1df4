package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/pki"
)

func TestCertsIKECommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ike")
	run := func(args ...string) (string, error) {
		c := root()
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(append([]string{"certs", "ike", "--dir", dir}, args...))
		err := c.Execute()
		return out.String(), err
	}
	out, err := run("--key", "rsa2048", "gw=gw.example.net,192.0.2.1", "peer", "alice=alice@example.net")
	if err != nil {
		t.Fatalf("certs ike: %v: %s", err, out)
	}
	for _, want := range []string{
		`gw: ` + filepath.Join(dir, "gw.pem") + ` (issued now): subject "O=ikegw lab, CN=gw", SANs gw.example.net,192.0.2.1`,
		`peer: ` + filepath.Join(dir, "peer.pem") + ` (issued now): subject "O=ikegw lab, CN=peer", SANs peer,`,
		`alice: ` + filepath.Join(dir, "alice.pem") + ` (issued now): subject "O=ikegw lab, CN=alice", SANs alice@example.net,`,
		"CA: " + filepath.Join(dir, "ca.pem"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"ca.key", "gw.key", "peer.key", "alice.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	// Nothing is overwritten; a new ECDSA certificate joins the same CA.
	before, _ := os.ReadFile(filepath.Join(dir, "gw.pem"))
	out, err = run("--key", "ecdsa256", "gw", "branch=198.51.100.7")
	if err != nil || !strings.Contains(out, "gw: "+filepath.Join(dir, "gw.pem")+" (exists, unchanged)") || !strings.Contains(out, "branch: "+filepath.Join(dir, "branch.pem")+" (issued now)") {
		t.Fatalf("second run: %v: %s", err, out)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "gw.pem")); !bytes.Equal(before, after) {
		t.Fatal("gw.pem was rewritten")
	}

	// The files work as a pubkey connection: peer's identity is its DN.
	cfg := `connections:
  - name: branch
    local_addrs: 192.0.2.1
    remote_addrs: 198.51.100.7
    auth: pubkey
    cert: gw.pem
    key: gw.key
    cacerts: [ca.pem]
    crls: [ca.crl]
    local_id: 192.0.2.1
    remote_id: "O=ikegw lab, CN=branch"
    children: [{name: net, local_ts: [10.1.0.0/24], remote_ts: [10.2.0.0/24]}]
`
	if out, err := run("--revoke", "alice"); err != nil || !strings.Contains(out, "revokes 1 certificate(s) alice") {
		t.Fatalf("--revoke: %v: %s", err, out)
	}
	cp := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cp, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cp)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.Connections[0]
	branch, err := pki.LoadCerts(filepath.Join(dir, "branch.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.RemoteID.Match(pki.IDDERASN1DN, branch[0].RawSubject); err != nil {
		t.Errorf("branch certificate's subject vs remote_id: %v", err)
	}
	if _, err := conn.Pubkey.Trust.Verify([][]byte{branch[0].Raw}, time.Now()); err != nil {
		t.Errorf("branch certificate refused: %v", err)
	}
	alice, _ := pki.LoadCerts(filepath.Join(dir, "alice.pem"))
	if _, err := conn.Pubkey.Trust.Verify([][]byte{alice[0].Raw}, time.Now()); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked alice: %v", err)
	}

	for _, bad := range []struct {
		args []string
		msg  string
	}{
		{nil, "name at least one certificate"},
		{[]string{"x="}, `"x=": want NAME or NAME=SAN[,SAN...]`},
		{[]string{"x=a b"}, `"a b" is neither an IP address, an e-mail address nor a DNS name`},
		{[]string{"x=@example.net"}, `"@example.net" is not an e-mail address`},
		{[]string{"../x"}, `bad certificate name "../x"`},
		{[]string{"ca"}, `bad certificate name "ca"`},
		{[]string{"x", "x"}, `"x" named twice`},
		{[]string{"--key", "dsa", "x"}, `key type "dsa"`},
		{[]string{"--revoke", "nobody"}, "nobody.pem"},
	} {
		if out, err := run(bad.args...); err == nil || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("certs ike %q: %v (%s), want an error with %q", bad.args, err, out, bad.msg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.pem")); err == nil {
		t.Error("a refused run created x.pem")
	}
}
