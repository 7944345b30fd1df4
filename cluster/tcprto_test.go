package cluster

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/cluster/certs"
)

func TestRTOMinFor(t *testing.T) {
	for _, c := range []struct{ lease, want time.Duration }{
		{100 * time.Millisecond, 20 * time.Millisecond},  // the lab
		{500 * time.Millisecond, 100 * time.Millisecond}, // the default
		{10 * time.Millisecond, 20 * time.Millisecond},   // floor: two ticks at HZ=100
		{5 * time.Second, 200 * time.Millisecond},        // never above the kernel's default
	} {
		if got := RTOMinFor(c.lease); got != c.want {
			t.Errorf("RTOMinFor(%v) = %v, want %v", c.lease, got, c.want)
		}
	}
}

// rtoMinOf reads TCP_RTO_MIN_US of c's socket.
func rtoMinOf(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpRTOMinUS) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt TCP_RTO_MIN_US: %v", gerr)
	}
	return time.Duration(v) * time.Microsecond
}

// kernelHasRTOMin reports whether this kernel knows TCP_RTO_MIN_US.
func kernelHasRTOMin(t *testing.T) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = setRTOMin(c, 40*time.Millisecond)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrRTOMinUnsupported):
		return false
	}
	t.Fatalf("setRTOMin on a loopback TCP connection: %v", err)
	return false
}

// TestTLSStreamLayerSetsRTOMin: both the dialled and the accepted Raft
// connection get the minimum RTO (read back from the kernel, which rounds
// it up to its timer tick); a kernel without the option gets the typed
// error, reported once.
func TestTLSStreamLayerSetsRTOMin(t *testing.T) {
	if !kernelHasRTOMin(t) {
		var tn rtoTuner
		tn.set(40 * time.Millisecond)
		a, b := net.Pipe() // not TCP: a plain error, every time
		defer a.Close()
		defer b.Close()
		if err := tn.apply(a); err == nil || errors.Is(err, ErrRTOMinUnsupported) {
			t.Fatalf("apply on a pipe: %v, want a not-TCP error", err)
		}
		t.Skip("kernel without TCP_RTO_MIN_US (Linux < 6.15): operators set rto_min on the cluster route")
	}
	dir := t.TempDir()
	labFiles(t, dir, "n1", "n2")
	layer := func(name string) *TLSStreamLayer {
		cert, pool, err := certs.NodeFiles(dir, name).Load()
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewTLSStreamLayer("127.0.0.1:0", "", cert, pool, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		l.SetRTOMin(40 * time.Millisecond)
		return l
	}
	srv, cli := layer("n1"), layer("n2")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := srv.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := cli.Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sc net.Conn
	select {
	case sc = <-accepted:
		defer sc.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
	}
	for side, conn := range map[string]net.Conn{"dialled": c, "accepted": sc} {
		got := rtoMinOf(t, conn.(*tls.Conn).NetConn())
		if got < 40*time.Millisecond || got > 50*time.Millisecond {
			t.Errorf("%s connection: TCP_RTO_MIN_US %v, want 40ms (rounded up to a tick)", side, got)
		}
	}
	// After SetRTOMin(0) new connections keep the kernel's default (200ms).
	cli.SetRTOMin(0)
	go func() {
		c, err := srv.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c2, err := cli.Dial(raft.ServerAddress(srv.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	plain, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got, def := rtoMinOf(t, c2.(*tls.Conn).NetConn()), rtoMinOf(t, plain); got != def {
		t.Errorf("SetRTOMin(0): TCP_RTO_MIN_US %v, want the kernel's default %v", got, def)
	}
	select {
	case sc2 := <-accepted:
		sc2.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no second connection accepted")
	}
}
