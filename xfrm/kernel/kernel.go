package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

var _ xfrm.DataPlane = (*DataPlane)(nil)

// Defaults of Config.
const (
	DefaultReqidBase      = 0x69670000 // "ig": far above strongSwan's and libreswan's small reqids
	DefaultReqidSpan      = 1 << 16
	DefaultReplayWindow   = 32
	DefaultPolicyPriority = 0x10000
	DefaultExpiryBuffer   = 256
)

// Config configures a kernel DataPlane. The zero value works in the
// current network namespace with the defaults above.
type Config struct {
	// NetNS is the path of the network namespace to work in (for example
	// /run/netns/NAME or /proc/PID/ns/net); "" is the caller's namespace.
	NetNS string
	// ReqidBase and ReqidSpan define the kernel reqids this node owns:
	// a pair with sa.ChildSA.Reqid r is installed with kernel reqid
	// ReqidBase+r, and r must be below ReqidSpan. Flush removes exactly the
	// SAs, and the policies whose templates, carry a reqid in
	// [ReqidBase, ReqidBase+ReqidSpan). ReqidBase must not be 0 (reqid 0
	// means "any" to the kernel).
	ReqidBase, ReqidSpan uint32
	// ReplayWindow is the inbound anti-replay window in packets, 1..32
	// (non-ESN SAs use the kernel's 32-bit bitmap).
	ReplayWindow int
	// PolicyPriority is the priority of the least specific policy; more
	// specific selectors get smaller numbers (higher priority).
	PolicyPriority uint32
	// Window is how many netlink requests are sent before their answers are
	// read (see InstallChildren). 1 sends each request and waits for its
	// answer. Default 64.
	Window int
	// ExpiryBuffer is the capacity of the Expiries channel.
	ExpiryBuffer int
	// Logger receives one line per notable event; nil uses slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.ReqidBase == 0 && c.ReqidSpan == 0 {
		c.ReqidBase, c.ReqidSpan = DefaultReqidBase, DefaultReqidSpan
	}
	if c.ReqidBase == 0 {
		return errors.New("xfrm/kernel: config: ReqidBase 0 is the kernel's wildcard reqid")
	}
	if c.ReqidSpan == 0 || uint64(c.ReqidBase)+uint64(c.ReqidSpan) > math.MaxUint32+1 {
		return fmt.Errorf("xfrm/kernel: config: reqid range base %d span %d is empty or overflows 32 bits", c.ReqidBase, c.ReqidSpan)
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = DefaultReplayWindow
	}
	if c.ReplayWindow < 1 || c.ReplayWindow > 32 {
		return fmt.Errorf("xfrm/kernel: config: ReplayWindow %d outside 1..32", c.ReplayWindow)
	}
	if c.PolicyPriority == 0 {
		c.PolicyPriority = DefaultPolicyPriority
	}
	if c.PolicyPriority < 2048 {
		return fmt.Errorf("xfrm/kernel: config: PolicyPriority %d below 2048 leaves no room for specificity", c.PolicyPriority)
	}
	if c.Window < 0 {
		return fmt.Errorf("xfrm/kernel: config: Window %d is negative", c.Window)
	}
	if c.ExpiryBuffer <= 0 {
		c.ExpiryBuffer = DefaultExpiryBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// DataPlane is the Linux XFRM data plane. See the package documentation.
type DataPlane struct {
	cfg Config
	log *slog.Logger
	ns  netns.NsHandle

	mu       sync.Mutex
	closed   bool
	c        *conn
	pairs    map[uint32]*pair // by inbound SPI
	byState  map[saID]*pair   // both SAs of every pair
	policies map[policyKey]*policyEntry

	expiries chan xfrm.Expiry
	mon      *nl.NetlinkSocket
	monDone  chan struct{}
}

// pair is an installed SA pair.
type pair struct {
	child    *sa.ChildSA // deep copy, for the idempotence check
	in, out  saID
	reqid    uint32 // kernel reqid
	policies []policySpec
	last     sa.Counters // last counters read (reported after a hard expiry)
	soft     bool        // soft expiry delivered
	hard     bool        // hard expiry seen: the kernel removed the SAs
	// staged: installed by StageChildren, without policies (and so never
	// used to send) until activated.
	staged bool
}

// policyEntry is a policy this data plane installed, with the pairs using
// it in install order. The kernel policy points at the template of the
// last user.
type policyEntry struct {
	spec  policySpec
	users []*pair
}

// New opens a data plane in cfg.NetNS and starts its expiry monitor.
func New(ctx context.Context, cfg Config) (*DataPlane, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ns := netns.None()
	if cfg.NetNS != "" {
		h, err := netns.GetFromPath(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("xfrm/kernel: open network namespace %s: %w", cfg.NetNS, err)
		}
		ns = h
	}
	d := &DataPlane{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "xfrm/kernel"),
		ns:       ns,
		pairs:    make(map[uint32]*pair),
		byState:  make(map[saID]*pair),
		policies: make(map[policyKey]*policyEntry),
		expiries: make(chan xfrm.Expiry, cfg.ExpiryBuffer),
		monDone:  make(chan struct{}),
	}
	c, err := dial(ns, cfg.Window)
	if err != nil {
		d.closeNS()
		return nil, err
	}
	d.c = c
	mon, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_XFRM, nl.XFRMNLGRP_EXPIRE)
	if err != nil {
		c.close()
		d.closeNS()
		return nil, fmt.Errorf("xfrm/kernel: subscribe to XFRM expire events: %w", err)
	}
	d.mon = mon
	go d.monitor()
	return d, nil
}

func (d *DataPlane) closeNS() {
	if d.ns.IsOpen() {
		d.ns.Close()
	}
}

// Kind returns xfrm.KindKernel.
func (d *DataPlane) Kind() string { return xfrm.KindKernel }

