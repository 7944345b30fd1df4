package userspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is the engine's view of a TUN device: one IP packet per Read and
// Write, no packet information header. Read and Write may run concurrently;
// Close unblocks a pending Read, which then returns an error. Tests pass
// one through Config.Device; the engine's own TUN device moves packets in
// batches (batchDevice).
type Device interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	Name() string
	Close() error
}

// batchDevice moves several packets per call. bufs[i][offset:] holds a
// packet; WriteBatch needs offset >= writeHeadroom and may grow bufs[i]
// within its capacity (it coalesces segments of one flow into one
// super-packet for the kernel).
type batchDevice interface {
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	WriteBatch(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Name() string
	Close() error
}

// writeHeadroom is what WriteBatch needs in front of each packet (the
// virtio-net header of a TUN device with offloads).
const writeHeadroom = 16

// single adapts a Device to batchDevice with a batch of one.
type single struct{ Device }

func (d single) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

func (d single) WriteBatch(bufs [][]byte, offset int) (int, error) {
	var errs error
	total := 0
	for _, b := range bufs {
		n, err := d.Write(b[offset:])
		total += n
		errs = errors.Join(errs, err)
	}
	return total, errs
}

func (single) BatchSize() int { return 1 }

const tunPath = "/dev/net/tun"

// tunDevice is a Linux TUN device with virtio-net headers and TCP/UDP
// segmentation offloads (IFF_VNET_HDR, TUNSETOFFLOAD). Reads go through
// vnetReader: several packets per wakeup, a TSO/USO super-packet split
// into its segments. Writes go through wireguard-go's tun package, which
// coalesces consecutive segments of a flow into one super-packet (GRO), so
// a bulk transfer costs one system call per ~64 KiB instead of one per
// packet. The file is non-blocking, so Close unblocks a Read.
type tunDevice struct {
	dev    wgtun.Device
	rd     *vnetReader
	name   string
	closed atomic.Bool
}

func (t *tunDevice) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.rd.readBatch(bufs, sizes, offset)
	var bad *vnetError
	if err != nil && !errors.As(err, &bad) &&
		(t.closed.Load() || errors.Is(err, fs.ErrClosed) || errors.Is(err, unix.EBADFD)) {
		err = os.ErrClosed
	}
	return n, err
}

func (t *tunDevice) WriteBatch(bufs [][]byte, offset int) (int, error) {
	return t.dev.Write(bufs, offset)
}

func (t *tunDevice) BatchSize() int { return t.dev.BatchSize() }
func (t *tunDevice) Name() string   { return t.name }
func (t *tunDevice) Close() error {
	t.closed.Store(true)
	return t.dev.Close()
}

// openTUN creates a non-persistent TUN device (it disappears with its file)
// in the calling thread's network namespace. name may hold a %d.
func openTUN(name string) (*tunDevice, error) {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("userspace: open %s: %w", tunPath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("userspace: TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("userspace: create TUN %q (TUNSETIFF): %w", name, err)
	}
	// CreateUnmonitoredTUNFromFD enables the offloads (TUNSETOFFLOAD) and
	// starts no goroutines of its own; it owns fd from here on.
	dev, got, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		// fd belongs to an *os.File inside wgtun now, whose finalizer
		// closes it: closing it here could close a reused descriptor.
		return nil, fmt.Errorf("userspace: TUN %q: enable offloads: %w", ifr.Name(), err)
	}
	rd, err := newVnetReader(dev.File())
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("userspace: TUN %q: %w", got, err)
	}
	return &tunDevice{dev: dev, rd: rd, name: got}, nil
}

// inNetNS runs fn on a locked OS thread switched into ns (when ns is open),
// then switches back. TUN devices and sockets created by fn stay in ns.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("userspace: current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("userspace: enter network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace: keep it locked so it
		// dies with this goroutine instead of serving others.
		runtime.LockOSThread()
		return errors.Join(ferr, fmt.Errorf("userspace: restore network namespace: %w", err))
	}
	return ferr
}

// Probe tells whether a TUN device can be created here (the device exists,
// we have CAP_NET_ADMIN). It creates and removes a temporary device.
func Probe() error {
	t, err := openTUN("ikegwprobe%d")
	if err != nil {
		return err
	}
	return t.Close()
}

// setUp sets the device's MTU and brings it up through h.
func setUp(h *netlink.Handle, name string, mtu int) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("userspace: TUN %s: %w", name, err)
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return nil, fmt.Errorf("userspace: TUN %s: set MTU %d: %w", name, mtu, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("userspace: TUN %s: up: %w", name, err)
	}
	return link, nil
}
