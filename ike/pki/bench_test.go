package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"testing"
	"time"
)

// BenchmarkSignVerify: the per-handshake signature work of one side (sign
// our HASH, verify the peer's SIG).
func BenchmarkSignVerify(b *testing.B) {
	for _, kt := range []KeyType{RSA2048, ECDSA256, ECDSA384} {
		b.Run(string(kt), func(b *testing.B) {
			ca, err := NewCA("bench CA", kt, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			c, k, err := ca.Issue(Leaf{CommonName: "peer", KeyType: kt})
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.Sum256([]byte("HASH_I"))
			b.ReportAllocs()
			for b.Loop() {
				sig, err := Sign(k, h[:])
				if err != nil {
					b.Fatal(err)
				}
				if err := VerifySig(c.PublicKey, h[:], sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTrustVerify: validating a peer's certificate (parse, chain to
// the CA, CRL lookup) as a responder does for every certificate phase 1.
func BenchmarkTrustVerify(b *testing.B) {
	ca, err := NewCA("bench CA", ECDSA256, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	c, _, err := ca.Issue(Leaf{CommonName: "peer", KeyType: ECDSA256})
	if err != nil {
		b.Fatal(err)
	}
	other, _, err := ca.Issue(Leaf{CommonName: "revoked", KeyType: ECDSA256})
	if err != nil {
		b.Fatal(err)
	}
	crl, err := ca.CRL(other)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrust([]*x509.Certificate{ca.Cert}, []*x509.RevocationList{crl})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.Verify([][]byte{c.Raw}, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDNEqual: comparing a configured DN with a peer's.
func BenchmarkDNEqual(b *testing.B) {
	x, err := ParseDN("C=CH, O=ikegw lab, OU=gateways, CN=peer.example.net")
	if err != nil {
		b.Fatal(err)
	}
	y, err := ParseDN("c=ch, o=IKEGW LAB, ou=Gateways, cn=PEER.example.net")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !DNEqual(x, y) {
			b.Fatal("not equal")
		}
	}
}