// Close stops the expiry monitor, closes the sockets and the Expiries
// channel. Installed SAs and policies stay in the kernel.
func (d *DataPlane) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.c.close()
	d.mu.Unlock()
	d.mon.Close()
	<-d.monDone
	close(d.expiries)
	d.closeNS()
	return nil
}

// Expiries returns the channel of lifetime events. See xfrm.DataPlane.
func (d *DataPlane) Expiries() <-chan xfrm.Expiry { return d.expiries }

func (d *DataPlane) lock() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return xfrm.ErrClosed
	}
	return nil
}

// InstallChild installs one pair. See xfrm.DataPlane.
func (d *DataPlane) InstallChild(ctx context.Context, c *sa.ChildSA) error {
	return d.InstallChildren(ctx, []*sa.ChildSA{c})
}

// InstallChildren installs many pairs with pipelined netlink requests
// (Config.Window of them per send); a takeover does the same in two steps
// (StageChildren, ActivateChildren). Each pair behaves as in InstallChild
// (a staged pair is activated); the error joins one error per pair that
// failed (each names the pair's inbound SPI), and the pairs that succeeded
// stay installed.
func (d *DataPlane) InstallChildren(ctx context.Context, cs []*sa.ChildSA) error {
	todo, errs := d.prepareAll(cs, "InstallChildren")
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	var fresh []*pair
	var raises []raise
	var activate []activation
	for _, p := range todo {
		if old := d.pairs[p.in.spi]; old != nil {
			if !xfrm.SamePair(old.child, p.child) {
				errs = append(errs, fmt.Errorf("%w: pair spi=0x%08x is installed with different parameters", xfrm.ErrConflict, p.in.spi))
				continue
			}
			if old.staged {
				activate = append(activate, activation{old, p.child.Counters})
				continue
			}
			raises = append(raises, raise{old, p.child.Counters.OutSeq})
			continue
		}
		if err := d.stateTaken(p); err != nil {
			errs = append(errs, err)
			continue
		}
		fresh = append(fresh, p)
	}
	errs = append(errs, d.raiseOutSeqs(ctx, raises)...)
	errs = append(errs, d.activateStaged(ctx, activate)...)
	errs = append(errs, d.installFresh(ctx, fresh, true)...)
	return errors.Join(errs...)
}

// prepareAll prepares the pairs of one call (named in errors), refusing a
// pair whose SPI an earlier pair of the same call uses.
func (d *DataPlane) prepareAll(cs []*sa.ChildSA, call string) ([]*pair, []error) {
	var errs []error
	var todo []*pair
	seen := make(map[saID]bool)
	for _, c := range cs {
		p, err := d.prepare(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[p.in] || seen[p.out] {
			errs = append(errs, fmt.Errorf("%w: pair spi=0x%08x: SPI given twice in one %s call", xfrm.ErrConflict, p.in.spi, call))
			continue
		}
		seen[p.in], seen[p.out] = true, true
		todo = append(todo, p)
	}
	return todo, errs
}

// stateTaken refuses a new pair one of whose SAs belongs to another pair
// (d.mu held).
func (d *DataPlane) stateTaken(p *pair) error {
	if other := d.byState[p.in]; other != nil {
		return fmt.Errorf("%w: pair spi=0x%08x: inbound SA %s belongs to pair spi=0x%08x", xfrm.ErrConflict, p.in.spi, p.in, other.in.spi)
	}
	if other := d.byState[p.out]; other != nil {
		return fmt.Errorf("%w: pair spi=0x%08x: outbound SA %s belongs to pair spi=0x%08x", xfrm.ErrConflict, p.in.spi, p.out, other.in.spi)
	}
	return nil
}

var _ xfrm.Stager = (*DataPlane)(nil)

// ActivateChildren implements xfrm.Stager: InstallChildren, which
// activates staged pairs (counters moved forward with XFRM_MSG_NEWAE where
// the record is ahead, then their policies, pipelined).
func (d *DataPlane) ActivateChildren(ctx context.Context, cs []*sa.ChildSA) error {
	return d.InstallChildren(ctx, cs)
}

// StageChildren implements xfrm.Stager: both SAs of every pair, pipelined,
// and no policy (the kernel selects an SA for a packet only through a
// policy's template, so a staged pair encrypts nothing; its inbound SA
// decrypts ESP that reaches it).
func (d *DataPlane) StageChildren(ctx context.Context, cs []*sa.ChildSA) error {
	todo, errs := d.prepareAll(cs, "StageChildren")
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	var fresh []*pair
	for _, p := range todo {
		if old := d.pairs[p.in.spi]; old != nil {
			if !xfrm.SamePair(old.child, p.child) {
				errs = append(errs, fmt.Errorf("%w: pair spi=0x%08x is installed with different parameters", xfrm.ErrConflict, p.in.spi))
			}
			continue
		}
		if err := d.stateTaken(p); err != nil {
			errs = append(errs, err)
			continue
		}
		fresh = append(fresh, p)
	}
	errs = append(errs, d.installFresh(ctx, fresh, false)...)
	return errors.Join(errs...)
}

// activation moves a staged pair forward to counters and installs its
// policies.
type activation struct {
	p        *pair
	counters sa.Counters
}

// ahead reports whether c holds anything beyond s (the counters a pair was
// staged with): only then can the live SAs be behind c, because a staged
// pair sends nothing and its inbound counters only grow from s.
func ahead(c, s *sa.Counters) bool {
	return c.OutSeq > s.OutSeq || c.InSeq > s.InSeq || c.InBytes > s.InBytes || c.InPackets > s.InPackets ||
		c.OutBytes > s.OutBytes || c.OutPackets > s.OutPackets
}

// activateStaged moves staged pairs' counters forward (pipelined GETAE of
// both SAs of the pairs whose record is ahead of what they were staged
// with, then NEWAE where the live value is behind; never back), then
// installs their policies. A pair that fails stays staged.
func (d *DataPlane) activateStaged(ctx context.Context, as []activation) []error {
	if len(as) == 0 {
		return nil
	}
	var errs []error
	failed := make(map[*pair]bool)
	var moving []activation
	var gets []request
	for _, a := range as {
		if a.counters.OutSeq >= math.MaxUint32 || a.counters.InSeq > math.MaxUint32 {
			errs = append(errs, fmt.Errorf("%w: pair spi=0x%08x: sequence numbers out %d / in %d need extended sequence numbers (ESN)",
				xfrm.ErrUnsupported, a.p.in.spi, a.counters.OutSeq, a.counters.InSeq))
			failed[a.p] = true
			continue
		}
		if !ahead(&a.counters, &a.p.child.Counters) {
			continue
		}
		moving = append(moving, a)
		gets = append(gets,
			request{typ: nl.XFRM_MSG_GETAE, body: a.p.in.aeventID(a.p.child.In.Src, aeRVal|aeLVal, 0), reply: true, op: "read counters of SA " + a.p.in.String()},
			request{typ: nl.XFRM_MSG_GETAE, body: a.p.out.aeventID(a.p.child.Out.Src, aeRVal|aeLVal, 0), reply: true, op: "read counters of SA " + a.p.out.String()})
	}
	res := d.c.exchange(ctx, gets)
	var sets []request
	var setOwner []*pair
	for i, a := range moving {
		rin, rout := res[2*i], res[2*i+1]
		evIn, err1 := parseAevent(rin.body)
		evOut, err2 := parseAevent(rout.body)
		if err := errors.Join(rin.err, rout.err); err != nil || err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("xfrm/kernel: activating pair spi=0x%08x: %w", a.p.in.spi, errors.Join(err, err1, err2)))
			failed[a.p] = true
			continue
		}
		c := a.counters
		if in, changed := forwardIn(evIn, c); changed {
			sets = append(sets, request{typ: nl.XFRM_MSG_NEWAE, flags: unix.NLM_F_REPLACE,
				body: a.p.in.newAEWith(a.p.child.In.Src, a.p.reqid, in.replay, in.ltime), op: "move counters of SA " + a.p.in.String() + " forward"})
			setOwner = append(setOwner, a.p)
		}
		if out, changed := forwardOut(evOut, c); changed {
			sets = append(sets, request{typ: nl.XFRM_MSG_NEWAE, flags: unix.NLM_F_REPLACE,
				body: a.p.out.newAEWith(a.p.child.Out.Src, a.p.reqid, out.replay, out.ltime), op: "move counters of SA " + a.p.out.String() + " forward"})
			setOwner = append(setOwner, a.p)
		}
	}
	for i, r := range d.c.exchange(ctx, sets) {
		if r.err != nil && !failed[setOwner[i]] {
			errs = append(errs, fmt.Errorf("pair spi=0x%08x: %w", setOwner[i].in.spi, r.err))
			failed[setOwner[i]] = true
		}
	}
	var ps []*pair
	for _, a := range as {
		if !failed[a.p] {
			ps = append(ps, a.p)
		}
	}
	return append(errs, d.addPolicies(ctx, ps, nil)...)
}

