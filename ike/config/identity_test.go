package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in   string
		typ  uint8
		data []byte
		str  string // String() of the result
	}{
		{"192.0.2.1", IDIPv4, []byte{192, 0, 2, 1}, "192.0.2.1"},
		{"2001:db8::1", IDIPv6, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "2001:db8::1"},
		{"::ffff:192.0.2.1", IDIPv4, []byte{192, 0, 2, 1}, "192.0.2.1"},
		{"ipv4:192.0.2.1", IDIPv4, []byte{192, 0, 2, 1}, "192.0.2.1"},
		{"@gw.example.com", IDFQDN, []byte("gw.example.com"), "@gw.example.com"},
		{"gw.example.com", IDFQDN, []byte("gw.example.com"), "@gw.example.com"},
		{"fqdn:gw.example.com", IDFQDN, []byte("gw.example.com"), "@gw.example.com"},
		{"@192.0.2.1", IDFQDN, []byte("192.0.2.1"), "@192.0.2.1"},
		{"user@example.com", IDUserFQDN, []byte("user@example.com"), "user@example.com"},
		{"@@user", IDUserFQDN, []byte("user"), "@@user"},
		{"email:alice@example.com", IDUserFQDN, []byte("alice@example.com"), "alice@example.com"},
		{"keyid:#0a0b0c", IDKeyID, []byte{0x0a, 0x0b, 0x0c}, "@#0a0b0c"},
		{"@#0A0B0C", IDKeyID, []byte{0x0a, 0x0b, 0x0c}, "@#0a0b0c"},
		{"keyid:group-1", IDKeyID, []byte("group-1"), "@#67726f75702d31"},
		{"C=CH, O=Example, CN=gw", IDDERASN1DN, dnCHExampleGW, "C=CH, O=Example, CN=gw"},
		{"c=CH,o=Example,cn=gw", IDDERASN1DN, dnCHExampleGW, "C=CH, O=Example, CN=gw"},
		{"/C=CH/O=Example/CN=gw", IDDERASN1DN, dnCHExampleGW, "C=CH, O=Example, CN=gw"},
		{"asn1dn:CN=gw", IDDERASN1DN, dnGW, "CN=gw"},
		{"asn1dn:#300d310b3009060355040313026777", IDDERASN1DN, dnGW, "CN=gw"},
		{"%any", IDAny, nil, "%any"},
	}
	for _, tt := range tests {
		id, err := ParseIdentity(tt.in)
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", tt.in, err)
			continue
		}
		if id.Type != tt.typ || !bytes.Equal(id.Data, tt.data) {
			t.Errorf("ParseIdentity(%q) = {%d %q}, want {%d %q}", tt.in, id.Type, id.Data, tt.typ, tt.data)
		}
		if got := id.String(); got != tt.str {
			t.Errorf("ParseIdentity(%q).String() = %q, want %q", tt.in, got, tt.str)
		}
		back, err := ParseIdentity(id.String())
		if err != nil || !back.Equal(id) {
			t.Errorf("%q: String %q reads back as %+v, %v", tt.in, id.String(), back, err)
		}
	}
}

// DER of "CN=gw" and "C=CH, O=Example, CN=gw" (PrintableStrings, as Go's
// x509 and strongSwan encode them).
var (
	dnGW          = []byte{0x30, 0x0d, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x02, 'g', 'w'}
	dnCHExampleGW = []byte{0x30, 0x2c,
		0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, 'C', 'H',
		0x31, 0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x13, 0x07, 'E', 'x', 'a', 'm', 'p', 'l', 'e',
		0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x02, 'g', 'w'}
)

