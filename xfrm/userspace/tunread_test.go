package userspace

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// seqpacket is a stand-in for a TUN device's file: a non-blocking
// SOCK_SEQPACKET socket keeps message boundaries (one write, one read), so
// the reader sees what a TUN device gives it, including EAGAIN.
func seqpacket(t *testing.T) (r *vnetReader, f *os.File, w int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f = os.NewFile(uintptr(fds[0]), "tun-standin")
	t.Cleanup(func() { f.Close(); unix.Close(fds[1]) })
	r, err = newVnetReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return r, f, fds[1]
}

func put(t *testing.T, w int, reads ...[]byte) {
	t.Helper()
	for _, b := range reads {
		if _, err := unix.Write(w, b); err != nil {
			t.Fatal(err)
		}
	}
}

func plain(id uint16) []byte {
	return vnetRead(vnetHdr{}, ipv4("10.98.1.1", "10.98.2.1", unix.IPPROTO_UDP, 100, id))
}

func ids(bufs [][]byte, off, n int) []uint16 {
	var got []uint16
	for i := 0; i < n; i++ {
		got = append(got, uint16(bufs[i][off+4])<<8|uint16(bufs[i][off+5]))
	}
	return got
}

type readResult struct {
	n   int
	err error
}

func TestVnetReaderBatchesQueuedReads(t *testing.T) {
	r, _, w := seqpacket(t)
	put(t, w, plain(1), plain(2), plain(3))
	bufs, sizes := batchBufs(8, 64+1400)
	n, err := r.readBatch(bufs, sizes, 64)
	if err != nil || n != 3 {
		t.Fatalf("one call read %d packets (err %v), want the 3 queued", n, err)
	}
	if got := ids(bufs, 64, n); got[0] != 1 || got[1] != 2 || got[2] != 3 || sizes[0] != 120 {
		t.Fatalf("ids %v sizes %v", got, sizes[:n])
	}

	// A full batch stops reading; the rest waits for the next call.
	put(t, w, plain(4), plain(5), plain(6))
	if n, err := r.readBatch(bufs[:2], sizes, 64); n != 2 || err != nil {
		t.Fatalf("batch of 2: n=%d err=%v", n, err)
	}
	if n, err := r.readBatch(bufs, sizes, 64); n != 1 || err != nil || ids(bufs, 64, 1)[0] != 6 {
		t.Fatalf("next: n=%d err=%v", n, err)
	}
}

func TestVnetReaderWaitsOnEAGAIN(t *testing.T) {
	r, f, w := seqpacket(t)
	bufs, sizes := batchBufs(8, 1500)
	done := make(chan readResult, 1)
	go func() {
		n, err := r.readBatch(bufs, sizes, 0)
		done <- readResult{n, err}
	}()
	select {
	case res := <-done:
		t.Fatalf("returned %+v from an empty device", res)
	case <-time.After(50 * time.Millisecond):
	}
	put(t, w, plain(9))
	select {
	case res := <-done:
		if res.n != 1 || res.err != nil || ids(bufs, 0, 1)[0] != 9 {
			t.Fatalf("%+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no return after a packet arrived")
	}

	// Closing the file unblocks a waiting read with an error.
	go func() {
		n, err := r.readBatch(bufs, sizes, 0)
		done <- readResult{n, err}
	}()
	time.Sleep(20 * time.Millisecond)
	f.Close()
	select {
	case res := <-done:
		var ve *vnetError
		if res.n != 0 || res.err == nil || errors.As(res.err, &ve) {
			t.Fatalf("after Close: %+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not unblock the read")
	}
}

func TestVnetReaderMalformedRead(t *testing.T) {
	r, _, w := seqpacket(t)
	// A partial virtio-net header between good packets, then a GSO packet
	// with an impossible segment size.
	tcp, ipLen, _ := superPacket(false, true, 3000)
	bad := vnetRead(vnetHdr{gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, csumStart: uint16(ipLen)}, tcp)
	put(t, w, plain(1), plain(2), []byte{0, 0, 0}, plain(3), bad, plain(4))
	bufs, sizes := batchBufs(8, 1500)
	var ve *vnetError
	n, err := r.readBatch(bufs, sizes, 0)
	if n != 2 || !errors.As(err, &ve) || !strings.Contains(err.Error(), "malformed 3-byte read") {
		t.Fatalf("n=%d err=%v: want the 2 packets before the partial header and its error", n, err)
	}
	n, err = r.readBatch(bufs, sizes, 0)
	if n != 1 || !errors.As(err, &ve) || !strings.Contains(err.Error(), "segment size of 0") || ids(bufs, 0, 1)[0] != 3 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	n, err = r.readBatch(bufs, sizes, 0)
	if n != 1 || err != nil || ids(bufs, 0, 1)[0] != 4 {
		t.Fatalf("n=%d err=%v: the read after the bad ones", n, err)
	}
}

func TestVnetReaderKeepsSegmentsForTheNextBatch(t *testing.T) {
	r, _, w := seqpacket(t)
	tcp, ipLen, hdrLen := superPacket(false, true, 5*1000)
	tso := vnetRead(vnetHdr{flags: 1, gsoType: unix.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1000, csumStart: uint16(ipLen), csumOffset: tcpCsumAt}, tcp)
	put(t, w, plain(1), tso, plain(2))
	bufs, sizes := batchBufs(4, 1500)
	// 1 + 5 segments do not fit 4 buffers: the super-packet waits.
	n, err := r.readBatch(bufs, sizes, 0)
	if n != 1 || err != nil {
		t.Fatalf("first batch n=%d err=%v", n, err)
	}
	n, err = r.readBatch(bufs[:3], sizes, 0)
	if n != 0 || err == nil || !strings.Contains(err.Error(), "more segments than a batch of 3") {
		t.Fatalf("5 segments for 3 buffers: n=%d err=%v", n, err)
	}
	put(t, w, tso)
	bufs, sizes = batchBufs(8, 1500)
	n, err = r.readBatch(bufs, sizes, 0)
	if n != 6 || err != nil {
		t.Fatalf("n=%d err=%v: want plain(2) and 5 segments", n, err)
	}
	if ids(bufs, 0, 1)[0] != 2 || sizes[1] != hdrLen+1000 || !bytes.Equal(bufs[1][hdrLen:hdrLen+1000], tcp[hdrLen:hdrLen+1000]) {
		t.Fatalf("sizes %v", sizes[:n])
	}
}

// TestTUNDeviceClose: a real TUN device's blocked read returns
// os.ErrClosed when the device is closed (the engine's read loop ends on
// it).
func TestTUNDeviceClose(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a TUN device")
	}
	dev, err := openTUN("ikegwtest%d")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	done := make(chan readResult, 1)
	go func() {
		bufs, sizes := batchBufs(dev.BatchSize(), 1500)
		n, err := dev.ReadBatch(bufs, sizes, 64)
		done <- readResult{n, err}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.n != 0 || !errors.Is(res.err, os.ErrClosed) {
			t.Fatalf("after Close: %+v, want os.ErrClosed", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not unblock the read")
	}
}
