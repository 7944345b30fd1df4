package main

// Certificate authentication against strongSwan 5.9.8 (issue 9): Main Mode
// with RSA and ECDSA signatures and X.509 certificates from a lab CA, both
// roles, and the refusals (expired, another CA, identity, revoked) on both
// sides with the log line that says why. Root only, like interop_test.go.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/lab"
	"ikegw/ike/pki"
)

// certLab is the lab PKI of one test: a trusted CA, an untrusted one, and
// the certificates of ikegwd ("gw") and of strongSwan ("peer").
type certLab struct {
	kt          pki.KeyType
	ca, other   *pki.CA
	gw, peer    *x509.Certificate
	gwInter     *x509.Certificate // intermediate CA of gw, or nil
	gwKey, pKey crypto.Signer
	gwCRL       *x509.RevocationList // CRL ikegwd loads (nil: none)
	swanCRL     *x509.RevocationList // CRL strongSwan loads (nil: none)
}

// certOpts varies one side of a certificate bed.
type certOpts struct {
	kt          pki.KeyType
	gwLeaf      func(*pki.Leaf) // adjusts ikegwd's certificate
	peerLeaf    func(*pki.Leaf) // adjusts strongSwan's certificate
	gwFromOther bool            // ikegwd's certificate comes from the untrusted CA
	peerOther   bool            // strongSwan's certificate comes from the untrusted CA
	revokeGW    bool            // strongSwan loads a CRL revoking ikegwd's certificate
	revokePeer  bool            // ikegwd loads a CRL revoking strongSwan's certificate
	gwRemoteID  string          // ikegwd's remote_id ("" = default, %any)
	swanRemote  string          // strongSwan's remote id ("" = %any)
	ifAsked     bool            // send_cert ifasked on both sides (certificates only after a CR)
	gwViaInter  bool            // ikegwd's certificate comes from an intermediate CA (sent with it)
	ike         string          // IKE proposal on both sides (default certIKE)
	aggressive  bool            // Aggressive Mode on both sides
	gwLocalID   string          // ikegwd's local_id ("" = its certificate's subject)
	swanLocalID string          // strongSwan's local id ("" = its certificate's subject)
	dpd         time.Duration
}

