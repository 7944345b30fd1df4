package runtime

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// UDP segmentation offload (UDP_SEGMENT, Linux 4.18) on the NAT-T socket:
// a run of equal-sized ESP packets to one peer goes down the stack as one
// datagram of up to 64 KiB that is cut into the packets at the last
// moment (by the NIC, or by the veth peer's receiver), so routing, netfilter
// and the qdisc run once per run instead of once per packet. UDP_GRO on
// receive is the mirror image: the kernel hands us consecutive datagrams of
// one flow in one buffer, with their size in a control message.

const (
	maxGSOSegments = 64    // UDP_MAX_SEGMENTS is 64 on older kernels
	maxGSOBytes    = 65000 // below the 65535-byte IP limit with headers
)

// segmentCmsg is a UDP_SEGMENT control message for segments of size bytes.
func segmentCmsg(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	binary.NativeEndian.PutUint64(b, uint64(unix.CmsgLen(2))) // cmsg_len (size_t)
	binary.NativeEndian.PutUint32(b[8:], unix.SOL_UDP)        // cmsg_level
	binary.NativeEndian.PutUint32(b[12:], unix.UDP_SEGMENT)   // cmsg_type
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}

// gsoRuns cuts pkts into runs that one UDP_SEGMENT datagram can carry:
// every packet but the last of a run has the run's first packet's size,
// the last may be shorter, at most maxGSOSegments packets and maxGSOBytes.
// It returns the end index of each run.
func gsoRuns(pkts [][]byte) []int {
	var ends []int
	for i := 0; i < len(pkts); {
		size, total, j := len(pkts[i]), 0, i
		for j < len(pkts) && j-i < maxGSOSegments && total+len(pkts[j]) <= maxGSOBytes {
			l := len(pkts[j])
			if l > size {
				break
			}
			total += l
			j++
			if l < size {
				break // a shorter packet ends the run
			}
		}
		ends = append(ends, j)
		i = j
	}
	return ends
}

// isGSOError tells whether err means the kernel or device cannot segment.
func isGSOError(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) ||
		errors.Is(err, syscall.ENOPROTOOPT)
}

// sendGSO sends pkts (one run per message, see gsoRuns) from s to addr
// with sendmmsg. base is the control message every datagram carries (the
// source address on a wildcard socket), or nil. It returns how many
// packets were sent.
func (s *socket) sendGSO(pkts [][]byte, addr net.Addr, base []byte) (int, error) {
	ends := gsoRuns(pkts)
	msgs := make([]ipv4.Message, len(ends)) // ipv6.Message is the same type
	first := 0
	for k, end := range ends {
		m := &msgs[k]
		m.Buffers = pkts[first:end]
		m.Addr = addr
		m.OOB = base
		if end-first > 1 {
			m.OOB = append(append([]byte(nil), base...), segmentCmsg(len(pkts[first]))...)
		}
		first = end
	}
	sentMsgs := 0
	for sentMsgs < len(msgs) {
		var n int
		var err error
		if s.is6 {
			n, err = s.p6.WriteBatch(msgs[sentMsgs:], 0)
		} else {
			n, err = s.p4.WriteBatch(msgs[sentMsgs:], 0)
		}
		sentMsgs += max(n, 0) // x/net passes sendmmsg's -1 on an error through
		if err != nil || n == 0 {
			sent := 0
			if sentMsgs > 0 {
				sent = ends[sentMsgs-1]
			}
			if err == nil {
				err = errors.New("runtime: sendmmsg sent nothing")
			}
			return sent, err
		}
	}
	return len(pkts), nil
}
