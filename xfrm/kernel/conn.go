package kernel

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Limits of one pipelined send: how many requests and how many bytes go to
// the kernel in one sendmsg before their answers are read. The answers (acks
// capped to the request header, or one reply each) must fit the socket's
// receive buffer, or the kernel drops them.
const (
	defaultWindow = 64
	maxSendBytes  = 64 << 10
	rcvBufBytes   = 1 << 20
)

var native = binary.NativeEndian

// KernelError is a request the kernel refused: the operation, the errno it
// answered and, when the kernel gave one, its extended-ack message. It
// unwraps to the syscall.Errno.
type KernelError struct {
	Op    string // what was asked, e.g. "add inbound SA spi=0x0000c001 dst=192.0.2.1"
	Errno syscall.Errno
	Msg   string // the kernel's extended ack message, "" when none
}

func (e *KernelError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("xfrm/kernel: %s: %v (kernel: %q)", e.Op, e.Errno, e.Msg)
	}
	return fmt.Sprintf("xfrm/kernel: %s: %v", e.Op, e.Errno)
}

func (e *KernelError) Unwrap() error { return e.Errno }

// request is one netlink request: a message type, flags besides
// NLM_F_REQUEST, and the body after the netlink header. A request with
// reply set expects one answer message (a GET); others ask for an ack.
type request struct {
	typ   uint16
	flags uint16
	body  []byte
	reply bool
	op    string // for errors
}

// response is the answer to one request: the reply body (for a GET) or nil,
// and the error the kernel answered.
type response struct {
	body []byte
	err  error
}

// conn is a NETLINK_XFRM socket in one network namespace, used for requests
// (never subscribed to multicast groups). Not safe for concurrent use: the
// data plane serializes calls.
type conn struct {
	s      *nl.NetlinkSocket
	seq    uint32
	window int
	buf    []byte
	rbuf   []byte
	msgs   []message
}

// message is one netlink message of a received datagram; Data aliases the
// receive buffer until the next recv.
type message struct {
	Header unix.NlMsghdr
	Data   []byte
}

func dial(ns netns.NsHandle, window int) (*conn, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_XFRM)
	if err != nil {
		return nil, fmt.Errorf("xfrm/kernel: open NETLINK_XFRM socket: %w", err)
	}
	fd := s.GetFd()
	for _, o := range []int{unix.NETLINK_CAP_ACK, unix.NETLINK_EXT_ACK} {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, o, 1); err != nil {
			s.Close()
			return nil, fmt.Errorf("xfrm/kernel: netlink socket option %d: %w", o, err)
		}
	}
	// Room for the answers of a full window; FORCE needs CAP_NET_ADMIN,
	// which adding SAs needs anyway, and plain SO_RCVBUF is the fallback.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBufBytes); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBufBytes)
	}
	if window <= 0 {
		window = defaultWindow
	}
	return &conn{s: s, window: window, rbuf: make([]byte, 1<<16)}, nil
}

// recvTimeout bounds the wait for one datagram from the kernel.
const recvTimeout = 30 * time.Second

// recv reads one datagram from the kernel into the connection's buffer
// (the library's Receive allocates 64 KiB per call, which dominated
// pipelined exchanges) and splits it into messages.
func (c *conn) recv() ([]message, error) {
	fd := c.s.GetFd()
	deadline := time.Now().Add(recvTimeout)
	for {
		n, from, err := unix.Recvfrom(fd, c.rbuf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, fmt.Errorf("no answer from the kernel within %v", recvTimeout)
			}
			_, perr := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left/time.Millisecond)+1)
			if perr != nil && perr != unix.EINTR {
				return nil, fmt.Errorf("poll: %w", perr)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != nl.PidKernel {
			continue
		}
		if n > len(c.rbuf) {
			n = len(c.rbuf)
		}
		return c.split(c.rbuf[:n])
	}
}

