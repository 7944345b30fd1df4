package isakmp

import (
	"errors"
	"net/netip"
	"testing"
)

func TestIDFromPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		typ    IDType
		data   string
		str    string
	}{
		{"192.0.2.1/32", IDIPv4Addr, "c0000201", "IPV4_ADDR 192.0.2.1 proto 17 port 500"},
		{"10.1.2.3/16", IDIPv4Subnet, "0a010000ffff0000", "IPV4_ADDR_SUBNET 10.1.0.0/16 proto 17 port 500"},
		{"0.0.0.0/0", IDIPv4Subnet, "0000000000000000", "IPV4_ADDR_SUBNET 0.0.0.0/0 proto 17 port 500"},
		{"10.0.0.0/23", IDIPv4Subnet, "0a000000fffffe00", "IPV4_ADDR_SUBNET 10.0.0.0/23 proto 17 port 500"},
		{"2001:db8::1/128", IDIPv6Addr, "20010db8000000000000000000000001", "IPV6_ADDR 2001:db8::1 proto 17 port 500"},
		{"2001:db8::/33", IDIPv6Subnet, "20010db8000000000000000000000000ffffffff800000000000000000000000", "IPV6_ADDR_SUBNET 2001:db8::/33 proto 17 port 500"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		id := IDFromPrefix(p, 17, 500)
		if id.IDType != tt.typ || id.Protocol != 17 || id.Port != 500 || string(id.Data) != string(mustHex(tt.data)) {
			t.Errorf("%s: %+v", tt.prefix, id)
		}
		if s := id.String(); s != tt.str {
			t.Errorf("%s: String %q, want %q", tt.prefix, s, tt.str)
		}
		got, err := id.Prefix()
		if err != nil || got != p.Masked() {
			t.Errorf("%s: Prefix() = %v, %v", tt.prefix, got, err)
		}
	}
	if id := IDFromPrefix(netip.Prefix{}, 0, 0); id.IDType != 0 || id.Data != nil {
		t.Errorf("invalid prefix: %+v", id)
	}
}

func TestIDPrefix(t *testing.T) {
	tests := []struct {
		name string
		id   ID
		want string // prefix, or "" for an error
		err  error
	}{
		{"v4 range = /24", ID{IDType: IDIPv4Range, Data: mustHex("0a000000" + "0a0000ff")}, "10.0.0.0/24", nil},
		{"v4 range single", ID{IDType: IDIPv4Range, Data: mustHex("0a000001" + "0a000001")}, "10.0.0.1/32", nil},
		{"v4 range all", ID{IDType: IDIPv4Range, Data: mustHex("00000000" + "ffffffff")}, "0.0.0.0/0", nil},
		{"v4 range not a prefix", ID{IDType: IDIPv4Range, Data: mustHex("0a000001" + "0a0000ff")}, "", ErrNotPrefix},
		{"v4 range reversed", ID{IDType: IDIPv4Range, Data: mustHex("0a0000ff" + "0a000000")}, "", ErrNotPrefix},
		{"v6 range /64", ID{IDType: IDIPv6Range, Data: mustHex("20010db8000000000000000000000000" + "20010db800000000ffffffffffffffff")}, "2001:db8::/64", nil},
		{"subnet host bits masked", ID{IDType: IDIPv4Subnet, Data: mustHex("0a000005" + "ffffff00")}, "10.0.0.0/24", nil},
		{"subnet mask not contiguous", ID{IDType: IDIPv4Subnet, Data: mustHex("0a000000" + "ff00ff00")}, "", ErrNotPrefix},
		{"subnet mask hole in byte", ID{IDType: IDIPv4Subnet, Data: mustHex("0a000000" + "fffffe80")}, "", ErrNotPrefix},
		{"addr short", ID{IDType: IDIPv4Addr, Data: mustHex("0a0000")}, "", ErrBadPayload},
		{"v6 subnet short", ID{IDType: IDIPv6Subnet, Data: make([]byte, 16)}, "", ErrBadPayload},
		{"fqdn", ID{IDType: IDFQDN, Data: []byte("vpn.example.com")}, "", ErrNotPrefix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.id.Prefix()
			if tt.err != nil {
				var e *Error
				if !errors.Is(err, tt.err) || !errors.As(err, &e) || e.Payload != PayloadID {
					t.Fatalf("Prefix() = %v, %v; want error %v", p, err, tt.err)
				}
				return
			}
			if err != nil || p != netip.MustParsePrefix(tt.want) {
				t.Fatalf("Prefix() = %v, %v; want %s", p, err, tt.want)
			}
		})
	}
}

