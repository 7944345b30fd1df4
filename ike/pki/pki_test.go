package pki

import (
	"crypto/ecdsa"
	"crypto/sha1"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, kt KeyType) *CA {
	t.Helper()
	ca, err := NewCA("test CA "+string(kt), kt, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, l Leaf) (*x509.Certificate, any) {
	t.Helper()
	c, k, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestVerifyAndRefusals(t *testing.T) {
	for _, kt := range []KeyType{RSA2048, ECDSA256, ECDSA384} {
		t.Run(string(kt), func(t *testing.T) {
			ca := mustCA(t, kt)
			other := mustCA(t, kt)
			good, _ := mustIssue(t, ca, Leaf{CommonName: "gw", DNSNames: []string{"gw.example"}, KeyType: kt})
			expired, _ := mustIssue(t, ca, Leaf{CommonName: "old", KeyType: kt,
				NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
			foreign, _ := mustIssue(t, other, Leaf{CommonName: "foreign", KeyType: kt})
			revoked, _ := mustIssue(t, ca, Leaf{CommonName: "revoked", KeyType: kt})
			noSig, _ := mustIssue(t, ca, Leaf{CommonName: "enc", KeyType: kt, KeyUsage: x509.KeyUsageKeyAgreement})
			crl, err := ca.CRL(revoked)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := NewTrust([]*x509.Certificate{ca.Cert}, []*x509.RevocationList{crl})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			ee, err := tr.Verify([][]byte{good.Raw}, now)
			if err != nil || ee.Subject.CommonName != "gw" {
				t.Fatalf("good: %v", err)
			}
			cases := []struct {
				name string
				der  [][]byte
				want error
			}{
				{"expired", [][]byte{expired.Raw}, ErrExpired},
				{"other CA", [][]byte{foreign.Raw}, ErrUnknownCA},
				{"revoked", [][]byte{revoked.Raw}, ErrRevoked},
				{"key usage", [][]byte{noSig.Raw}, ErrKeyUsage},
				{"none", nil, ErrNoCert},
				{"garbage", [][]byte{{0x30, 0x03, 1, 2, 3}}, ErrBadCert},
			}
			for _, c := range cases {
				_, err := tr.Verify(c.der, now)
				if !errors.Is(err, c.want) {
					t.Errorf("%s: got %v, want %v", c.name, err, c.want)
				}
			}
			if _, err := tr.Verify([][]byte{good.Raw}, now.Add(400*24*time.Hour)); !errors.Is(err, ErrExpired) {
				t.Errorf("good cert in a year: %v", err)
			}
			if dns := tr.CADNs(); len(dns) != 1 || string(dns[0]) != string(ca.Cert.RawSubject) {
				t.Errorf("CADNs %x", dns)
			}
		})
	}
}

func TestIntermediateChain(t *testing.T) {
	root := mustCA(t, ECDSA256)
	ic, ik, err := root.Issue(Leaf{CommonName: "intermediate", KeyType: ECDSA256, CA: true})
	if err != nil {
		t.Fatal(err)
	}
	inter := &CA{Cert: ic, Key: ik}
	leaf, _ := mustIssue(t, inter, Leaf{CommonName: "leaf", KeyType: ECDSA256})
	crl, err := inter.CRL(leaf)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrust([]*x509.Certificate{root.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify([][]byte{leaf.Raw, ic.Raw}, time.Now()); err != nil {
		t.Fatalf("leaf with intermediate: %v", err)
	}
	if _, err := tr.Verify([][]byte{leaf.Raw}, time.Now()); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("leaf without its intermediate: %v", err)
	}
	selfSigned := mustCA(t, ECDSA256)
	other, _ := mustIssue(t, selfSigned, Leaf{CommonName: "o", KeyType: ECDSA256})
	if _, err := tr.Verify([][]byte{other.Raw, selfSigned.Cert.Raw}, time.Now()); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("self-signed intermediate accepted: %v", err)
	}
	tr2, err := NewTrust([]*x509.Certificate{root.Cert, ic}, []*x509.RevocationList{crl})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr2.Verify([][]byte{leaf.Raw}, time.Now()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("leaf revoked by intermediate CRL: %v", err)
	}
}

func TestCRLFromOtherCARefused(t *testing.T) {
	ca, other := mustCA(t, ECDSA256), mustCA(t, ECDSA256)
	crl, err := other.CRL()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTrust([]*x509.Certificate{ca.Cert}, []*x509.RevocationList{crl}); !errors.Is(err, ErrBadCRL) {
		t.Fatalf("foreign CRL: %v", err)
	}
}

func TestMatchIdentity(t *testing.T) {
	ca := mustCA(t, ECDSA256)
	c, _ := mustIssue(t, ca, Leaf{CommonName: "gw", KeyType: ECDSA256, DNSNames: []string{"gw.example"},
		IPs: []net.IP{net.IPv4(10, 0, 0, 1), net.ParseIP("fd00::1")}, Emails: []string{"vpn@example.org"}})
	ok := []struct {
		typ  uint8
		data []byte
	}{
		{IDDERASN1DN, c.RawSubject},
		{IDFQDN, []byte("GW.example")},
		{IDUserFQDN, []byte("vpn@example.org")},
		{IDIPv4, []byte{10, 0, 0, 1}},
		{IDIPv6, net.ParseIP("fd00::1")},
	}
	for _, o := range ok {
		if err := MatchIdentity(c, o.typ, o.data); err != nil {
			t.Errorf("type %d: %v", o.typ, err)
		}
	}
	bad := []struct {
		typ  uint8
		data []byte
	}{
		{IDDERASN1DN, ca.Cert.RawSubject},
		{IDFQDN, []byte("other.example")},
		{IDUserFQDN, []byte("x@example.org")},
		{IDIPv4, []byte{10, 0, 0, 2}},
		{IDIPv4, []byte{10, 0}},
		{11, []byte("keyid")},
	}
	for _, b := range bad {
		if err := MatchIdentity(c, b.typ, b.data); !errors.Is(err, ErrIdentityMismatch) {
			t.Errorf("type %d %q: %v", b.typ, b.data, err)
		}
	}
}

func TestSignVerify(t *testing.T) {
	hash := sha1.Sum([]byte("HASH_I"))
	for _, kt := range []KeyType{RSA2048, ECDSA256, ECDSA384} {
		k, err := NewKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := Sign(k, hash[:])
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifySig(k.Public(), hash[:], sig); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
		bad := append([]byte(nil), hash[:]...)
		bad[0] ^= 1
		if err := VerifySig(k.Public(), bad, sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: altered hash: %v", kt, err)
		}
		if err := VerifySig(k.Public(), hash[:], sig[:len(sig)-1]); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: short sig: %v", kt, err)
		}
		m, err := AuthMethod(k.Public())
		want := map[KeyType]uint16{RSA2048: AuthRSASig, ECDSA256: AuthECDSA256, ECDSA384: AuthECDSA384}[kt]
		if err != nil || m != want {
			t.Errorf("%s: auth method %d %v", kt, m, err)
		}
	}
}

func TestWriteLabAndLoad(t *testing.T) {
	dir := t.TempDir()
	created, err := WriteLab(dir, ECDSA256, []string{"gw1", "peer"})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 6 {
		t.Fatalf("created %v", created)
	}
	again, err := WriteLab(dir, ECDSA256, []string{"gw1", "gw2"})
	if err != nil || len(again) != 2 {
		t.Fatalf("second run: %v %v", again, err)
	}
	tr, err := LoadTrust([]string{filepath.Join(dir, "ca.pem")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"gw1", "peer", "gw2"} {
		cs, err := LoadCerts(filepath.Join(dir, n+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Verify([][]byte{cs[0].Raw}, time.Now()); err != nil {
			t.Errorf("%s: %v", n, err)
		}
		k, err := LoadKey(filepath.Join(dir, n+".key"))
		if err != nil {
			t.Fatal(err)
		}
		h := make([]byte, 32)
		sig, _ := Sign(k, h)
		if err := VerifySig(cs[0].PublicKey, h, sig); err != nil {
			t.Errorf("%s key does not match cert: %v", n, err)
		}
		if len(Fingerprint(cs[0])) != 32 {
			t.Error("fingerprint length")
		}
	}
	kp := filepath.Join(dir, "peer.key")
	if err := os.Chmod(kp, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(kp); !errors.Is(err, ErrKeyInsecure) {
		t.Fatalf("0640 key accepted: %v", err)
	}
	if _, err := WriteLab(dir, ECDSA256, []string{"../x"}); err == nil {
		t.Fatal("path name accepted")
	}
	if _, err := LoadCerts(filepath.Join(dir, "peer.key")); !errors.Is(err, ErrBadCert) {
		t.Fatalf("key as cert: %v", err)
	}
}

func TestCRLFile(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, ECDSA256)
	c, _ := mustIssue(t, ca, Leaf{CommonName: "r", KeyType: ECDSA256})
	crl, err := ca.CRL(c)
	if err != nil {
		t.Fatal(err)
	}
	caf, crlf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.crl")
	os.WriteFile(caf, CertPEM(ca.Cert), 0o644)
	os.WriteFile(crlf, crl.Raw, 0o644)
	tr, err := LoadTrust([]string{caf}, []string{crlf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify([][]byte{c.Raw}, time.Now()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked via file: %v", err)
	}
	os.WriteFile(crlf, []byte("junk"), 0o644)
	var fe *FileError
	if _, err := LoadTrust([]string{caf}, []string{crlf}); !errors.As(err, &fe) || !errors.Is(err, ErrBadCRL) {
		t.Fatalf("junk CRL: %v", err)
	}
}

func TestWriteLabCertsAndCRL(t *testing.T) {
	dir := t.TempDir()
	created, err := WriteLabCerts(dir, RSA2048, []LabCert{
		{Name: "gw", DNS: []string{"gw.example.net"}, IPs: []net.IP{net.ParseIP("192.0.2.1")}},
		{Name: "alice", Emails: []string{"alice@example.net"}},
	})
	if err != nil || len(created) != 6 {
		t.Fatalf("created %v, %v", created, err)
	}
	// A second key type for new leaves under the same (RSA) CA.
	if _, err := WriteLabCerts(dir, ECDSA256, []LabCert{{Name: "peer"}}); err != nil {
		t.Fatal(err)
	}
	tr, err := LoadTrust([]string{filepath.Join(dir, "ca.pem")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	load := func(n string) *x509.Certificate {
		cs, err := LoadCerts(filepath.Join(dir, n+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Verify([][]byte{cs[0].Raw}, time.Now()); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		return cs[0]
	}
	gw, alice, peer := load("gw"), load("alice"), load("peer")
	if err := MatchIdentity(gw, IDIPv4, []byte{192, 0, 2, 1}); err != nil {
		t.Error(err)
	}
	if err := MatchIdentity(gw, IDFQDN, []byte("gw.example.net")); err != nil {
		t.Error(err)
	}
	if err := MatchIdentity(alice, IDUserFQDN, []byte("alice@example.net")); err != nil {
		t.Error(err)
	}
	if dn, _ := ParseDN("O=ikegw lab, CN=peer"); MatchIdentity(peer, IDDERASN1DN, dn) != nil || MatchIdentity(peer, IDFQDN, []byte("peer")) != nil {
		t.Errorf("peer subject %q DNS %v", peer.Subject, peer.DNSNames)
	}
	if _, ok := peer.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("peer key %T, want ECDSA", peer.PublicKey)
	}

	p, err := WriteLabCRL(dir, []string{"alice"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err = LoadTrust([]string{filepath.Join(dir, "ca.pem")}, []string{p})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify([][]byte{alice.Raw}, time.Now()); !errors.Is(err, ErrRevoked) {
		t.Errorf("alice after revocation: %v", err)
	}
	if _, err := tr.Verify([][]byte{gw.Raw}, time.Now()); err != nil {
		t.Errorf("gw after alice's revocation: %v", err)
	}
	// An empty CRL replaces it.
	if _, err := WriteLabCRL(dir, nil); err != nil {
		t.Fatal(err)
	}
	if tr, err = LoadTrust([]string{filepath.Join(dir, "ca.pem")}, []string{p}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Verify([][]byte{alice.Raw}, time.Now()); err != nil {
		t.Errorf("alice with an empty CRL: %v", err)
	}
	for _, bad := range [][]string{{"nobody"}, {"../gw"}, {"ca"}} {
		if _, err := WriteLabCRL(dir, bad); err == nil {
			t.Errorf("WriteLabCRL(%q) succeeded", bad)
		}
	}
	if _, err := WriteLabCRL(t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "no lab CA") {
		t.Errorf("CRL without a CA: %v", err)
	}
	if _, err := WriteLabCerts(dir, "rsa1024", []LabCert{{Name: "x"}}); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("rsa1024: %v", err)
	}
}
