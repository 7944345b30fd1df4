package runtime

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// SendESPBatch sends ESP-in-UDP packets from the NAT-T sockets, several
// per system call (sendmmsg): the userspace data plane's batch sender.
// pkts[i] goes to dsts[i]. It returns how many packets, in order, were
// handed to the kernel; an error stops the batch.
func (r *Runtime) SendESPBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error) {
	if len(pkts) != len(dsts) {
		return 0, fmt.Errorf("runtime: %d packets for %d destinations", len(pkts), len(dsts))
	}
	if r.gated(len(pkts)) {
		return 0, ErrGateClosed
	}
	sent := 0
	for sent < len(pkts) {
		// The longest run of packets to one destination goes in one call
		// (a bulk transfer through one tunnel is one run).
		dst := dsts[sent]
		end := sent + 1
		for end < len(pkts) && dsts[end] == dst {
			end++
		}
		n, err := r.sendRun(pkts[sent:end], dst)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func (r *Runtime) sendRun(pkts [][]byte, dst netip.AddrPort) (int, error) {
	var src netip.Addr
	if v, ok := r.srcFor.Load(dst.Addr()); ok {
		src = v.(netip.Addr)
	}
	s := r.pick(src, dst, true)
	if s == nil {
		return 0, fmt.Errorf("runtime: no NAT-T socket for %s -> %s", src, dst)
	}
	addr := net.UDPAddrFromAddrPort(dst)
	setSrc := !s.exact && src.IsValid() && !src.IsUnspecified()
	var oob []byte
	if setSrc {
		if s.is6 {
			oob = (&ipv6.ControlMessage{Src: src.AsSlice()}).Marshal()
		} else {
			oob = (&ipv4.ControlMessage{Src: src.AsSlice()}).Marshal()
		}
	}
	if len(pkts) > 1 && !s.gsoOff.Load() {
		n, err := s.sendGSO(pkts, addr, oob)
		if err == nil || n > 0 || !isGSOError(err) {
			return n, err
		}
		// The kernel or the route's device cannot segment UDP: send
		// packet by packet from now on.
		s.gsoOff.Store(true)
		if r.log != nil {
			r.log.Info("UDP segmentation offload unavailable; sending ESP datagrams one by one", "socket", s.addr.String(), "err", err)
		}
	}
	msgs := make([]ipv4.Message, len(pkts)) // ipv6.Message is the same type
	for i, p := range pkts {
		msgs[i] = ipv4.Message{Buffers: [][]byte{p}, OOB: oob, Addr: addr}
	}
	sent := 0
	for sent < len(msgs) {
		var n int
		var err error
		if s.is6 {
			n, err = s.p6.WriteBatch(msgs[sent:], 0)
		} else {
			n, err = s.p4.WriteBatch(msgs[sent:], 0)
		}
		sent += max(n, 0) // x/net passes sendmmsg's -1 on an error through
		if err != nil {
			return sent, err
		}
		if n == 0 {
			return sent, fmt.Errorf("runtime: sendmmsg to %s sent nothing", dst)
		}
	}
	return sent, nil
}
