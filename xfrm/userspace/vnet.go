package userspace

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A TUN device opened with IFF_VNET_HDR puts a virtio-net header (struct
// virtio_net_hdr, include/uapi/linux/virtio_net.h) in front of every
// packet it hands out. With the offloads the engine enables (TUNSETOFFLOAD:
// checksum, TSO4/6, USO4/6) the header may say that the transport checksum
// is still to be completed (NEEDS_CSUM: the field holds the pseudo-header
// sum only), or that the packet is a super-packet of up to 64 KiB which we
// must cut into segments of gso_size payload bytes, each with its own IP
// and TCP/UDP header and checksums (what a NIC does for the kernel).
// splitVnet decodes one such read.

// vnetHdrLen is sizeof(struct virtio_net_hdr).
const vnetHdrLen = 10

// vnetHdr is a decoded virtio-net header. The multi-byte fields are in the
// host's byte order (a TUN device without TUNSETVNETBE/LE on its native
// endianness, which is what the engine uses).
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16 // length of the headers; not trusted, recomputed
	gsoSize    uint16 // payload bytes per segment
	csumStart  uint16 // where the checksummed part starts (the transport header)
	csumOffset uint16 // the checksum field, from csumStart
}

func decodeVnetHdr(b []byte) vnetHdr {
	e := binary.NativeEndian
	return vnetHdr{flags: b[0], gsoType: b[1], hdrLen: e.Uint16(b[2:]), gsoSize: e.Uint16(b[4:]),
		csumStart: e.Uint16(b[6:]), csumOffset: e.Uint16(b[8:])}
}

// errNoRoom: the read holds more segments than the buffers left in the
// batch. The caller keeps the read for the next batch.
var errNoRoom = errors.New("more segments than buffers left in the batch")

// vnetError is a read from the TUN device that cannot be turned into
// packets. It is dropped and counted as malformed.
type vnetError struct {
	n      int // bytes read, virtio-net header included
	reason string
}

func (e *vnetError) Error() string {
	return fmt.Sprintf("userspace: malformed %d-byte read from the TUN device: %s", e.n, e.reason)
}

func badRead(in []byte, format string, args ...any) error {
	return &vnetError{n: len(in), reason: fmt.Sprintf(format, args...)}
}

// Offsets in IP, TCP and UDP headers.
const (
	tcpSeqAt    = 4
	tcpFlagsAt  = 13
	tcpCsumAt   = 16
	udpLenAt    = 4
	udpCsumAt   = 6
	tcpFlagFIN  = 0x01
	tcpFlagPSH  = 0x08
	tcpFlagCWR  = 0x80
	maxIPPacket = 65535
)

// splitVnet turns one read in (virtio-net header, then the packet) into
// packets at bufs[i][offset:], with their lengths in sizes[i], and returns
// how many. A packet must fit in len(bufs[i])-offset bytes. It returns
// errNoRoom (and writes nothing) when the read has more segments than
// len(bufs), and a *vnetError for anything it cannot split; it never
// panics, whatever in holds.
func splitVnet(in []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(in) < vnetHdrLen {
		return 0, badRead(in, "shorter than the %d-byte virtio-net header", vnetHdrLen)
	}
	h := decodeVnetHdr(in)
	pkt := in[vnetHdrLen:]
	if len(pkt) == 0 {
		return 0, badRead(in, "no packet after the virtio-net header")
	}
	if len(bufs) == 0 || len(sizes) < len(bufs) {
		return 0, errNoRoom
	}
	room := len(bufs[0]) - offset
	if h.gsoType == unix.VIRTIO_NET_HDR_GSO_NONE {
		if len(pkt) > room {
			return 0, badRead(in, "packet of %d bytes exceeds the %d-byte buffer", len(pkt), room)
		}
		out := bufs[0][offset : offset+len(pkt)]
		copy(out, pkt)
		if h.flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
			start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
			if at+2 > len(out) {
				return 0, badRead(in, "checksum field at %d+%d outside the %d-byte packet", h.csumStart, h.csumOffset, len(out))
			}
			partial := binary.BigEndian.Uint16(out[at:])
			out[at], out[at+1] = 0, 0
			binary.BigEndian.PutUint16(out[at:], finishCsum(csumAdd(uint64(partial), out[start:])))
		}
		sizes[0] = len(out)
		return 1, nil
	}
	return splitGSO(in, h, bufs, sizes, offset, room)
}

