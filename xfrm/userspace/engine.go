// Package userspace is the userspace ESP data plane: IPsec SA pairs kept in
// this process, packets to and from the protected networks through a TUN
// device, ESP carried in UDP (RFC 3948) through the IKE runtime's socket on
// port 4500. It is modelled on strongSwan's kernel-libipsec and on
// wireguard-go, and serves hosts whose kernel has no ESP.
//
// The engine owns its TUN device, one routing table (Config.RouteTable) with
// the routes through the device and the peers' throw routes, and the policy
// rules that consult that table; nothing else: it never opens a socket (the
// caller's Sender sends, and the caller hands received ESP to
// HandleInbound) and never touches another device, table, rule, SA or
// policy.
//
// When the process dies, its TUN device and the routes through it go with
// it (ESP stops at once); the rules and throw routes stay, harmless but
// stale. New removes them before it starts, and Cleanup removes them for a
// cleanup step that runs after a daemon's death. Only tunnel mode with UDP encapsulation is
// implemented; anything else is refused with xfrm.ErrUnsupported.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/ike/sa"
	"ikegw/xfrm"
	"ikegw/xfrm/esp"
	"ikegw/xfrm/replay"
)

// Sender sends one ESP-in-UDP payload (starting at the SPI, without the
// non-ESP marker: ESP needs none) from the IKE socket on port 4500 to dst.
// It must not retain b after it returns, and must be safe for concurrent
// use.
type Sender interface {
	SendESP(b []byte, dst netip.AddrPort) error
}

// BatchSender is a Sender that can send several packets in one system
// call (sendmmsg). It returns how many of pkts (in order) were sent; an
// error stops the batch. It must not retain pkts.
type BatchSender interface {
	Sender
	SendESPBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error)
}

// Config configures an Engine.
type Config struct {
	// Sender is the IKE runtime's socket. Required.
	Sender Sender
	// Device, when set, is used instead of creating a TUN device (tests,
	// or a caller that made the device itself). The engine then manages
	// no routes. The engine owns the device and closes it on Close.
	Device Device
	// Name of the TUN device to create; may hold one %d. Default "ikegw%d".
	Name string
	// MTU of the TUN device. Default 1400 (room for IPv4, UDP and the
	// largest ESP overhead in a 1500-byte path).
	MTU int
	// NetNSPath, when set, is the network namespace (e.g.
	// /var/run/netns/NAME) to create the TUN device and routes in.
	NetNSPath string
	// RouteTable is the routing table that holds the routes through the
	// TUN device, consulted before the main table through a policy rule
	// of priority RulePriority (as strongSwan uses table 220). The main
	// table is never touched, so the engine cannot clobber an operator's
	// route, and each peer's address gets a "throw" route in the table so
	// that ESP to a peer covered by a remote selector (0.0.0.0/0) does not
	// loop through the TUN. Defaults DefaultRouteTable, DefaultRulePriority.
	RouteTable   int
	RulePriority int
	// Logger for events; default slog.Default().
	Logger *slog.Logger
	// ExpiryBuffer is the capacity of the Expiries channel. Default 64.
	ExpiryBuffer int
	// LifetimeTick is how often time lifetimes are checked. Default 1s.
	LifetimeTick time.Duration
	// Now is the clock for lifetimes. Default time.Now.
	Now func() time.Time
	// Gate, when set, is asked once per batch read from the TUN device;
	// closed, the batch is dropped before it is sealed and counted
	// (gate.go). Nil: always open.
	Gate Gate
}

// Defaults of Config.
const (
	DefaultMTU          = 1400
	DefaultRouteTable   = 4500
	DefaultRulePriority = 4500
)

// Stats are the live counters of one installed pair.
type Stats struct {
	OutSeq       uint64 // last outbound sequence number used
	InSeq        uint64 // highest inbound sequence number accepted
	InBytes      uint64 // inner bytes accepted
	InPackets    uint64
	OutBytes     uint64 // inner bytes sent
	OutPackets   uint64
	ReplayDrops  uint64 // inbound duplicates and too old
	AuthFailures uint64 // inbound ICV failures
	PolicyDrops  uint64 // inbound inner packets outside the selectors
	SendErrors   uint64 // Sender errors
	Expired      bool   // hard lifetime reached: carries no traffic
}

// EngineStats counts packets dropped before an SA was found.
type EngineStats struct {
	NoSA         uint64 // inbound ESP for an unknown SPI
	NoPolicy     uint64 // TUN packets no installed pair's selectors match
	Malformed    uint64 // undecodable inner or outer packets, bad padding, TUN reads that cannot be split
	DeviceErrors uint64 // TUN read/write errors
	GateDrops    uint64 // TUN packets dropped by the closed send gate (gate.go)
}

