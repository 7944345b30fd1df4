package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingGrace is how long Ping waits for replies after the last request.
const pingGrace = 2 * time.Second

// ErrNoReply is returned by Ping when not a single echo reply came back.
var ErrNoReply = errors.New("lab: ping: no reply")

// Reply is one echo reply: which request it answered and when.
type Reply struct {
	Seq      int       // request number, 0-based
	Sent     time.Time // when the request left
	Received time.Time // when the reply was read
}

// RTT is the reply's round-trip time.
func (r Reply) RTT() time.Duration { return r.Received.Sub(r.Sent) }

// PingRecord is what a pinger saw: requests sent and replies received (in
// arrival order, duplicates dropped), between Start and End.
type PingRecord struct {
	Src, Dst netip.Addr
	Start    time.Time // first request
	End      time.Time // when the pinger stopped
	Sent     int
	Replies  []Reply
	// SentTimes holds when each request was sent, by sequence number:
	// a gap between two sends is the pinger's own stall (its process was
	// not scheduled), not the network's.
	SentTimes []time.Time
}

// Received is the number of distinct requests answered.
func (r PingRecord) Received() int { return len(r.Replies) }

// Lost returns the request numbers that got no reply.
func (r PingRecord) Lost() []int {
	got := make(map[int]bool, len(r.Replies))
	for _, rp := range r.Replies {
		got[rp.Seq] = true
	}
	var lost []int
	for i := range r.Sent {
		if !got[i] {
			lost = append(lost, i)
		}
	}
	return lost
}

// MaxGap is the longest time without a reply: the largest of the gaps from
// Start to the first reply, between consecutive replies and from the last
// reply to End (the whole run when nothing came back). It measures how long
// traffic was dark, e.g. across a failover; its floor is the interval.
func (r PingRecord) MaxGap() time.Duration {
	prev := r.Start
	var gap time.Duration
	for _, rp := range r.Replies {
		if d := rp.Received.Sub(prev); d > gap {
			gap = d
		}
		prev = rp.Received
	}
	if d := r.End.Sub(prev); d > gap {
		gap = d
	}
	return gap
}

// Pinger sends ICMP echo requests at a fixed interval from inside a
// namespace and records every reply's arrival time. Start one with
// NS.StartPinger; Stop it to get the record.
type Pinger struct {
	ns       *NS
	src, dst netip.Addr
	interval time.Duration
	count    int
	conn     net.PacketConn
	id       uint16
	token    [8]byte
	proto    int
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu      sync.Mutex
	rec     PingRecord
	sentAt  []time.Time
	seen    map[int]bool
	allSent chan struct{}
	sendErr error
}

// StartPinger starts pinging dst from inside ns every interval, from src
// (an address of ns; the zero Addr lets the kernel choose). It runs until
// Stop. It opens a raw ICMP socket inside the namespace (root needed).
func (ns *NS) StartPinger(src, dst netip.Addr, interval time.Duration) (*Pinger, error) {
	return ns.startPinger(src, dst, interval, 0)
}

func (ns *NS) startPinger(src, dst netip.Addr, interval time.Duration, count int) (*Pinger, error) {
	if !dst.IsValid() || (src.IsValid() && src.Is4() != dst.Is4()) {
		return nil, fmt.Errorf("lab: netns %s: ping %v from %v: need a destination and a source of the same family", ns.name, dst, src)
	}
	if interval <= 0 {
		return nil, fmt.Errorf("lab: netns %s: ping %v: interval %v must be positive", ns.name, dst, interval)
	}
	network, proto, laddr := "ip4:icmp", 1, "0.0.0.0"
	if dst.Is6() {
		network, proto, laddr = "ip6:ipv6-icmp", 58, "::"
	}
	if src.IsValid() {
		laddr = src.String()
	}
	p := &Pinger{ns: ns, src: src, dst: dst, interval: interval, count: count, proto: proto,
		stop: make(chan struct{}), seen: map[int]bool{}, allSent: make(chan struct{})}
	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, fmt.Errorf("lab: random: %w", err)
	}
	if _, err := rand.Read(p.token[:]); err != nil {
		return nil, fmt.Errorf("lab: random: %w", err)
	}
	p.id = binary.BigEndian.Uint16(idb[:])
	err := ns.Do(func() error {
		c, err := net.ListenPacket(network, laddr)
		if err != nil {
			return err
		}
		p.conn = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: ICMP socket for %v: %w", ns.name, dst, err)
	}
	p.rec.Src, p.rec.Dst = src, dst
	p.rec.Start = time.Now()
	p.wg.Add(2)
	go p.receive()
	go p.send()
	return p, nil
}

