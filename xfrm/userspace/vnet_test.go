package userspace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// naiveCsum is RFC 1071 word by word, as a reference for csumAdd.
func naiveCsum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// pseudoHdr is the TCP/UDP pseudo-header of an IP packet for l4len bytes.
func pseudoHdr(pkt []byte, proto uint8, l4len int) []byte {
	var b []byte
	if pkt[0]>>4 == 4 {
		b = append(b, pkt[12:20]...)
	} else {
		b = append(b, pkt[8:40]...)
	}
	return append(b, 0, proto, byte(l4len>>8), byte(l4len))
}

// checkSums verifies an IP packet's header checksum (IPv4) and its
// transport checksum (TCP or UDP, at ipLen).
func checkSums(t testing.TB, pkt []byte, ipLen int, proto uint8) {
	t.Helper()
	if pkt[0]>>4 == 4 {
		if s := naiveCsum(pkt[:ipLen]); s != 0xffff {
			t.Fatalf("IPv4 header checksum wrong (sum %#04x): % x", s, pkt[:ipLen])
		}
		if got := int(binary.BigEndian.Uint16(pkt[2:])); got != len(pkt) {
			t.Fatalf("IPv4 total length %d, packet %d bytes", got, len(pkt))
		}
	} else if got := int(binary.BigEndian.Uint16(pkt[4:])); got != len(pkt)-40 {
		t.Fatalf("IPv6 payload length %d, packet %d bytes", got, len(pkt))
	}
	l4 := pkt[ipLen:]
	if s := naiveCsum(pseudoHdr(pkt, proto, len(l4)), l4); s != 0xffff {
		t.Fatalf("protocol %d checksum wrong (sum %#04x)", proto, s)
	}
	if proto == unix.IPPROTO_UDP {
		if got := int(binary.BigEndian.Uint16(l4[udpLenAt:])); got != len(l4) {
			t.Fatalf("UDP length %d, datagram %d bytes", got, len(l4))
		}
		if binary.BigEndian.Uint16(l4[udpCsumAt:]) == 0 {
			t.Fatal("UDP checksum sent as 0 (means none)")
		}
	}
}

// superPacket builds an IPv4 or IPv6 TCP or UDP packet with payload
// bytes of payload after the headers (TCP: 32-byte header with options,
// flags PSH|ACK|FIN|CWR), the way the kernel hands a GSO packet out: the
// transport checksum field holds the pseudo-header sum without length.
func superPacket(v6, tcp bool, payload int) (pkt []byte, ipLen, hdrLen int) {
	ipLen, l4 := 20, 8
	if v6 {
		ipLen = 40
	}
	if tcp {
		l4 = 32
	}
	hdrLen = ipLen + l4
	pkt = make([]byte, hdrLen+payload)
	proto := uint8(unix.IPPROTO_UDP)
	if tcp {
		proto = unix.IPPROTO_TCP
	}
	if v6 {
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
		pkt[6], pkt[7] = proto, 64
		s, d := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8:2::1").As16()
		copy(pkt[8:], s[:])
		copy(pkt[24:], d[:])
	} else {
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[4:], 0xfffe) // the ID wraps in the segments
		pkt[6] = 0x40                               // DF
		pkt[8], pkt[9] = 64, proto
		copy(pkt[12:], []byte{10, 98, 1, 1, 10, 98, 2, 1})
		binary.BigEndian.PutUint16(pkt[10:], ^naiveCsum(pkt[:20]))
	}
	th := pkt[ipLen:]
	binary.BigEndian.PutUint16(th[0:], 40000)
	binary.BigEndian.PutUint16(th[2:], 5201)
	if tcp {
		binary.BigEndian.PutUint32(th[tcpSeqAt:], 0xffffff00) // wraps
		binary.BigEndian.PutUint32(th[8:], 12345)
		th[12] = 8 << 4
		th[tcpFlagsAt] = tcpFlagCWR | 0x10 | tcpFlagPSH | tcpFlagFIN
		binary.BigEndian.PutUint16(th[14:], 512)
		copy(th[20:], []byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8}) // NOP NOP timestamps
	} else {
		binary.BigEndian.PutUint16(th[udpLenAt:], uint16(len(th)))
	}
	for i := hdrLen; i < len(pkt); i++ {
		pkt[i] = byte(i * 7)
	}
	csumAt := ipLen + udpCsumAt
	if tcp {
		csumAt = ipLen + tcpCsumAt
	}
	// pseudo-header sum without the length, not complemented
	binary.BigEndian.PutUint16(pkt[csumAt:], naiveCsum(pseudoHdr(pkt, proto, 0)))
	return pkt, ipLen, hdrLen
}

