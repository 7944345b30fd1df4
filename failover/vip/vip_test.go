package vip

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []struct {
		iface, in, want string
	}{
		{"eth0", "192.0.2.10/24", "192.0.2.10/24 on eth0"},
		{"eth0", "192.0.2.10", "192.0.2.10/32 on eth0"},
		{"outside", "2001:db8::10/64", "2001:db8::10/64 on outside"},
		{"in", "fd00::1", "fd00::1/128 on in"},
		{"in", "10.1.2.3/8", "10.1.2.3/8 on in"},
	}
	for _, c := range good {
		v, err := Parse(c.iface, c.in)
		if err != nil {
			t.Errorf("Parse(%q, %q): %v", c.iface, c.in, err)
			continue
		}
		if v.String() != c.want {
			t.Errorf("Parse(%q, %q) = %s, want %s", c.iface, c.in, v, c.want)
		}
	}
	bad := []struct {
		iface, in, wantText string
	}{
		{"", "192.0.2.10/24", "interface name"},
		{"averyveryverylongname", "192.0.2.10/24", "interface name"},
		{"..", "192.0.2.10/24", "not a valid interface name"},
		{"eth0/x", "192.0.2.10/24", "not a valid interface name"},
		{"eth0:1", "192.0.2.10/24", "not a valid interface name"},
		{"eth 0", "192.0.2.10/24", "not a valid interface name"},
		{"eth0", "192.0.2.300/24", "want an address with a prefix length"},
		{"eth0", "", "want an address"},
		{"eth0", "127.0.0.1/8", "not a unicast"},
		{"eth0", "224.0.0.1/32", "not a unicast"},
		{"eth0", "fe80::1/64", "not a unicast"},
		{"eth0", "::/0", "not a unicast"},
		{"eth0", "::ffff:192.0.2.1/128", "IPv4-mapped"},
		{"eth0", "fe80::1%eth0", "zone"},
		{"eth0", "2001:db8::1%eth0", "zone"},
	}
	for _, c := range bad {
		_, err := Parse(c.iface, c.in)
		if !errors.Is(err, ErrBadVIP) || !strings.Contains(err.Error(), c.wantText) {
			t.Errorf("Parse(%q, %q) = %v, want ErrBadVIP mentioning %q", c.iface, c.in, err, c.wantText)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	v := func(s string) VIP { x, err := Parse("eth0", s); must(t, err); return x }
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"duplicate", Config{VIPs: []VIP{v("192.0.2.1/24"), {Interface: "eth1", Prefix: netip.MustParsePrefix("192.0.2.1/32")}}}, "vips[1]: 192.0.2.1/32 on eth1: address already configured as 192.0.2.1/24 on eth0"},
		{"bad vip", Config{VIPs: []VIP{{Interface: "eth0"}}}, "vips[0]"},
		{"count", Config{Announce: Announce{Count: -2}}, "announce: count -2"},
		{"interval", Config{Announce: Announce{Interval: -1}}, "announce: count"},
		{"arp", Config{Announce: Announce{ARP: 7}}, "unknown ARP mode 7"},
	}
	for _, c := range cases {
		m, err := New(c.cfg)
		if err == nil {
			m.Close()
			t.Errorf("%s: New accepted %+v", c.name, c.cfg)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var testMAC = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}

func TestGratuitousARPBytes(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.10")
	req := gratuitousARP(arpRequest, testMAC, ip)
	want := "0001080006040001021122334455c000020a000000000000c000020a"
	if got := hexs(req); got != want {
		t.Errorf("request\n got %s\nwant %s", got, want)
	}
	rep := gratuitousARP(arpReply, testMAC, ip)
	want = "0001080006040002021122334455c000020a021122334455c000020a"
	if got := hexs(rep); got != want {
		t.Errorf("reply\n got %s\nwant %s", got, want)
	}
}

func TestUnsolicitedNABytes(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8::10")
	for _, router := range []bool{false, true} {
		p := unsolicitedNA(testMAC, ip, router)
		if len(p) != naLen {
			t.Fatalf("length %d, want %d", len(p), naLen)
		}
		hdr := "60000000" + "0020" + "3a" + "ff" +
			"20010db8000000000000000000000010" + "ff020000000000000000000000000001"
		if got := hexs(p[:40]); got != hdr {
			t.Errorf("IPv6 header\n got %s\nwant %s", got, hdr)
		}
		flags := "20"
		if router {
			flags = "a0"
		}
		body := "8800" + "XXXX" + flags + "000000" + "20010db8000000000000000000000010" + "0201021122334455"
		got := hexs(p[40:])
		got = got[:4] + "XXXX" + got[8:]
		if got != body {
			t.Errorf("NA (router=%v)\n got %s\nwant %s", router, got, body)
		}
		// The checksum makes the one's complement sum over the
		// pseudo-header and message all ones.
		var src, dst [16]byte
		copy(src[:], p[8:24])
		copy(dst[:], p[24:40])
		if c := icmp6Checksum(src, dst, p[40:]); c != 0 {
			t.Errorf("checksum does not verify: residue %#04x", c)
		}
		if binary.BigEndian.Uint16(p[42:]) == 0 {
			t.Error("checksum field is zero")
		}
	}
}

// TestICMPv6ChecksumVerifies: a message carrying the computed checksum
// verifies, and a corrupted one does not. (That the kernel accepts our NAs,
// so that the checksum is right, is checked in TestTakeoverNA.)
func TestICMPv6ChecksumVerifies(t *testing.T) {
	src := netip.MustParseAddr("fe80::1").As16()
	dst := netip.MustParseAddr("ff02::1").As16()
	msg := unhex(t, "88000000"+"20000000"+"fe800000000000000000000000000001"+"0201020000000001")
	sum := icmp6Checksum(src, dst, msg)
	binary.BigEndian.PutUint16(msg[2:], sum)
	if icmp6Checksum(src, dst, msg) != 0 {
		t.Fatal("checksum does not verify")
	}
	// Changing any byte must change the verification result.
	msg[30] ^= 1
	if icmp6Checksum(src, dst, msg) == 0 {
		t.Fatal("corrupted message verifies")
	}
}

func hexs(b []byte) string {
	const d = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(d[c>>4])
		s.WriteByte(d[c&15])
	}
	return s.String()
}

