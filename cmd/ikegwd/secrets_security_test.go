package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ikegw/cmd/api"
)

// secretForms returns the ways a secret could show up in text: as is, hex
// (both cases) and base64.
func secretForms(raw []byte) []string {
	return []string{string(raw), hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw)),
		base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw)}
}

// TestSecretsNeverInOutput runs ikegwd with a distinctive PSK and cluster
// key through a tunnel's life (setup, traffic, rekey, delete), refused
// admin requests, a bad configuration and a bad key file, and greps every
// output (ikegwd's log, every admin API answer including the metrics and
// the snapshot, ikegwctl's output, check-config and keygen output) for
// the PSK and the key in any common encoding. It also checks the modes of
// the state ikegwd wrote (files 0600 or stricter, directories 0700).
func TestSecretsNeverInOutput(t *testing.T) {
	t.Parallel()
	b := newBed(t, bedOpts{ike: "aes128-sha256-ecp256", esp: "aes128-sha256"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keyHex, err := os.ReadFile(filepath.Join(b.dir, "cluster.key"))
	must(t, err)
	key, err := hex.DecodeString(strings.TrimSpace(string(keyHex)))
	must(t, err)
	secrets := map[string][]string{"PSK": secretForms([]byte(interopPSK)), "cluster key": secretForms(key)}

	var outputs []struct{ what, text string }
	keep := func(what string, text []byte) {
		outputs = append(outputs, struct{ what, text string }{what, string(text)})
	}
	call := func(method, path string, body io.Reader) {
		req, err := http.NewRequestWithContext(ctx, method, "http://ikegwd"+path, body)
		must(t, err)
		resp, err := b.client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		keep(method+" "+path+" ("+resp.Status+")", out)
	}
	ctl := buildCtl(t)
	run := func(what string, env []string, name string, args ...string) []byte {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), env...)
		out, _ := cmd.CombinedOutput() // failures are part of the test
		keep(what, out)
		return out
	}

	// A tunnel's life.
	must(t, b.swan.Initiate(ctx, "net"))
	s, k := b.agree(ctx)
	b.ping(ctx, 3)
	must(t, b.post(api.PathRekey, "spi="+k.SPIOut))
	b.waitChildReplaced(ctx, s, k)
	for _, p := range []string{api.PathStatus, api.PathSAs, api.PathConfig, api.PathMetrics, api.PathSnapshot, api.PathMembers} {
		call("GET", p, nil)
	}
	for _, args := range [][]string{{"status"}, {"sas", "list"}, {"config", "show"}, {"-o", "json", "status"}, {"-o", "json", "sas", "list"}} {
		run("ikegwctl "+strings.Join(args, " "), nil, ctl, append([]string{"--socket", b.sock}, args...)...)
	}
	// Refused requests and bad input through the admin API.
	call("POST", api.PathInitiate+"?conn=no-such-conn", nil)
	call("POST", api.PathRekey+"?spi=zz", nil)
	call("POST", api.PathDPD+"?ike=nothex", nil)
	badCfg := fmt.Sprintf("connections:\n  - name: leak\n    psk: %q\n    remote_addrs: 192.0.2.9\n", interopPSK)
	call("POST", api.PathValidate, strings.NewReader(badCfg))
	call("POST", api.PathValidate, strings.NewReader("node: [\n"+interopPSK))
	// The PSK in the environment, with an error elsewhere in the file.
	cfg, err := os.ReadFile(b.cfgPath)
	must(t, err)
	envCfg := strings.Replace(string(cfg), "psk_file: "+filepath.Join(b.dir, "psk"), "psk_env: IKEGW_TEST_PSK", 1)
	envCfg = strings.Replace(envCfg, "proposals: [aes128-sha256-ecp256]", "proposals: [aes999-sha256-ecp256]", 1)
	envPath := filepath.Join(b.dir, "env.yaml")
	must(t, os.WriteFile(envPath, []byte(envCfg), 0o600))
	run("check-config with psk_env and a bad proposal", []string{"IKEGW_TEST_PSK=" + interopPSK}, ikegwdBin, "check-config", envPath)
	// ikegwd run fails on these before it opens anything; it runs in the
	// gateway's namespace all the same.
	inNS := []string{"netns", "exec", b.gwNS.Name(), ikegwdBin, "run", "-c"}
	run("run with psk_env and a bad proposal", []string{"IKEGW_TEST_PSK=" + interopPSK}, "ip", append(inNS, envPath)...)
	// An inline PSK (refused: it must not be echoed).
	inline := strings.Replace(string(cfg), "psk_file: "+filepath.Join(b.dir, "psk"), fmt.Sprintf("psk: %q", interopPSK), 1)
	inlinePath := filepath.Join(b.dir, "inline.yaml")
	must(t, os.WriteFile(inlinePath, []byte(inline), 0o600))
	run("check-config with an inline psk", nil, ikegwdBin, "check-config", inlinePath)
	// A PSK file whose content is malformed (0x then not hex).
	badPSK := filepath.Join(b.dir, "bad.psk")
	must(t, os.WriteFile(badPSK, []byte("0x"+interopPSK), 0o600))
	run("check-config with a malformed psk file", nil, ikegwdBin, "check-config",
		writeVariant(t, b, string(cfg), "psk_file: "+filepath.Join(b.dir, "psk"), "psk_file: "+badPSK))
	// A cluster key file readable by others, and one of the wrong length.
	loose := filepath.Join(b.dir, "loose.key")
	must(t, os.WriteFile(loose, keyHex, 0o644))
	run("run with a world-readable cluster key", nil, "ip", append(inNS,
		writeVariant(t, b, string(cfg), "cluster_key_file: "+filepath.Join(b.dir, "cluster.key"), "cluster_key_file: "+loose))...)
	short := filepath.Join(b.dir, "short.key")
	must(t, os.WriteFile(short, keyHex[:40], 0o600))
	run("run with a short cluster key", nil, "ip", append(inNS,
		writeVariant(t, b, string(cfg), "cluster_key_file: "+filepath.Join(b.dir, "cluster.key"), "cluster_key_file: "+short))...)
	// keygen prints no key; the key file is 0600.
	newKey := filepath.Join(b.dir, "new.key")
	out := run("keygen", nil, ikegwdBin, "keygen", "--out", newKey)
	nk, err := os.ReadFile(newKey)
	must(t, err)
	if bytes.Contains(out, bytes.TrimSpace(nk)) {
		t.Errorf("keygen printed the key it wrote: %q", out)
	}
	if fi, err := os.Stat(newKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("keygen's key file: %v %v, want 0600", fi.Mode(), err)
	}
	// The peer deletes; ikegwd stops (SIGTERM path).
	must(t, b.swan.Terminate(ctx, "gw"))
	must(t, b.gw.Stop())
	keep("ikegwd log", []byte(b.gw.Output()))

	for _, o := range outputs {
		t.Logf("%s: %d bytes: %.160q", o.what, len(o.text), o.text)
		for what, forms := range secrets {
			for _, f := range forms {
				if strings.Contains(o.text, f) {
					t.Errorf("%s appears in %s:\n%s", what, o.what, tailLines(o.text, 20))
				}
			}
		}
	}
	// The refusals said something useful (the test exercised the paths).
	joined := ""
	for _, o := range outputs {
		joined += o.text
	}
	for _, want := range []string{"aes999", "psk", "0600", "hex digits", "0x"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no output mentions %q: a failure path was not exercised", want)
		}
	}
	checkStateModes(t, filepath.Join(b.dir, "state"))
}

