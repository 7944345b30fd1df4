package isakmp

import (
	"crypto/x509"
	"encoding/binary"
	"testing"

	"ikegw/ike/pki"
)

// certPayloads chains CERT, CR and SIG payloads the way a signature
// authenticated Main Mode message 5/6 carries them.
func certPayloads(cert, dn, sig []byte) []byte {
	var b []byte
	add := func(next PayloadType, body []byte) {
		h := make([]byte, 4)
		h[0] = byte(next)
		binary.BigEndian.PutUint16(h[2:], uint16(4+len(body)))
		b = append(append(b, h...), body...)
	}
	add(PayloadCR, append([]byte{4}, cert...))
	add(PayloadSig, append([]byte{4}, dn...))
	add(PayloadNone, sig)
	return b
}

// FuzzCertPayloads decodes CERT, CR and SIG payloads (seeded with a real
// X.509 certificate, a CA DN and an ECDSA signature): never a panic, errors
// are *Error, decoded payloads re-encode to the same bytes, and a CERT of
// encoding 4 goes through crypto/x509 without a panic.
func FuzzCertPayloads(f *testing.F) {
	ca, err := pki.NewCA("fuzz CA", pki.ECDSA256, 0)
	if err != nil {
		f.Fatal(err)
	}
	leaf, key, err := ca.Issue(pki.Leaf{CommonName: "gw", DNSNames: []string{"gw.example"}, KeyType: pki.ECDSA256})
	if err != nil {
		f.Fatal(err)
	}
	sig, err := pki.Sign(key, make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(certPayloads(leaf.Raw, ca.Cert.RawSubject, sig))
	f.Add(certPayloads(nil, nil, nil))
	f.Add([]byte{0, 0, 0, 5, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		var rsv []int
		d, err := decodePayloads(PayloadCert, b, 0, &rsv)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		for _, p := range d.Payloads {
			if c, ok := p.(*Cert); ok && c.Encoding == 4 {
				_, _ = x509.ParseCertificate(c.Data)
			}
		}
		checkReencode(t, PayloadCert, b[:d.Len], d, rsv)
	})
}

func TestCertPayloadsDecode(t *testing.T) {
	cert, dn, sig := []byte{0x30, 1, 2}, []byte{0x30, 3}, []byte{9, 9, 9}
	d, err := DecodePayloads(PayloadCert, certPayloads(cert, dn, sig))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Payloads) != 3 {
		t.Fatalf("%d payloads", len(d.Payloads))
	}
	c, ok1 := d.Payloads[0].(*Cert)
	cr, ok2 := d.Payloads[1].(*CertRequest)
	s, ok3 := d.Payloads[2].(*Signature)
	if !ok1 || !ok2 || !ok3 || c.Encoding != 4 || string(c.Data) != string(cert) ||
		cr.Encoding != 4 || string(cr.Authority) != string(dn) || string(s.Data) != string(sig) {
		t.Fatalf("decoded %#v", d.Payloads)
	}
}