// forwardIn is the inbound SA's state moved forward to c: the replay window
// replaced when c's is ahead, byte and packet counters raised.
func forwardIn(ev aevent, c sa.Counters) (aevent, bool) {
	changed := false
	if c.InSeq > uint64(ev.replay.Seq) {
		ev.replay.Seq, ev.replay.BitMap = uint32(c.InSeq), restoreBitmap(c)
		changed = true
	}
	if c.InBytes > ev.ltime.Bytes || c.InPackets > ev.ltime.Packets {
		ev.ltime.Bytes, ev.ltime.Packets = max(ev.ltime.Bytes, c.InBytes), max(ev.ltime.Packets, c.InPackets)
		changed = true
	}
	return ev, changed
}

// forwardOut is the outbound SA's state moved forward to c.
func forwardOut(ev aevent, c sa.Counters) (aevent, bool) {
	changed := false
	if c.OutSeq > uint64(ev.replay.OSeq) {
		ev.replay.OSeq = uint32(c.OutSeq)
		changed = true
	}
	if c.OutBytes > ev.ltime.Bytes || c.OutPackets > ev.ltime.Packets {
		ev.ltime.Bytes, ev.ltime.Packets = max(ev.ltime.Bytes, c.OutBytes), max(ev.ltime.Packets, c.OutPackets)
		changed = true
	}
	return ev, changed
}

// prepare validates c and builds its pair without touching the kernel.
func (d *DataPlane) prepare(c *sa.ChildSA) (*pair, error) {
	if err := xfrm.Validate(c); err != nil {
		return nil, err
	}
	unsupported := func(format string, args ...any) error {
		return fmt.Errorf("%w: pair spi=0x%08x: %s", xfrm.ErrUnsupported, c.In.SPI, fmt.Sprintf(format, args...))
	}
	if c.Reqid >= d.cfg.ReqidSpan {
		return nil, unsupported("reqid %d outside this node's range 0..%d", c.Reqid, d.cfg.ReqidSpan-1)
	}
	if c.Counters.OutSeq >= math.MaxUint32 || c.Counters.InSeq > math.MaxUint32 {
		return nil, unsupported("sequence numbers out %d / in %d need extended sequence numbers (ESN), which this data plane does not install", c.Counters.OutSeq, c.Counters.InSeq)
	}
	cp := cloneChild(c)
	p := &pair{
		child: cp,
		in:    saID{dst: c.In.Dst, spi: c.In.SPI},
		out:   saID{dst: c.Out.Dst, spi: c.Out.SPI},
		reqid: d.cfg.ReqidBase + c.Reqid,
	}
	pols, err := d.policiesFor(cp, p.reqid)
	if err != nil {
		return nil, err
	}
	p.policies = pols
	return p, nil
}