func newCertLab(t *testing.T, o certOpts) *certLab {
	t.Helper()
	l := &certLab{kt: o.kt}
	var err error
	if l.ca, err = pki.NewCA("ikegw interop CA", o.kt, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if l.other, err = pki.NewCA("some other CA", o.kt, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	issue := func(fromOther bool, leaf pki.Leaf, adj func(*pki.Leaf)) (*x509.Certificate, crypto.Signer) {
		leaf.KeyType = o.kt
		if adj != nil {
			adj(&leaf)
		}
		ca := l.ca
		if fromOther {
			ca = l.other
		}
		c, k, err := ca.Issue(leaf)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	gwLeaf := pki.Leaf{CommonName: "gw", DNSNames: []string{"gw.ikegw.test"}, IPs: []net.IP{net.IP(gwPub.Addr().AsSlice())}}
	if o.gwViaInter {
		ic, ik, err := l.ca.Issue(pki.Leaf{CommonName: "ikegw intermediate CA", KeyType: o.kt, CA: true})
		if err != nil {
			t.Fatal(err)
		}
		l.gwInter = ic
		gwLeaf.KeyType = o.kt
		if l.gw, l.gwKey, err = (&pki.CA{Cert: ic, Key: ik}).Issue(gwLeaf); err != nil {
			t.Fatal(err)
		}
	} else {
		l.gw, l.gwKey = issue(o.gwFromOther, gwLeaf, o.gwLeaf)
	}
	l.peer, l.pKey = issue(o.peerOther, pki.Leaf{CommonName: "peer", DNSNames: []string{"peer.ikegw.test"}}, o.peerLeaf)
	if o.revokePeer {
		if l.gwCRL, err = l.ca.CRL(l.peer); err != nil {
			t.Fatal(err)
		}
	}
	if o.revokeGW {
		if l.swanCRL, err = l.ca.CRL(l.gw); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func writePEM(t *testing.T, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}

// swanKey writes a private key where swanctl --load-creds finds it: PKCS#1
// in rsa/, SEC 1 in ecdsa/.
func swanKey(t *testing.T, swDir string, k crypto.Signer) {
	t.Helper()
	switch k := k.(type) {
	case *rsa.PrivateKey:
		writePEM(t, filepath.Join(swDir, "rsa", "peer.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), 0o600)
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(swDir, "ecdsa", "peer.key"), "EC PRIVATE KEY", der, 0o600)
	default:
		t.Fatalf("key type %T", k)
	}
}

const certIKE, certESP = "aes256-sha256-modp2048", "aes256-sha256"

// newCertBed is newBed with certificates: ikegwd with auth pubkey, and a
// strongSwan whose connection "gw" (child "net") authenticates with its
// certificate (swanctl.conf rewritten and reloaded after start, the
// credentials in the instance's swanctl directories).
func newCertBed(t *testing.T, o certOpts) (*bed, *certLab) {
	lab.RequireRoot(t)
	if o.dpd == 0 {
		o.dpd = 30 * time.Second
	}
	if o.ike == "" {
		o.ike = certIKE
	}
	cl := newCertLab(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := lab.NewT(t)
	b := &bed{t: t, lab: l, dir: t.TempDir()}
	var err error
	if b.gwNS, err = l.NewNS(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	if b.peerNS, err = l.NewNS(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	must(t, l.Veth(ctx, b.gwNS, "eth0", b.peerNS, "eth0"))
	must(t, b.gwNS.AddAddr(ctx, "eth0", gwPub))
	must(t, b.peerNS.AddAddr(ctx, "eth0", peerPub))
	if b.gwProt, err = b.gwNS.AddLoopbackAddr(ctx, gwNet); err != nil {
		t.Fatal(err)
	}
	if b.peerProt, err = b.peerNS.AddLoopbackAddr(ctx, peerNet); err != nil {
		t.Fatal(err)
	}

	// ikegwd: its certificate and key, the trusted CA, maybe a CRL.
	gwPEM := pki.CertPEM(cl.gw)
	if cl.gwInter != nil {
		gwPEM = append(gwPEM, pki.CertPEM(cl.gwInter)...)
	}
	must(t, os.WriteFile(filepath.Join(b.dir, "gw.pem"), gwPEM, 0o644))
	kp, err := pki.KeyPEM(cl.gwKey)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(b.dir, "gw.key"), kp, 0o600))
	writePEM(t, filepath.Join(b.dir, "ca.pem"), "CERTIFICATE", cl.ca.Cert.Raw, 0o644)
	extra := ""
	if cl.gwCRL != nil {
		writePEM(t, filepath.Join(b.dir, "ca.crl"), "X509 CRL", cl.gwCRL.Raw, 0o644)
		extra += "    crls: [ca.crl]\n"
	}
	if o.gwRemoteID != "" {
		extra += fmt.Sprintf("    remote_id: %q\n", o.gwRemoteID)
	}
	if o.gwLocalID != "" {
		extra += fmt.Sprintf("    local_id: %q\n", o.gwLocalID)
	}
	swanAggressive := "no"
	if o.aggressive {
		extra += "    aggressive: true\n"
		swanAggressive = "yes"
	}
	swanSendCert := "always"
	if o.ifAsked {
		extra += "    send_cert: ifasked\n"
		swanSendCert = "ifasked"
	}
	key := filepath.Join(b.dir, "cluster.key")
	if out, err := exec.Command(ikegwdBin, "keygen", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v: %s", err, out)
	}
	b.sock = filepath.Join(b.dir, "admin.sock")
	cfg := fmt.Sprintf(`node:
  name: gw1
  state_dir: %s
  cluster_key_file: %s
ike:
  listen: [%s]
dataplane:
  kind: userspace
  tun: ikegw%%d
log:
  level: debug
admin:
  socket: %s
connections:
  - name: peer
    local_addrs: %s
    remote_addrs: %s
    auth: pubkey
    cert: gw.pem
    key: gw.key
    cacerts: [ca.pem]
%s    proposals: [%s]
    dpd_delay: %s
    retransmit:
      timeout: 1s
      tries: 3
      base: 1.5
    children:
      - name: net
        local_ts: [%s]
        remote_ts: [%s]
        esp_proposals: [%s]
`, filepath.Join(b.dir, "state"), key, gwPub.Addr(), b.sock, gwPub.Addr(), peerPub.Addr(), extra, o.ike, o.dpd,
		gwNet, peerNet, certESP)
	b.cfgPath = filepath.Join(b.dir, "ikegwd.yaml")
	must(t, os.WriteFile(b.cfgPath, []byte(cfg), 0o600))
	if out, err := exec.Command(ikegwdBin, "check-config", b.cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v: %s", err, out)
	}

	// strongSwan: started with a PSK connection of the same names (the lab
	// renders PSK configurations only), then given its credentials and a
	// certificate version of the connection.
	b.swan = lab.StartStrongSwan(t, b.peerNS, lab.SwanConfig{
		RetransmitTries: 3, RetransmitTimeout: time.Second,
		LogLevels: map[string]int{"default": 1, "ike": 2, "cfg": 2},
		Conns: []lab.SwanConn{{
			Name: "gw", Version: 1,
			LocalAddrs: []string{peerPub.Addr().String()}, RemoteAddrs: []string{gwPub.Addr().String()},
			PSK: lab.Secret("placeholder-replaced-by-certificates"), Proposals: []string{o.ike},
			Children: []lab.SwanChild{{Name: "net", LocalTS: []string{peerNet.String()}, RemoteTS: []string{gwNet.String()},
				ESPProposals: []string{certESP}}},
		}},
	})
	swDir := filepath.Join(b.swan.Dir(), "swanctl")
	writePEM(t, filepath.Join(swDir, "x509", "peer.pem"), "CERTIFICATE", cl.peer.Raw, 0o644)
	writePEM(t, filepath.Join(swDir, "x509ca", "ca.pem"), "CERTIFICATE", cl.ca.Cert.Raw, 0o644)
	swanKey(t, swDir, cl.pKey)
	if cl.swanCRL != nil {
		writePEM(t, filepath.Join(swDir, "x509crl", "ca.crl"), "X509 CRL", cl.swanCRL.Raw, 0o644)
	}
	remoteID, localID := "", ""
	if o.swanRemote != "" {
		remoteID = fmt.Sprintf("      id = \"%s\"\n", o.swanRemote)
	}
	if o.swanLocalID != "" {
		localID = fmt.Sprintf("      id = \"%s\"\n", o.swanLocalID)
	}
	swc := fmt.Sprintf(`connections {
  gw {
    version = 1
    local_addrs = %s
    remote_addrs = %s
    proposals = %s
    aggressive = %s
    send_cert = %s
    dpd_delay = %ds
    rekey_time = 4h
    local {
      auth = pubkey
      certs = peer.pem
%s    }
    remote {
      auth = pubkey
%s    }
    children {
      net {
        local_ts = %s
        remote_ts = %s
        esp_proposals = %s
        rekey_time = 1h
      }
    }
  }
}
`, peerPub.Addr(), gwPub.Addr(), o.ike, swanAggressive, swanSendCert, int(o.dpd/time.Second), localID, remoteID, peerNet, gwNet, certESP)
	must(t, os.WriteFile(filepath.Join(swDir, "swanctl.conf"), []byte(swc), 0o600))
	if out, err := b.swan.Swanctl(ctx, "--load-all", "--clear"); err != nil {
		t.Fatalf("swanctl --load-all with certificates: %v\n%s", err, out)
	}
	b.startGW()
	return b, cl
}

// TestInteropCerts: RSA-2048, ECDSA P-256 and P-384 certificates, both roles:
// Main Mode and Quick Mode established with certificates, both sides agree
// on cookies and SPIs, each side authenticated the other's certificate,
// and a ping crosses the tunnel.
func TestInteropCerts(t *testing.T) {
	for _, c := range []struct {
		kt  pki.KeyType
		ike string
	}{
		{pki.RSA2048, certIKE},
		{pki.ECDSA256, certIKE},
		{pki.ECDSA384, certIKE},
		// ECDSA hashes with the curve's hash, not the proposal's.
		{pki.ECDSA256, "aes128-sha1-modp2048"},
		{pki.ECDSA384, "aes256-sha256-ecp256"},
	} {
		kt := c.kt
		for _, gwInit := range []bool{false, true} {
			name := fmt.Sprintf("%s/%s/peer-initiates", kt, c.ike)
			if gwInit {
				name = fmt.Sprintf("%s/%s/ikegw-initiates", kt, c.ike)
			}
			t.Run(name, func(t *testing.T) {
				// A DN typed in ikegwd's config must match strongSwan's
				// certificate subject as sent in its ID payload.
				b, cl := newCertBed(t, certOpts{kt: kt, ike: c.ike, gwRemoteID: "O=ikegw lab, CN=peer", swanRemote: "O=ikegw lab, CN=gw"})
				ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
				defer cancel()
				if gwInit {
					must(t, b.post(api.PathInitiate, "conn=peer"))
				} else {
					must(t, b.swan.Initiate(ctx, "net"))
				}
				s, _ := b.agree(ctx)
				if s.Initiator == gwInit {
					t.Errorf("strongSwan initiator flag %v", s.Initiator)
				}
				b.ping(ctx, 5)
				// strongSwan authenticated ikegwd with its certificate,
				// and ikegwd recorded strongSwan's DN.
				log := b.swan.Log()
				method := map[pki.KeyType]string{pki.RSA2048: "RSA_EMSA_PKCS1_NULL", pki.ECDSA256: "ECDSA_WITH_NULL", pki.ECDSA384: "ECDSA_WITH_NULL"}[kt]
				if !strings.Contains(log, "authentication of 'O=ikegw lab, CN=gw' with "+method+" successful") {
					b.fail("strongSwan's log does not show it authenticated ikegwd's certificate with %s", method)
				}
				if !strings.Contains(log, `using trusted ca certificate "O=ikegw lab, CN=ikegw interop CA"`) || !strings.Contains(log, "reached self-signed root ca") {
					b.fail("strongSwan did not validate ikegwd's chain to the lab CA")
				}
				g := b.gwSAs()
				if len(g.IKE) != 1 {
					b.fail("ikegwd's IKE SAs: %+v, want one", g.IKE)
				}
				if want := pki.DNString(cl.peer.RawSubject); g.IKE[0].RemoteID != want {
					b.fail("ikegwd's peer identity %q is not strongSwan's certificate subject %q", g.IKE[0].RemoteID, want)
				}
				if sum := sha256.Sum256(cl.peer.Raw); g.IKE[0].PeerCert != hex.EncodeToString(sum[:]) {
					b.fail("ikegwd's peer certificate fingerprint %q is not strongSwan's certificate's", g.IKE[0].PeerCert)
				}
			})
		}
	}
}

// TestInteropCertsIfAsked: with send_cert ifasked on both sides each
// certificate is sent only because the other side asked (CR): strongSwan
// asks in message 3 as responder but only in message 5 as initiator.
func TestInteropCertsIfAsked(t *testing.T) {
	for _, gwInit := range []bool{false, true} {
		t.Run(fmt.Sprintf("ikegw-initiates=%t", gwInit), func(t *testing.T) {
			b, _ := newCertBed(t, certOpts{kt: pki.ECDSA256, ifAsked: true})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if gwInit {
				must(t, b.post(api.PathInitiate, "conn=peer"))
			} else {
				must(t, b.swan.Initiate(ctx, "net"))
			}
			b.agree(ctx)
			log := b.swan.Log()
			if !strings.Contains(log, `received end entity cert "O=ikegw lab, CN=gw"`) || !strings.Contains(log, `sending end entity cert "O=ikegw lab, CN=peer"`) {
				b.fail("certificates not exchanged on request")
			}
			b.ping(ctx, 3)
		})
	}
}

// TestInteropCertsIntermediate: ikegwd's certificate is issued by an
// intermediate CA that cert: holds after it; ikegwd sends both and
// strongSwan, which trusts only the root, builds the chain.
func TestInteropCertsIntermediate(t *testing.T) {
	b, _ := newCertBed(t, certOpts{kt: pki.RSA2048, gwViaInter: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, b.post(api.PathInitiate, "conn=peer"))
	b.agree(ctx)
	log := b.swan.Log()
	if !strings.Contains(log, `received issuer cert "O=ikegw lab, CN=ikegw intermediate CA"`) || !strings.Contains(log, "reached self-signed root ca with a path length of 1") {
		b.fail("strongSwan did not validate ikegwd's certificate through the intermediate it sent")
	}
	b.ping(ctx, 3)
}

// TestInteropCertsAggressive: Aggressive Mode with certificates, both
// roles, RSA and ECDSA; and a refused certificate on each side.
func TestInteropCertsAggressive(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.RSA2048, pki.ECDSA256} {
		for _, gwInit := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ikegw-initiates=%t", kt, gwInit), func(t *testing.T) {
				b, _ := newCertBed(t, certOpts{kt: kt, aggressive: true, swanRemote: "O=ikegw lab, CN=gw"})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if gwInit {
					must(t, b.post(api.PathInitiate, "conn=peer"))
				} else {
					must(t, b.swan.Initiate(ctx, "net"))
				}
				b.agree(ctx)
				log := b.swan.Log()
				if !strings.Contains(log, "Aggressive Mode") || !strings.Contains(log, "authentication of 'O=ikegw lab, CN=gw' with") {
					b.fail("strongSwan did not authenticate ikegwd's certificate in Aggressive Mode")
				}
				b.ping(ctx, 3)
			})
		}
	}
	expired := func(l *pki.Leaf) {
		l.NotBefore, l.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	}
	for _, c := range []struct {
		name    string
		opts    certOpts
		gwInit  bool
		gwLog   string
		swanLog string
	}{
		// ikegwd responds and refuses strongSwan's certificate in message 3.
		{"ikegw-refuses", certOpts{peerOther: true}, false, "peer certificate not issued by a trusted CA", "received AUTHENTICATION_FAILED error notify"},
		// strongSwan responds and refuses ikegwd's in message 3.
		{"strongswan-refuses", certOpts{gwLeaf: expired}, true, "", "subject certificate invalid"},
		// ikegwd initiates and refuses strongSwan's in message 2.
		{"ikegw-refuses-message-2", certOpts{peerLeaf: expired}, true, "peer certificate expired or not yet valid", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.kt, c.opts.aggressive = pki.ECDSA256, true
			b, _ := newCertBed(t, c.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if c.gwInit {
				must(t, b.post(api.PathInitiate, "conn=peer"))
			} else {
				b.swan.Initiate(ctx, "net") // fails or is deleted
			}
			if !waitLog(ctx, b.gw.Output, c.gwLog) || !waitLog(ctx, b.swan.Log, c.swanLog) {
				b.fail("logs lack %q (ikegwd) or %q (strongSwan)", c.gwLog, c.swanLog)
			}
			for len(b.gwSAs().IKE)+len(b.gwSAs().Children) != 0 {
				if ctx.Err() != nil {
					b.fail("ikegwd kept SAs after a refused Aggressive Mode: %+v", b.gwSAs())
				}
				time.Sleep(200 * time.Millisecond)
			}
			if sas, _ := b.swan.ListSAs(ctx); swanUp(sas) {
				b.fail("strongSwan established")
			}
			// Our refusal does not make strongSwan start over at once (a
			// DELETE while its Quick Mode waits did, in a tight loop; it
			// still retries once its Quick Mode times out, 12 s here).
			if n := strings.Count(b.swan.Log(), "initiating Aggressive Mode"); n > 3 {
				b.fail("strongSwan initiated %d times after the refusal", n)
			}
		})
	}
}

// TestInteropCertsSANIdentities: identities from the certificates'
// subjectAltNames instead of their DNs: strongSwan is peer.ikegw.test
// (FQDN, a DNS SAN), ikegwd is 192.0.2.1 (an IP SAN); each side checks the
// other's against its certificate and its configured remote id.
func TestInteropCertsSANIdentities(t *testing.T) {
	b, _ := newCertBed(t, certOpts{kt: pki.ECDSA256,
		gwLocalID: gwPub.Addr().String(), gwRemoteID: "@peer.ikegw.test",
		swanLocalID: "peer.ikegw.test", swanRemote: gwPub.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	b.agree(ctx)
	if log := b.swan.Log(); !strings.Contains(log, fmt.Sprintf("authentication of '%s' with ECDSA_WITH_NULL successful", gwPub.Addr())) {
		b.fail("strongSwan did not authenticate ikegwd as %s", gwPub.Addr())
	}
	if g := b.gwSAs(); len(g.IKE) != 1 || g.IKE[0].RemoteID != "peer.ikegw.test" {
		b.fail("ikegwd's peer identity: %+v", g.IKE)
	}
	b.ping(ctx, 3)
}

// TestInteropCertsResume: TestInteropResume with a certificate
// authenticated SA: SIGKILL ikegwd, a new process loads only the records
// (no second certificate validation), strongSwan keeps its IKE SA and
// SPIs, traffic and a Quick Mode rekey work.
func TestInteropCertsResume(t *testing.T) {
	b, cl := newCertBed(t, certOpts{kt: pki.ECDSA256, dpd: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	s1, k1 := b.agree(ctx)
	b.ping(ctx, 3)
	must(t, b.gw.Signal(syscall.SIGKILL))
	<-b.gw.Done()
	b.startGW()
	s2, k2 := b.agree(ctx)
	if s2.UniqueID != s1.UniqueID || s2.InitiatorSPI != s1.InitiatorSPI || s2.ResponderSPI != s1.ResponderSPI {
		b.fail("strongSwan's IKE SA changed across the restart: %d -> %d", s1.UniqueID, s2.UniqueID)
	}
	if k2.SPIIn != k1.SPIIn || k2.SPIOut != k1.SPIOut {
		b.fail("child SPIs changed across the restart")
	}
	b.ping(ctx, 3)
	// The restored SA keeps the peer's certificate identity.
	if g := b.gwSAs(); len(g.IKE) != 1 || g.IKE[0].RemoteID != pki.DNString(cl.peer.RawSubject) {
		b.fail("restored IKE SA lost the peer's DN identity: %+v", g.IKE)
	}
	// DPD both ways keeps working against the restarted process.
	deadline := time.Now().Add(20 * time.Second)
	for b.gwStatus().Engine["dpd_acked"] == 0 {
		if time.Now().After(deadline) {
			b.fail("no DPD acknowledged after the restart: %+v", b.gwStatus().Engine)
		}
		time.Sleep(200 * time.Millisecond)
	}
	must(t, b.swan.RekeyChild(ctx, "net"))
	b.waitChildReplaced(ctx, s1, k1)
	b.ping(ctx, 3)
	if strings.Contains(b.swan.Log(), "ESP sequence number verification failed") {
		b.fail("the peer saw replayed sequence numbers")
	}
	if n := strings.Count(b.swan.Log(), "authentication of 'O=ikegw lab, CN=gw'"); n != 1 {
		b.fail("strongSwan authenticated ikegwd %d times, want once (no new phase 1)", n)
	}
}

// waitLog polls a log until it contains every one of subs.
func waitLog(ctx context.Context, log func() string, subs ...string) bool {
	for {
		s := log()
		ok := true
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				ok = false
			}
		}
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestInteropCertsRefused: each bad credential is refused by the side that
// validates it, with a log line that says why, and nothing stays
// established on either side. The refusing side is the responder (it
// refuses Main Mode message 5: strongSwan answers AUTHENTICATION_FAILED and
// ikegwd ends its phase 1 at once) or the initiator (it refuses message 6,
// which the other side sent believing phase 1 done: strongSwan then deletes
// the IKE SA and ikegwd drops it).
func TestInteropCertsRefused(t *testing.T) {
	expired := func(l *pki.Leaf) {
		l.NotBefore, l.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	}
	const (
		ikegw = iota // ikegwd refuses
		swan         // strongSwan refuses
	)
	cases := []struct {
		name      string
		opts      certOpts
		refuser   int
		gwInit    bool
		logs      []string // in the refusing side's log
		otherLogs []string // in the other side's log
	}{
		{"ikegw/expired", certOpts{peerLeaf: expired}, ikegw, false,
			[]string{"phase 1 authentication failed", "peer certificate expired or not yet valid", "CN=peer"},
			[]string{"received AUTHENTICATION_FAILED error notify"}},
		{"ikegw/other-CA", certOpts{peerOther: true}, ikegw, false,
			[]string{"phase 1 authentication failed", "peer certificate not issued by a trusted CA", "some other CA"},
			[]string{"received AUTHENTICATION_FAILED error notify"}},
		{"ikegw/identity", certOpts{gwRemoteID: "O=ikegw lab, CN=someone-else"}, ikegw, false,
			[]string{"phase 1 authentication failed", "is not the one configured", `configured \"O=ikegw lab, CN=someone-else\"`},
			[]string{"received AUTHENTICATION_FAILED error notify"}},
		{"ikegw/revoked", certOpts{revokePeer: true}, ikegw, false,
			[]string{"phase 1 authentication failed", "peer certificate revoked by CRL", "CN=peer"},
			[]string{"received AUTHENTICATION_FAILED error notify"}},
		{"ikegw/expired/as-initiator", certOpts{peerLeaf: expired}, ikegw, true,
			[]string{"phase 1 authentication failed", "peer certificate expired or not yet valid"},
			[]string{"received DELETE for IKE_SA"}},

		{"strongswan/expired", certOpts{gwLeaf: expired}, swan, true,
			[]string{"subject certificate invalid (valid from", "no trusted ECDSA public key found for 'O=ikegw lab, CN=gw'"},
			[]string{"phase 1 refused by the peer", "AUTHENTICATION-FAILED"}},
		{"strongswan/other-CA", certOpts{gwFromOther: true}, swan, true,
			[]string{`no issuer certificate found for "O=ikegw lab, CN=gw"`, "no trusted ECDSA public key found"},
			[]string{"phase 1 refused by the peer", "AUTHENTICATION-FAILED"}},
		{"strongswan/identity", certOpts{swanRemote: "O=ikegw lab, CN=someone-else"}, swan, true,
			[]string{"no peer config found"},
			[]string{"phase 1 refused by the peer", "AUTHENTICATION-FAILED"}},
		{"strongswan/revoked", certOpts{revokeGW: true}, swan, true,
			[]string{"certificate was revoked on", "no trusted ECDSA public key found"},
			[]string{"phase 1 refused by the peer", "AUTHENTICATION-FAILED"}},
		{"strongswan/expired/as-initiator", certOpts{gwLeaf: expired}, swan, false,
			[]string{"subject certificate invalid (valid from", "no trusted ECDSA public key found for 'O=ikegw lab, CN=gw'"},
			[]string{"peer deleted the IKE SA"}},
		{"strongswan/revoked/as-initiator", certOpts{revokeGW: true}, swan, false,
			[]string{"certificate was revoked on"},
			[]string{"peer deleted the IKE SA"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.opts.kt = pki.ECDSA256
			b, _ := newCertBed(t, c.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			if c.gwInit {
				must(t, b.post(api.PathInitiate, "conn=peer"))
			} else if err := b.swan.Initiate(ctx, "net"); err == nil {
				b.fail("strongSwan reports its initiation completed although the certificate is refused")
			}
			log, other := b.gw.Output, b.swan.Log
			if c.refuser == swan {
				log, other = b.swan.Log, b.gw.Output
			}
			if !waitLog(ctx, log, c.logs...) {
				b.fail("the refusing side's log lacks %q", c.logs)
			}
			if !waitLog(ctx, other, c.otherLogs...) {
				b.fail("the other side's log lacks %q", c.otherLogs)
			}
			// Nothing established, or left behind, on ikegwd's side.
			for {
				g := b.gwSAs()
				if len(g.IKE)+len(g.Children) == 0 {
					break
				}
				if ctx.Err() != nil {
					b.fail("ikegwd kept SAs after a refused phase 1: %+v", g)
				}
				time.Sleep(200 * time.Millisecond)
			}
			// Nor on strongSwan's: it was refused, or told.
			if _, err := b.swan.WaitFor(ctx, func(s []lab.IKESA) bool { return len(s) == 0 }); err != nil {
				b.fail("strongSwan kept an SA after the refusal: %v", err)
			}
			if n := strings.Count(b.swan.Log(), "initiating Main Mode"); n > 3 {
				b.fail("strongSwan initiated %d times after the refusal", n)
			}
		})
	}
}
