package userspace

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// vnetReader reads a TUN device opened with IFF_VNET_HDR, several reads
// per wakeup: once the device is readable it reads (non-blocking) until
// the device has no packet left (EAGAIN) or the batch is full, so the
// datagrams an application sends one per system call (iperf3 -u, DNS,
// VoIP) leave as one batch: one seal loop, one sendmmsg, one UDP_SEGMENT
// datagram per run. A TSO/USO super-packet is split into its segments
// (splitVnet). wireguard-go's Read does one read() per call, so UDP got
// batches of one.
//
// Only one goroutine may call readBatch at a time.
type vnetReader struct {
	rc      syscall.RawConn
	buf     []byte // one read: virtio-net header and up to 64 KiB of packet
	pending int    // length of a read in buf whose segments did not fit the last batch
}

func newVnetReader(f *os.File) (*vnetReader, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("userspace: TUN device: %w", err)
	}
	return &vnetReader{rc: rc, buf: make([]byte, vnetHdrLen+maxIPPacket)}, nil
}

// readBatch fills bufs[i][offset:] with packets and sizes[i] with their
// lengths and returns how many. It waits until the device is readable,
// then reads until it would block or bufs is full. A read that cannot be
// split ends the batch: readBatch returns the packets before it and a
// *vnetError (the read is dropped; the next call goes on). A read with
// more segments than the buffers left waits for the next call. Other
// errors are the device's (the file is closed, the device is gone).
func (r *vnetReader) readBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	if r.pending > 0 {
		in := r.buf[:r.pending]
		r.pending = 0
		k, err := splitVnet(in, bufs, sizes, offset)
		if errors.Is(err, errNoRoom) {
			err = badRead(in, "more segments than a batch of %d packets", len(bufs))
		}
		if err != nil {
			return 0, err
		}
		n = k
	}
	var bad, rerr error
	err := r.rc.Read(func(fd uintptr) bool {
		for n < len(bufs) {
			m, err := unix.Read(int(fd), r.buf)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return n > 0 // nothing yet: wait for the device
			case err != nil:
				rerr = err
				return true
			}
			k, err := splitVnet(r.buf[:m], bufs[n:], sizes[n:], offset)
			switch {
			case errors.Is(err, errNoRoom) && n > 0:
				r.pending = m
				return true
			case errors.Is(err, errNoRoom):
				bad = badRead(r.buf[:m], "more segments than a batch of %d packets", len(bufs))
				return true
			case err != nil:
				bad = err
				return true
			}
			n += k
		}
		return true
	})
	switch {
	case err != nil:
		return n, err
	case bad != nil:
		return n, bad
	case rerr != nil && n == 0:
		return 0, rerr
	}
	// A read error after some packets comes back on the next call.
	return n, nil
}