func unhex(t testing.TB, s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c - 'a' + 10)
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		b[i] = v
	}
	return b
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"192.0.2.10/24", "2001:db8::1/64", "fe80::1%eth0", "::ffff:1.2.3.4/128", "1.2.3.4", "x"} {
		f.Add("eth0", s)
	}
	f.Fuzz(func(t *testing.T, iface, s string) {
		v, err := Parse(iface, s)
		if err != nil {
			if !errors.Is(err, ErrBadVIP) {
				t.Fatalf("Parse(%q, %q): error %v is not ErrBadVIP", iface, s, err)
			}
			return
		}
		if v.Validate() != nil || v.Interface != iface || !v.Prefix.IsValid() {
			t.Fatalf("Parse(%q, %q) = %+v: invalid result", iface, s, v)
		}
		w, err := Parse(v.Interface, v.Prefix.String())
		if err != nil || w != v {
			t.Fatalf("round trip of %s: %+v, %v", v, w, err)
		}
	})
}

func TestNewNamespace(t *testing.T) {
	// The calling process's namespace by default: opens, touches nothing.
	m, err := New(Config{Log: quiet()})
	if err != nil {
		t.Fatalf("New in the current namespace: %v", err)
	}
	if held, err := m.Held(); err != nil || len(held) != 0 {
		t.Fatalf("Held with no VIPs: %v, %v", held, err)
	}
	must(t, m.Close())
	must(t, m.Close())
	_, err = New(Config{NetNS: "/nonexistent/netns/x"})
	if err == nil || !strings.Contains(err.Error(), `network namespace "/nonexistent/netns/x"`) {
		t.Fatalf("New with a missing namespace: %v", err)
	}
}