// Engine is the userspace data plane. It implements xfrm.DataPlane.
type Engine struct {
	log    *slog.Logger
	sender Sender
	dev    batchDevice
	nl     *netlink.Handle // nil: routes not managed
	link   netlink.Link
	table  int
	rules  []*netlink.Rule // installed by us, removed by Close
	mtu    int
	now    func() time.Time
	tick   time.Duration

	mu       sync.RWMutex
	closed   bool
	children map[uint32]*child // by inbound SPI
	outSPIs  map[outKey]*child // outbound SPI and peer
	ordered  []*child          // install order, for the outbound lookup
	// policyGen changes whenever a pair is installed or removed: the
	// read loop's flow cache is emptied then.
	policyGen atomic.Uint64
	routes    map[netip.Prefix]int // reference counts of our routes
	// addrCache holds the host's addresses by family while one batch of
	// pairs is staged or activated (nil otherwise: read them every time),
	// so that a batch lists them once, not once per route.
	addrCache map[int][]netlink.Addr
	throws    map[netip.Addr]int // reference counts of the peers' throw routes

	expMu     sync.Mutex
	expClosed bool
	expiries  chan xfrm.Expiry

	noSA, noPolicy, malformed, devErrors atomic.Uint64

	gate      Gate // nil: always open
	gateDrops atomic.Uint64

	in inQueue // decrypted packets on their way to the device

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ xfrm.DataPlane = (*Engine)(nil)

type outKey struct {
	spi uint32
	dst netip.Addr
}

type child struct {
	rec     *sa.ChildSA // deep copy, never changed
	in, out *esp.SA
	dst     netip.AddrPort
	base    time.Time // start of the time lifetimes
	outSeq  atomic.Uint64
	hard    atomic.Bool
	// staged: installed by StageChildren and not activated yet: never
	// chosen for an outbound packet.
	staged atomic.Bool

	mu                                  sync.Mutex
	replay                              replay.Filter
	inBytes, inPackets                  uint64
	outBytes, outPackets                uint64
	replayDrops, authFailures, polDrops uint64
	sendErrors                          uint64
	softSent, hardSent                  bool
}

// New starts an engine: it creates and configures the TUN device (unless
// cfg.Device is given) and starts reading it.
func New(cfg Config) (*Engine, error) {
	if cfg.Sender == nil {
		return nil, errors.New("userspace: Config.Sender is required")
	}
	e := &Engine{
		log: cfg.Logger, sender: cfg.Sender, mtu: cfg.MTU, now: cfg.Now, tick: cfg.LifetimeTick,
		children: map[uint32]*child{}, outSPIs: map[outKey]*child{}, routes: map[netip.Prefix]int{},
		throws: map[netip.Addr]int{}, done: make(chan struct{}), gate: cfg.Gate,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.mtu == 0 {
		e.mtu = DefaultMTU
	}
	if e.mtu < 576 || e.mtu > 65535 {
		return nil, fmt.Errorf("userspace: MTU %d out of range 576..65535", e.mtu)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.tick <= 0 {
		e.tick = time.Second
	}
	n := cfg.ExpiryBuffer
	if n <= 0 {
		n = 64
	}
	e.expiries = make(chan xfrm.Expiry, n)
	e.log = e.log.With("dataplane", xfrm.KindUserspace)

	if cfg.Device != nil {
		e.dev = single{cfg.Device}
	} else if err := e.createTUN(cfg); err != nil {
		return nil, err
	}
	e.log.Info("userspace data plane up", "device", e.dev.Name(), "mtu", e.mtu)
	e.in.init(e.dev.BatchSize())
	e.wg.Add(3)
	go e.readLoop()
	go e.writeLoop()
	go e.lifetimeLoop()
	return e, nil
}

func (e *Engine) createTUN(cfg Config) error {
	name := cfg.Name
	if name == "" {
		name = "ikegw%d"
	}
	ns := netns.None()
	if cfg.NetNSPath != "" {
		var err error
		if ns, err = netns.GetFromPath(cfg.NetNSPath); err != nil {
			return fmt.Errorf("userspace: network namespace %s: %w", cfg.NetNSPath, err)
		}
		defer ns.Close()
	}
	var tun *tunDevice
	err := inNetNS(ns, func() error {
		var err error
		tun, err = openTUN(name)
		return err
	})
	if err != nil {
		return err
	}
	if ns.IsOpen() {
		e.nl, err = netlink.NewHandleAt(ns)
	} else {
		e.nl, err = netlink.NewHandle()
	}
	if err == nil {
		e.link, err = setUp(e.nl, tun.name, e.mtu)
	}
	if err == nil {
		e.table = cfg.RouteTable
		if e.table == 0 {
			e.table = DefaultRouteTable
		}
		err = cleanup(e.nl, e.table, cfg.RulePriority)
	}
	if err == nil {
		err = e.addRules(cfg)
	}
	if err != nil {
		e.delRules()
		tun.Close()
		if e.nl != nil {
			e.nl.Close()
		}
		return fmt.Errorf("userspace: netlink: %w", err)
	}
	e.dev = tun
	return nil
}

// addRules makes every lookup consult our table before the main one, for
// IPv4 and (when the host has it) IPv6. A rule that is already there (left
// by an earlier run) is reused and removed by Close all the same.
func (e *Engine) addRules(cfg Config) error {
	prio := cfg.RulePriority
	if prio == 0 {
		prio = DefaultRulePriority
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		r := netlink.NewRule()
		r.Family, r.Table, r.Priority = family, e.table, prio
		err := e.nl.RuleAdd(r)
		switch {
		case err == nil || errors.Is(err, syscall.EEXIST):
			e.rules = append(e.rules, r)
		case family == netlink.FAMILY_V6 && errors.Is(err, syscall.EAFNOSUPPORT):
			e.log.Info("no IPv6 on this host: IPv6 selectors cannot be routed")
		default:
			return fmt.Errorf("policy rule lookup table %d priority %d: %w", e.table, prio, err)
		}
	}
	return nil
}

// Cleanup removes what a dead engine configured with cfg left behind: the
// policy rules of cfg.RulePriority that look up cfg.RouteTable, and every
// route in that table. Only cfg.NetNSPath, RouteTable and RulePriority are
// used. Run it from the cleanup step after a daemon's death, not while an
// engine with the same table runs.
func Cleanup(cfg Config) error {
	ns := netns.None()
	if cfg.NetNSPath != "" {
		var err error
		if ns, err = netns.GetFromPath(cfg.NetNSPath); err != nil {
			return fmt.Errorf("userspace: cleanup: network namespace %s: %w", cfg.NetNSPath, err)
		}
		defer ns.Close()
	}
	var h *netlink.Handle
	var err error
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return fmt.Errorf("userspace: cleanup: netlink: %w", err)
	}
	defer h.Close()
	table := cfg.RouteTable
	if table == 0 {
		table = DefaultRouteTable
	}
	if err := cleanup(h, table, cfg.RulePriority); err != nil {
		return fmt.Errorf("userspace: cleanup: %w", err)
	}
	return nil
}

// cleanup removes our rules (lookup table at priority prio) and every
// route in table.
func cleanup(h *netlink.Handle, table, prio int) error {
	if prio == 0 {
		prio = DefaultRulePriority
	}
	var errs []error
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(family)
		if err != nil {
			if family == netlink.FAMILY_V6 && errors.Is(err, syscall.EAFNOSUPPORT) {
				continue
			}
			errs = append(errs, fmt.Errorf("listing rules: %w", err))
			continue
		}
		for i := range rules {
			r := &rules[i]
			if r.Table != table || r.Priority != prio {
				continue
			}
			if err := h.RuleDel(r); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("removing rule priority %d lookup %d: %w", prio, table, err))
			}
		}
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing table %d: %w", table, err))
			continue
		}
		for i := range routes {
			if err := h.RouteDel(&routes[i]); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("removing route %s from table %d: %w", routes[i].Dst, table, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) delRules() {
	for _, r := range e.rules {
		if err := e.nl.RuleDel(r); err != nil && !errors.Is(err, syscall.ENOENT) {
			e.log.Warn("removing policy rule", "table", r.Table, "priority", r.Priority, "err", err)
		}
	}
	e.rules = nil
}

// Kind returns xfrm.KindUserspace.
func (e *Engine) Kind() string { return xfrm.KindUserspace }

// DeviceName is the name of the engine's TUN device.
func (e *Engine) DeviceName() string { return e.dev.Name() }

// InstallChild implements xfrm.DataPlane. Only tunnel mode with UDP
// encapsulation and the algorithms of package esp are supported. Time
// lifetimes run from c.Established when set (so a standby keeps the
// original deadlines), else from now. A staged pair (StageChildren) is
// activated.
func (e *Engine) InstallChild(ctx context.Context, c *sa.ChildSA) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch, err := e.newChild(c)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return xfrm.ErrClosed
	}
	return e.installLocked(ch, false)
}

