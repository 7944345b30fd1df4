package certs

import (
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestGenerateAndLoad(t *testing.T) {
	dir := t.TempDir()
	ca, err := GenerateCA(dir, "ikegw-lab")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.IssueNode(dir, "gw1", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAKeyFile, NodeKeyFile("gw1")} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	cert, pool, err := NodeFiles(dir, "gw1").Load()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "gw1",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify by name: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("IP SAN: %v", err)
	}
	// A certificate from another CA must not verify against this pool.
	other := t.TempDir()
	ca2, err := GenerateCA(other, "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca2.IssueNode(other, "gw1", nil, nil); err != nil {
		t.Fatal(err)
	}
	c2, _, err := NodeFiles(other, "gw1").Load()
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := x509.ParseCertificate(c2.Certificate[0])
	if _, err := leaf2.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Error("certificate of another CA verified")
	}
	// Reload the CA and refuse overwrites.
	if _, err := LoadCA(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateCA(dir, "again"); !errors.Is(err, ErrExists) {
		t.Errorf("overwrite CA: got %v, want ErrExists", err)
	}
	if err := ca.IssueNode(dir, "../evil", nil, nil); err == nil {
		t.Error("path-like node name accepted")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCA(dir); err == nil {
		t.Error("LoadCA on empty dir succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil {
		t.Error("LoadCA on junk succeeded")
	}
	if _, _, err := NodeFiles(dir, "x").Load(); err == nil {
		t.Error("Load of missing node files succeeded")
	}
}

func TestLab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	got, err := Lab(dir, "lab", []Node{{Name: "gw1", IPs: []net.IP{net.ParseIP("10.0.0.1")}}, {Name: "w1"}})
	if err != nil || len(got) != 2 {
		t.Fatalf("first run: %v %v", got, err)
	}
	got, err = Lab(dir, "lab", []Node{{Name: "gw1"}, {Name: "gw2"}})
	if err != nil || len(got) != 1 || got[0] != "gw2" {
		t.Fatalf("second run: %v %v", got, err)
	}
	for _, n := range []string{"gw1", "gw2", "w1"} {
		if _, _, err := NodeFiles(dir, n).Load(); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v %v", st.Mode().Perm(), err)
	}
}
