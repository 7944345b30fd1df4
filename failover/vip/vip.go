// Package vip owns the virtual IP addresses of an ikegw gateway: it adds
// them to and removes them from named interfaces through netlink (IPv4 and
// IPv6; IPv6 with IFA_F_NODAD so an address is usable at once) and announces
// a freshly claimed address to its link: gratuitous ARP (request and/or
// reply, broadcast) for IPv4 and unsolicited Neighbor Advertisements (RFC
// 4861 7.2.6: Override flag, to ff02::1) for IPv6, both sent through an
// AF_PACKET socket.
//
// A gratuitous ARP request carries sender = target = the VIP and a zero
// target MAC; a reply carries our MAC as target MAC too (Linux treats a
// broadcast reply as gratuitous only then). An unsolicited NA goes from the
// VIP itself (an address of the interface, as RFC 4861 7.2.6 asks, and one
// that needs no link-local address to be ready) to ff02::1 with hop limit
// 255, Override set, Solicited clear, Router set when IPv6 forwarding is on
// for the interface, and a Target Link-Layer Address option. Linux peers
// update an existing neighbour entry on either (tested in this package
// between network namespaces on a bridge).
//
// It only ever touches the addresses it was configured with: Release deletes
// exactly those and nothing else, and is idempotent (an address or an
// interface that is already gone is not an error). It never decides who may
// hold the addresses: that is the role machine's business (failover/role).
//
// # Standby forwarding
//
// Config.Forward may list prefixes for a VIP. While this node does not hold the VIP
// (after Release, and so after every start, and after the supervisor
// cleaned up a dead daemon), it routes them via the VIP's address on the
// VIP's interface (table ForwardTable, consulted before the main table by a
// rule this package adds and leaves in place); Claim removes those routes. Hosts behind the gateways keep sending to the old
// active's MAC address until the new active's gratuitous ARP reaches them;
// with the routes, the old node forwards those packets to the VIP's new
// holder (the kernel queues them while it resolves the VIP) instead of
// dropping them, so a planned handover loses nothing on that side. Without
// a holder the VIP does not resolve and the packets are dropped: a standby
// never sends a tunnel's traffic anywhere else (not out of its default
// route in clear text). Route failures are logged, never fatal: the VIPs
// themselves are what Release and Claim guarantee.
//
// Caveat for IPv4: when the VIP is the primary address of its subnet on an
// interface (it was added before the node's own address of that subnet),
// deleting it also deletes the secondaries unless the interface has
// net.ipv4.conf.IF.promote_secondaries=1. Give the node its own address
// before the VIP, or set promote_secondaries.
package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Errors of this package.
var (
	// ErrBadVIP: a VIP is malformed (empty interface, bad address).
	ErrBadVIP = errors.New("vip: bad virtual IP")
	// ErrAdd: the kernel refused to add an address.
	ErrAdd = errors.New("vip: cannot add address")
	// ErrRemove: the kernel refused to remove an address.
	ErrRemove = errors.New("vip: cannot remove address")
	// ErrAnnounce: an announcement could not be sent.
	ErrAnnounce = errors.New("vip: cannot announce address")
	// ErrClosed: the manager was closed.
	ErrClosed = errors.New("vip: manager closed")
)

// VIP is one virtual IP address on a named interface.
type VIP struct {
	Interface string
	// Prefix is the address with the prefix length of its subnet, for
	// example 192.0.2.10/24 or 2001:db8::10/64.
	Prefix netip.Prefix
}

// ForwardTable is the routing table of the standby forwarding routes,
// looked up by a policy rule of priority ForwardRulePriority, before the
// main table (an administrator's route there cannot send a standby's
// tunnel traffic out in clear text) and before the userspace data plane's
// table (priority 4500): a node that released the VIPs but still has
// routes through its TUN device (a planned handover removes its pairs only
// after the leadership transfer; a fence may keep them) must hand the
// packets to the new holder, not to its own data plane, whose sends are
// gated. The table is empty while the VIPs are claimed, so the active's
// lookups fall through to the data plane's table. ForwardProtocol is the
// routes' routing protocol number (rtnetlink's rtm_protocol): `ip route
// show table 4501` lists them.
const (
	ForwardTable        = 4501
	ForwardRulePriority = 4499
	ForwardProtocol     = 245
	// legacyForwardRulePriority is the rule's priority before it moved
	// ahead of the data plane's: a rule left by an older ikegwd is removed.
	legacyForwardRulePriority = 4501
)