var _ xfrm.Stager = (*Engine)(nil)

// StageChildren implements xfrm.Stager: the pairs are installed with their
// routes, but never chosen for a packet read from the TUN device until
// activated (what the routes lead into the device is dropped and counted
// as EngineStats.NoPolicy: no sequence number is used, nothing is sent);
// their inbound SAs decrypt what the caller hands to HandleInbound. The
// routes are there so that activation, the part of a takeover after its
// commit, only flips the pairs on. (A standby keeping pairs installed
// could not use this as it is: its routes would take the packets that
// standby forwarding hands to the active; see the failover package
// documentation.)
func (e *Engine) StageChildren(ctx context.Context, cs []*sa.ChildSA) error {
	return e.each(ctx, cs, true)
}

// ActivateChildren implements xfrm.Stager.
func (e *Engine) ActivateChildren(ctx context.Context, cs []*sa.ChildSA) error {
	return e.each(ctx, cs, false)
}

// each stages or activates every pair of cs. Pairs already installed are
// handled under the lock without building anything (no key schedule);
// the others are built outside it and then installed.
func (e *Engine) each(ctx context.Context, cs []*sa.ChildSA, stage bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	var missing []*sa.ChildSA
	done := 0
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return xfrm.ErrClosed
	}
	e.addrCache = map[int][]netlink.Addr{}
	for _, c := range cs {
		if err := xfrm.Validate(c); err != nil {
			errs = append(errs, err)
			continue
		}
		old := e.children[c.ID()]
		if old == nil {
			missing = append(missing, c)
			continue
		}
		if err := e.updateLocked(old, c, stage); err != nil {
			errs = append(errs, err)
			continue
		}
		done++
	}
	e.addrCache = nil
	e.mu.Unlock()
	kids := make([]*child, 0, len(missing))
	for _, c := range missing {
		ch, err := e.newChild(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		kids = append(kids, ch)
	}
	if len(kids) > 0 {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return xfrm.ErrClosed
		}
		e.addrCache = map[int][]netlink.Addr{}
		for _, ch := range kids {
			if err := e.installLocked(ch, stage); err != nil {
				errs = append(errs, err)
				continue
			}
			done++
		}
		e.addrCache = nil
		e.mu.Unlock()
	}
	if !stage && len(cs) > 0 {
		e.log.Info("children activated", "pairs", done, "failed", len(cs)-done)
	}
	return errors.Join(errs...)
}

