package runtime

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// ESPBatchReceiver is an ESPReceiver that takes the ESP packets of one
// read batch in one call; the NAT-T sockets then read with recvmmsg. The
// packets are only valid during the call.
type ESPBatchReceiver interface {
	ESPReceiver
	HandleInboundBatch(pkts [][]byte, from []netip.AddrPort)
}

// readBatch is how many datagrams one recvmmsg call takes at most.
const readBatch = 64

// readBufSize is one datagram buffer of the batch reader: with UDP_GRO a
// read may hold up to 64 KiB of one flow's coalesced datagrams, and an IKE
// message may be as large without it.
const readBufSize = 65536

// readBuffers returns n buffers of size bytes each for the batch reader,
// and the function that gives them back. They are one anonymous mapping
// outside the Go heap: the kernel backs a page only when a datagram is
// copied into it (a handshake load touches the first page of each buffer;
// only large coalesced reads touch more), and the 4 MiB of a socket's
// buffers do not count as live heap, which would raise the garbage
// collector's goal and let that much more garbage stay resident. Where
// the mapping fails, they come from the heap. release must be called once,
// when nothing refers to the buffers any more.
func readBuffers(n, size int) (bufs [][]byte, release func()) {
	bufs = make([][]byte, n)
	area, err := unix.Mmap(-1, 0, n*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		for i := range bufs {
			bufs[i] = make([]byte, size)
		}
		return bufs, func() {}
	}
	for i := range bufs {
		bufs[i] = area[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs, func() { _ = unix.Munmap(area) }
}

// espIn collects the ESP packets of one read batch.
type espIn struct {
	pkts [][]byte
	from []netip.AddrPort
}

// batchReader reads the NAT-T socket s with recvmmsg and hands the ESP
// packets of each batch to recv in one call; everything else goes the way
// of reader's datagrams.
func (r *Runtime) batchReader(s *socket, recv ESPBatchReceiver) {
	defer r.wg.Done()
	s.enableGRO()
	bufs, release := readBuffers(readBatch, readBufSize)
	defer release()
	msgs := make([]ipv4.Message, readBatch) // ipv6.Message is the same type
	for i := range msgs {
		msgs[i].Buffers = [][]byte{bufs[i]}
		msgs[i].OOB = make([]byte, oobSize)
	}
	esp := espIn{pkts: make([][]byte, 0, readBatch), from: make([]netip.AddrPort, 0, readBatch)}
	for {
		var n int
		var err error
		if s.is6 {
			n, err = s.p6.ReadBatch(msgs, 0)
		} else {
			n, err = s.p4.ReadBatch(msgs, 0)
		}
		if err != nil {
			if r.readFailed(s, err) {
				return
			}
			continue
		}
		esp.pkts, esp.from = esp.pkts[:0], esp.from[:0]
		for i := 0; i < n; i++ {
			m := &msgs[i]
			local, remote, seg, ok := s.addrs(m)
			if !ok {
				continue
			}
			b := m.Buffers[0][:m.N]
			if seg <= 0 || seg >= len(b) {
				seg = len(b)
			}
			// With UDP_GRO one read may hold several datagrams of one
			// flow, each seg bytes but the last.
			for len(b) > 0 {
				d := b[:min(seg, len(b))]
				b = b[len(d):]
				if !r.datagram(s, d, local, remote, &esp) {
					return
				}
			}
		}
		if len(esp.pkts) > 0 {
			k := uint64(len(esp.pkts))
			r.count(func(st *Stats) { st.ESPPackets += k })
			recv.HandleInboundBatch(esp.pkts, esp.from)
		}
	}
}

// oobSize holds IP_PKTINFO / IPV6_PKTINFO and UDP_GRO control messages.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(4)

// espSocketBuffer is the receive and send buffer asked for a NAT-T socket
// that carries the userspace data plane's ESP: a burst at gigabit rates
// must not overflow it while the reader waits for a CPU.
const espSocketBuffer = 4 << 20

// enableGRO turns UDP_GRO on (Linux 5.0); reads then parse the segment
// size. Without it every datagram arrives alone, which is correct too. It
// also raises the socket's buffers (beyond net.core.rmem_max with
// CAP_NET_ADMIN, as the daemon has).
func (s *socket) enableGRO() {
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	_ = rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], espSocketBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], espSocketBuffer)
			}
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	})
	s.gro = serr == nil
}

// addrs returns the local and remote address of a datagram read by
// ReadBatch (the local one from IP_PKTINFO on a wildcard socket) and the
// UDP_GRO segment size (0: one datagram).
func (s *socket) addrs(m *ipv4.Message) (local, remote netip.AddrPort, seg int, ok bool) {
	ua, isUDP := m.Addr.(*net.UDPAddr)
	if !isUDP {
		return local, remote, 0, false
	}
	remote = ua.AddrPort()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	la := s.addr.Addr()
	if m.NN > 0 {
		cms, err := unix.ParseSocketControlMessage(m.OOB[:m.NN])
		if err == nil {
			for _, c := range cms {
				switch {
				case c.Header.Level == unix.IPPROTO_IP && c.Header.Type == unix.IP_PKTINFO && len(c.Data) >= unix.SizeofInet4Pktinfo:
					if !s.exact {
						la = netip.AddrFrom4([4]byte(c.Data[8:12])) // ipi_addr: the header's destination
					}
				case c.Header.Level == unix.IPPROTO_IPV6 && c.Header.Type == unix.IPV6_PKTINFO && len(c.Data) >= unix.SizeofInet6Pktinfo:
					if !s.exact {
						la = netip.AddrFrom16([16]byte(c.Data[:16])).Unmap()
					}
				case c.Header.Level == unix.SOL_UDP && c.Header.Type == unix.UDP_GRO && len(c.Data) >= 4:
					seg = int(binary.NativeEndian.Uint32(c.Data))
				}
			}
		}
	}
	return netip.AddrPortFrom(la, s.addr.Port()), remote, seg, true
}