// Addr is the VIP's address.
func (v VIP) Addr() netip.Addr { return v.Prefix.Addr() }

func (v VIP) String() string { return v.Prefix.String() + " on " + v.Interface }

// Parse builds a VIP from an interface name and an address with its prefix
// length ("192.0.2.10/24"). A bare address gets a host prefix (/32, /128).
func Parse(iface, prefix string) (VIP, error) {
	v := VIP{Interface: iface}
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		a, aerr := netip.ParseAddr(prefix)
		if aerr != nil {
			return VIP{}, fmt.Errorf("%w: address %q on %q: want an address with a prefix length such as 192.0.2.10/24", ErrBadVIP, prefix, iface)
		}
		if a.Zone() != "" {
			return VIP{}, fmt.Errorf("%w: address %q on %q: an address with a zone cannot be a VIP", ErrBadVIP, prefix, iface)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	v.Prefix = p
	if err := v.Validate(); err != nil {
		return VIP{}, err
	}
	return v, nil
}

// Validate checks that the VIP names an interface and holds a unicast
// address that is neither loopback nor link-local, without a zone, and not
// an IPv4-mapped IPv6 address.
func (v VIP) Validate() error {
	if v.Interface == "" || len(v.Interface) >= unix.IFNAMSIZ {
		return fmt.Errorf("%w: %s: interface name %q must have 1 to %d characters", ErrBadVIP, v.Prefix, v.Interface, unix.IFNAMSIZ-1)
	}
	// The kernel's rules for a device name (dev_valid_name).
	if v.Interface == "." || v.Interface == ".." || strings.ContainsAny(v.Interface, "/: \t\n\r\v\f") {
		return fmt.Errorf("%w: %s: %q is not a valid interface name", ErrBadVIP, v.Prefix, v.Interface)
	}
	a := v.Prefix.Addr()
	switch {
	case !v.Prefix.IsValid():
		return fmt.Errorf("%w: on %q: no address", ErrBadVIP, v.Interface)
	case a.Zone() != "":
		return fmt.Errorf("%w: %s: an address with a zone cannot be a VIP", ErrBadVIP, v)
	case a.Is4In6():
		return fmt.Errorf("%w: %s: write an IPv4-mapped address as plain IPv4", ErrBadVIP, v)
	case !a.IsGlobalUnicast() && !a.IsPrivate():
		return fmt.Errorf("%w: %s: not a unicast address (loopback, multicast, link-local and unspecified addresses cannot be VIPs)", ErrBadVIP, v)
	}
	return nil
}

// validateForward checks the standby forwarding prefixes of v.
func validateForward(v VIP, fwd []netip.Prefix) error {
	a := v.Addr()
	for _, f := range fwd {
		switch {
		case !f.IsValid():
			return fmt.Errorf("%w: %s: forward: an invalid prefix", ErrBadVIP, v)
		case f.Addr().Is4() != a.Is4():
			return fmt.Errorf("%w: %s: forward %s: not of the VIP's address family", ErrBadVIP, v, f)
		case f.Bits() == 0:
			return fmt.Errorf("%w: %s: forward %s: a default route is not forwarded (a standby would send all its traffic to the active)", ErrBadVIP, v, f)
		case f.Contains(a):
			return fmt.Errorf("%w: %s: forward %s contains the VIP itself", ErrBadVIP, v, f)
		}
	}
	return nil
}

// ARPMode selects which gratuitous ARP packets announce an IPv4 VIP.
type ARPMode int

const (
	// ARPBoth sends a request and a reply each round (the default): some
	// devices only learn from one kind.
	ARPBoth ARPMode = iota
	// ARPRequest sends only requests (sender = target = VIP), like arping -U.
	ARPRequest
	// ARPReply sends only replies (target hardware = our MAC), like arping -A.
	ARPReply
)

func (m ARPMode) String() string {
	switch m {
	case ARPBoth:
		return "both"
	case ARPRequest:
		return "request"
	case ARPReply:
		return "reply"
	}
	return fmt.Sprintf("ARPMode(%d)", int(m))
}

// Announce configures the announcements sent after a claim.
type Announce struct {
	// Count is how many rounds are sent (default 3); -1 disables them.
	Count int
	// Interval separates rounds (default 100ms).
	Interval time.Duration
	// ARP selects the gratuitous ARP packets (default ARPBoth).
	ARP ARPMode
}

// Defaults for Announce.
const (
	DefaultAnnounceCount    = 3
	DefaultAnnounceInterval = 100 * time.Millisecond
)

// Config configures a Manager.
type Config struct {
	VIPs     []VIP
	Announce Announce
	// NetNS is the path of the network namespace the interfaces live in
	// (for example /var/run/netns/NAME); empty for the namespace of the
	// calling process.
	NetNS string
	Log   *slog.Logger
	// Forward lists, by VIP address, destinations (typically the remote
	// traffic selectors of the tunnels an inside VIP serves) that a node
	// not holding the VIP routes via the VIP's address, that is to
	// whichever node holds it: see "Standby forwarding" in the package
	// documentation.
	Forward map[netip.Addr][]netip.Prefix
}

// Manager adds, removes and announces a fixed set of VIPs. Its methods are
// safe for concurrent use.
type Manager struct {
	vips     []VIP
	forward  map[netip.Addr][]netip.Prefix // standby forwarding, by VIP address (opMu)
	claimed  bool                          // the last Claim succeeded and no Release since (opMu)
	ruleDone map[int]bool                  // forwarding rule present, by netlink family (opMu)
	announce Announce
	ns       netns.NsHandle
	log      *slog.Logger

	// opMu serialises Claim, Release, Held and Close; it guards h, stopAnn
	// and annDone.
	opMu    sync.Mutex
	h       *netlink.Handle
	stopAnn context.CancelFunc
	annDone chan struct{}

	// mu guards what the background announcer touches.
	mu       sync.Mutex
	sock     int // AF_PACKET socket, -1 until first used
	closed   bool
	sentByIf map[string]int // announcement packets sent, by interface
}

// New validates cfg and opens a netlink handle in the configured namespace.
// It does not touch any address.
func New(cfg Config) (*Manager, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	seen := map[netip.Addr]VIP{}
	for i, v := range cfg.VIPs {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("vips[%d]: %w", i, err)
		}
		if o, dup := seen[v.Addr()]; dup {
			return nil, fmt.Errorf("%w: vips[%d]: %s: address already configured as %s", ErrBadVIP, i, v, o)
		}
		seen[v.Addr()] = v
		if err := validateForward(v, cfg.Forward[v.Addr()]); err != nil {
			return nil, fmt.Errorf("vips[%d]: %w", i, err)
		}
	}
	for a := range cfg.Forward {
		if _, ok := seen[a]; !ok {
			return nil, fmt.Errorf("%w: forward: %s is not a configured VIP", ErrBadVIP, a)
		}
	}
	a := cfg.Announce
	if a.Count == 0 {
		a.Count = DefaultAnnounceCount
	}
	if a.Interval == 0 {
		a.Interval = DefaultAnnounceInterval
	}
	if a.Count < -1 || a.Interval < 0 {
		return nil, fmt.Errorf("vip: announce: count %d and interval %v: want count >= 1 (or -1 for none) and a positive interval", a.Count, a.Interval)
	}
	if a.ARP < ARPBoth || a.ARP > ARPReply {
		return nil, fmt.Errorf("vip: announce: unknown ARP mode %d", int(a.ARP))
	}
	var (
		h   *netlink.Handle
		err error
	)
	ns := netns.None()
	if cfg.NetNS != "" {
		ns, err = netns.GetFromPath(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("vip: network namespace %q: %w", cfg.NetNS, err)
		}
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		return nil, fmt.Errorf("vip: open netlink: %w", err)
	}
	fwd := map[netip.Addr][]netip.Prefix{}
	for a, ps := range cfg.Forward {
		if len(ps) > 0 {
			fwd[a] = slices.Clone(ps)
		}
	}
	return &Manager{
		vips:     slices.Clone(cfg.VIPs),
		forward:  fwd,
		ruleDone: map[int]bool{},
		announce: a,
		ns:       ns,
		log:      cfg.Log,
		h:        h,
		sock:     -1,
		sentByIf: map[string]int{},
	}, nil
}