func vnetRead(h vnetHdr, pkt []byte) []byte {
	b := make([]byte, vnetHdrLen, vnetHdrLen+len(pkt))
	b[0], b[1] = h.flags, h.gsoType
	e := binary.NativeEndian
	e.PutUint16(b[2:], h.hdrLen)
	e.PutUint16(b[4:], h.gsoSize)
	e.PutUint16(b[6:], h.csumStart)
	e.PutUint16(b[8:], h.csumOffset)
	return append(b, pkt...)
}

func batchBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func TestChecksumMatchesRFC1071(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		init := uint64(r.Uint32() & 0xffff)
		want := ^naiveCsum([]byte{byte(init >> 8), byte(init)}, b)
		if want == 0 {
			want = 0xffff
		}
		if got := finishCsum(csumAdd(init, b)); got != want {
			t.Fatalf("%d bytes: checksum %#04x, want %#04x", n, got, want)
		}
	}
	// All ones: the sum folds to 0xffff, the checksum would be 0.
	if got := finishCsum(csumAdd(0, bytes.Repeat([]byte{0xff}, 64))); got != 0xffff {
		t.Fatalf("checksum of all-ones %#04x, want 0xffff", got)
	}
}

func TestSplitVnetPlain(t *testing.T) {
	pkt := ipv4("10.98.1.1", "10.98.2.1", unix.IPPROTO_ICMP, 64, 7)
	bufs, sizes := batchBufs(4, 100+len(pkt))
	n, err := splitVnet(vnetRead(vnetHdr{}, pkt), bufs, sizes, 100)
	if err != nil || n != 1 || sizes[0] != len(pkt) || !bytes.Equal(bufs[0][100:100+sizes[0]], pkt) {
		t.Fatalf("n=%d err=%v size=%d", n, err, sizes[0])
	}

	// A UDP datagram whose checksum the kernel left to us (CHECKSUM_PARTIAL).
	for _, v6 := range []bool{false, true} {
		udp, ipLen, _ := superPacket(v6, false, 1372)
		h := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: uint16(ipLen), csumOffset: udpCsumAt}
		// the field holds the pseudo-header sum including the length
		binary.BigEndian.PutUint16(udp[ipLen+udpCsumAt:], naiveCsum(pseudoHdr(udp, unix.IPPROTO_UDP, len(udp)-ipLen)))
		bufs, sizes := batchBufs(2, 1500)
		n, err := splitVnet(vnetRead(h, udp), bufs, sizes, 64)
		if err != nil || n != 1 || sizes[0] != len(udp) {
			t.Fatalf("v6=%v: n=%d err=%v size=%d", v6, n, err, sizes[0])
		}
		out := bufs[0][64 : 64+sizes[0]]
		checkSums(t, out, ipLen, unix.IPPROTO_UDP)
		if !bytes.Equal(out[ipLen+8:], udp[ipLen+8:]) {
			t.Fatal("payload changed")
		}
	}
}