// newChild validates c and builds its pair, outside the engine's lock.
func (e *Engine) newChild(c *sa.ChildSA) (*child, error) {
	if err := xfrm.Validate(c); err != nil {
		return nil, err
	}
	if c.Mode != sa.Tunnel {
		return nil, fmt.Errorf("%w: userspace: child spi=0x%08x: %s mode (only tunnel mode is implemented)", xfrm.ErrUnsupported, c.ID(), c.Mode)
	}
	if c.EncapRemotePort == 0 {
		return nil, fmt.Errorf("%w: userspace: child spi=0x%08x: no UDP encapsulation (ESP leaves only as ESP-in-UDP, RFC 3948)", xfrm.ErrUnsupported, c.ID())
	}
	in, err := esp.New(&c.In)
	if err != nil {
		return nil, fmt.Errorf("userspace: child spi=0x%08x inbound: %w", c.ID(), err)
	}
	out, err := esp.New(&c.Out)
	if err != nil {
		return nil, fmt.Errorf("userspace: child spi=0x%08x outbound: %w", c.ID(), err)
	}
	if c.Counters.OutSeq >= math.MaxUint32 {
		return nil, fmt.Errorf("userspace: child spi=0x%08x: outbound sequence number %d exhausted (no ESN)", c.ID(), c.Counters.OutSeq)
	}
	ch := &child{rec: cloneChild(c), in: in, out: out,
		dst: netip.AddrPortFrom(c.Out.Dst, c.EncapRemotePort), base: e.now()}
	if c.Established != 0 {
		ch.base = time.Unix(0, c.Established)
	}
	ch.outSeq.Store(c.Counters.OutSeq)
	ch.replay.Restore(c.Counters.InSeq, c.Counters.ReplayBitmap)
	ch.inBytes, ch.inPackets = c.Counters.InBytes, c.Counters.InPackets
	ch.outBytes, ch.outPackets = c.Counters.OutBytes, c.Counters.OutPackets
	return ch, nil
}

// installLocked installs ch (stage: staged), or, when its
// pair is installed already, stages nothing / moves the installed pair
// forward and activates it. Called with e.mu held.
func (e *Engine) installLocked(ch *child, stage bool) error {
	c := ch.rec
	if old := e.children[c.ID()]; old != nil {
		return e.updateLocked(old, c, stage)
	}
	ok := outKey{c.Out.SPI, c.Out.Dst}
	if other := e.outSPIs[ok]; other != nil {
		return fmt.Errorf("%w: userspace: outbound spi=0x%08x to %s is used by pair spi=0x%08x", xfrm.ErrConflict, c.Out.SPI, c.Out.Dst, other.rec.ID())
	}
	if err := e.addRoutes(ch.rec); err != nil {
		return err
	}
	ch.staged.Store(stage)
	e.children[c.ID()] = ch
	e.outSPIs[ok] = ch
	e.ordered = append(e.ordered, ch)
	e.policyGen.Add(1)
	if stage {
		if e.debugOn() {
			e.log.Debug("child staged", "spi_in", spiHex(c.In.SPI), "spi_out", spiHex(c.Out.SPI), "peer", ch.dst)
		}
		return nil
	}
	e.log.Info("child installed", "spi_in", spiHex(c.In.SPI), "spi_out", spiHex(c.Out.SPI),
		"peer", ch.dst, "encr", c.Out.Encr, "integ", c.Out.Integ, "out_seq", c.Counters.OutSeq, "in_seq", c.Counters.InSeq)
	return nil
}

// updateLocked handles c for the installed pair old: staging changes
// nothing; activating moves a staged pair forward to c's counters and lets
// it send, or raises an active pair's outbound sequence number. Called
// with e.mu held.
func (e *Engine) updateLocked(old *child, c *sa.ChildSA, stage bool) error {
	if !xfrm.SamePair(old.rec, c) {
		return fmt.Errorf("%w: userspace: inbound spi=0x%08x is installed with other parameters", xfrm.ErrConflict, c.ID())
	}
	if stage {
		return nil
	}
	if c.Counters.OutSeq >= math.MaxUint32 {
		return fmt.Errorf("userspace: child spi=0x%08x: outbound sequence number %d exhausted (no ESN)", c.ID(), c.Counters.OutSeq)
	}
	if !old.staged.Load() {
		old.raiseOutSeq(c.Counters.OutSeq)
		return nil
	}
	old.forward(&c.Counters)
	old.staged.Store(false)
	e.policyGen.Add(1)
	if e.debugOn() {
		e.log.Debug("staged child activated", "spi_in", spiHex(c.In.SPI), "out_seq", old.lastOutSeq())
	}
	return nil
}

