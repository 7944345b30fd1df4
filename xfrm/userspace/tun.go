package userspace

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Device is the engine's view of a TUN device: one IP packet per Read and
// Write, no packet information header. Read and Write may run concurrently;
// Close unblocks a pending Read, which then returns an error.
type Device interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	Name() string
	Close() error
}

const tunPath = "/dev/net/tun"

// tunDevice is a Linux TUN device opened non-blocking, so the runtime
// poller unblocks a Read when the device is closed.
type tunDevice struct {
	f    *os.File
	name string
}

func (t *tunDevice) Read(b []byte) (int, error)  { return t.f.Read(b) }
func (t *tunDevice) Write(b []byte) (int, error) { return t.f.Write(b) }
func (t *tunDevice) Name() string                { return t.name }
func (t *tunDevice) Close() error                { return t.f.Close() }

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
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("userspace: create TUN %q (TUNSETIFF): %w", name, err)
	}
	return &tunDevice{f: os.NewFile(uintptr(fd), tunPath), name: ifr.Name()}, nil
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
