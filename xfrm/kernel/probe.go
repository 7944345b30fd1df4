package kernel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/ike/sa"
)

// Probe tells whether this kernel can hold ESP states: it adds an
// AES-CBC/HMAC-SHA2-256 SA and an AES-GCM SA with UDP encapsulation in a
// throwaway network namespace (which vanishes with them). Without the
// right to create one (no CAP_SYS_ADMIN) it adds them in the caller's
// namespace instead, between TEST-NET-1 addresses (RFC 5737) with random
// SPIs, and deletes them at once. nil means the kernel data plane can
// work; otherwise the error says why not, with the kernel's words (on a
// kernel without ESP: "protocol not supported", kernel: "Requested type
// not found"). Needs CAP_NET_ADMIN.
func Probe(ctx context.Context) error {
	ns, err := newNetNS()
	if errors.Is(err, unix.EPERM) {
		ns = netns.None() // the caller's namespace
	} else if err != nil {
		return fmt.Errorf("xfrm/kernel: probe: %w", err)
	} else {
		defer ns.Close()
	}
	c, err := dial(ns, 0)
	if err != nil {
		return fmt.Errorf("xfrm/kernel: probe: %w", err)
	}
	defer c.close()
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	key := make([]byte, 64)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	spi := 0x10000000 | binary.BigEndian.Uint32(rnd[:])&0x0ffffffe
	cbc := &stateSpec{src: a, dst: b, spi: spi, reqid: 1, mode: modeTunnel, encr: sa.EncrAESCBC, encrKey: key[:16],
		integ: sa.IntegSHA256, integKey: key[:32], truncBits: 128}
	gcm := &stateSpec{src: b, dst: a, spi: spi + 1, reqid: 1, mode: modeTunnel, encr: sa.EncrAESGCM, encrKey: key[:20],
		truncBits: 128, aead: true, encapSport: 4500, encapDport: 4500}
	var reqs, undo []request
	for _, s := range []*stateSpec{cbc, gcm} {
		s.lft = nl.XfrmLifetimeCfg{SoftByteLimit: xfrmInf, HardByteLimit: xfrmInf, SoftPacketLimit: xfrmInf, HardPacketLimit: xfrmInf}
		id := saID{s.dst, s.spi}
		reqs = append(reqs, request{typ: nl.XFRM_MSG_NEWSA, flags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, body: s.newSA(),
			op: fmt.Sprintf("add test SA %s with %s", id, s.encr)})
		undo = append(undo, request{typ: nl.XFRM_MSG_DELSA, body: id.usersaID(), op: "delete test SA " + id.String()})
	}
	res := c.exchange(ctx, reqs)
	if !ns.IsOpen() {
		c.exchange(context.WithoutCancel(ctx), undo)
	}
	for _, r := range res {
		if r.err != nil {
			return fmt.Errorf("xfrm/kernel: this kernel cannot hold ESP states: %w", r.err)
		}
	}
	return nil
}

// newNetNS creates a network namespace and returns a handle to it, leaving
// the calling thread in its own namespace.
func newNetNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), fmt.Errorf("create network namespace: %w", err)
	}
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: keep it locked so it
		// dies with this goroutine instead of serving others.
		ns.Close()
		return netns.None(), fmt.Errorf("return to the original network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ns, nil
}
