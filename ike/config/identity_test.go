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
		{"C=CH, O=Example, CN=gw", IDDERASN1DN, []byte("C=CH, O=Example, CN=gw"), "C=CH, O=Example, CN=gw"},
		{"asn1dn:CN=gw", IDDERASN1DN, []byte("CN=gw"), "CN=gw"},
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
		{"a=b, c", `"a=b, c": distinguished name part "c" is not attribute=value`},
		{"asn1dn:#3000", `"asn1dn:#3000": binary DER distinguished names are not supported yet; write the DN as text`},
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