// raiseOutSeq lifts the outbound sequence number to seq if it is lower.
func (ch *child) raiseOutSeq(seq uint64) {
	for {
		cur := ch.outSeq.Load()
		if cur >= seq || ch.outSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// forward moves the counters of a staged pair forward to cs, never back.
func (ch *child) forward(cs *sa.Counters) {
	ch.raiseOutSeq(cs.OutSeq)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if cs.InSeq > ch.replay.Last() {
		ch.replay.Restore(cs.InSeq, cs.ReplayBitmap)
	}
	ch.inBytes, ch.inPackets = max(ch.inBytes, cs.InBytes), max(ch.inPackets, cs.InPackets)
	ch.outBytes, ch.outPackets = max(ch.outBytes, cs.OutBytes), max(ch.outPackets, cs.OutPackets)
}

func cloneChild(c *sa.ChildSA) *sa.ChildSA {
	r := *c
	r.In.EncrKey, r.In.IntegKey = slices.Clone(c.In.EncrKey), slices.Clone(c.In.IntegKey)
	r.Out.EncrKey, r.Out.IntegKey = slices.Clone(c.Out.EncrKey), slices.Clone(c.Out.IntegKey)
	r.LocalTS, r.RemoteTS = slices.Clone(c.LocalTS), slices.Clone(c.RemoteTS)
	r.Counters.ReplayBitmap = nil
	return &r
}

// addRoutes routes c's remote selectors through the TUN device, with a
// source address inside the local selectors when this host has one (as
// strongSwan's kernel-libipsec does). Called with e.mu held.
func (e *Engine) addRoutes(c *sa.ChildSA) error {
	if e.nl == nil {
		return nil
	}
	peer := c.Out.Dst
	if e.throws[peer] == 0 {
		if err := e.nl.RouteReplace(e.throwRoute(peer)); err != nil {
			return fmt.Errorf("userspace: child spi=0x%08x: throw route for peer %s in table %d: %w", c.ID(), peer, e.table, err)
		}
	}
	e.throws[peer]++
	var taken []netip.Prefix
	for _, ts := range c.RemoteTS {
		p := ts.Prefix
		if e.routes[p] == 0 {
			if err := e.nl.RouteReplace(e.route(p, e.localSource(c, p.Addr().Is4()))); err != nil {
				for _, a := range taken {
					e.delRoute(a)
				}
				e.delThrow(peer)
				return fmt.Errorf("userspace: child spi=0x%08x: route %s via %s in table %d: %w", c.ID(), p, e.dev.Name(), e.table, err)
			}
		}
		e.routes[p]++
		taken = append(taken, p)
	}
	return nil
}

// throwRoute sends lookups for a peer's address on to the next rule (the
// main table), so ESP to the peer never enters the TUN device.
func (e *Engine) throwRoute(peer netip.Addr) *netlink.Route {
	return &netlink.Route{
		Dst:   &net.IPNet{IP: peer.AsSlice(), Mask: net.CIDRMask(peer.BitLen(), peer.BitLen())},
		Table: e.table,
		Type:  unix.RTN_THROW,
	}
}

// delThrow drops one reference to a peer's throw route. Called with e.mu
// held.
func (e *Engine) delThrow(peer netip.Addr) {
	if e.nl == nil {
		return
	}
	if e.throws[peer]--; e.throws[peer] > 0 {
		return
	}
	delete(e.throws, peer)
	if err := e.nl.RouteDel(e.throwRoute(peer)); err != nil && !errors.Is(err, syscall.ESRCH) {
		e.log.Warn("removing throw route", "peer", peer, "table", e.table, "err", err)
	}
}

func (e *Engine) route(p netip.Prefix, src netip.Addr) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: e.link.Attrs().Index,
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Scope:     netlink.SCOPE_LINK,
		Table:     e.table,
	}
	if src.IsValid() {
		r.Src = src.AsSlice()
	}
	return r
}

func (e *Engine) localSource(c *sa.ChildSA, v4 bool) netip.Addr {
	family := netlink.FAMILY_V6
	if v4 {
		family = netlink.FAMILY_V4
	}
	addrs, ok := e.addrCache[family]
	if !ok {
		var err error
		if addrs, err = e.nl.AddrList(nil, family); err != nil {
			e.log.Warn("listing local addresses for a route source", "err", err)
			return netip.Addr{}
		}
		if e.addrCache != nil {
			e.addrCache[family] = addrs
		}
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		if matchTS(c.LocalTS, ip, 0, 0, false) {
			return ip
		}
	}
	e.log.Warn("no local address inside the local traffic selectors; locally sent packets may miss the policy",
		"spi_in", spiHex(c.ID()))
	return netip.Addr{}
}

// delRoute drops one reference to p's route, removing it with the last.
// Called with e.mu held.
func (e *Engine) delRoute(p netip.Prefix) {
	if e.nl == nil {
		return
	}
	if e.routes[p]--; e.routes[p] > 0 {
		return
	}
	delete(e.routes, p)
	if err := e.nl.RouteDel(e.route(p, netip.Addr{})); err != nil && !errors.Is(err, syscall.ESRCH) {
		e.log.Warn("removing route", "prefix", p, "device", e.dev.Name(), "err", err)
	}
}

// DeleteChild implements xfrm.DataPlane.
func (e *Engine) DeleteChild(ctx context.Context, c *sa.ChildSA) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return xfrm.ErrClosed
	}
	e.removeLocked(c.ID())
	return nil
}

func (e *Engine) removeLocked(spi uint32) {
	ch := e.children[spi]
	if ch == nil {
		return
	}
	delete(e.children, spi)
	delete(e.outSPIs, outKey{ch.rec.Out.SPI, ch.rec.Out.Dst})
	e.ordered = slices.DeleteFunc(e.ordered, func(x *child) bool { return x == ch })
	e.policyGen.Add(1)
	for _, ts := range ch.rec.RemoteTS {
		e.delRoute(ts.Prefix)
	}
	if e.nl != nil {
		e.delThrow(ch.rec.Out.Dst)
	}
	e.log.Info("child deleted", "spi_in", spiHex(spi))
}

// Counters implements xfrm.DataPlane.
func (e *Engine) Counters(ctx context.Context) (map[uint32]sa.Counters, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, xfrm.ErrClosed
	}
	m := make(map[uint32]sa.Counters, len(e.children))
	for spi, ch := range e.children {
		ch.mu.Lock()
		in, bm := ch.replay.Export()
		m[spi] = sa.Counters{
			OutSeq: ch.lastOutSeq(), InSeq: in, ReplayBitmap: bm,
			InBytes: ch.inBytes, InPackets: ch.inPackets, OutBytes: ch.outBytes, OutPackets: ch.outPackets,
		}
		ch.mu.Unlock()
	}
	return m, nil
}

// lastOutSeq is the last sequence number used (attempts past 2^32-1 are
// not numbers that were sent).
func (ch *child) lastOutSeq() uint64 { return min(ch.outSeq.Load(), math.MaxUint32) }

