package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ikegw/ike/pki"
)

func TestPubkeyConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.WriteLab(dir, pki.ECDSA256, []string{"gw", "other"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.crl"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "open.key"), mustRead(t, filepath.Join(dir, "gw.key")), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"auth: pubkey", "cert: gw.pem", "key: gw.key", "cacerts: [ca.pem]"}
	cases := []struct {
		name  string
		lines []string
		kind  error
		text  string
	}{
		{"no cert", []string{"auth: pubkey", "key: gw.key", "cacerts: [ca.pem]"}, ErrMissing, "cert: auth pubkey needs our certificate file"},
		{"no key", []string{"auth: pubkey", "cert: gw.pem", "cacerts: [ca.pem]"}, ErrMissing, "key: auth pubkey needs the private key file"},
		{"no CA", []string{"auth: pubkey", "cert: gw.pem", "key: gw.key"}, ErrMissing, "cacerts: auth pubkey needs at least one CA"},
		{"key of another cert", []string{"auth: pubkey", "cert: gw.pem", "key: other.key", "cacerts: [ca.pem]"}, ErrInvalid, `key "other.key": the key does not belong to the certificate`},
		{"key readable by others", []string{"auth: pubkey", "cert: gw.pem", "key: open.key", "cacerts: [ca.pem]"}, ErrInsecure, "mode 0644"},
		{"missing cert file", []string{"auth: pubkey", "cert: nope.pem", "key: gw.key", "cacerts: [ca.pem]"}, os.ErrNotExist, `cert "nope.pem"`},
		{"key as cert", []string{"auth: pubkey", "cert: gw.key", "key: gw.key", "cacerts: [ca.pem]"}, ErrInvalid, `cert "gw.key"`},
		{"bad CRL", append(base[:4:4], "crls: [junk.crl]"), ErrInvalid, "crls[0]: "},
		{"bad send_cert", append(base[:4:4], "send_cert: never"), ErrInvalid, `send_cert "never": want always or ifasked`},
		{"cert with psk", []string{"auth: psk", "psk_env: HOME", "cert: gw.pem"}, ErrInvalid, "auth is not pubkey"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := "connections:\n  - name: dc2\n    remote_addrs: 198.51.100.20\n    children: [{name: net}]\n"
			for _, l := range c.lines {
				doc += "    " + l + "\n"
			}
			p := filepath.Join(dir, "c.yaml")
			if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if !errors.Is(err, c.kind) || !strings.Contains(fmt.Sprint(err), c.text) {
				t.Fatalf("got %v\nwant %v containing %q", err, c.kind, c.text)
			}
		})
	}
}

func TestPubkeyParsedAndRedacted(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.WriteLab(dir, pki.RSA2048, []string{"gw"}); err != nil {
		t.Fatal(err)
	}
	var pk *PubkeyAuth
	r := rawConn{Cert: ptr("gw.pem"), Key: ptr("gw.key"), CACerts: &strList{"ca.pem"}, SendCert: ptr("ifasked")}
	c := &Connection{Auth: AuthPubkey}
	if err := parsePubkey(c, &r, dir, func(f, v string, err error) error { return fmt.Errorf("%s %s: %w", f, v, err) }); err != nil {
		t.Fatal(err)
	}
	pk = c.Pubkey
	if len(pk.Certs) != 1 || pk.Certs[0].Subject.CommonName != "gw" || pk.SendCert != SendCertIfAsked || pk.Trust == nil {
		t.Fatalf("parsed %+v", pk)
	}
	if m, err := pki.AuthMethod(pk.Key.Public()); err != nil || m != pki.AuthRSASig {
		t.Fatalf("auth method %d %v", m, err)
	}
	for _, s := range []string{fmt.Sprintf("%v", pk.Key), fmt.Sprintf("%#v", pk.Key), fmt.Sprintf("%+v", pk)} {
		if strings.Contains(s, "Primes") || strings.Contains(s, "D:") {
			t.Fatalf("key material printed: %s", s)
		}
	}
}

func ptr(s string) *string { return &s }

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPubkeyIdentities: without local_id a certificate connection is its
// certificate's subject DN; without remote_id it accepts %any (the engine
// checks the peer's ID against its certificate); a configured local_id
// must be vouched for by our certificate, and a DN typed as text is sent
// with the certificate's own encoding.
func TestPubkeyIdentities(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.WriteLab(dir, pki.ECDSA256, []string{"gw"}); err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadCerts(filepath.Join(dir, "gw.pem"))
	if err != nil {
		t.Fatal(err)
	}
	load := func(extra ...string) (*Connection, error) {
		doc := "connections:\n  - name: dc2\n    local_addrs: 192.0.2.1\n    remote_addrs: 198.51.100.20\n    children: [{name: net}]\n" +
			"    auth: pubkey\n    cert: gw.pem\n    key: gw.key\n    cacerts: [ca.pem]\n"
		for _, l := range extra {
			doc += "    " + l + "\n"
		}
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p)
		if err != nil {
			return nil, err
		}
		return cfg.Connections[0], nil
	}
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if c.LocalID.Type != IDDERASN1DN || string(c.LocalID.Data) != string(cert[0].RawSubject) {
		t.Errorf("default local id %s, want the certificate subject", c.LocalID)
	}
	if !c.RemoteID.IsAny() {
		t.Errorf("default remote id %s, want %%any", c.RemoteID)
	}
	c, err = load(`local_id: "o=IKEGW LAB, cn=GW"`, `remote_id: "O=ikegw lab, CN=peer"`)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.LocalID.Data) != string(cert[0].RawSubject) {
		t.Errorf("local id %s not sent as the certificate's DER subject", c.LocalID)
	}
	if want, _ := pki.ParseDN("O=ikegw lab, CN=peer"); c.RemoteID.Type != IDDERASN1DN || string(c.RemoteID.Data) != string(want) {
		t.Errorf("remote id %s", c.RemoteID)
	}
	if c, err = load("aggressive: true"); err != nil || !c.Aggressive {
		t.Errorf("aggressive mode with certificates: %v", err)
	}
	if c, err = load("local_id: gw"); err != nil || c.LocalID.Type != IDFQDN {
		t.Errorf("FQDN local id in the certificate's DNS names: %v %v", c, err)
	}
	for _, bad := range []struct{ line, text string }{
		{`local_id: "O=ikegw lab, CN=other"`, `local_id "O=ikegw lab, CN=other": our certificate does not vouch for this identity: identity does not match certificate: DN "O=ikegw lab, CN=other" is not the subject "O=ikegw lab, CN=gw"`},
		{`local_id: 192.0.2.1`, `local_id "192.0.2.1": our certificate does not vouch for this identity`},
		{`remote_id: "CN=x, Q=1"`, `remote_id: "CN=x, Q=1": bad distinguished name: unknown attribute "Q"`},
	} {
		_, err := load(bad.line)
		if err == nil || !strings.Contains(err.Error(), bad.text) {
			t.Errorf("%s: got %v, want %q", bad.line, err, bad.text)
		}
	}
}