func (p *Pinger) send() {
	defer p.wg.Done()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	dst := &net.IPAddr{IP: p.dst.AsSlice(), Zone: p.dst.Zone()}
	for seq := 0; p.count == 0 || seq < p.count; seq++ {
		var typ icmp.Type = ipv4.ICMPTypeEcho
		if p.dst.Is6() {
			typ = ipv6.ICMPTypeEchoRequest
		}
		data := make([]byte, 16)
		copy(data, p.token[:])
		binary.BigEndian.PutUint64(data[8:], uint64(seq))
		m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(p.id), Seq: seq & 0xffff, Data: data}}
		b, err := m.Marshal(nil) // the kernel computes the ICMPv6 checksum
		if err == nil {
			now := time.Now()
			p.mu.Lock()
			p.sentAt = append(p.sentAt, now)
			p.rec.Sent++
			p.mu.Unlock()
			_, err = p.conn.WriteTo(b, dst)
		}
		if err != nil {
			// Unreachable networks are normal during faults: keep going,
			// remember the first error for the record.
			p.mu.Lock()
			if p.sendErr == nil {
				p.sendErr = err
			}
			p.mu.Unlock()
		}
		if p.count != 0 && seq == p.count-1 {
			close(p.allSent)
			return
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Pinger) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			select {
			case <-p.stop:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		ip, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		fa, ok := netip.AddrFromSlice(ip.IP)
		if !ok || fa.Unmap() != p.dst.Unmap() {
			continue
		}
		m, err := icmp.ParseMessage(p.proto, buf[:n])
		if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || echo.ID != int(p.id) || len(echo.Data) < 16 || [8]byte(echo.Data[:8]) != p.token {
			continue
		}
		seq := int(binary.BigEndian.Uint64(echo.Data[8:16]))
		p.mu.Lock()
		if seq >= 0 && seq < len(p.sentAt) && !p.seen[seq] {
			p.seen[seq] = true
			p.rec.Replies = append(p.rec.Replies, Reply{Seq: seq, Sent: p.sentAt[seq], Received: now})
		}
		p.mu.Unlock()
	}
}

// Snapshot returns the record so far without stopping.
func (p *Pinger) Snapshot() PingRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rec
	r.Replies = append([]Reply(nil), p.rec.Replies...)
	r.SentTimes = append([]time.Time(nil), p.sentAt...)
	r.End = time.Now()
	return r
}

// Stop stops sending and receiving and returns the record. It is safe to
// call more than once.
func (p *Pinger) Stop() PingRecord {
	p.stopOnce.Do(func() {
		end := time.Now()
		close(p.stop)
		_ = p.conn.SetReadDeadline(time.Now())
		p.wg.Wait()
		_ = p.conn.Close()
		p.mu.Lock()
		p.rec.End = end
		p.mu.Unlock()
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rec
	r.Replies = append([]Reply(nil), p.rec.Replies...)
	r.SentTimes = append([]time.Time(nil), p.sentAt...)
	return r
}

// SendError is the first error sending a request met (nil if none), such
// as "network is unreachable" while a route is missing.
func (p *Pinger) SendError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sendErr
}

// Ping sends count echo requests to dst at interval from inside ns and
// waits for their replies (up to two seconds after the last request, or
// until ctx ends: a short ctx makes an expected silence quick). It returns ErrNoReply, with the record, when nothing
// came back. Use PingFrom to choose the source address.
func (ns *NS) Ping(ctx context.Context, dst netip.Addr, count int, interval time.Duration) (PingRecord, error) {
	return ns.PingFrom(ctx, netip.Addr{}, dst, count, interval)
}

// PingFrom is Ping with a source address (e.g. the address inside a
// tunnel's traffic selector).
func (ns *NS) PingFrom(ctx context.Context, src, dst netip.Addr, count int, interval time.Duration) (PingRecord, error) {
	if count <= 0 {
		return PingRecord{}, fmt.Errorf("lab: netns %s: ping %v: count %d must be positive", ns.name, dst, count)
	}
	p, err := ns.startPinger(src, dst, interval, count)
	if err != nil {
		return PingRecord{}, err
	}
	var grace <-chan time.Time
	allSent := p.allSent
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-allSent:
			grace = time.After(pingGrace)
			allSent = nil // a nil channel never fires again
		case <-grace:
			break wait
		case <-tick.C:
			if p.Snapshot().Received() == count {
				break wait
			}
		}
	}
	rec := p.Stop()
	if rec.Received() == 0 {
		return rec, fmt.Errorf("%w: netns %s: %v -> %v: %d sent, 0 received (send error: %v)", ErrNoReply, ns.name, src, dst, rec.Sent, p.SendError())
	}
	return rec, nil
}
