package userspace

import (
	"errors"
	"os"
	"sync"
)

// inQueue carries decrypted inner packets from HandleInbound (called on
// the IKE runtime's socket readers) to writeLoop, which writes them to the
// device in batches. While one write is in progress the next packets
// gather, and a device with offloads coalesces consecutive segments of a
// flow into one super-packet, so the kernel's TCP receive path sees up to
// 64 KiB at a time instead of one segment. When the queue is full the
// reader waits (as it did when it wrote to the device itself), so the
// socket's receive buffer, not the queue, is where an overload drops.
type inQueue struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when pending shrinks or the writer goes idle
	pending [][]byte  // writeHeadroom bytes, then the packet
	free    [][]byte  // written buffers, for reuse
	writing bool      // the writer holds a batch
	closed  bool
	limit   int // most packets pending
	bufCap  int // capacity of a buffer (room to coalesce into)
	wake    chan struct{}
}

// maxCoalesced is the largest packet a device write coalesces segments into.
const maxCoalesced = 65535

func (q *inQueue) init(batch int) {
	q.cond.L = &q.mu
	q.limit = max(batch, 64)
	q.bufCap = 0 // sized per packet: nothing to coalesce into
	if batch > 1 {
		q.bufCap = writeHeadroom + maxCoalesced
	}
	q.wake = make(chan struct{}, 1)
}

// put copies packets into the queue, waiting while it is full. It reports
// false when the engine is closing (the rest are dropped).
func (q *inQueue) put(pkts ...[]byte) bool {
	if len(pkts) == 0 {
		return true
	}
	q.mu.Lock()
	for _, p := range pkts {
		for len(q.pending) >= q.limit && !q.closed {
			q.signal() // the writer may be idle: what is queued must go first
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return false
		}
		var b []byte
		if n := len(q.free); n > 0 {
			b = q.free[n-1][:writeHeadroom]
			q.free = q.free[:n-1]
		}
		if cap(b) < writeHeadroom+len(p) {
			b = make([]byte, writeHeadroom, max(q.bufCap, writeHeadroom+len(p)))
		}
		q.pending = append(q.pending, append(b, p...))
	}
	q.mu.Unlock()
	q.signal()
	return true
}

func (q *inQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the written batch's buffers for reuse and hands out the
// pending packets.
func (q *inQueue) take(written [][]byte) [][]byte {
	q.mu.Lock()
	q.free = append(q.free, written...)
	p := q.pending
	q.pending = written[:0]
	q.writing = len(p) > 0
	q.cond.Broadcast()
	q.mu.Unlock()
	return p
}

// close releases waiting writers of put.
func (q *inQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// waitIdle returns once every queued packet was written (tests).
func (q *inQueue) waitIdle() {
	q.mu.Lock()
	for (len(q.pending) > 0 || q.writing) && !q.closed {
		q.cond.Wait()
	}
	q.mu.Unlock()
}

// writeLoop writes the queued inbound packets to the device.
func (e *Engine) writeLoop() {
	defer e.wg.Done()
	var batch [][]byte
	for {
		select {
		case <-e.done:
			return
		case <-e.in.wake:
		}
		for {
			batch = e.in.take(batch)
			if len(batch) == 0 {
				break
			}
			if _, err := e.dev.WriteBatch(batch, writeHeadroom); err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				e.devErrors.Add(1)
				if e.debugOn() {
					e.log.Debug("TUN write failed", "device", e.dev.Name(), "packets", len(batch), "err", err)
				}
			}
		}
	}
}
