package chaos

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SampleInterval is how often the sampler reads every gateway's addresses.
const SampleInterval = 5 * time.Millisecond

// Overlap is a time during which several gateways held one VIP on an up
// interface.
type Overlap struct {
	VIP      netip.Addr
	Holders  []string
	From, To time.Time
	Samples  int
	Round    int
	Phase    string // what the run was doing when it began
}

func (o Overlap) String() string {
	return fmt.Sprintf("%s held by %s at once from %s to %s (%d samples, %s)", o.VIP, strings.Join(o.Holders, " and "),
		o.From.Format("15:04:05.000"), o.To.Format("15:04:05.000"), o.Samples, o.Phase)
}

// Sampler reads, every SampleInterval, which gateways hold each VIP: the
// address on an interface that is administratively up and has its
// carrier (a dead node's links are down: its kernel answers nothing).
type Sampler struct {
	names []string
	hs    []*netlink.Handle
	vips  []netip.Addr

	mu       sync.Mutex
	samples  int
	errs     int
	lastErr  error
	open     map[netip.Addr]*Overlap
	overlaps []Overlap
	round    int
	phase    string

	stop chan struct{}
	done chan struct{}
}

// NewSampler opens a netlink socket inside each named namespace (names[i]
// is the node, nss[i] its namespace).
func NewSampler(names, nss []string, vips []netip.Addr) (*Sampler, error) {
	s := &Sampler{vips: vips, open: map[netip.Addr]*Overlap{}, stop: make(chan struct{}), done: make(chan struct{})}
	for i, n := range nss {
		h, err := netns.GetFromName(n)
		if err != nil {
			s.closeHandles()
			return nil, fmt.Errorf("chaos: sampler: namespace %s: %w", n, err)
		}
		nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		h.Close()
		if err != nil {
			s.closeHandles()
			return nil, fmt.Errorf("chaos: sampler: netlink socket in %s: %w", n, err)
		}
		s.names = append(s.names, names[i])
		s.hs = append(s.hs, nh)
	}
	return s, nil
}

func (s *Sampler) closeHandles() {
	for _, h := range s.hs {
		h.Close()
	}
}

// Start samples until Stop.
func (s *Sampler) Start() {
	go func() {
		defer close(s.done)
		t := time.NewTicker(SampleInterval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			s.sample(time.Now())
		}
	}()
}

// Stop ends sampling, closes any open overlap and the sockets. Call once.
func (s *Sampler) Stop() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	for _, v := range s.vips {
		if o := s.open[v]; o != nil {
			s.overlaps = append(s.overlaps, *o)
			delete(s.open, v)
		}
	}
	s.mu.Unlock()
	s.closeHandles()
}

// SetPhase names what the run does now (attributed to overlaps).
func (s *Sampler) SetPhase(round int, phase string) {
	s.mu.Lock()
	s.round, s.phase = round, phase
	s.mu.Unlock()
}

// holders returns, per VIP, the nodes holding it on an up interface.
func (s *Sampler) holders() (map[netip.Addr][]string, error) {
	out := map[netip.Addr][]string{}
	var errs []string
	for i, h := range s.hs {
		as, err := h.AddrList(nil, unix.AF_INET)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.names[i], err))
			continue
		}
		for _, a := range as {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || !slices.Contains(s.vips, ip.Unmap()) {
				continue
			}
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				// The link is gone: nothing answers for it.
				continue
			}
			at := l.Attrs()
			if at.Flags&net.FlagUp == 0 || (at.OperState != netlink.OperUp && at.OperState != netlink.OperUnknown) {
				continue
			}
			out[ip.Unmap()] = append(out[ip.Unmap()], s.names[i])
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("chaos: sampler: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

func (s *Sampler) sample(now time.Time) {
	h, err := s.holders()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples++
	if err != nil {
		s.errs++
		s.lastErr = err
	}
	for _, v := range s.vips {
		hs := h[v]
		o := s.open[v]
		if len(hs) > 1 {
			if o == nil {
				o = &Overlap{VIP: v, From: now, Round: s.round, Phase: s.phase}
				s.open[v] = o
			}
			for _, n := range hs {
				if !slices.Contains(o.Holders, n) {
					o.Holders = append(o.Holders, n)
				}
			}
			o.To = now
			o.Samples++
			continue
		}
		if o != nil {
			s.overlaps = append(s.overlaps, *o)
			delete(s.open, v)
		}
	}
}

// Samples returns how many samples were taken so far.
func (s *Sampler) Samples() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// Take returns the overlaps that ended since the last Take, and the
// sample count and errors so far.
func (s *Sampler) Take() (overlaps []Overlap, samples, errs int, lastErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	overlaps, s.overlaps = s.overlaps, nil
	return overlaps, s.samples, s.errs, s.lastErr
}