func TestIdentityMatch(t *testing.T) {
	id := func(s string) Identity {
		t.Helper()
		i, err := ParseIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	tests := []struct {
		conf, peer string
		err        string // "" = match
	}{
		{"C=CH, O=Example, CN=gw", "c=ch, o=EXAMPLE, cn=GW", ""},
		{"%any", "C=CH, CN=x", ""},
		{"%any", "192.0.2.1", ""},
		{"@GW.example.com", "@gw.EXAMPLE.com", ""},
		{"192.0.2.1", "192.0.2.1", ""},
		{"C=CH, O=Example, CN=gw", "C=CH, O=Example, CN=other",
			`identity mismatch: peer identity "C=CH, O=Example, CN=other", configured "C=CH, O=Example, CN=gw" (DER_ASN1_DN)`},
		{"C=CH, O=Example, CN=gw", "O=Example, C=CH, CN=gw",
			`identity mismatch: peer identity "O=Example, C=CH, CN=gw", configured "C=CH, O=Example, CN=gw" (DER_ASN1_DN)`},
		{"C=CH, O=Example, CN=gw", "@gw",
			`identity mismatch: peer identity @gw (FQDN), configured C=CH, O=Example, CN=gw (DER_ASN1_DN)`},
		{"192.0.2.1", "192.0.2.2", `identity mismatch: peer identity "192.0.2.2", configured "192.0.2.1" (IPV4_ADDR)`},
	}
	for _, tt := range tests {
		p := id(tt.peer)
		err := id(tt.conf).Match(p.Type, p.Data)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q vs %q: %v", tt.conf, tt.peer, err)
		case tt.err != "" && (err == nil || err.Error() != tt.err || !errors.Is(err, ErrIdentityMismatch)):
			t.Errorf("%q vs %q: error\n %v\nwant\n %s", tt.conf, tt.peer, err, tt.err)
		}
	}
	if err := (Identity{}).Match(IDIPv4, []byte{1, 2, 3, 4}); err == nil {
		t.Error("the zero identity matched")
	}
}

func TestParseIdentityErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "empty identity"},
		{"@", `"@": no name after the prefix`},
		{"fqdn:", `"fqdn:": no name after the prefix`},
		{"@#abc", `"@#abc": expected an even number of hex digits after "#"`},
		{"keyid:#zz", `"keyid:#zz": expected an even number of hex digits after "#"`},
		{"ipv4:2001:db8::1", `"ipv4:2001:db8::1": not an IPv4 address`},
		{"ipv6:192.0.2.1", `"ipv6:192.0.2.1": not an IPv6 address`},
		{"fe80::1%eth0", `"fe80::1%eth0": an address identity cannot have a zone`},
		{"%dynamic", `"%dynamic": unknown keyword (only %any)`},
		{"gw\x00.example", `"gw\x00.example": contains a control character`},
		{"CN=b, c", `"CN=b, c": bad distinguished name: part "c" of "CN=b, c" is not attribute=value`},
		{"a=b", `"a=b": bad distinguished name: unknown attribute "a" in "a=b" (use C, ST, L, O, OU, CN, SN, serialNumber, street, T, postalCode, G, E, DC, UID or a dotted OID)`},
		{"asn1dn:#3001", `"asn1dn:#3001": bad distinguished name: 2 bytes starting 3001 are not a DER name`},
		{"fqdn:gw example", `"fqdn:gw example": an FQDN cannot contain spaces or "@"`},
		{strings.Repeat("a", 1025), "1025 bytes long, at most 1024 allowed"},
	}
	for _, tt := range tests {
		id, err := ParseIdentity(tt.in)
		if err == nil {
			t.Errorf("ParseIdentity(%q) = %+v, want error", tt.in, id)
			continue
		}
		if !errors.Is(err, ErrBadIdentity) {
			t.Errorf("ParseIdentity(%q): %v is not ErrBadIdentity", tt.in, err)
		}
		if err.Error() != tt.msg {
			t.Errorf("ParseIdentity(%q): error\n %s\nwant\n %s", tt.in, err, tt.msg)
		}
	}
}

// FuzzParseIdentity: every identity that parses prints (String) as text
// that parses back to an identity matching it.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "@gw.example", "user@example", "keyid:#0a0b", "C=CH, O=x, CN=gw", "/CN=a/OU=b", "asn1dn:#300d310b3009060355040313026777", "%any"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		back, err := ParseIdentity(id.String())
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, id.String(), err)
		}
		if !back.IsAny() && back.Match(id.Type, id.Data) != nil {
			t.Fatalf("%q -> %q -> %+v, a different identity", s, id.String(), back)
		}
	})
}