func TestIDString(t *testing.T) {
	tests := []struct {
		id   ID
		want string
	}{
		{ID{IDType: IDFQDN, Data: []byte("vpn.example.com")}, `FQDN "vpn.example.com"`},
		{ID{IDType: IDUserFQDN, Data: []byte("a@b\n")}, `USER_FQDN "a@b\n"`},
		{ID{IDType: IDIPv4Range, Data: mustHex("0a0000010a000009")}, "IPV4_ADDR_RANGE 10.0.0.1-10.0.0.9"},
		{ID{IDType: IDIPv4Range, Data: mustHex("0a")}, "IPV4_ADDR_RANGE 0x0a"},
		{ID{IDType: IDIPv4Addr, Data: mustHex("0a")}, "IPV4_ADDR 0x0a"},
		{ID{IDType: IDKeyID, Data: []byte{1, 2}}, "KEY_ID 0x0102"},
		{ID{IDType: 200, Data: nil, Port: 4500}, "ID(200) 0x proto 0 port 4500"},
	}
	for _, tt := range tests {
		if got := tt.id.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func FuzzIDPrefix(f *testing.F) {
	f.Add(uint8(IDIPv4Range), mustHex("0a0000000a0000ff"))
	f.Add(uint8(IDIPv6Subnet), mustHex("20010db8000000000000000000000000ffffffff800000000000000000000000"))
	f.Add(uint8(IDIPv4Subnet), mustHex("0a000000fffffe80"))
	f.Add(uint8(IDIPv4Addr), mustHex("c0000201"))
	f.Add(uint8(IDFQDN), []byte("vpn.example.com"))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		id := ID{IDType: IDType(typ), Data: data}
		_ = id.String()
		p, err := id.Prefix()
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !(errors.Is(err, ErrNotPrefix) || errors.Is(err, ErrBadPayload)) {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		if !p.IsValid() || p != p.Masked() {
			t.Fatalf("prefix %v not valid and masked", p)
		}
		// The prefix names the same addresses as the ID.
		n := p.Addr().BitLen() / 8
		switch id.IDType {
		case IDIPv4Addr, IDIPv6Addr:
			if p.Bits() != n*8 || string(p.Addr().AsSlice()) != string(data) {
				t.Fatalf("address %x -> %v", data, p)
			}
		case IDIPv4Range, IDIPv6Range:
			if string(p.Addr().AsSlice()) != string(data[:n]) || string(lastAddr(p).AsSlice()) != string(data[n:]) {
				t.Fatalf("range %x -> %v", data, p)
			}
		case IDIPv4Subnet, IDIPv6Subnet:
			back := IDFromPrefix(p, 0, 0)
			if string(back.Data[n:]) != string(data[n:]) && p.Bits() != n*8 {
				t.Fatalf("subnet %x -> %v -> %x", data, p, back.Data)
			}
		default:
			t.Fatalf("type %s gave prefix %v", id.IDType, p)
		}
		if q, err := IDFromPrefix(p, 0, 0).Prefix(); err != nil || q != p {
			t.Fatalf("IDFromPrefix(%v).Prefix() = %v, %v", p, q, err)
		}
	})
}