func cloneChild(c *sa.ChildSA) *sa.ChildSA {
	cp := *c
	cp.In.EncrKey = slices.Clone(c.In.EncrKey)
	cp.In.IntegKey = slices.Clone(c.In.IntegKey)
	cp.Out.EncrKey = slices.Clone(c.Out.EncrKey)
	cp.Out.IntegKey = slices.Clone(c.Out.IntegKey)
	cp.LocalTS = slices.Clone(c.LocalTS)
	cp.RemoteTS = slices.Clone(c.RemoteTS)
	cp.Counters.ReplayBitmap = slices.Clone(c.Counters.ReplayBitmap)
	return &cp
}

// policiesFor builds the policies of a pair: for every local x remote
// selector pair of one address family, out (local->remote), in and, in
// tunnel mode, fwd (remote->local).
func (d *DataPlane) policiesFor(c *sa.ChildSA, reqid uint32) ([]policySpec, error) {
	var out []policySpec
	mode := uint8(modeTunnel)
	if c.Mode == sa.Transport {
		mode = modeTransport
	}
	outT := tmplSpec{src: c.Out.Src, dst: c.Out.Dst, family: family(c.Out.Dst), reqid: reqid, mode: mode}
	inT := tmplSpec{src: c.In.Src, dst: c.In.Dst, family: family(c.In.Dst), reqid: reqid, mode: mode}
	if mode == modeTransport {
		outT.src, outT.dst, inT.src, inT.dst = netip.Addr{}, netip.Addr{}, netip.Addr{}, netip.Addr{}
	}
	for _, l := range c.LocalTS {
		for _, r := range c.RemoteTS {
			if l.Prefix.Addr().Is4() != r.Prefix.Addr().Is4() {
				continue
			}
			proto := l.Protocol
			if proto == 0 {
				proto = r.Protocol
			} else if r.Protocol != 0 && r.Protocol != proto {
				return nil, fmt.Errorf("%w: pair spi=0x%08x: selectors %s proto %d and %s proto %d have different protocols",
					xfrm.ErrUnsupported, c.In.SPI, l.Prefix, l.Protocol, r.Prefix, r.Protocol)
			}
			prio := d.priority(l, r, proto)
			out = append(out, policySpec{sel: selector(l.Prefix, r.Prefix, proto, l.Port, r.Port), dir: policyOut, priority: prio, tmpl: outT})
			in := selector(r.Prefix, l.Prefix, proto, r.Port, l.Port)
			out = append(out, policySpec{sel: in, dir: policyIn, priority: prio, tmpl: inT})
			if mode == modeTunnel {
				out = append(out, policySpec{sel: in, dir: policyFwd, priority: prio, tmpl: inT})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: pair spi=0x%08x: no local and remote selector of the same address family", xfrm.ErrUnsupported, c.In.SPI)
	}
	return out, nil
}

// priority ranks more specific selectors first (smaller is stronger).
func (d *DataPlane) priority(l, r sa.TrafficSelector, proto uint8) uint32 {
	spec := uint32(l.Prefix.Bits()+r.Prefix.Bits()) * 4
	if proto != 0 {
		spec += 2
	}
	if l.Port != 0 || r.Port != 0 {
		spec++
	}
	return d.cfg.PolicyPriority - spec
}

// states builds the two SAs of a pair.
func (d *DataPlane) states(p *pair) (in, out *stateSpec) {
	c := p.child
	mk := func(dir *sa.SADir) *stateSpec {
		s := &stateSpec{src: dir.Src, dst: dir.Dst, spi: dir.SPI, reqid: p.reqid, mode: modeTunnel,
			encr: dir.Encr, encrKey: dir.EncrKey, integ: dir.Integ, integKey: dir.IntegKey, truncBits: uint32(dir.TruncBits)}
		if c.Mode == sa.Transport {
			s.mode = modeTransport
		}
		if dir.Encr == sa.EncrAESGCM {
			s.aead = true
			if s.truncBits == 0 {
				s.truncBits = 128
			}
		} else if s.truncBits == 0 {
			_, t := xfrm.IntegParams(dir.Integ)
			s.truncBits = uint32(t)
		}
		s.lft = nl.XfrmLifetimeCfg{
			SoftByteLimit: limit(c.Lifetime.SoftBytes), HardByteLimit: limit(c.Lifetime.HardBytes),
			SoftPacketLimit: xfrmInf, HardPacketLimit: xfrmInf,
			SoftAddExpiresSeconds: c.Lifetime.SoftSeconds, HardAddExpiresSeconds: c.Lifetime.HardSeconds,
		}
		// Time lifetimes count from the pair's establishment, as on the
		// peer, not from this install.
		added := time.Now().Unix()
		if c.Established > 0 {
			added = c.Established / int64(time.Second)
		}
		s.ltime.AddTime = uint64(added)
		return s
	}
	in, out = mk(&c.In), mk(&c.Out)
	if c.EncapLocalPort != 0 {
		out.encapSport, out.encapDport = c.EncapLocalPort, c.EncapRemotePort
		in.encapSport, in.encapDport = c.EncapRemotePort, c.EncapLocalPort
	}
	in.window = uint8(d.cfg.ReplayWindow)
	in.replay = nl.XfrmReplayState{Seq: uint32(c.Counters.InSeq), BitMap: restoreBitmap(c.Counters)}
	in.ltime.Bytes, in.ltime.Packets = c.Counters.InBytes, c.Counters.InPackets
	out.replay = nl.XfrmReplayState{OSeq: uint32(c.Counters.OutSeq)}
	out.ltime.Bytes, out.ltime.Packets = c.Counters.OutBytes, c.Counters.OutPackets
	return in, out
}

func limit(v uint64) uint64 {
	if v == 0 {
		return xfrmInf
	}
	return v
}

// restoreBitmap turns the shared replay layout (xfrm package doc) into the
// kernel's 32-bit non-ESN bitmap: bit d is InSeq-d. Without a bitmap every
// position counts as received, so a restore never accepts a replay.
func restoreBitmap(c sa.Counters) uint32 {
	if c.InSeq == 0 {
		return 0
	}
	if len(c.ReplayBitmap) == 0 {
		return math.MaxUint32
	}
	return uint32(c.ReplayBitmap[0])
}

// exportBitmap is the reverse: the kernel's 32 bits, and the positions
// beyond its window marked as received (they are too old for it anyway).
func exportBitmap(seq, bitmap uint32) []uint64 {
	if seq == 0 {
		return nil
	}
	return []uint64{uint64(bitmap) | 0xffffffff00000000}
}

// installFresh installs pairs none of whose SAs this data plane knows:
// both SAs of every pair pipelined, failures sorted out pair by pair (an SA
// that already exists is examined and taken over when it is ours, refused
// when it is not) and rolled back; then, withPolicies, the policies
// (addPolicies), otherwise the pairs stay staged.
func (d *DataPlane) installFresh(ctx context.Context, ps []*pair, withPolicies bool) []error {
	if len(ps) == 0 {
		return nil
	}
	var reqs []request
	for _, p := range ps {
		in, out := d.states(p)
		reqs = append(reqs,
			request{typ: nl.XFRM_MSG_NEWSA, flags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, body: in.newSA(), op: "add inbound SA " + p.in.String()},
			request{typ: nl.XFRM_MSG_NEWSA, flags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, body: out.newSA(), op: "add outbound SA " + p.out.String()})
	}
	res := d.c.exchange(ctx, reqs)
	for i := range reqs {
		clear(reqs[i].body)
	}
	failed := make(map[*pair]error)
	created := make(map[*pair][]saID)
	for i, p := range ps {
		for j, id := range []saID{p.in, p.out} {
			err := res[2*i+j].err
			if errors.Is(err, unix.EEXIST) {
				err = d.takeOverState(ctx, p, j == 0)
			}
			if err != nil {
				if failed[p] == nil {
					failed[p] = err
				}
				continue
			}
			created[p] = append(created[p], id)
		}
	}
	var errs []error
	var ok []*pair
	for _, p := range ps {
		if err := failed[p]; err != nil {
			errs = append(errs, fmt.Errorf("pair spi=0x%08x: %w", p.in.spi, err))
			continue
		}
		p.staged = true
		d.pairs[p.in.spi] = p
		d.byState[p.in], d.byState[p.out] = p, p
		ok = append(ok, p)
	}
	if withPolicies {
		errs = append(errs, d.addPolicies(ctx, ok, failed)...)
	}
	var undo []request
	for p := range failed {
		for _, id := range created[p] {
			undo = append(undo, request{typ: nl.XFRM_MSG_DELSA, body: id.usersaID(), op: "roll back SA " + id.String()})
		}
	}
	res = d.c.exchange(context.WithoutCancel(ctx), undo)
	for i, r := range res {
		if r.err != nil && !notFound(r.err) {
			d.log.Warn("rollback of a failed install left an SA", "op", undo[i].op, "err", r.err)
		}
	}
	return errs
}

// addPolicies installs the policies of staged pairs (pipelined, the ones
// not installed yet; an existing one is taken over when it is ours) and
// makes the pairs active. A pair whose policy cannot be installed stays
// staged; when rollback is not nil it is also forgotten and recorded there
// (its SAs are the caller's to delete). Policies nobody uses are removed
// and shared ones point at their newest user.
func (d *DataPlane) addPolicies(ctx context.Context, ps []*pair, rollback map[*pair]error) []error {
	if len(ps) == 0 {
		return nil
	}
	type polReq struct {
		p    *pair
		spec policySpec
	}
	var reqs []request
	var newPols []polReq
	planned := make(map[policyKey]bool)
	for _, p := range ps {
		for _, sp := range p.policies {
			k := sp.key()
			if d.policies[k] != nil || planned[k] {
				continue
			}
			planned[k] = true
			newPols = append(newPols, polReq{p: p, spec: sp})
			reqs = append(reqs, request{typ: nl.XFRM_MSG_NEWPOLICY, flags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, body: sp.encode(), op: "add " + k.String()})
		}
	}
	res := d.c.exchange(ctx, reqs)
	failed := make(map[*pair]error)
	for i, pr := range newPols {
		err := res[i].err
		if errors.Is(err, unix.EEXIST) {
			err = d.takeOverPolicy(ctx, pr.spec)
		}
		if err != nil {
			if failed[pr.p] == nil {
				failed[pr.p] = err
			}
			continue
		}
		d.policies[pr.spec.key()] = &policyEntry{spec: pr.spec}
	}
	// A pair whose policy could not be installed by an earlier pair of the
	// batch (it belongs to someone else) fails as well.
	for _, p := range ps {
		if failed[p] != nil {
			continue
		}
		for _, sp := range p.policies {
			if d.policies[sp.key()] == nil {
				failed[p] = fmt.Errorf("%w: %s is not this node's", xfrm.ErrConflict, sp.key())
				break
			}
		}
	}
	var errs []error
	for _, p := range ps {
		if err := failed[p]; err != nil {
			errs = append(errs, fmt.Errorf("pair spi=0x%08x: %w", p.in.spi, err))
			if rollback != nil {
				rollback[p] = err
				d.forget(p)
			}
			continue
		}
		p.staged = false
		for _, sp := range p.policies {
			e := d.policies[sp.key()]
			e.users = append(e.users, p)
		}
	}
	return append(errs, d.syncPolicies(ctx, polKeys(ps))...)
}

func polKeys(ps []*pair) []policyKey {
	var ks []policyKey
	seen := make(map[policyKey]bool)
	for _, p := range ps {
		for _, sp := range p.policies {
			if k := sp.key(); !seen[k] {
				seen[k] = true
				ks = append(ks, k)
			}
		}
	}
	return ks
}

// syncPolicies makes the kernel policies for keys match the registry: a
// policy without users is deleted, one whose newest user has another
// template is updated to it.
func (d *DataPlane) syncPolicies(ctx context.Context, keys []policyKey) []error {
	var reqs []request
	var ents []*policyEntry
	for _, k := range keys {
		e := d.policies[k]
		if e == nil {
			continue
		}
		if len(e.users) == 0 {
			delete(d.policies, k)
			reqs = append(reqs, request{typ: nl.XFRM_MSG_DELPOLICY, body: k.encodeID(), op: "delete " + k.String()})
			ents = append(ents, nil)
			continue
		}
		var want policySpec
		last := e.users[len(e.users)-1]
		for _, sp := range last.policies {
			if sp.key() == k {
				want = sp
			}
		}
		if want != e.spec {
			e.spec = want
			reqs = append(reqs, request{typ: nl.XFRM_MSG_UPDPOLICY, body: want.encode(), op: "update " + k.String()})
			ents = append(ents, e)
		}
	}
	var errs []error
	for i, r := range d.c.exchange(context.WithoutCancel(ctx), reqs) {
		if r.err != nil && !(ents[i] == nil && notFound(r.err)) {
			errs = append(errs, r.err)
		}
	}
	return errs
}

// takeOverState handles an SA of a fresh pair that already exists in the
// kernel. One of ours (a reqid in our range: left by an earlier process)
// is replaced, keeping whichever is further of its sequence or replay state
// and the record's, and the higher traffic counters; anything else is a
// conflict.
func (d *DataPlane) takeOverState(ctx context.Context, p *pair, inbound bool) error {
	id, src := p.out, p.child.Out.Src
	spec := 1
	if inbound {
		id, src, spec = p.in, p.child.In.Src, 0
	}
	ev, err := d.getAE(ctx, id, src)
	if err != nil {
		return fmt.Errorf("%w: SA %s exists and cannot be read: %v", xfrm.ErrConflict, id, err)
	}
	if !d.owns(ev.reqid) {
		return fmt.Errorf("%w: SA %s exists with reqid %d, outside this node's range", xfrm.ErrConflict, id, ev.reqid)
	}
	in, out := d.states(p)
	st := in
	if spec == 1 {
		st = out
		if ev.replay.OSeq > st.replay.OSeq {
			st.replay.OSeq = ev.replay.OSeq
		}
	} else if ev.replay.Seq > st.replay.Seq {
		// The leftover has seen more: keep its window, so nothing it
		// accepted is accepted again.
		st.replay.Seq, st.replay.BitMap = ev.replay.Seq, ev.replay.BitMap
	}
	st.ltime.Bytes = max(st.ltime.Bytes, ev.ltime.Bytes)
	st.ltime.Packets = max(st.ltime.Packets, ev.ltime.Packets)
	d.log.Info("replacing an SA left by an earlier run", "sa", id.String(), "reqid", ev.reqid)
	res := d.c.exchange(ctx, []request{
		{typ: nl.XFRM_MSG_DELSA, body: id.usersaID(), op: "delete stale SA " + id.String()},
		{typ: nl.XFRM_MSG_NEWSA, flags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, body: st.newSA(), op: "add SA " + id.String()},
	})
	if res[0].err != nil && !notFound(res[0].err) {
		return res[0].err
	}
	return res[1].err
}

// takeOverPolicy handles a policy that already exists: ours (all templates
// in our reqid range) is updated, anything else is a conflict.
func (d *DataPlane) takeOverPolicy(ctx context.Context, sp policySpec) error {
	k := sp.key()
	res := d.c.exchange(ctx, []request{{typ: nl.XFRM_MSG_GETPOLICY, body: k.encodeID(), reply: true, op: "get " + k.String()}})
	if res[0].err != nil {
		return fmt.Errorf("%w: %s exists and cannot be read: %v", xfrm.ErrConflict, k, res[0].err)
	}
	pi, err := parsePolicy(res[0].body)
	if err != nil {
		return fmt.Errorf("xfrm/kernel: %s: %w", k, err)
	}
	if !d.ownsPolicy(pi) {
		return fmt.Errorf("%w: %s exists and is not this node's (template reqids %v)", xfrm.ErrConflict, k, pi.reqids)
	}
	res = d.c.exchange(ctx, []request{{typ: nl.XFRM_MSG_UPDPOLICY, body: sp.encode(), op: "update " + k.String()}})
	return res[0].err
}

func (d *DataPlane) owns(reqid uint32) bool {
	return reqid >= d.cfg.ReqidBase && uint64(reqid) < uint64(d.cfg.ReqidBase)+uint64(d.cfg.ReqidSpan)
}

func (d *DataPlane) ownsPolicy(p *policyInfo) bool {
	if len(p.reqids) == 0 || p.mark != nil {
		return false
	}
	for _, r := range p.reqids {
		if !d.owns(r) {
			return false
		}
	}
	return true
}

func notFound(err error) bool { return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) }

// getAE reads the replay state and counters of one SA (XFRM_MSG_GETAE).
func (d *DataPlane) getAE(ctx context.Context, id saID, src netip.Addr) (aevent, error) {
	res := d.c.exchange(ctx, []request{{typ: nl.XFRM_MSG_GETAE, body: id.aeventID(src, aeRVal|aeLVal, 0), reply: true, op: "read counters of SA " + id.String()}})
	if res[0].err != nil {
		return aevent{}, res[0].err
	}
	ev, err := parseAevent(res[0].body)
	if err != nil {
		return ev, fmt.Errorf("xfrm/kernel: read counters of SA %s: %w", id, err)
	}
	return ev, nil
}

// raise asks for the outbound sequence number of an installed pair to be
// at least seq.
type raise struct {
	p   *pair
	seq uint64
}

// raiseOutSeqs lifts the outbound sequence numbers of installed pairs where
// they are lower (pipelined XFRM_MSG_GETAE, then XFRM_MSG_NEWAE for those
// behind); it never lowers one.
func (d *DataPlane) raiseOutSeqs(ctx context.Context, rs []raise) []error {
	var errs []error
	var live []raise
	var reqs []request
	for _, r := range rs {
		if r.p.hard {
			errs = append(errs, fmt.Errorf("xfrm/kernel: pair spi=0x%08x reached its hard lifetime; delete and install it anew", r.p.in.spi))
			continue
		}
		live = append(live, r)
		reqs = append(reqs, request{typ: nl.XFRM_MSG_GETAE, body: r.p.out.aeventID(r.p.child.Out.Src, aeRVal|aeLVal, 0), reply: true, op: "read counters of SA " + r.p.out.String()})
	}
	res := d.c.exchange(ctx, reqs)
	var sets []request
	type change struct {
		sa       string
		from, to uint64
	}
	var changes []change
	for i, r := range live {
		if res[i].err != nil {
			errs = append(errs, res[i].err)
			continue
		}
		ev, err := parseAevent(res[i].body)
		if err != nil {
			errs = append(errs, fmt.Errorf("xfrm/kernel: read counters of SA %s: %w", r.p.out, err))
			continue
		}
		if uint64(ev.replay.OSeq) >= r.seq {
			continue
		}
		rp := ev.replay
		rp.OSeq = uint32(r.seq)
		sets = append(sets, request{typ: nl.XFRM_MSG_NEWAE, flags: unix.NLM_F_REPLACE, body: r.p.out.newAE(r.p.child.Out.Src, r.p.reqid, rp),
			op: fmt.Sprintf("raise sequence number of SA %s from %d to %d", r.p.out, ev.replay.OSeq, r.seq)})
		changes = append(changes, change{r.p.out.String(), uint64(ev.replay.OSeq), r.seq})
	}
	for i, r := range d.c.exchange(ctx, sets) {
		if r.err != nil {
			errs = append(errs, r.err)
		} else {
			d.log.Info("raised outbound sequence number", "sa", changes[i].sa, "from", changes[i].from, "to", changes[i].to)
		}
	}
	return errs
}

// DeleteChild removes a pair and the policies no other pair uses. See
// xfrm.DataPlane. A pair this data plane did not install in this process
// is looked up in the kernel by its SPIs among the SAs in its reqid range.
func (d *DataPlane) DeleteChild(ctx context.Context, c *sa.ChildSA) error {
	if c == nil {
		return &xfrm.InvalidChildError{Field: "record", Problem: "nil"}
	}
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	p := d.pairs[c.In.SPI]
	if p == nil {
		return d.deleteUnknown(ctx, c)
	}
	res := d.c.exchange(ctx, []request{
		{typ: nl.XFRM_MSG_DELSA, body: p.in.usersaID(), op: "delete inbound SA " + p.in.String()},
		{typ: nl.XFRM_MSG_DELSA, body: p.out.usersaID(), op: "delete outbound SA " + p.out.String()},
	})
	var errs []error
	for _, r := range res {
		if r.err != nil && !notFound(r.err) {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	d.forget(p)
	return errors.Join(d.syncPolicies(ctx, polKeys([]*pair{p}))...)
}

func (d *DataPlane) forget(p *pair) {
	delete(d.pairs, p.in.spi)
	delete(d.byState, p.in)
	delete(d.byState, p.out)
	for _, sp := range p.policies {
		if e := d.policies[sp.key()]; e != nil {
			e.users = slices.DeleteFunc(e.users, func(q *pair) bool { return q == p })
		}
	}
}

// deleteUnknown deletes the SAs with c's SPIs in our reqid range, and our
// policies for c's selectors that no registered pair uses.
func (d *DataPlane) deleteUnknown(ctx context.Context, c *sa.ChildSA) error {
	states, err := d.dumpStates(ctx)
	if err != nil {
		return err
	}
	var reqs []request
	for _, st := range states {
		if (st.id.spi == c.In.SPI || st.id.spi == c.Out.SPI) && st.proto == unix.IPPROTO_ESP && d.owns(st.reqid) && st.mark == nil {
			reqs = append(reqs, request{typ: nl.XFRM_MSG_DELSA, body: st.id.usersaID(), op: "delete SA " + st.id.String()})
		}
	}
	pols, err := d.dumpPolicies(ctx)
	if err != nil {
		return err
	}
	want := make(map[policyKey]bool)
	tmp := cloneChild(c)
	for _, l := range tmp.LocalTS {
		for _, r := range tmp.RemoteTS {
			if l.Prefix.IsValid() && r.Prefix.IsValid() && l.Prefix.Addr().Is4() == r.Prefix.Addr().Is4() {
				proto := max(l.Protocol, r.Protocol)
				want[policyKey{sel: selector(l.Prefix, r.Prefix, proto, l.Port, r.Port), dir: policyOut}] = true
				in := selector(r.Prefix, l.Prefix, proto, r.Port, l.Port)
				want[policyKey{sel: in, dir: policyIn}] = true
				want[policyKey{sel: in, dir: policyFwd}] = true
			}
		}
	}
	for _, pi := range pols {
		if want[pi.key] && d.ownsPolicy(pi) && (d.policies[pi.key] == nil || len(d.policies[pi.key].users) == 0) {
			delete(d.policies, pi.key)
			reqs = append(reqs, request{typ: nl.XFRM_MSG_DELPOLICY, body: pi.key.encodeID(), op: "delete " + pi.key.String()})
		}
	}
	var errs []error
	for _, r := range d.c.exchange(ctx, reqs) {
		if r.err != nil && !notFound(r.err) {
			errs = append(errs, r.err)
		}
	}
	return errors.Join(errs...)
}

func (d *DataPlane) dumpStates(ctx context.Context) ([]*stateInfo, error) {
	bodies, err := d.c.dump(ctx, nl.XFRM_MSG_GETSA, nil, "list SAs") // the kernel parses a GETSA dump body as attributes
	if err != nil {
		return nil, err
	}
	out := make([]*stateInfo, 0, len(bodies))
	for _, b := range bodies {
		st, err := parseState(b)
		clear(b)
		if err != nil {
			return nil, fmt.Errorf("xfrm/kernel: list SAs: %w", err)
		}
		st.key = nil
		out = append(out, st)
	}
	return out, nil
}

func (d *DataPlane) dumpPolicies(ctx context.Context) ([]*policyInfo, error) {
	bodies, err := d.c.dump(ctx, nl.XFRM_MSG_GETPOLICY, make([]byte, nl.SizeofXfrmUserpolicyId), "list policies")
	if err != nil {
		return nil, err
	}
	out := make([]*policyInfo, 0, len(bodies))
	for _, b := range bodies {
		pi, err := parsePolicy(b)
		if err != nil {
			return nil, fmt.Errorf("xfrm/kernel: list policies: %w", err)
		}
		out = append(out, pi)
	}
	return out, nil
}

// Counters reads the live counters of every installed pair with pipelined
// XFRM_MSG_GETAE requests (two per pair). See xfrm.DataPlane. A pair whose
// SAs the kernel removed at a hard expiry reports the counters read last.
func (d *DataPlane) Counters(ctx context.Context) (map[uint32]sa.Counters, error) {
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	ps := make([]*pair, 0, len(d.pairs))
	var reqs []request
	for _, p := range d.pairs {
		ps = append(ps, p)
		reqs = append(reqs,
			request{typ: nl.XFRM_MSG_GETAE, body: p.in.aeventID(p.child.In.Src, aeRVal|aeLVal, 0), reply: true, op: "read counters of SA " + p.in.String()},
			request{typ: nl.XFRM_MSG_GETAE, body: p.out.aeventID(p.child.Out.Src, aeRVal|aeLVal, 0), reply: true, op: "read counters of SA " + p.out.String()})
	}
	res := d.c.exchange(ctx, reqs)
	out := make(map[uint32]sa.Counters, len(ps))
	var errs []error
	for i, p := range ps {
		rin, rout := res[2*i], res[2*i+1]
		if notFound(rin.err) || notFound(rout.err) {
			// Gone: a hard expiry (or someone else) removed it.
			c := p.last
			c.ReplayBitmap = slices.Clone(c.ReplayBitmap)
			out[p.in.spi] = c
			continue
		}
		if rin.err != nil || rout.err != nil {
			errs = append(errs, errors.Join(rin.err, rout.err))
			continue
		}
		in, err1 := parseAevent(rin.body)
		outEv, err2 := parseAevent(rout.body)
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("xfrm/kernel: counters of pair spi=0x%08x: %w", p.in.spi, errors.Join(err1, err2)))
			continue
		}
		c := sa.Counters{
			OutSeq:       uint64(outEv.replay.OSeq),
			InSeq:        uint64(in.replay.Seq),
			ReplayBitmap: exportBitmap(in.replay.Seq, in.replay.BitMap),
			InBytes:      in.ltime.Bytes,
			InPackets:    in.ltime.Packets,
			OutBytes:     outEv.ltime.Bytes,
			OutPackets:   outEv.ltime.Packets,
		}
		p.last = c
		c.ReplayBitmap = slices.Clone(c.ReplayBitmap)
		out[p.in.spi] = c
	}
	if len(errs) > 0 {
		return out, errors.Join(errs...)
	}
	return out, nil
}

// Installed lists the inbound SPIs of the installed pairs, ascending.
func (d *DataPlane) Installed(ctx context.Context) ([]uint32, error) {
	if err := d.lock(); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	out := make([]uint32, 0, len(d.pairs))
	for spi := range d.pairs {
		out = append(out, spi)
	}
	slices.Sort(out)
	return out, ctx.Err()
}

// Flush removes every SA and policy in this node's reqid range, whoever
// installed them (this process or an earlier one), and nothing else: SAs
// and policies of other reqids, and ones carrying an XFRM mark, are left
// alone. It lists the kernel's SAs and policies to find them (their keys
// are read by the dump and dropped at once).
func (d *DataPlane) Flush(ctx context.Context) error {
	if err := d.lock(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	states, err := d.dumpStates(ctx)
	if err != nil {
		return err
	}
	pols, err := d.dumpPolicies(ctx)
	if err != nil {
		return err
	}
	var reqs []request
	for _, pi := range pols {
		if d.ownsPolicy(pi) {
			reqs = append(reqs, request{typ: nl.XFRM_MSG_DELPOLICY, body: pi.key.encodeID(), op: "delete " + pi.key.String()})
		}
	}
	for _, st := range states {
		if st.proto == unix.IPPROTO_ESP && d.owns(st.reqid) && st.mark == nil {
			reqs = append(reqs, request{typ: nl.XFRM_MSG_DELSA, body: st.id.usersaID(), op: "delete SA " + st.id.String()})
		}
	}
	var errs []error
	for _, r := range d.c.exchange(ctx, reqs) {
		if r.err != nil && !notFound(r.err) {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	clear(d.pairs)
	clear(d.byState)
	clear(d.policies)
	return nil
}