func (c *conn) split(b []byte) ([]message, error) {
	c.msgs = c.msgs[:0]
	for len(b) >= unix.NLMSG_HDRLEN {
		h := unix.NlMsghdr{
			Len:   native.Uint32(b),
			Type:  native.Uint16(b[4:]),
			Flags: native.Uint16(b[6:]),
			Seq:   native.Uint32(b[8:]),
			Pid:   native.Uint32(b[12:]),
		}
		if h.Len < unix.NLMSG_HDRLEN || int(h.Len) > len(b) {
			return nil, fmt.Errorf("malformed netlink message: length %d in %d bytes", h.Len, len(b))
		}
		c.msgs = append(c.msgs, message{Header: h, Data: b[unix.NLMSG_HDRLEN:h.Len]})
		next := nlmsgAlign(int(h.Len))
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return c.msgs, nil
}

func (c *conn) close() { c.s.Close() }

// exchange sends the requests in order, up to c.window of them (and at most
// maxSendBytes) in one sendmsg, and reads their answers before sending the
// next window. With a window of 1 every request waits for its answer. The
// kernel processes every message of a send even when an earlier one fails,
// so each request gets its own answer. When ctx is cancelled between windows
// the requests not yet sent answer ctx.Err().
func (c *conn) exchange(ctx context.Context, reqs []request) []response {
	out := make([]response, len(reqs))
	for start := 0; start < len(reqs); {
		if err := ctx.Err(); err != nil {
			for i := start; i < len(reqs); i++ {
				out[i].err = fmt.Errorf("xfrm/kernel: %s: not sent: %w", reqs[i].op, err)
			}
			break
		}
		c.buf = c.buf[:0]
		base := c.seq + 1
		n := 0
		for start+n < len(reqs) && n < c.window {
			r := &reqs[start+n]
			size := nlmsgAlign(unix.NLMSG_HDRLEN + len(r.body))
			if n > 0 && len(c.buf)+size > maxSendBytes {
				break
			}
			c.seq++
			flags := uint16(unix.NLM_F_REQUEST) | r.flags
			if !r.reply {
				flags |= unix.NLM_F_ACK
			}
			c.buf = appendMsg(c.buf, r.typ, flags, c.seq, r.body)
			n++
		}
		err := c.send(c.buf)
		clear(c.buf) // requests carry key material
		if err != nil {
			for i := start; i < start+n; i++ {
				out[i].err = fmt.Errorf("xfrm/kernel: %s: send: %w", reqs[i].op, err)
			}
			start += n
			continue
		}
		c.collect(reqs[start:start+n], out[start:start+n], base)
		start += n
	}
	return out
}

func (c *conn) send(b []byte) error {
	return unix.Sendto(c.s.GetFd(), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// collect reads answers for n requests numbered base, base+1, ... Answers to
// other sequence numbers (left over from an earlier, failed exchange) are
// dropped.
func (c *conn) collect(reqs []request, out []response, base uint32) {
	left := len(reqs)
	done := make([]bool, len(reqs))
	for left > 0 {
		msgs, err := c.recv()
		if err != nil {
			for i := range reqs {
				if !done[i] {
					out[i].err = fmt.Errorf("xfrm/kernel: %s: receive: %w", reqs[i].op, err)
				}
			}
			return
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - base)
			if m.Header.Seq < base || i >= len(reqs) || done[i] {
				continue
			}
			switch {
			case m.Header.Type == unix.NLMSG_ERROR:
				errno, msg := parseAck(m.Header.Flags, m.Data)
				if errno != 0 {
					out[i].err = &KernelError{Op: reqs[i].op, Errno: errno, Msg: msg}
				} else if reqs[i].reply {
					out[i].err = fmt.Errorf("xfrm/kernel: %s: kernel acked without an answer", reqs[i].op)
				}
			case reqs[i].reply:
				out[i].body = append([]byte(nil), m.Data...)
			default:
				continue // not the ack we wait for
			}
			done[i] = true
			left--
		}
	}
}

// dump runs a NLM_F_DUMP request and returns the body of every message,
// retrying when the kernel says the dump was interrupted by a change.
func (c *conn) dump(ctx context.Context, typ uint16, body []byte, op string) ([][]byte, error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("xfrm/kernel: %s: %w", op, err)
		}
		c.seq++
		seq := c.seq
		if err := c.send(appendMsg(nil, typ, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq, body)); err != nil {
			return nil, fmt.Errorf("xfrm/kernel: %s: send: %w", op, err)
		}
		var out [][]byte
		intr := false
	recv:
		for {
			msgs, err := c.recv()
			if err != nil {
				return nil, fmt.Errorf("xfrm/kernel: %s: receive: %w", op, err)
			}
			for _, m := range msgs {
				if m.Header.Seq != seq {
					continue
				}
				if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
					intr = true
				}
				switch m.Header.Type {
				case unix.NLMSG_DONE:
					break recv
				case unix.NLMSG_ERROR:
					errno, msg := parseAck(m.Header.Flags, m.Data)
					if errno != 0 {
						return nil, &KernelError{Op: op, Errno: errno, Msg: msg}
					}
				default:
					out = append(out, append([]byte(nil), m.Data...))
				}
			}
		}
		clear(c.rbuf) // a dump of SAs carries their keys
		if !intr || attempt >= 4 {
			if intr {
				return nil, fmt.Errorf("xfrm/kernel: %s: dump kept being interrupted by concurrent changes", op)
			}
			return out, nil
		}
	}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

func appendMsg(b []byte, typ, flags uint16, seq uint32, body []byte) []byte {
	n := unix.NLMSG_HDRLEN + len(body)
	b = native.AppendUint32(b, uint32(n))
	b = native.AppendUint16(b, typ)
	b = native.AppendUint16(b, flags)
	b = native.AppendUint32(b, seq)
	b = native.AppendUint32(b, 0)
	b = append(b, body...)
	for i := n; i < nlmsgAlign(n); i++ {
		b = append(b, 0)
	}
	return b
}

// parseAck decodes an NLMSG_ERROR body: the (negative) errno, and the
// extended ack message when the kernel attached one.
func parseAck(flags uint16, b []byte) (syscall.Errno, string) {
	if len(b) < 4 {
		return unix.EBADMSG, "short netlink error message"
	}
	code := int32(native.Uint32(b))
	errno := syscall.Errno(0)
	if code < 0 {
		errno = syscall.Errno(-code)
	}
	if flags&unix.NLM_F_ACK_TLVS == 0 || len(b) < 4+unix.NLMSG_HDRLEN {
		return errno, ""
	}
	off := 4 + unix.NLMSG_HDRLEN
	if flags&unix.NLM_F_CAPPED == 0 {
		off = 4 + nlmsgAlign(int(native.Uint32(b[4:])))
	}
	for off+4 <= len(b) {
		l := int(native.Uint16(b[off:]))
		t := native.Uint16(b[off+2:])
		if l < 4 || off+l > len(b) {
			break
		}
		if t == unix.NLMSGERR_ATTR_MSG {
			v := b[off+4 : off+l]
			for len(v) > 0 && v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			return errno, string(v)
		}
		off += nlmsgAlign(l)
	}
	return errno, ""
}
