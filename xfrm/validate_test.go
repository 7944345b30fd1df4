package xfrm

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"ikegw/ike/sa"
)

func validChild() *sa.ChildSA {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	return &sa.ChildSA{
		Version: sa.RecordVersion, Mode: sa.Tunnel, Protocol: ProtoESP, Reqid: 7,
		In: sa.SADir{SPI: 0xc1000001, Src: b, Dst: a, Encr: sa.EncrAESCBC, EncrKey: make([]byte, 32),
			Integ: sa.IntegSHA256, IntegKey: make([]byte, 32), TruncBits: 128},
		Out:            sa.SADir{SPI: 0xc2000002, Src: a, Dst: b, Encr: sa.EncrAESGCM, EncrKey: make([]byte, 20), TruncBits: 128},
		LocalTS:        []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.1.0.0/16")}},
		RemoteTS:       []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Protocol: 17, Port: 53}},
		EncapLocalPort: 4500, EncapRemotePort: 4500,
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(validChild()); err != nil {
		t.Fatalf("valid child refused: %v", err)
	}
	secret := []byte("0123456789abcdef0123456789abcdefXYZ")
	cases := []struct {
		name  string
		edit  func(c *sa.ChildSA)
		field string
	}{
		{"protocol", func(c *sa.ChildSA) { c.Protocol = 51 }, "Protocol"},
		{"mode", func(c *sa.ChildSA) { c.Mode = 9 }, "Mode"},
		{"reserved spi", func(c *sa.ChildSA) { c.Out.SPI = 255 }, "Out.SPI"},
		{"no address", func(c *sa.ChildSA) { c.In.Src = netip.Addr{} }, "In.Src/Dst"},
		{"mixed family", func(c *sa.ChildSA) { c.Out.Dst = netip.MustParseAddr("2001:db8::1") }, "Out.Src/Dst"},
		{"unknown encr", func(c *sa.ChildSA) { c.In.Encr = "cbc(aes999)" }, "In.Encr"},
		{"key length", func(c *sa.ChildSA) { c.In.EncrKey = secret }, "In.EncrKey"},
		{"gcm with integ", func(c *sa.ChildSA) { c.Out.Integ = sa.IntegSHA1 }, "Out.Integ"},
		{"gcm icv", func(c *sa.ChildSA) { c.Out.TruncBits = 64 }, "Out.TruncBits"},
		{"cbc without integ", func(c *sa.ChildSA) { c.In.Integ = "" }, "In.Integ"},
		{"unknown integ", func(c *sa.ChildSA) { c.In.Integ = "hmac(md5)" }, "In.Integ"},
		{"integ key", func(c *sa.ChildSA) { c.In.IntegKey = secret }, "In.IntegKey"},
		{"trunc", func(c *sa.ChildSA) { c.In.TruncBits = 96 }, "In.TruncBits"},
		{"not reverse", func(c *sa.ChildSA) { c.In.Src = netip.MustParseAddr("203.0.113.9") }, "In.Src/In.Dst"},
		{"one port", func(c *sa.ChildSA) { c.EncapRemotePort = 0 }, "EncapLocalPort/EncapRemotePort"},
		{"no local ts", func(c *sa.ChildSA) { c.LocalTS = nil }, "LocalTS"},
		{"host bits", func(c *sa.ChildSA) { c.RemoteTS[0].Prefix = netip.MustParsePrefix("10.2.0.1/16") }, "RemoteTS[0]"},
		{"port without proto", func(c *sa.ChildSA) { c.LocalTS[0].Port = 80 }, "LocalTS[0]"},
		{"transport family", func(c *sa.ChildSA) {
			c.Mode = sa.Transport
			c.LocalTS[0].Prefix = netip.MustParsePrefix("2001:db8::/64")
		}, "LocalTS[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validChild()
			tc.edit(c)
			err := Validate(c)
			var ice *InvalidChildError
			if !errors.As(err, &ice) || !errors.Is(err, ErrInvalidChild) {
				t.Fatalf("got %v, want *InvalidChildError", err)
			}
			if ice.Field != tc.field {
				t.Fatalf("field %q, want %q (%v)", ice.Field, tc.field, err)
			}
			if strings.Contains(err.Error(), "0123456789") {
				t.Fatalf("error leaks key material: %v", err)
			}
		})
	}
	if err := Validate(nil); !errors.Is(err, ErrInvalidChild) {
		t.Fatalf("nil record: %v", err)
	}
}

func TestSamePair(t *testing.T) {
	a, b := validChild(), validChild()
	b.Counters.OutSeq, b.Connection, b.State = 99, "other", sa.ChildRekeyed
	if !SamePair(a, b) {
		t.Fatal("pairs differing only in counters and bookkeeping are not the same")
	}
	b.In.IntegKey = append([]byte(nil), b.In.IntegKey...)
	b.In.IntegKey[3] ^= 1
	if SamePair(a, b) {
		t.Fatal("pairs with different keys are the same")
	}
	b = validChild()
	b.RemoteTS[0].Port = 54
	if SamePair(a, b) {
		t.Fatal("pairs with different selectors are the same")
	}
}

func TestExpiryString(t *testing.T) {
	got := Expiry{SPI: 0xc1000001, Hard: true, Bytes: true}.String()
	if got != "expiry spi=0xc1000001 hard bytes" {
		t.Fatal(got)
	}
}