// VIPs returns the configured VIPs.
func (m *Manager) VIPs() []VIP { return slices.Clone(m.vips) }

// Claim adds every VIP (an address already present is fine) and sends the
// first round of announcements before it returns; the remaining rounds are
// sent in the background until they are done or Release is called. It
// returns an error wrapping ErrAdd if an address could not be added (the
// others stay: call Release). Announcement failures are logged, not
// returned: the address works anyway once neighbours ask for it again.
func (m *Manager) Claim(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.isClosed() {
		return ErrClosed
	}
	m.stopAnnouncing()
	// The forwarding routes go before the VIPs come: they are consulted
	// ahead of the data plane's table, and once a VIP is local (packets
	// that waited for its owner arrive at once) they would route the
	// tunnel traffic via this node's own address instead of into its
	// data plane. A failed claim is released, which restores them.
	m.forwardLocked(false)
	var errs []error
	for _, v := range m.vips {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("vip: claim: %w", err)
		}
		if err := m.addLocked(v); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	m.claimed = true
	if m.announce.Count < 0 || len(m.vips) == 0 {
		return nil
	}
	targets := m.targetsLocked()
	m.mu.Lock()
	m.announceRoundLocked(targets)
	m.mu.Unlock()
	if m.announce.Count > 1 && len(targets) > 0 {
		actx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		m.stopAnn, m.annDone = cancel, done
		go m.announceLoop(actx, done, targets, m.announce.Count-1)
	}
	return nil
}