func TestSplitVnetGSO(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v6, tcp  bool
		payload  int
		gsoSize  int
		segments int
	}{
		{"tcp4", false, true, 65535 - 52, 1348, 49},
		{"tcp4 one segment", false, true, 100, 1348, 1},
		{"tcp6 exact", true, true, 3 * 1328, 1328, 3},
		{"udp4", false, false, 10 * 1372, 1372, 10},
		{"udp4 short last", false, false, 5*1372 + 1, 1372, 6},
		{"udp6", true, false, 4 * 1352, 1352, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, ipLen, hdrLen := superPacket(tc.v6, tc.tcp, tc.payload)
			h := vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoSize: uint16(tc.gsoSize), csumStart: uint16(ipLen),
				hdrLen: 0xffff} // never trusted
			proto := uint8(unix.IPPROTO_UDP)
			switch {
			case !tc.tcp:
				h.gsoType, h.csumOffset = unix.VIRTIO_NET_HDR_GSO_UDP_L4, udpCsumAt
			case tc.v6:
				h.gsoType, h.csumOffset, proto = unix.VIRTIO_NET_HDR_GSO_TCPV6, tcpCsumAt, unix.IPPROTO_TCP
			default:
				h.gsoType, h.csumOffset, proto = unix.VIRTIO_NET_HDR_GSO_TCPV4, tcpCsumAt, unix.IPPROTO_TCP
			}
			const off = 48
			bufs, sizes := batchBufs(64, off+1400)
			n, err := splitVnet(vnetRead(h, pkt), bufs, sizes, off)
			if err != nil || n != tc.segments {
				t.Fatalf("%d segments, err %v; want %d", n, err, tc.segments)
			}
			var data []byte
			for i := 0; i < n; i++ {
				seg := bufs[i][off : off+sizes[i]]
				checkSums(t, seg, ipLen, proto)
				if tc.v6 && (!bytes.Equal(seg[:4], pkt[:4]) || !bytes.Equal(seg[6:40], pkt[6:40])) {
					t.Fatalf("segment %d: IPv6 header changed: % x", i, seg[:40])
				}
				if !tc.v6 {
					// only the length, ID and checksum change
					if !bytes.Equal(seg[:2], pkt[:2]) || !bytes.Equal(seg[6:10], pkt[6:10]) || !bytes.Equal(seg[12:20], pkt[12:20]) {
						t.Fatalf("segment %d: IPv4 header changed: % x", i, seg[:20])
					}
					if id := binary.BigEndian.Uint16(seg[4:]); id != 0xfffe+uint16(i) {
						t.Fatalf("segment %d: IPv4 ID %#x", i, id)
					}
				}
				if tc.tcp {
					th := seg[ipLen:]
					if seq := binary.BigEndian.Uint32(th[tcpSeqAt:]); seq != 0xffffff00+uint32(i*tc.gsoSize) {
						t.Fatalf("segment %d: seq %#x", i, seq)
					}
					last := i == n-1
					if fl := th[tcpFlagsAt]; (fl&(tcpFlagFIN|tcpFlagPSH) != 0) != last || (fl&tcpFlagCWR != 0) != (i == 0) || fl&0x10 == 0 {
						t.Fatalf("segment %d of %d: flags %#02x", i, n, fl)
					}
					if !bytes.Equal(th[20:32], pkt[ipLen+20:ipLen+32]) {
						t.Fatalf("segment %d: TCP options changed", i)
					}
				}
				if i < n-1 && sizes[i] != hdrLen+tc.gsoSize {
					t.Fatalf("segment %d: %d bytes, want %d", i, sizes[i], hdrLen+tc.gsoSize)
				}
				data = append(data, seg[hdrLen:]...)
			}
			if !bytes.Equal(data, pkt[hdrLen:]) {
				t.Fatalf("payload of the segments (%d bytes) differs from the super-packet's (%d bytes)", len(data), len(pkt)-hdrLen)
			}

			// Too few buffers: nothing written, the caller keeps the read.
			if tc.segments > 1 {
				bufs, sizes := batchBufs(tc.segments-1, off+1400)
				if n, err := splitVnet(vnetRead(h, pkt), bufs, sizes, off); !errors.Is(err, errNoRoom) || n != 0 {
					t.Fatalf("with %d buffers: n=%d err=%v, want errNoRoom", tc.segments-1, n, err)
				}
			}
		})
	}
}

