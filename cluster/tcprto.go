package cluster

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// The Raft transport is TCP. A lost segment is resent after the socket's
// retransmission timeout, at least the kernel's minimum RTO (200 ms on
// Linux) even on a LAN whose round trip is well under a millisecond; a
// heartbeat round that waits for it misses a short leader lease (the lab's
// is 100 ms) and the active fences itself. With 10% loss on the cluster
// link that happened about once a second (deploy/chaos, issue 8). So the
// Raft connections get a smaller minimum RTO, derived from the lease
// (RTOMinFor), with the per-socket option TCP_RTO_MIN_US (Linux 6.15 and
// later). Older kernels refuse it: they keep their default unless the
// operator sets rto_min on the route to the cluster network
// (deploy/OPERATIONS.md), and the node logs that once.

// tcpRTOMinUS is Linux's TCP_RTO_MIN_US socket option (include/uapi/linux/tcp.h,
// Linux 6.15), not yet in golang.org/x/sys v0.45.
const tcpRTOMinUS = 0x2d

// RTO bounds: the kernel's own minimum is 200 ms (the option refuses
// more), and it refuses less than two timer ticks (20 ms at HZ=100).
const (
	minRTOMin = 20 * time.Millisecond
	maxRTOMin = 200 * time.Millisecond
)

// RTOMinFor is the minimum TCP retransmission timeout the Raft connections
// use with leader lease lease: a fifth of it, within [20ms, 200ms]. A lost
// heartbeat or reply is then resent early enough that two losses in a row
// still fit in one lease.
func RTOMinFor(lease time.Duration) time.Duration {
	return min(max(lease/5, minRTOMin), maxRTOMin)
}

// ErrRTOMinUnsupported: the kernel has no per-socket minimum RTO.
var ErrRTOMinUnsupported = errors.New("cluster: this kernel cannot set a per-socket minimum TCP retransmission timeout (TCP_RTO_MIN_US needs Linux 6.15 or later); set rto_min on the route to the cluster network instead (deploy/OPERATIONS.md)")

// setRTOMin sets TCP_RTO_MIN_US on c (a *net.TCPConn) to d.
func setRTOMin(c net.Conn, d time.Duration) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("cluster: minimum RTO: %T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("cluster: minimum RTO: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpRTOMinUS, int(d/time.Microsecond))
	}); err != nil {
		return fmt.Errorf("cluster: minimum RTO: %w", err)
	}
	switch {
	case errors.Is(serr, syscall.ENOPROTOOPT):
		return ErrRTOMinUnsupported
	case serr != nil:
		return fmt.Errorf("cluster: minimum RTO %v on %s: %w", d, c.RemoteAddr(), serr)
	}
	return nil
}

// rtoTuner applies the minimum RTO to the stream layer's connections and
// reports a kernel without the option once.
type rtoTuner struct {
	mu     sync.Mutex
	min    time.Duration // 0: kernel default
	warned bool
}

func (t *rtoTuner) set(d time.Duration) {
	t.mu.Lock()
	t.min = d
	t.mu.Unlock()
}

// apply sets the minimum RTO on c; it returns the error to log, once per
// kind (nil when there is nothing new to say).
func (t *rtoTuner) apply(c net.Conn) error {
	t.mu.Lock()
	d := t.min
	t.mu.Unlock()
	if d <= 0 {
		return nil
	}
	err := setRTOMin(c, d)
	if err == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if errors.Is(err, ErrRTOMinUnsupported) {
		if t.warned {
			return nil
		}
		t.warned = true
	}
	return err
}
