package pki

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseDN(t *testing.T) {
	tests := []struct {
		in, str string
	}{
		{"C=CH, O=ikegw, CN=peer", "C=CH, O=ikegw, CN=peer"},
		{"c=ch,o=ikegw,cn=peer", "C=ch, O=ikegw, CN=peer"},
		{"/C=CH/O=ikegw lab/CN=gw.example.com", "C=CH, O=ikegw lab, CN=gw.example.com"},
		{`CN=Doe\, John, O=ACME`, `CN=Doe\, John, O=ACME`},
		{"CN=Zürich gateway, E=ops@example.com, DC=example", "CN=Zürich gateway, E=ops@example.com, DC=example"},
		{"2.5.4.3=gw, 1.2.3.4=x", "CN=gw, 1.2.3.4=x"},
		{"OU=a/b, CN=c", "OU=a/b, CN=c"},
	}
	for _, tt := range tests {
		der, err := ParseDN(tt.in)
		if err != nil {
			t.Errorf("ParseDN(%q): %v", tt.in, err)
			continue
		}
		if got := DNString(der); got != tt.str {
			t.Errorf("DNString(ParseDN(%q)) = %q, want %q", tt.in, got, tt.str)
		}
		back, err := ParseDN(DNString(der))
		if err != nil || !DNEqual(back, der) {
			t.Errorf("%q: %q does not read back (%v)", tt.in, DNString(der), err)
		}
	}
}

// TestParseDNMatchesGo: a text DN encodes to exactly the bytes Go's x509
// writes for the same subject, so it can be compared with RawSubject.
func TestParseDNMatchesGo(t *testing.T) {
	name := pkix.Name{Country: []string{"CH"}, Organization: []string{"ikegw lab"}, CommonName: "peer"}
	want, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDN("C=CH, O=ikegw lab, CN=peer")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("ParseDN = %x, Go's x509 = %x", got, want)
	}
}

func TestParseDNErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"CN=gw, O", `part "O" of "CN=gw, O" is not attribute=value`},
		{"CN=", `part "CN=" of "CN=" is not attribute=value`},
		{"XX=1", `unknown attribute "XX"`},
		{"C=Switzerland", `country C="Switzerland" must be a two-letter code`},
		{"E=ü@example.com", `E value "ü@example.com" must be ASCII`},
		{`CN=gw\`, "lone backslash"},
		{"CN=gw,,O=x", `part "" of`},
	}
	for _, tt := range tests {
		_, err := ParseDN(tt.in)
		if err == nil || !errors.Is(err, ErrBadDN) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ParseDN(%q) = %v, want ErrBadDN with %q", tt.in, err, tt.msg)
		}
	}
}

func TestDNEqual(t *testing.T) {
	dn := func(s string) []byte {
		t.Helper()
		b, err := ParseDN(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The same name as UTF8String instead of PrintableString.
	utf8CN, err := asn1.Marshal(pkix.RDNSequence{{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("GW")}}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		a, b []byte
		eq   bool
	}{
		{dn("C=CH, CN=gw"), dn("c=ch,cn=GW"), true},
		{dn("CN=gw"), utf8CN, true},
		{dn("C=CH, CN=gw"), dn("CN=gw, C=CH"), false},
		{dn("C=CH, CN=gw"), dn("C=CH, CN=gw, OU=x"), false},
		{dn("CN=gw"), dn("O=gw"), false},
		{dn("CN=gw"), []byte{0x30, 0x03, 0x01}, false},
		{dn("CN=gw"), append(dn("CN=gw"), 0), false},
	}
	for i, tt := range tests {
		if got := DNEqual(tt.a, tt.b); got != tt.eq {
			t.Errorf("%d: DNEqual(%s, %s) = %v", i, DNString(tt.a), DNString(tt.b), got)
		}
	}
	if s := DNString([]byte{1, 2}); s != "#0102" {
		t.Errorf("DNString of garbage = %q", s)
	}
}

func TestMatchIdentityDNText(t *testing.T) {
	ca, err := NewCA("test CA", ECDSA256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := ca.Issue(Leaf{CommonName: "peer", KeyType: ECDSA256})
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := ParseDN("O=IKEGW LAB, CN=Peer")
	if err := MatchIdentity(c, IDDERASN1DN, ok); err != nil {
		t.Errorf("case-insensitive DN refused: %v", err)
	}
	bad, _ := ParseDN("O=ikegw lab, CN=other")
	err = MatchIdentity(c, IDDERASN1DN, bad)
	if !errors.Is(err, ErrIdentityMismatch) || !strings.Contains(err.Error(), `DN "O=ikegw lab, CN=other" is not the subject "O=ikegw lab, CN=peer"`) {
		t.Errorf("mismatch error: %v", err)
	}
}

func FuzzParseDN(f *testing.F) {
	f.Add("C=CH, O=ikegw, CN=peer")
	f.Add(`/CN=a\,b/OU=x`)
	f.Fuzz(func(t *testing.T, s string) {
		der, err := ParseDN(s)
		if err != nil {
			return
		}
		back, err := ParseDN(DNString(der))
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, DNString(der), err)
		}
		if !DNEqual(der, back) {
			t.Fatalf("%q -> %q -> a different name", s, DNString(der))
		}
	})
}

// TestParseDNRefusesOIDsThatDoNotReadBack: arcs beyond 31 bits (encoding/
// asn1 writes them but cannot read them), leading zeros and first arcs
// outside X.660 are refused, so every parsed name prints and parses back
// (found by FuzzParseDN).
func TestParseDNRefusesOIDsThatDoNotReadBack(t *testing.T) {
	for _, s := range []string{"2.02170000000=0", "2.2170000000=x", "1.2.4294967296=x", "3.1=x", "1.40=x", "1.02=x"} {
		if _, err := ParseDN(s); !errors.Is(err, ErrBadDN) {
			t.Errorf("ParseDN(%q) = %v, want ErrBadDN", s, err)
		}
	}
	for _, s := range []string{"2.5.4.3=x", "1.2.840.113549.1.9.1=a@b", "2.999.1=x"} {
		der, err := ParseDN(s)
		if err != nil {
			t.Errorf("ParseDN(%q): %v", s, err)
			continue
		}
		if _, err := ParseDN(DNString(der)); err != nil {
			t.Errorf("%q -> %q does not parse back: %v", s, DNString(der), err)
		}
	}
}