func (m *Manager) addLocked(v VIP) error {
	link, err := m.h.LinkByName(v.Interface)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrAdd, v, err)
	}
	a := &netlink.Addr{IPNet: prefixNet(v.Prefix)}
	if v.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := m.h.AddrReplace(link, a); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrAdd, v, err)
	}
	m.log.Info("vip: added", "vip", v.String())
	return nil
}

// Release stops the announcements and deletes every VIP. A VIP that is not
// present, or whose interface no longer exists, is skipped: Release is
// idempotent. It only touches the configured addresses.
func (m *Manager) Release(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.isClosed() {
		return ErrClosed
	}
	m.stopAnnouncing()
	var errs []error
	for _, v := range m.vips {
		if err := m.removeLocked(v); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		m.claimed = false
		m.forwardLocked(true)
	}
	return errors.Join(errs...)
}

// SetForward replaces the standby forwarding prefixes (Config.Forward),
// for example after the tunnels' configuration changed. While the VIPs are
// not claimed the routes change at once: those no longer wanted go, the new
// ones come.
func (m *Manager) SetForward(fwd map[netip.Addr][]netip.Prefix) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.isClosed() {
		return ErrClosed
	}
	next := map[netip.Addr][]netip.Prefix{}
	for i, v := range m.vips {
		if err := validateForward(v, fwd[v.Addr()]); err != nil {
			return fmt.Errorf("vips[%d]: %w", i, err)
		}
		if len(fwd[v.Addr()]) > 0 {
			next[v.Addr()] = slices.Clone(fwd[v.Addr()])
		}
	}
	for a := range fwd {
		if !slices.ContainsFunc(m.vips, func(v VIP) bool { return v.Addr() == a }) {
			return fmt.Errorf("%w: forward: %s is not a configured VIP", ErrBadVIP, a)
		}
	}
	if !m.claimed {
		old := m.forward
		m.forward = map[netip.Addr][]netip.Prefix{}
		for a, ps := range old {
			for _, p := range ps {
				if !slices.Contains(next[a], p) {
					m.forward[a] = append(m.forward[a], p)
				}
			}
		}
		m.forwardLocked(false)
	}
	m.forward = next
	if !m.claimed {
		m.forwardLocked(true)
	}
	return nil
}

// forwardRuleLocked makes sure the policy rule that consults ForwardTable
// exists for the family (added once per manager; one left by an earlier
// run is fine).
func (m *Manager) forwardRuleLocked(v4 bool) {
	family := netlink.FAMILY_V6
	if v4 {
		family = netlink.FAMILY_V4
	}
	if m.ruleDone[family] {
		return
	}
	r := netlink.NewRule()
	r.Family, r.Table, r.Priority = family, ForwardTable, ForwardRulePriority
	if err := m.h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		m.log.Warn("vip: standby forwarding: policy rule not added", "table", ForwardTable, "priority", ForwardRulePriority, "err", err)
		return
	}
	m.ruleDone[family] = true
	old := netlink.NewRule()
	old.Family, old.Table, old.Priority = family, ForwardTable, legacyForwardRulePriority
	if err := m.h.RuleDel(old); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		m.log.Warn("vip: standby forwarding: an older release's policy rule not removed", "table", ForwardTable, "priority", legacyForwardRulePriority, "err", err)
	}
}

