package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"ikegw/xfrm"
)

// monitor reads XFRM_MSG_EXPIRE events from the multicast socket until
// Close. The library's XfrmMonitor is not used: it stops for good at the
// first receive error, and ENOBUFS (events lost while the reader was slow)
// is an error it cannot survive; this loop logs the loss and goes on.
func (d *DataPlane) monitor() {
	defer close(d.monDone)
	for {
		msgs, from, err := d.mon.Receive()
		if err != nil {
			if d.isClosed() || errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				d.log.Warn("XFRM expire events lost: the kernel's queue overflowed")
				continue
			}
			d.log.Error("XFRM expire monitor stopped", "err", err)
			return
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != nl.XFRM_MSG_EXPIRE {
				continue
			}
			ev, err := parseExpire(m.Data)
			if err != nil {
				d.log.Warn("malformed XFRM expire event", "err", err)
				continue
			}
			d.expired(ev)
		}
	}
}

func (d *DataPlane) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// expired turns a kernel expire event of one SA into at most one soft and
// one hard xfrm.Expiry per pair. At a hard expiry the kernel has removed
// that SA; the other SA of the pair is removed too, so the pair carries no
// traffic in either direction.
func (d *DataPlane) expired(ev userExpire) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	p := d.byState[ev.id]
	if p == nil {
		return // not ours
	}
	out := xfrm.Expiry{SPI: p.in.spi, Hard: ev.hard}
	if ev.hard {
		out.Bytes = ev.hardBytes != xfrmInf && ev.bytes >= ev.hardBytes
		if p.hard {
			return
		}
		p.hard = true
		other := p.out
		if ev.id == p.out {
			other = p.in
		}
		res := d.c.exchange(bgctx, []request{{typ: nl.XFRM_MSG_DELSA, body: other.usersaID(), op: "delete SA " + other.String() + " of a hard-expired pair"}})
		if res[0].err != nil && !notFound(res[0].err) {
			d.log.Warn("could not remove the other SA of a hard-expired pair", "spi", fmt.Sprintf("0x%08x", p.in.spi), "err", res[0].err)
		}
	} else {
		out.Bytes = ev.softBytes != xfrmInf && ev.bytes >= ev.softBytes
		if p.soft || p.hard {
			return
		}
		p.soft = true
	}
	select {
	case d.expiries <- out:
		d.log.Info("SA pair lifetime", "event", out.String())
	default:
		d.log.Warn("expiry event dropped: the Expiries channel is full", "event", out.String())
	}
}

var bgctx = context.Background()
