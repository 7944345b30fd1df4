package config

import (
	"errors"
	"net/netip"
	"testing"

	"ikegw/ike/sa"
)

func TestParseTS(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		in   string
		want sa.TrafficSelector
		str  string
	}{
		{"10.1.0.0/16", sa.TrafficSelector{Prefix: p("10.1.0.0/16")}, "10.1.0.0/16"},
		{"0.0.0.0/0", sa.TrafficSelector{Prefix: p("0.0.0.0/0")}, "0.0.0.0/0"},
		{"10.1.0.5", sa.TrafficSelector{Prefix: p("10.1.0.5/32")}, "10.1.0.5/32"},
		{"2001:db8::/32", sa.TrafficSelector{Prefix: p("2001:db8::/32")}, "2001:db8::/32"},
		{"2001:db8::1", sa.TrafficSelector{Prefix: p("2001:db8::1/128")}, "2001:db8::1/128"},
		{"10.1.0.5/32[udp/53]", sa.TrafficSelector{Prefix: p("10.1.0.5/32"), Protocol: 17, Port: 53}, "10.1.0.5/32[udp/53]"},
		{"10.1.0.0/16[tcp]", sa.TrafficSelector{Prefix: p("10.1.0.0/16"), Protocol: 6}, "10.1.0.0/16[tcp]"},
		{"10.1.0.0/16[6/443]", sa.TrafficSelector{Prefix: p("10.1.0.0/16"), Protocol: 6, Port: 443}, "10.1.0.0/16[tcp/443]"},
		{"10.1.0.0/16[TCP/%any]", sa.TrafficSelector{Prefix: p("10.1.0.0/16"), Protocol: 6}, "10.1.0.0/16[tcp]"},
		{"10.1.0.0/16[icmp]", sa.TrafficSelector{Prefix: p("10.1.0.0/16"), Protocol: 1}, "10.1.0.0/16[icmp]"},
		{"2001:db8::/32[icmp6]", sa.TrafficSelector{Prefix: p("2001:db8::/32"), Protocol: 58}, "2001:db8::/32[ipv6-icmp]"},
		{"10.0.0.0/8[sctp/9899]", sa.TrafficSelector{Prefix: p("10.0.0.0/8"), Protocol: 132, Port: 9899}, "10.0.0.0/8[sctp/9899]"},
		{"10.0.0.0/8[47]", sa.TrafficSelector{Prefix: p("10.0.0.0/8"), Protocol: 47}, "10.0.0.0/8[gre]"},
		{"10.0.0.0/8[200]", sa.TrafficSelector{Prefix: p("10.0.0.0/8"), Protocol: 200}, "10.0.0.0/8[200]"},
		{"10.0.0.0/8[%any]", sa.TrafficSelector{Prefix: p("10.0.0.0/8")}, "10.0.0.0/8"},
	}
	for _, tt := range tests {
		got, err := ParseTS(tt.in)
		if err != nil {
			t.Errorf("ParseTS(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseTS(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := FormatTS(got); s != tt.str {
			t.Errorf("FormatTS(ParseTS(%q)) = %q, want %q", tt.in, s, tt.str)
		}
		if back, err := ParseTS(FormatTS(got)); err != nil || back != got {
			t.Errorf("%q: %q reads back as %+v, %v", tt.in, FormatTS(got), back, err)
		}
	}
}

func TestParseTSErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", `"": no address or prefix`},
		{"10.1.0.1/16", `"10.1.0.1/16": host bits set (did you mean 10.1.0.0/16?)`},
		{"10.1.0.0/33", `"10.1.0.0/33": not a prefix`},
		{"example.com", `"example.com": not an address or prefix`},
		{"10.0.0.1-10.0.0.9", `"10.0.0.1-10.0.0.9": address ranges are not supported; use a prefix`},
		{"10.0.0.0/8[udp/1024-2048]", `"10.0.0.0/8[udp/1024-2048]": port ranges are not supported`},
		{"10.0.0.0/8[udp/70000]", `"10.0.0.0/8[udp/70000]": port "70000" is not a number 0..65535`},
		{"10.0.0.0/8[icmp/8]", `"10.0.0.0/8[icmp/8]": a port needs protocol tcp, udp or sctp`},
		{"10.0.0.0/8[%any/53]", `"10.0.0.0/8[%any/53]": a port needs protocol tcp, udp or sctp`},
		{"10.0.0.0/8[foo]", `"10.0.0.0/8[foo]": unknown protocol "foo"`},
		{"10.0.0.0/8[256]", `"10.0.0.0/8[256]": unknown protocol "256"`},
		{"10.0.0.0/8[udp", `"10.0.0.0/8[udp": protocol/port must be written [proto] or [proto/port]`},
		{"10.0.0.0/8[udp]x", `"10.0.0.0/8[udp]x": protocol/port must be written [proto] or [proto/port]`},
		{"::ffff:10.0.0.0/104", `"::ffff:10.0.0.0/104": IPv4-mapped IPv6 prefixes are not supported; write the IPv4 prefix`},
		{"fe80::1%eth0", `"fe80::1%eth0": not an address or prefix`},
	}
	for _, tt := range tests {
		got, err := ParseTS(tt.in)
		if err == nil {
			t.Errorf("ParseTS(%q) = %+v, want error", tt.in, got)
			continue
		}
		if !errors.Is(err, ErrBadTS) {
			t.Errorf("ParseTS(%q): %v is not ErrBadTS", tt.in, err)
		}
		if err.Error() != tt.msg {
			t.Errorf("ParseTS(%q): error\n %s\nwant\n %s", tt.in, err, tt.msg)
		}
	}
}
