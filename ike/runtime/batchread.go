package runtime

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
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
	msgs := make([]ipv4.Message, readBatch) // ipv6.Message is the same type
	oobLen := ipv4.NewControlMessage(ipv4.FlagDst)
	if s.is6 {
		oobLen = ipv6.NewControlMessage(ipv6.FlagDst)
	}
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 65536)}
		msgs[i].OOB = make([]byte, len(oobLen))
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
			local, remote, ok := s.addrs(m)
			if !ok {
				continue
			}
			if !r.datagram(s, m.Buffers[0][:m.N], local, remote, &esp) {
				return
			}
		}
		if len(esp.pkts) > 0 {
			k := uint64(len(esp.pkts))
			r.count(func(st *Stats) { st.ESPPackets += k })
			recv.HandleInboundBatch(esp.pkts, esp.from)
		}
	}
}

// addrs returns the local and remote address of a datagram read by
// ReadBatch (the local one from IP_PKTINFO on a wildcard socket).
func (s *socket) addrs(m *ipv4.Message) (local, remote netip.AddrPort, ok bool) {
	ua, isUDP := m.Addr.(*net.UDPAddr)
	if !isUDP {
		return local, remote, false
	}
	remote = ua.AddrPort()
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	la := s.addr.Addr()
	if !s.exact && m.NN > 0 {
		var dst net.IP
		if s.is6 {
			var cm ipv6.ControlMessage
			if cm.Parse(m.OOB[:m.NN]) == nil {
				dst = cm.Dst
			}
		} else {
			var cm ipv4.ControlMessage
			if cm.Parse(m.OOB[:m.NN]) == nil {
				dst = cm.Dst
			}
		}
		if a, ok := netip.AddrFromSlice(dst); ok {
			la = a.Unmap()
		}
	}
	return netip.AddrPortFrom(la, s.addr.Port()), remote, true
}
