package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ikegw/cluster/certs"
	"ikegw/cmd/api"
)

func TestRedactYAML(t *testing.T) {
	in := "node: {name: gw1}\nconnections:\n  - name: a\n    psk: hunter2-secret\n    psk_file: /etc/ikegw/a.psk\n    nested: {Key: topsecretkey}\n"
	out, err := redactYAML([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, "hunter2-secret") || strings.Contains(s, "topsecretkey") {
		t.Fatalf("secret left in:\n%s", s)
	}
	if !strings.Contains(s, "/etc/ikegw/a.psk") || strings.Count(s, "<redacted>") != 2 {
		t.Fatalf("redacted wrongly:\n%s", s)
	}
	if _, err := redactYAML([]byte("a: [")); err == nil {
		t.Fatal("bad YAML accepted")
	}
}

const testPSK = "metrics-must-not-show-this-psk"

func testNode(t *testing.T) *Node {
	t.Helper()
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	if err := os.WriteFile(pskFile, []byte(testPSK), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := "node: {name: gw1, state_dir: " + dir + "}\nconnections:\n  - name: peer\n    local_addrs: 127.0.0.1\n    remote_addrs: 127.0.0.2\n" +
		"    psk_file: " + pskFile + "\n    proposals: [aes256-sha256-modp2048]\n" +
		"    children:\n      - {name: net, local_ts: [10.1.0.0/16], remote_ts: [10.2.0.0/16], esp_proposals: [aes256-sha256]}\n"
	cfg, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return &Node{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), started: time.Now()}
}

func TestMetricsScrape(t *testing.T) {
	n := testNode(t)
	srv := httptest.NewServer(metricsHandler(n))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	s := string(body)
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, s)
	}
	for _, want := range []string{
		`ikegw_info{dataplane="none",node="gw1",role="standalone",version="dev"} 1`,
		`ikegw_role{role="standalone"} 1`,
		`ikegw_role{role="active"} 0`,
		`ikegw_scrape_errors{part="sas"} 1`, // a node without an SA database says so
		"go_goroutines",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(s, testPSK) {
		t.Fatal("the PSK appears in the metrics")
	}
}

// issue writes a client certificate signed by ca into dir and returns its
// cert and key paths.
func issue(t *testing.T, ca *certs.CA, dir, name string, uris ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// adminTLS starts the admin TCP listener of a test node "gw1" whose
// certificate comes from a fresh test CA in dir.
func adminTLS(t *testing.T) (ca *certs.CA, dir string, f certs.TLSFiles, addr net.Addr) {
	t.Helper()
	dir = t.TempDir()
	ca, err := certs.GenerateCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueNode(dir, "gw1", nil, nil); err != nil {
		t.Fatal(err)
	}
	n := testNode(t)
	f = certs.NodeFiles(dir, "gw1")
	n.cfg.Cluster = &ClusterConfig{}
	n.cfg.Cluster.TLS.CA, n.cfg.Cluster.TLS.Cert, n.cfg.Cluster.TLS.Key = f.CA, f.Cert, f.Key
	srv, addr, err := startAdminTLS("127.0.0.1:0", n, adminMux(n, n.log), n.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return ca, dir, f, addr
}

func TestAdminTLSRoles(t *testing.T) {
	ca, dir, _, addr := adminTLS(t)
	otherDir := t.TempDir()
	other, err := certs.GenerateCA(otherDir, "other CA")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := func(c tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, ServerName: "gw1", Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS13}}}
	}
	base := "https://" + addr.String()
	ro := client(issue(t, ca, dir, "viewer"))
	adm := client(issue(t, ca, dir, "op", RoleAdminURI))
	stranger := client(issue(t, other, otherDir, "op", RoleAdminURI))

	do := func(c *http.Client, method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		res, err := c.Do(req)
		if err != nil {
			return -1, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := do(ro, "GET", api.PathConfig); code != 200 || !strings.Contains(body, "gw1") {
		t.Fatalf("read-only GET config: %d %s", code, body)
	}
	if code, body := do(ro, "GET", api.PathConfigApplied); code != 200 || !strings.Contains(body, `"peer"`) {
		t.Fatalf("read-only GET applied config: %d %s", code, body)
	}
	if code, body := do(ro, "GET", api.PathMembers); code != 200 || !strings.Contains(body, `"standalone"`) {
		t.Fatalf("read-only GET members: %d %s", code, body)
	}
	for _, p := range []string{api.PathFailover, api.PathInitiate + "?conn=peer", api.PathValidate,
		api.PathMembersJoin + "?addr=127.0.0.1:1", api.PathMembersRemove + "?node=gw2", api.PathConfigApply} {
		if code, body := do(ro, "POST", p); code != http.StatusForbidden || !strings.Contains(body, "admin role") {
			t.Fatalf("read-only POST %s: %d %s", p, code, body)
		}
	}
	if code, _ := do(ro, "GET", api.PathSnapshot); code != http.StatusForbidden {
		t.Fatalf("read-only snapshot: %d", code)
	}
	// The admin passes the role check: a standalone node has no failover.
	if code, body := do(adm, "POST", api.PathFailover); code != http.StatusConflict || !strings.Contains(body, "not a cluster gateway") {
		t.Fatalf("admin POST failover: %d %s", code, body)
	}
	if code, body := do(adm, "POST", api.PathInitiate+"?conn=peer"); code != http.StatusConflict {
		t.Fatalf("admin POST initiate on a node without runtime: %d %s", code, body)
	}
	if code, body := do(stranger, "GET", api.PathStatus); code != -1 {
		t.Fatalf("client of another CA accepted: %d %s", code, body)
	}
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gw1"}}}
	if code, body := do(noCert, "GET", api.PathStatus); code != -1 {
		t.Fatalf("client without certificate accepted: %d %s", code, body)
	}
}

// TestAdminTLSReloadsCertificate renews the node certificate under a
// running admin TCP listener: the next connection gets the new one without
// a restart, and a broken replacement keeps the last good pair in use.
func TestAdminTLSReloadsCertificate(t *testing.T) {
	ca, dir, f, addr := adminTLS(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	viewer := issue(t, ca, dir, "viewer")
	served := func() *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", addr.String(), &tls.Config{RootCAs: pool, ServerName: "gw1",
			Certificates: []tls.Certificate{viewer}, MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := served()
	renewed := t.TempDir()
	if err := ca.IssueNode(renewed, "gw1", nil, nil); err != nil {
		t.Fatal(err)
	}
	install := func(name, dst string, b []byte) {
		t.Helper()
		if b == nil {
			var err error
			if b, err = os.ReadFile(filepath.Join(renewed, name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(dst+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		os.Chtimes(dst, later, later)
	}
	install(certs.NodeKeyFile("gw1"), f.Key, nil)
	install(certs.NodeCertFile("gw1"), f.Cert, nil)
	second := served()
	if second.Cmp(first) == 0 {
		t.Fatal("the renewed certificate was not served")
	}
	install("", f.Cert, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n"))
	if third := served(); third.Cmp(second) != 0 {
		t.Fatalf("after a broken replacement the listener served serial %v, want the last good %v", third, second)
	}
}
