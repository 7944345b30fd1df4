package daemon

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ikegw/cmd/api"
)

const applyConns = `connections:
  - name: %s
    local_addrs: 127.0.0.1
    remote_addrs: 127.0.0.2
    psk_file: psk
    proposals: [aes256-sha256-modp2048]
    children:
      - {name: net, local_ts: [10.1.0.0/16], remote_ts: [10.2.0.0/16], esp_proposals: [%s]}
`

func conns(name, esp string) string { return fmt.Sprintf(applyConns, name, esp) }

func TestApplyBody(t *testing.T) {
	n := testNode(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "psk"), []byte(testPSK), 0o600); err != nil {
		t.Fatal(err)
	}
	n.cfg.baseDir = dir
	file := "node: {name: other, state_dir: /x}\nfailover: {vips: []}\n" + conns("dc2", "aes256-sha256")
	doc, cs, ignored, err := n.applyBody([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Name != "dc2" || !slices.Equal(ignored, []string{"node", "failover"}) {
		t.Fatalf("conns %v ignored %v", cs, ignored)
	}
	if strings.Contains(string(doc), "state_dir") || !strings.Contains(string(doc), "psk_file: psk") {
		t.Fatalf("replicated document:\n%s", doc)
	}
	// The replicated document decodes the same on a node (relative
	// psk_file against that node's directory).
	again, err := decodeClusterConns(doc, dir)
	if err != nil || len(again) != 1 || again[0].Name != "dc2" {
		t.Fatalf("decode: %v %v", again, err)
	}
	if _, err := decodeClusterConns(doc, t.TempDir()); err == nil || !strings.Contains(err.Error(), "psk") {
		t.Fatalf("missing psk_file on a node: %v", err)
	}

	for _, c := range []struct{ name, file, want string }{
		{"no connections", "node: {name: a}\n", "connections: missing"},
		{"not a mapping", "- a\n- b\n", "mapping"},
		{"unknown cipher", conns("dc2", "aes999-sha1"), "aes999"},
		{"unknown field", conns("dc2", "aes256-sha256") + "    bogus: 1\n", "bogus"},
		{"bad YAML", "connections: [", "config"},
	} {
		if _, _, _, err := n.applyBody([]byte(c.file)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming %q", c.name, err, c.want)
		}
	}
}

// A standalone node has no cluster-wide configuration: apply is refused,
// applied shows the file's connections.
func TestConfigApplyStandalone(t *testing.T) {
	n := testNode(t)
	mux := adminMux(n, n.log)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, api.PathConfigApply, strings.NewReader("connections: []\n")))
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "not a cluster member") {
		t.Fatalf("apply on standalone: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, api.PathConfigApplied, nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"peer"`) || !strings.Contains(rec.Body.String(), `"version": 0`) {
		t.Fatalf("applied on standalone: %d %s", rec.Code, rec.Body)
	}
	for _, p := range []string{api.PathMembersJoin + "?addr=127.0.0.1:1", api.PathMembersRemove + "?node=gw2"} {
		rec = httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, p, nil))
		if rec.Code != http.StatusConflict {
			t.Fatalf("%s on standalone: %d %s", p, rec.Code, rec.Body)
		}
	}
}