func TestSplitVnetMalformed(t *testing.T) {
	tcp4, _, _ := superPacket(false, true, 4000)
	udp6, _, _ := superPacket(true, false, 4000)
	gso := func(typ uint8, size, start int) vnetHdr {
		return vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: typ, gsoSize: uint16(size), csumStart: uint16(start), csumOffset: tcpCsumAt}
	}
	tcpV4 := uint8(unix.VIRTIO_NET_HDR_GSO_TCPV4)
	short := func(b []byte, n int) []byte { return b[:n] }
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "shorter than the 10-byte virtio-net header"},
		{"partial header", []byte{0, 0, 0, 0, 0}, "shorter than the 10-byte"},
		{"header only", vnetRead(vnetHdr{}, nil), "no packet after"},
		{"too big for a buffer", vnetRead(vnetHdr{}, make([]byte, 1501)), "exceeds the 1500-byte buffer"},
		{"checksum outside", vnetRead(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 20, csumOffset: 60}, make([]byte, 80)), "checksum field at 20+60 outside the 80-byte packet"},
		{"UFO", vnetRead(vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_UDP, gsoSize: 1000, csumStart: 20}, tcp4), "unsupported GSO type 0x03"},
		{"ECN", vnetRead(vnetHdr{gsoType: tcpV4 | unix.VIRTIO_NET_HDR_GSO_ECN, gsoSize: 1000, csumStart: 20}, tcp4), "unsupported GSO type 0x81"},
		{"segment size 0", vnetRead(gso(tcpV4, 0, 20), tcp4), "segment size of 0"},
		{"v4 with TCPv6", vnetRead(gso(unix.VIRTIO_NET_HDR_GSO_TCPV6, 1000, 20), tcp4), "IPv4 packet with GSO type TCPv6"},
		{"v6 with TCPv4", vnetRead(gso(tcpV4, 1000, 40), udp6), "IPv6 packet with GSO type TCPv4"},
		{"v6 UDP as TCPv6", vnetRead(gso(unix.VIRTIO_NET_HDR_GSO_TCPV6, 1000, 40), udp6), "next header 17"},
		{"v4 UDP GSO on TCP", vnetRead(gso(unix.VIRTIO_NET_HDR_GSO_UDP_L4, 1000, 20), tcp4), "protocol 6"},
		{"checksum start in the IPv4 header", vnetRead(gso(tcpV4, 1000, 12), tcp4), "IPv4 header length 20 does not match the checksum start 12"},
		{"checksum start past the packet", vnetRead(gso(tcpV4, 1000, 60000), tcp4), "does not match the checksum start 60000"},
		{"checksum start in the IPv6 header", vnetRead(gso(unix.VIRTIO_NET_HDR_GSO_UDP_L4, 1000, 8), udp6), "inside the IPv6 header"},
		{"v6 checksum start past the packet", vnetRead(gso(unix.VIRTIO_NET_HDR_GSO_UDP_L4, 1000, 5000), udp6), "has no payload"},
		{"IP version 5", vnetRead(gso(tcpV4, 1000, 20), append([]byte{0x55}, tcp4[1:]...)), "IP version 5"},
		{"truncated TCP header", vnetRead(gso(tcpV4, 1000, 20), short(tcp4, 30)), "TCP header at 20 beyond the 30-byte packet"},
		{"TCP header length 4", vnetRead(gso(tcpV4, 1000, 20), func() []byte { b := bytes.Clone(tcp4); b[32] = 1 << 4; return b }()), "TCP header length 4"},
		{"no payload", vnetRead(gso(tcpV4, 1000, 20), short(tcp4, 52)), "no payload after 52 bytes of headers"},
		{"segment too big", vnetRead(gso(tcpV4, 3000, 20), tcp4), "segment of 3052 bytes exceeds the 1500-byte buffer"},
		{"GSO over 64 KiB", vnetRead(gso(tcpV4, 1000, 20), make([]byte, 70000)), "exceeds 65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs, sizes := batchBufs(64, 1500)
			n, err := splitVnet(tc.in, bufs, sizes, 0)
			var ve *vnetError
			if n != 0 || !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("n=%d err=%v, want a vnetError containing %q", n, err, tc.want)
			}
			if ve.n != len(tc.in) || !strings.Contains(err.Error(), "read from the TUN device") {
				t.Fatalf("error %q does not say what and where", err)
			}
		})
	}
}