// splitGSO cuts a TCP or UDP super-packet into segments.
func splitGSO(in []byte, h vnetHdr, bufs [][]byte, sizes []int, offset, room int) (int, error) {
	pkt := in[vnetHdrLen:]
	var isTCP bool
	switch h.gsoType {
	case unix.VIRTIO_NET_HDR_GSO_TCPV4, unix.VIRTIO_NET_HDR_GSO_TCPV6:
		isTCP = true
	case unix.VIRTIO_NET_HDR_GSO_UDP_L4:
	default:
		return 0, badRead(in, "unsupported GSO type 0x%02x", h.gsoType)
	}
	if h.gsoSize == 0 {
		return 0, badRead(in, "GSO with a segment size of 0")
	}
	if len(pkt) > maxIPPacket {
		return 0, badRead(in, "GSO packet of %d bytes exceeds %d", len(pkt), maxIPPacket)
	}
	ipLen := int(h.csumStart) // the transport header starts where the checksum does
	proto := uint8(unix.IPPROTO_UDP)
	if isTCP {
		proto = unix.IPPROTO_TCP
	}
	var isV6 bool
	switch v := pkt[0] >> 4; v {
	case 4:
		if h.gsoType == unix.VIRTIO_NET_HDR_GSO_TCPV6 {
			return 0, badRead(in, "IPv4 packet with GSO type TCPv6")
		}
		if len(pkt) < 20 || int(pkt[0]&0x0f)*4 != ipLen || ipLen < 20 {
			return 0, badRead(in, "IPv4 header length %d does not match the checksum start %d", int(pkt[0]&0x0f)*4, ipLen)
		}
		if pkt[9] != proto {
			return 0, badRead(in, "GSO type 0x%02x on an IPv4 packet of protocol %d", h.gsoType, pkt[9])
		}
	case 6:
		if h.gsoType == unix.VIRTIO_NET_HDR_GSO_TCPV4 {
			return 0, badRead(in, "IPv6 packet with GSO type TCPv4")
		}
		if ipLen < 40 {
			return 0, badRead(in, "checksum start %d inside the IPv6 header", ipLen)
		}
		isV6 = true
	default:
		return 0, badRead(in, "IP version %d in a GSO packet", v)
	}
	l4Len, csumAt := 8, udpCsumAt
	if isTCP {
		if ipLen+20 > len(pkt) {
			return 0, badRead(in, "TCP header at %d beyond the %d-byte packet", ipLen, len(pkt))
		}
		l4Len, csumAt = int(pkt[ipLen+12]>>4)*4, tcpCsumAt
		if l4Len < 20 {
			return 0, badRead(in, "TCP header length %d", l4Len)
		}
	}
	hdrLen := ipLen + l4Len
	if hdrLen >= len(pkt) {
		return 0, badRead(in, "GSO packet of %d bytes has no payload after %d bytes of headers", len(pkt), hdrLen)
	}
	if isV6 && ipLen == 40 && pkt[6] != proto {
		return 0, badRead(in, "GSO type 0x%02x on an IPv6 packet of next header %d", h.gsoType, pkt[6])
	}
	payload := len(pkt) - hdrLen
	seg := min(int(h.gsoSize), payload)
	if hdrLen+seg > room {
		return 0, badRead(in, "segment of %d bytes exceeds the %d-byte buffer", hdrLen+seg, room)
	}
	nseg := (payload + seg - 1) / seg
	if nseg > len(bufs) {
		return 0, errNoRoom
	}
	for i := 1; i < nseg; i++ {
		if len(bufs[i])-offset < hdrLen+seg {
			return 0, badRead(in, "segment of %d bytes exceeds buffer %d (%d bytes)", hdrLen+seg, i, len(bufs[i])-offset)
		}
	}
	hdr := pkt[:hdrLen]
	var pseudo uint64 // addresses and protocol; the length is added per segment
	if isV6 {
		pseudo = csumAdd(uint64(proto), hdr[8:40])
	} else {
		pseudo = csumAdd(uint64(proto), hdr[12:20])
	}
	var seq uint32
	if isTCP {
		seq = binary.BigEndian.Uint32(hdr[ipLen+tcpSeqAt:])
	}
	for i := 0; i < nseg; i++ {
		data := pkt[hdrLen+i*seg : min(hdrLen+(i+1)*seg, len(pkt))]
		total := hdrLen + len(data)
		out := bufs[i][offset : offset+total]
		copy(out, hdr)
		copy(out[hdrLen:], data)
		if isV6 {
			binary.BigEndian.PutUint16(out[4:], uint16(total-40))
		} else {
			binary.BigEndian.PutUint16(out[2:], uint16(total))
			binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(hdr[4:])+uint16(i))
			out[10], out[11] = 0, 0
			binary.BigEndian.PutUint16(out[10:], finishCsum(csumAdd(0, out[:ipLen])))
		}
		l4 := out[ipLen:]
		if isTCP {
			binary.BigEndian.PutUint32(l4[tcpSeqAt:], seq+uint32(i*seg))
			if i < nseg-1 {
				l4[tcpFlagsAt] &^= tcpFlagFIN | tcpFlagPSH
			}
			if i > 0 {
				l4[tcpFlagsAt] &^= tcpFlagCWR
			}
		} else {
			binary.BigEndian.PutUint16(l4[udpLenAt:], uint16(len(l4)))
		}
		l4[csumAt], l4[csumAt+1] = 0, 0
		binary.BigEndian.PutUint16(l4[csumAt:], finishCsum(csumAdd(pseudo+uint64(len(l4)), l4)))
		sizes[i] = total
	}
	return nseg, nil
}

// csumAdd adds b, as big-endian 16-bit words, to the ones' complement sum
// acc (RFC 1071) without folding. b may have an odd length only when it is
// the last part summed.
func csumAdd(acc uint64, b []byte) uint64 {
	for len(b) >= 16 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:]))
		b = b[16:]
	}
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// finishCsum folds a sum and complements it: the value for a checksum
// field. A result of 0 is sent as 0xffff (the same in ones' complement; for
// UDP, 0 would mean "no checksum").
func finishCsum(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	if c := ^uint16(acc); c != 0 {
		return c
	}
	return 0xffff
}