// checkStateModes walks a state directory: every file 0600 or stricter,
// every directory 0700 or stricter.
func checkStateModes(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		perm := fi.Mode().Perm()
		switch {
		case d.IsDir() && perm&0o077 != 0:
			t.Errorf("state directory %s has mode %04o, want 0700 or stricter", p, perm)
		case fi.Mode().IsRegular() && perm&0o077 != 0:
			t.Errorf("state file %s has mode %04o, want 0600 or stricter", p, perm)
		case fi.Mode().IsRegular():
			n++
		}
		return nil
	})
	must(t, err)
	if n == 0 {
		t.Errorf("no state file under %s: nothing checked", dir)
	}
}

func writeVariant(t *testing.T, b *bed, cfg, old, new string) string {
	t.Helper()
	if !strings.Contains(cfg, old) {
		t.Fatalf("config has no %q", old)
	}
	f, err := os.CreateTemp(b.dir, "variant-*.yaml")
	must(t, err)
	defer f.Close()
	_, err = f.WriteString(strings.Replace(cfg, old, new, 1))
	must(t, err)
	must(t, f.Chmod(0o600))
	return f.Name()
}

// buildCtl builds ikegwctl for the test.
func buildCtl(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ikegwctl")
	if out, err := exec.Command("go", "build", "-o", p, "ikegw/cmd/ikegwctl").CombinedOutput(); err != nil {
		t.Fatalf("building ikegwctl: %v\n%s", err, out)
	}
	return p
}
