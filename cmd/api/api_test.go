package api

import (
	"testing"

	"ikegw/ike/pki"
	"ikegw/ike/sa"
)

func TestIKEViewIdentities(t *testing.T) {
	dn, err := pki.ParseDN("C=CH, O=ikegw, CN=peer")
	if err != nil {
		t.Fatal(err)
	}
	r := &sa.IKESA{
		LocalID:        sa.Identity{Type: 1, Data: []byte{192, 0, 2, 10}},
		RemoteID:       sa.Identity{Type: 9, Data: dn},
		PeerCertSHA256: []byte{0xab, 0xcd},
	}
	v := IKEView(r)
	if v.LocalID != "192.0.2.10" || v.RemoteID != "C=CH, O=ikegw, CN=peer" || v.PeerCert != "abcd" {
		t.Fatalf("view: local %q remote %q cert %q", v.LocalID, v.RemoteID, v.PeerCert)
	}
	// Undecodable DN data and unknown types print as hex, never panic.
	r.RemoteID = sa.Identity{Type: 9, Data: []byte{0x30, 0x05}}
	if v := IKEView(r); v.RemoteID != "#3005" {
		t.Fatalf("bad DN printed as %q", v.RemoteID)
	}
	r.RemoteID = sa.Identity{Type: 11, Data: []byte{1, 2}}
	if v := IKEView(r); v.RemoteID != "type11:0102" {
		t.Fatalf("unknown type printed as %q", v.RemoteID)
	}
}