// FuzzSplitVnet feeds arbitrary reads to the decoder: it must never panic,
// and what it splits must be consistent: segments that fit their buffers,
// and valid checksums wherever it computed them.
func FuzzSplitVnet(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		for _, tcp := range []bool{false, true} {
			pkt, ipLen, _ := superPacket(v6, tcp, 600)
			typ := uint8(unix.VIRTIO_NET_HDR_GSO_UDP_L4)
			switch {
			case tcp && v6:
				typ = unix.VIRTIO_NET_HDR_GSO_TCPV6
			case tcp:
				typ = unix.VIRTIO_NET_HDR_GSO_TCPV4
			}
			f.Add(vnetRead(vnetHdr{flags: 1, gsoType: typ, gsoSize: 200, csumStart: uint16(ipLen), csumOffset: 6}, pkt))
			f.Add(vnetRead(vnetHdr{flags: 1, csumStart: uint16(ipLen), csumOffset: 6}, pkt[:300]))
		}
	}
	f.Add([]byte{1, 0, 0, 0})
	const off, size = 16, 16 + 1400
	bufs, sizes := batchBufs(32, size)
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		n, err := splitVnet(in, bufs, sizes, off)
		if err != nil {
			var ve *vnetError
			if n != 0 || (!errors.As(err, &ve) && !errors.Is(err, errNoRoom)) {
				t.Fatalf("n=%d err=%v", n, err)
			}
			return
		}
		if n < 1 || n > len(bufs) {
			t.Fatalf("%d packets from one read", n)
		}
		h := decodeVnetHdr(orig)
		if h.gsoType == unix.VIRTIO_NET_HDR_GSO_NONE {
			if n != 1 || sizes[0] != len(orig)-vnetHdrLen {
				t.Fatalf("plain packet: %d packets, %d bytes", n, sizes[0])
			}
			if h.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 && !bytes.Equal(bufs[0][off:off+sizes[0]], orig[vnetHdrLen:]) {
				t.Fatal("plain packet changed")
			}
			return
		}
		proto := uint8(unix.IPPROTO_UDP)
		if h.gsoType != unix.VIRTIO_NET_HDR_GSO_UDP_L4 {
			proto = unix.IPPROTO_TCP
		}
		for i := 0; i < n; i++ {
			if sizes[i] <= int(h.csumStart) || sizes[i] > size-off {
				t.Fatalf("segment %d: %d bytes", i, sizes[i])
			}
			checkSums(t, bufs[i][off:off+sizes[i]], int(h.csumStart), proto)
		}
	})
}

func BenchmarkSplitVnet(b *testing.B) {
	udp, ipLen, _ := superPacket(false, false, 1372)
	binary.BigEndian.PutUint16(udp[ipLen+udpCsumAt:], naiveCsum(pseudoHdr(udp, unix.IPPROTO_UDP, len(udp)-ipLen)))
	plain := vnetRead(vnetHdr{flags: unix.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: uint16(ipLen), csumOffset: udpCsumAt}, udp)
	tcp, ipLen, _ := superPacket(false, true, 65535-52)
	tso := vnetRead(vnetHdr{flags: 1, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1348, csumStart: uint16(ipLen), csumOffset: tcpCsumAt}, tcp)
	for _, c := range []struct {
		name string
		in   []byte
	}{{"udp-csum-1400", plain}, {"tso-64k", tso}} {
		b.Run(c.name, func(b *testing.B) {
			bufs, sizes := batchBufs(64, 1500)
			in := make([]byte, len(c.in))
			b.SetBytes(int64(len(c.in)))
			for b.Loop() {
				copy(in, c.in)
				if _, err := splitVnet(in, bufs, sizes, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