// forwardLocked adds (on, after a release: with the VIP's stale neighbour
// entry removed) or deletes the standby forwarding routes of every VIP that
// has Forward prefixes. Failures are logged.
func (m *Manager) forwardLocked(on bool) {
	for _, v := range m.vips {
		fwd := m.forward[v.Addr()]
		if len(fwd) == 0 {
			continue
		}
		link, err := m.h.LinkByName(v.Interface)
		if err != nil {
			if on {
				m.log.Warn("vip: standby forwarding: interface not found", "vip", v.String(), "err", err)
			}
			continue
		}
		if on {
			// A neighbour entry for the VIP may be left from an earlier
			// time as a standby, naming the node that held it then; the
			// forwarded packets must wait for the new holder's answer.
			err := m.h.NeighDel(&netlink.Neigh{LinkIndex: link.Attrs().Index, IP: v.Addr().AsSlice()})
			if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
				m.log.Warn("vip: standby forwarding: stale neighbour entry not removed", "vip", v.String(), "err", err)
			}
		}
		for _, f := range fwd {
			r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(f.Masked()), Gw: v.Addr().AsSlice(),
				Table: ForwardTable, Protocol: ForwardProtocol}
			if on {
				m.forwardRuleLocked(v.Addr().Is4())
				if err := m.h.RouteReplace(r); err != nil {
					m.log.Warn("vip: standby forwarding route not added", "dst", f.String(), "via", v.Addr().String(), "dev", v.Interface, "err", err)
				}
				continue
			}
			if err := m.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				m.log.Warn("vip: standby forwarding route not removed", "dst", f.String(), "via", v.Addr().String(), "dev", v.Interface, "err", err)
			}
		}
	}
}

func (m *Manager) removeLocked(v VIP) error {
	link, err := m.h.LinkByName(v.Interface)
	if err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return nil
		}
		return fmt.Errorf("%w: %s: %w", ErrRemove, v, err)
	}
	err = m.h.AddrDel(link, &netlink.Addr{IPNet: prefixNet(v.Prefix)})
	switch {
	case err == nil:
		m.log.Info("vip: removed", "vip", v.String())
		return nil
	case errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENOENT):
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrRemove, v, err)
}

// Held reports which configured VIPs are present on their interfaces now
// (whoever added them), in configuration order. A VIP counts as held when
// its address is on its interface, whatever the prefix length.
func (m *Manager) Held() ([]VIP, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.isClosed() {
		return nil, ErrClosed
	}
	h := m.h
	byIf := map[string]map[netip.Addr]bool{}
	var out []VIP
	for _, v := range m.vips {
		addrs, ok := byIf[v.Interface]
		if !ok {
			var err error
			addrs, err = listAddrs(h, v.Interface)
			if err != nil {
				return nil, err
			}
			byIf[v.Interface] = addrs
		}
		if addrs[v.Addr()] {
			out = append(out, v)
		}
	}
	return out, nil
}

func listAddrs(h *netlink.Handle, iface string) (map[netip.Addr]bool, error) {
	link, err := h.LinkByName(iface)
	if err != nil {
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return map[netip.Addr]bool{}, nil
		}
		return nil, fmt.Errorf("vip: held: interface %q: %w", iface, err)
	}
	var list []netlink.Addr
	for try := 0; ; try++ {
		list, err = h.AddrList(link, netlink.FAMILY_ALL)
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || try == 4 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("vip: held: list addresses of %q: %w", iface, err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

// Close stops the announcements and closes the netlink handle and socket.
// It does not remove any address (call Release first for that).
func (m *Manager) Close() error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.isClosed() {
		return nil
	}
	m.stopAnnouncing()
	m.h.Close()
	if m.ns.IsOpen() {
		m.ns.Close()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.sock >= 0 {
		err := unix.Close(m.sock)
		m.sock = -1
		if err != nil {
			return fmt.Errorf("vip: close socket: %w", err)
		}
	}
	return nil
}

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// stopAnnouncing cancels the background announcements and waits for them:
// no announcement leaves after it returns. Called with opMu held.
func (m *Manager) stopAnnouncing() {
	if m.stopAnn == nil {
		return
	}
	m.stopAnn()
	<-m.annDone
	m.stopAnn, m.annDone = nil, nil
}

func (m *Manager) announceLoop(ctx context.Context, done chan struct{}, targets []target, rounds int) {
	defer close(done)
	t := time.NewTicker(m.announce.Interval)
	defer t.Stop()
	for range rounds {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		// stopAnnouncing cancels before it waits: a round that sees the
		// cancel here sends nothing, one already sending finishes first.
		if ctx.Err() == nil && !m.closed {
			m.announceRoundLocked(targets)
		}
		m.mu.Unlock()
	}
}

// Sent reports how many announcement packets went out on each interface
// since the manager was created.
func (m *Manager) Sent() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.sentByIf))
	for k, v := range m.sentByIf {
		out[k] = v
	}
	return out
}

func prefixNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}