// Stats returns the live counters of the pair with inbound SPI spi.
func (e *Engine) Stats(spi uint32) (Stats, bool) {
	e.mu.RLock()
	ch := e.children[spi]
	e.mu.RUnlock()
	if ch == nil {
		return Stats{}, false
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return Stats{
		OutSeq: ch.lastOutSeq(), InSeq: ch.replay.Last(),
		InBytes: ch.inBytes, InPackets: ch.inPackets, OutBytes: ch.outBytes, OutPackets: ch.outPackets,
		ReplayDrops: ch.replayDrops, AuthFailures: ch.authFailures, PolicyDrops: ch.polDrops,
		SendErrors: ch.sendErrors, Expired: ch.hard.Load(),
	}, true
}

// AllStats returns Stats of every installed pair, keyed by inbound SPI.
func (e *Engine) AllStats() map[uint32]Stats {
	e.mu.RLock()
	spis := make([]uint32, 0, len(e.children))
	for spi := range e.children {
		spis = append(spis, spi)
	}
	e.mu.RUnlock()
	m := make(map[uint32]Stats, len(spis))
	for _, spi := range spis {
		if st, ok := e.Stats(spi); ok {
			m[spi] = st
		}
	}
	return m
}

// EngineStats returns the drops that belong to no pair.
func (e *Engine) EngineStats() EngineStats {
	return EngineStats{NoSA: e.noSA.Load(), NoPolicy: e.noPolicy.Load(),
		Malformed: e.malformed.Load(), DeviceErrors: e.devErrors.Load(), GateDrops: e.gateDrops.Load()}
}

// Expiries implements xfrm.DataPlane.
func (e *Engine) Expiries() <-chan xfrm.Expiry { return e.expiries }

// Installed implements xfrm.DataPlane.
func (e *Engine) Installed(ctx context.Context) ([]uint32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, xfrm.ErrClosed
	}
	spis := make([]uint32, 0, len(e.children))
	for spi := range e.children {
		spis = append(spis, spi)
	}
	slices.Sort(spis)
	return spis, nil
}

// Flush implements xfrm.DataPlane: every pair and route of this engine goes.
func (e *Engine) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return xfrm.ErrClosed
	}
	for spi := range e.children {
		e.removeLocked(spi)
	}
	return nil
}

// Close implements xfrm.DataPlane: the TUN device (and with it every route
// through it) goes away, the goroutines stop and Expiries is closed.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		if e.nl != nil {
			// Routes through the device go with it; throw routes and
			// rules do not.
			for peer := range e.throws {
				e.throws[peer] = 1
				e.delThrow(peer)
			}
			e.delRules()
		}
		e.children, e.outSPIs, e.ordered = map[uint32]*child{}, map[outKey]*child{}, nil
		e.mu.Unlock()
		close(e.done)
		e.in.close()
		err = e.dev.Close()
		e.wg.Wait()
		if e.nl != nil {
			e.nl.Close()
		}
		e.expMu.Lock()
		e.expClosed = true
		close(e.expiries)
		e.expMu.Unlock()
		e.log.Info("userspace data plane down", "device", e.dev.Name())
	})
	return err
}

// spiHex prints an SPI as swanctl and ip xfrm do.
type spiHex uint32

func (s spiHex) String() string { return fmt.Sprintf("0x%08x", uint32(s)) }

// LogValue implements slog.LogValuer.
func (s spiHex) LogValue() slog.Value { return slog.StringValue(s.String()) }

// debugOn guards debug logs on the packet path, whose arguments would
// otherwise be built for every dropped packet.
func (e *Engine) debugOn() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

func (e *Engine) emit(ev xfrm.Expiry) {
	e.expMu.Lock()
	defer e.expMu.Unlock()
	if e.expClosed {
		return
	}
	select {
	case e.expiries <- ev:
		e.log.Info("lifetime expired", "spi_in", spiHex(ev.SPI), "hard", ev.Hard, "bytes", ev.Bytes)
	default:
		e.log.Warn("expiry event dropped: consumer behind", "spi_in", spiHex(ev.SPI), "hard", ev.Hard, "bytes", ev.Bytes)
	}
}

// checkBytes fires byte lifetime events; called with ch.mu held, returns
// the events to emit after unlocking.
func (ch *child) checkBytes() (ev xfrm.Expiry, fire bool) {
	lt := ch.rec.Lifetime
	used := max(ch.inBytes, ch.outBytes)
	if lt.HardBytes != 0 && used >= lt.HardBytes && !ch.hardSent {
		ch.hardSent, ch.softSent = true, true
		ch.hard.Store(true)
		return xfrm.Expiry{SPI: ch.rec.ID(), Hard: true, Bytes: true}, true
	}
	if lt.SoftBytes != 0 && used >= lt.SoftBytes && !ch.softSent {
		ch.softSent = true
		return xfrm.Expiry{SPI: ch.rec.ID(), Bytes: true}, true
	}
	return ev, false
}

// checkTime fires time lifetime events; called with ch.mu held.
func (ch *child) checkTime(now time.Time) (ev xfrm.Expiry, fire bool) {
	lt := ch.rec.Lifetime
	age := now.Sub(ch.base)
	if lt.HardSeconds != 0 && age >= time.Duration(lt.HardSeconds)*time.Second && !ch.hardSent {
		ch.hardSent, ch.softSent = true, true
		ch.hard.Store(true)
		return xfrm.Expiry{SPI: ch.rec.ID(), Hard: true}, true
	}
	if lt.SoftSeconds != 0 && age >= time.Duration(lt.SoftSeconds)*time.Second && !ch.softSent {
		ch.softSent = true
		return xfrm.Expiry{SPI: ch.rec.ID()}, true
	}
	return ev, false
}

func (e *Engine) lifetimeLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.tick)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
		}
		e.checkLifetimes()
	}
}

func (e *Engine) checkLifetimes() {
	now := e.now()
	e.mu.RLock()
	var evs []xfrm.Expiry
	for _, ch := range e.ordered {
		ch.mu.Lock()
		if ev, ok := ch.checkTime(now); ok {
			evs = append(evs, ev)
		}
		ch.mu.Unlock()
	}
	e.mu.RUnlock()
	for _, ev := range evs {
		e.emit(ev)
	}
}

// lookupOut finds the most recently installed pair whose selectors match
// the flow, skipping hard-expired pairs and pairs installed as already
// superseded (sa.ChildRekeyed). The newest wins so that, after a rekey,
// outbound traffic moves to the new pair as soon as it is installed, while
// the old one still decrypts until it is deleted (as the kernel does).
// outCache remembers which pair recent flows' packets leave on, so that a
// gateway with thousands of pairs does not match every packet against
// every pair's selectors. Owned by the read loop; emptied whenever the set
// of pairs changes, and when it is full (it holds at most outCacheMax
// flows, so a scan of many addresses cannot grow it).
type outCache struct {
	gen uint64
	m   map[flow]*child
}

const outCacheMax = 4096

// lookupCached is lookupOut through c (nil: no cache).
func (e *Engine) lookupCached(c *outCache, f *flow) *child {
	if c == nil {
		return e.lookupOut(f)
	}
	if g := e.policyGen.Load(); g != c.gen || c.m == nil {
		if c.m == nil {
			c.m = make(map[flow]*child)
		}
		clear(c.m)
		c.gen = g
	}
	if ch, ok := c.m[*f]; ok && (ch == nil || !ch.hard.Load()) {
		return ch
	}
	ch := e.lookupOut(f)
	if len(c.m) >= outCacheMax {
		clear(c.m)
	}
	c.m[*f] = ch
	return ch
}

// lookupOut finds the newest usable pair whose selectors cover f.
func (e *Engine) lookupOut(f *flow) *child {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for i := len(e.ordered) - 1; i >= 0; i-- {
		ch := e.ordered[i]
		if ch.hard.Load() || ch.staged.Load() || ch.rec.State == sa.ChildRekeyed {
			continue
		}
		if matchTS(ch.rec.RemoteTS, f.dst, f.proto, f.dport, f.hasPorts) &&
			matchTS(ch.rec.LocalTS, f.src, f.proto, f.sport, f.hasPorts) {
			return ch
		}
	}
	return nil
}

// readLoop reads packets from the TUN device in batches (what queued up
// since the last wakeup; a TSO/USO super-packet arrives split into its
// segments), encrypts them in place and hands the batch to the sender. One
// goroutine; the Sender does not retain what it sends.
func (e *Engine) readLoop() {
	defer e.wg.Done()
	n := e.dev.BatchSize()
	bufs := make([][]byte, n)
	full := make([][]byte, n)
	for i := range bufs {
		full[i] = make([]byte, esp.MaxHeadroom+e.mtu+esp.MaxTailroom)
		bufs[i] = full[i][:esp.MaxHeadroom+e.mtu]
	}
	sizes := make([]int, n)
	b := outBatch{pkts: make([][]byte, 0, n), dsts: make([]netip.AddrPort, 0, n), kids: make([]*child, 0, n), cache: &outCache{}}
	bs, _ := e.sender.(BatchSender)
	for {
		cnt, err := e.dev.ReadBatch(bufs, sizes, esp.MaxHeadroom)
		var bad *vnetError
		if errors.As(err, &bad) {
			// One read dropped; the packets before it go on.
			e.malformed.Add(1)
			if e.debugOn() {
				e.log.Debug("TUN read dropped", "device", e.dev.Name(), "err", err)
			}
			err = nil
		}
		if err != nil && cnt == 0 {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			select {
			case <-e.done:
				return
			default:
			}
			// A TUN device that is down answers EIO; keep reading
			// (slowly) so traffic resumes when it comes back.
			if e.devErrors.Add(1)%1000 == 1 {
				e.log.Warn("TUN read failed", "device", e.dev.Name(), "err", err)
			}
			select {
			case <-e.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if e.gateClosed(cnt) {
			continue
		}
		b.reset()
		for i := 0; i < cnt; i++ {
			e.outbound(&b, full[i], sizes[i])
		}
		e.send(bs, &b)
	}
}

// outBatch collects the sealed packets of one read.
type outBatch struct {
	pkts  [][]byte
	dsts  []netip.AddrPort
	kids  []*child
	cache *outCache // nil: no flow cache
}

func (b *outBatch) reset() { b.pkts, b.dsts, b.kids = b.pkts[:0], b.dsts[:0], b.kids[:0] }

// send hands a batch to the sender, one call when it takes batches.
func (e *Engine) send(bs BatchSender, b *outBatch) {
	if len(b.pkts) == 0 {
		return
	}
	failed := func(ch *child, err error) {
		ch.mu.Lock()
		ch.sendErrors++
		ch.mu.Unlock()
		if e.debugOn() {
			e.log.Debug("sending ESP failed", "peer", ch.dst, "err", err)
		}
	}
	if bs != nil && len(b.pkts) > 1 {
		sent, err := bs.SendESPBatch(b.pkts, b.dsts)
		// A sender must report 0..len; guard anyway (a -1 from
		// sendmmsg once crashed the engine here).
		for i := min(max(sent, 0), len(b.pkts)); i < len(b.pkts); i++ {
			failed(b.kids[i], err)
		}
		return
	}
	for i, p := range b.pkts {
		if err := e.sender.SendESP(p, b.dsts[i]); err != nil {
			failed(b.kids[i], err)
		}
	}
}

// outbound seals one packet of n bytes at buf[esp.MaxHeadroom:] in place
// and adds it to b.
func (e *Engine) outbound(b *outBatch, buf []byte, n int) {
	pkt := buf[esp.MaxHeadroom : esp.MaxHeadroom+n]
	f, ok := parseFlow(pkt)
	if !ok {
		e.malformed.Add(1)
		return
	}
	ch := e.lookupCached(b.cache, &f)
	if ch == nil {
		e.noPolicy.Add(1)
		return
	}
	seq := ch.outSeq.Add(1)
	if seq > math.MaxUint32 {
		ch.mu.Lock()
		fire := !ch.hardSent
		ch.hardSent, ch.softSent = true, true
		ch.hard.Store(true)
		ch.mu.Unlock()
		if fire {
			e.log.Warn("outbound sequence numbers exhausted", "spi_in", spiHex(ch.rec.ID()))
			e.emit(xfrm.Expiry{SPI: ch.rec.ID(), Hard: true})
		}
		return
	}
	next := byte(esp.NextIPv4)
	if f.version == 6 {
		next = esp.NextIPv6
	}
	off := esp.MaxHeadroom - ch.out.PayloadOffset()
	sealed, err := ch.out.Seal(buf[off:off], n, uint32(seq), next)
	if err != nil {
		e.malformed.Add(1)
		return
	}
	ch.mu.Lock()
	ch.outBytes += uint64(n)
	ch.outPackets++
	ev, fire := ch.checkBytes()
	ch.mu.Unlock()
	if fire {
		e.emit(ev)
	}
	b.pkts = append(b.pkts, sealed)
	b.dsts = append(b.dsts, ch.dst)
	b.kids = append(b.kids, ch)
}

// HandleInbound takes one ESP-in-UDP payload (starting at the SPI, see
// IsESP) received from the IKE socket. It decrypts pkt in place (the caller
// must not use pkt afterwards; it is not retained) and writes the inner
// packet to the TUN device when the SA, the anti-replay window, the ICV and
// the inner policy all accept it. from is used in logs only: a peer's NAT
// mapping change is the IKE runtime's to handle (by reinstalling the pair).
// Safe for concurrent use.
func (e *Engine) HandleInbound(pkt []byte, from netip.AddrPort) {
	if p := e.open(pkt, from); p != nil {
		e.in.put(p)
	}
}

// HandleInboundBatch is HandleInbound for the packets of one socket read
// (recvmmsg); the accepted inner packets go to the device writer together.
func (e *Engine) HandleInboundBatch(pkts [][]byte, from []netip.AddrPort) {
	var stack [64][]byte // the runtime reads at most 64 datagrams at once
	out := stack[:0]
	for i, p := range pkts {
		if q := e.open(p, from[i]); q != nil {
			out = append(out, q)
		}
	}
	e.in.put(out...)
}

// open checks and decrypts one inbound ESP packet in place and returns the
// inner packet to deliver, or nil (counted) when it must be dropped.
func (e *Engine) open(pkt []byte, from netip.AddrPort) []byte {
	spi, seq, err := esp.ParseHeader(pkt)
	if err != nil {
		e.malformed.Add(1)
		return nil
	}
	e.mu.RLock()
	ch := e.children[spi]
	e.mu.RUnlock()
	if ch == nil || ch.hard.Load() {
		e.noSA.Add(1)
		if e.debugOn() {
			e.log.Debug("ESP for unknown SPI", "spi", spiHex(spi), "from", from)
		}
		return nil
	}
	ch.mu.Lock()
	r := ch.replay.Check(uint64(seq))
	if r != replay.OK {
		ch.replayDrops++
	}
	ch.mu.Unlock()
	if r != replay.OK {
		if e.debugOn() {
			e.log.Debug("ESP replay", "spi", spiHex(spi), "seq", seq, "verdict", r.String(), "from", from)
		}
		return nil
	}
	payload, next, err := ch.in.Open(pkt)
	if err != nil {
		if errors.Is(err, esp.ErrAuth) {
			ch.mu.Lock()
			ch.authFailures++
			ch.mu.Unlock()
		} else {
			e.malformed.Add(1)
		}
		if e.debugOn() {
			e.log.Debug("ESP refused", "spi", spiHex(spi), "seq", seq, "from", from, "err", err)
		}
		return nil
	}
	ch.mu.Lock()
	r = ch.replay.Accept(uint64(seq))
	var ev xfrm.Expiry
	var fire bool
	if r == replay.OK {
		ch.inBytes += uint64(len(payload))
		ch.inPackets++
		ev, fire = ch.checkBytes()
	} else {
		ch.replayDrops++ // raced with a copy of itself
	}
	ch.mu.Unlock()
	if fire {
		e.emit(ev)
	}
	if r != replay.OK || next == esp.NextNoHeader {
		return nil
	}
	f, ok := parseFlow(payload)
	if !ok || (next == esp.NextIPv4) != (f.version == 4) || (next != esp.NextIPv4 && next != esp.NextIPv6) ||
		!matchTS(ch.rec.RemoteTS, f.src, f.proto, f.sport, f.hasPorts) ||
		!matchTS(ch.rec.LocalTS, f.dst, f.proto, f.dport, f.hasPorts) {
		ch.mu.Lock()
		ch.polDrops++
		ch.mu.Unlock()
		if e.debugOn() {
			e.log.Debug("inner packet outside the policy", "spi", spiHex(spi), "next_header", next)
		}
		return nil
	}
	return payload
}
