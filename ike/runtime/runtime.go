// Package runtime drives the sans-IO IKEv1 engine (ike/ikev1) on real UDP
// sockets: ports 500 and 4500 (NAT-T, with the non-ESP marker), IPv4 and
// IPv6, timers, and the execution of the engine's actions in order.
//
// Actions are executed by one executor goroutine that batches: the Persist
// actions of every action list waiting are committed together (one call to
// the Persister), and only then are their sends, data plane installs and
// deletes carried out, in order. So a packet never leaves before the state
// it reveals is durable (DESIGN.md invariant 1), and concurrent handshakes
// share commits.
//
// The runtime imports no other ikegw layer: persistence and the data plane
// plug in through the small interfaces below (the cluster's commit API and
// xfrm.DataPlane satisfy them).
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
)

// Persister makes records durable: a local store, or a Raft commit that
// returns once a quorum has the entry.
type Persister interface {
	Persist(ctx context.Context, p ikev1.Persist) error
}

// DataPlane is what the runtime needs of a data plane (xfrm.DataPlane
// satisfies it).
type DataPlane interface {
	InstallChild(ctx context.Context, c *sa.ChildSA) error
	DeleteChild(ctx context.Context, c *sa.ChildSA) error
	Counters(ctx context.Context) (map[uint32]sa.Counters, error)
}

// ESPReceiver takes ESP-in-UDP packets that arrive on the NAT-T socket
// (the userspace data plane). pkt starts at the SPI.
type ESPReceiver interface {
	HandleInbound(pkt []byte, from netip.AddrPort)
}

// Config configures a Runtime.
type Config struct {
	Engine *ikev1.Engine
	// Listen lists the local addresses to bind; empty means the IPv4 and
	// IPv6 wildcards.
	Listen []netip.Addr
	// Port and NATTPort default to 500 and 4500.
	Port, NATTPort uint16
	// FreeBind binds with IP_FREEBIND (virtual IPs not yet held).
	FreeBind bool
	// SocketHook runs on every socket after it is bound (the kernel data
	// plane enables ESP-in-UDP decapsulation and the policy bypass here).
	SocketHook func(conn *net.UDPConn, natt bool) error
	Persister  Persister
	DataPlane  DataPlane
	ESP        ESPReceiver
	// CounterSync is how often the data plane's counters are read and
	// persisted; zero means 1 s, negative disables it.
	CounterSync time.Duration
	Log         *slog.Logger
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
	// Admission rate-limits new phase 1 requests before they reach the
	// engine (admission.go); the zero value means the defaults.
	Admission Admission
	// Gate, when set, is asked before every IKE message and ESP batch is
	// sent; closed, they are dropped and counted (gate.go). Nil: always
	// open.
	Gate Gate
}

// Runtime runs one engine.
type Runtime struct {
	cfg   Config
	eng   *ikev1.Engine
	log   *slog.Logger
	now   func() time.Time
	socks []*socket

	events chan event
	execq  chan job

	mu     sync.Mutex // guards timers
	timers map[ikev1.Timer]*timerEntry
	gen    uint64

	stats   Stats
	adm     *admitter  // nil when Admission.Disabled
	loglim  logLimiter // send failures a remote can cause
	statsMu sync.Mutex

	srcFor sync.Map // remote netip.Addr -> the local netip.Addr IKE uses with it

	// unsent: hashes of messages a failed commit guarded (executor-owned).
	unsent map[[32]byte]struct{}
	// failed: Persists that failed, for the engine's PersistFailed (taken
	// by the event loop when failSig fires).
	failMu  sync.Mutex
	failed  []ikev1.Persist
	failSig chan struct{}

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

type timerEntry struct {
	t   *time.Timer
	gen uint64
}

type event struct {
	pkt   *ikev1.Packet
	timer *ikev1.Timer
	gen   uint64
	fn    func(now time.Time, e *ikev1.Engine) []ikev1.Action
	ack   chan struct{}
}

// Stats counts what the runtime did.
type Stats struct {
	PersistCalls, PersistErrors uint64
	SendErrors                  uint64
	InstallErrors               uint64
	ESPPackets                  uint64
	Keepalives                  uint64
	// New phase 1 requests from unknown sources dropped before the engine
	// by the per-source and the global rate limit (admission.go).
	DroppedSourceRate, DroppedGlobalRate uint64
	// UnsavedDrops counts messages not sent because the commit that
	// guards them failed and no later commit has covered them (see
	// unsaved.go).
	UnsavedDrops uint64
	// GateDrops counts IKE messages and ESP packets dropped because the
	// send gate was closed (this node's lease had run out; gate.go).
	GateDrops uint64
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("runtime: closed")

// New binds the sockets. Run starts processing.
func New(cfg Config) (*Runtime, error) {
	if cfg.Engine == nil || cfg.Persister == nil || cfg.DataPlane == nil {
		return nil, errors.New("runtime: Engine, Persister and DataPlane are required")
	}
	if cfg.Port == 0 {
		cfg.Port = 500
	}
	if cfg.NATTPort == 0 {
		cfg.NATTPort = 4500
	}
	if cfg.CounterSync == 0 {
		cfg.CounterSync = time.Second
	}
	r := &Runtime{
		cfg:     cfg,
		eng:     cfg.Engine,
		log:     cfg.Log,
		now:     cfg.Clock,
		events:  make(chan event, 1024),
		execq:   make(chan job, 1024),
		timers:  map[ikev1.Timer]*timerEntry{},
		done:    make(chan struct{}),
		unsent:  map[[32]byte]struct{}{},
		failSig: make(chan struct{}, 1),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if !cfg.Admission.Disabled {
		r.adm = newAdmitter(cfg.Admission, cfg.Engine.KnownPeer, r.now)
	}
	addrs := cfg.Listen
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	}
	for _, a := range addrs {
		for _, natt := range []bool{false, true} {
			port := cfg.Port
			if natt {
				port = cfg.NATTPort
			}
			s, err := listen(netip.AddrPortFrom(a, port), natt, cfg.FreeBind, cfg.SocketHook)
			if err != nil {
				if a.Is6() && a.IsUnspecified() && len(cfg.Listen) == 0 {
					r.log.Warn("IPv6 wildcard not bound; IKE over IPv6 disabled", "err", err)
					continue
				}
				r.closeSockets()
				return nil, err
			}
			r.socks = append(r.socks, s)
		}
	}
	return r, nil
}

func (r *Runtime) closeSockets() {
	for _, s := range r.socks {
		s.close()
	}
}

// Stats returns the runtime's counters.
func (r *Runtime) Stats() Stats {
	r.statsMu.Lock()
	st := r.stats
	r.statsMu.Unlock()
	if r.adm != nil {
		st.DroppedSourceRate, st.DroppedGlobalRate = r.adm.droppedSource.Load(), r.adm.droppedGlobal.Load()
	}
	return st
}

// Run processes packets, timers and requests until ctx is done or Close is
// called. It returns after every goroutine it started has ended.
func (r *Runtime) Run(ctx context.Context) error {
	for _, s := range r.socks {
		r.wg.Add(1)
		if br, ok := r.cfg.ESP.(ESPBatchReceiver); ok && s.natt {
			go r.batchReader(s, br)
		} else {
			go r.reader(s)
		}
	}
	r.wg.Add(1)
	go r.executor()
	if r.cfg.CounterSync > 0 {
		r.wg.Add(1)
		go r.counterSync()
	}
	interval := r.cfg.Admission.LogInterval
	if r.adm != nil {
		interval = r.adm.cfg.LogInterval
	}
	if interval <= 0 {
		interval = 10 * time.Second
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		dropReporter(r.log, r.adm, &r.loglim, interval, r.done)
	}()
	defer r.Close()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return nil
		case ev := <-r.events:
			r.handle(ev)
		case <-r.failSig:
			r.tellEngineFailed()
		}
	}
}

func (r *Runtime) handle(ev event) {
	now := r.now()
	var acts []ikev1.Action
	switch {
	case ev.pkt != nil:
		acts = r.eng.HandlePacket(now, *ev.pkt)
	case ev.timer != nil:
		r.mu.Lock()
		te := r.timers[*ev.timer]
		current := te != nil && te.gen == ev.gen
		if current {
			delete(r.timers, *ev.timer)
		}
		r.mu.Unlock()
		if !current {
			return // stopped or re-armed since
		}
		acts = r.eng.HandleTimer(now, *ev.timer)
	case ev.fn != nil:
		acts = ev.fn(now, r.eng)
	}
	r.dispatch(acts, ev.ack)
}

// dispatch handles timer actions at once and queues the rest, in order,
// for the executor. ack (if any) is closed once they have been executed.
func (r *Runtime) dispatch(acts []ikev1.Action, ack chan struct{}) {
	var rest []ikev1.Action
	for _, a := range acts {
		switch v := a.(type) {
		case ikev1.ArmTimer:
			r.arm(v.Timer, v.At)
		case ikev1.StopTimer:
			r.stop(v.Timer)
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 && ack == nil {
		return
	}
	select {
	case r.execq <- job{acts: rest, ack: ack}:
	case <-r.done:
	}
}

// job is one action list for the executor; ack is closed once it ran.
type job struct {
	acts []ikev1.Action
	ack  chan struct{}
}

func (r *Runtime) arm(t ikev1.Timer, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if te := r.timers[t]; te != nil {
		te.t.Stop()
	}
	r.gen++
	gen := r.gen
	d := at.Sub(r.now())
	if d < 0 {
		d = 0
	}
	tc := t
	r.timers[t] = &timerEntry{gen: gen, t: time.AfterFunc(d, func() {
		select {
		case r.events <- event{timer: &tc, gen: gen}:
		case <-r.done:
		}
	})}
}

func (r *Runtime) stop(t ikev1.Timer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if te := r.timers[t]; te != nil {
		te.t.Stop()
		delete(r.timers, t)
	}
}

// Do runs fn on the engine inside the event loop and waits until the
// actions it returned have been executed (persisted, sent, installed).
func (r *Runtime) Do(ctx context.Context, fn func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error)) error {
	ack := make(chan struct{})
	var ferr error
	ev := event{ack: ack, fn: func(now time.Time, e *ikev1.Engine) []ikev1.Action {
		acts, err := fn(now, e)
		ferr = err
		return acts
	}}
	select {
	case r.events <- ev:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrClosed
	}
	select {
	case <-ack:
		return ferr
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return ErrClosed
	}
}

// Initiate starts a connection.
func (r *Runtime) Initiate(ctx context.Context, conn string) error {
	return r.Do(ctx, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { return e.Initiate(now, conn) })
}

// Snapshot returns copies of the engine's records, read inside the loop.
func (r *Runtime) Snapshot(ctx context.Context) (ikes []sa.IKESA, children []sa.ChildSA, err error) {
	err = r.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		ikes, children = e.IKESAs(), e.ChildSAs()
		return nil, nil
	})
	return
}

// Counts returns how many ISAKMP SAs and IPsec SA pairs the engine holds
// (Snapshot's lengths, without the copies).
func (r *Runtime) Counts(ctx context.Context) (ike, child int, err error) {
	err = r.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
		ike, child = e.Counts()
		return nil, nil
	})
	return
}

// HandleExpiry feeds a data plane lifetime event to the engine.
func (r *Runtime) HandleExpiry(spi uint32, hard bool) {
	select {
	case r.events <- event{fn: func(now time.Time, e *ikev1.Engine) []ikev1.Action { return e.HandleExpiry(now, spi, hard) }}:
	case <-r.done:
	}
}

func (r *Runtime) reader(s *socket) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, local, remote, err := s.read(buf)
		if err != nil {
			if r.readFailed(s, err) {
				return
			}
			continue
		}
		if !r.datagram(s, buf[:n], local, remote, nil) {
			return
		}
	}
}

// readFailed logs a read error and reports whether the reader must stop.
func (r *Runtime) readFailed(s *socket, err error) bool {
	select {
	case <-r.done:
		return true
	default:
	}
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	r.log.Debug("read error", "socket", s.addr.String(), "err", err)
	return false
}

// datagram handles one datagram that arrived on s: NAT-T keepalives are
// counted, IKE goes to the engine's event loop, ESP to the data plane (or
// into esp, to be handed over with the rest of a batch). It reports false
// when the runtime is stopping.
func (r *Runtime) datagram(s *socket, b []byte, local, remote netip.AddrPort, esp *espIn) bool {
	n := len(b)
	if s.natt {
		switch {
		case n == 1 && b[0] == 0xff:
			r.count(func(st *Stats) { st.Keepalives++ })
			return true
		case n >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0:
			b = b[4:] // non-ESP marker: IKE
		default:
			if r.cfg.ESP != nil && n >= 8 {
				if esp != nil {
					esp.pkts = append(esp.pkts, b)
					esp.from = append(esp.from, remote)
				} else {
					r.count(func(st *Stats) { st.ESPPackets++ })
					r.cfg.ESP.HandleInbound(b, remote)
				}
			}
			return true
		}
	}
	if r.adm != nil && !r.adm.admit(b, remote.Addr()) {
		return true
	}
	data := make([]byte, len(b))
	copy(data, b)
	select {
	case r.events <- event{pkt: &ikev1.Packet{Local: local, Remote: remote, Data: data}}:
		return true
	case <-r.done:
		return false
	}
}

func (r *Runtime) count(f func(*Stats)) {
	r.statsMu.Lock()
	f(&r.stats)
	r.statsMu.Unlock()
}

// executor runs queued actions, committing the Persists of everything
// waiting in one call before any of their other actions.
func (r *Runtime) executor() {
	defer r.wg.Done()
	for {
		var batch []job
		select {
		case first := <-r.execq:
			batch = append(batch, first)
		case <-r.done:
			return
		}
	drain:
		for len(batch) < 256 {
			select {
			case more := <-r.execq:
				batch = append(batch, more)
			default:
				break drain
			}
		}
		r.execute(batch)
	}
}

func (r *Runtime) execute(batch []job) {
	var merged ikev1.Persist
	havePersist := false
	for _, j := range batch {
		for _, a := range j.acts {
			if p, ok := a.(ikev1.Persist); ok {
				havePersist = true
				mergePersist(&merged, p)
			}
		}
	}
	ctx := context.Background()
	if havePersist {
		r.count(func(st *Stats) { st.PersistCalls++ })
		if err := r.cfg.Persister.Persist(ctx, merged); err != nil {
			r.count(func(st *Stats) { st.PersistErrors++ })
			r.log.Error("persist failed: the packets it guards are not sent", "err", err)
			r.persistFailed(batch, merged)
			for _, j := range batch {
				if j.ack != nil {
					close(j.ack)
				}
			}
			return
		}
	}
	for _, j := range batch {
		guarded := hasPersist(j)
		for _, a := range j.acts {
			switch v := a.(type) {
			case ikev1.Send:
				if r.sendable(v, guarded) {
					r.send(v)
				}
			case ikev1.InstallChild:
				if err := r.cfg.DataPlane.InstallChild(ctx, v.Child); err != nil {
					r.count(func(st *Stats) { st.InstallErrors++ })
					r.log.Error("data plane install failed", "spi_in", fmt.Sprintf("%08x", v.Child.In.SPI), "err", err)
				}
			case ikev1.DeleteChild:
				if err := r.cfg.DataPlane.DeleteChild(ctx, v.Child); err != nil {
					r.log.Error("data plane delete failed", "spi_in", fmt.Sprintf("%08x", v.Child.In.SPI), "err", err)
				}
			}
		}
		if j.ack != nil {
			close(j.ack)
		}
	}
}

func mergePersist(dst *ikev1.Persist, p ikev1.Persist) {
	dst.IKE = append(dst.IKE, p.IKE...)
	dst.Children = append(dst.Children, p.Children...)
	dst.DeleteIKE = append(dst.DeleteIKE, p.DeleteIKE...)
	dst.DeleteChildren = append(dst.DeleteChildren, p.DeleteChildren...)
	if len(p.Counters) > 0 {
		if dst.Counters == nil {
			dst.Counters = map[uint32]sa.Counters{}
		}
		for k, v := range p.Counters {
			dst.Counters[k] = ikev1.MergeCounters(dst.Counters[k], v)
		}
	}
}

// SendESP sends an ESP-in-UDP packet from the NAT-T socket to dst (the
// userspace data plane's sender). The source address is the one our IKE
// traffic to that peer uses.
func (r *Runtime) SendESP(b []byte, dst netip.AddrPort) error {
	if r.gated(1) {
		return ErrGateClosed
	}
	var src netip.Addr
	if v, ok := r.srcFor.Load(dst.Addr()); ok {
		src = v.(netip.Addr)
	}
	s := r.pick(src, dst, true)
	if s == nil {
		return fmt.Errorf("runtime: no NAT-T socket for %s -> %s", src, dst)
	}
	return s.write(b, src, dst)
}

func (r *Runtime) pick(local netip.Addr, remote netip.AddrPort, natt bool) *socket {
	is6 := remote.Addr().Is6() && !remote.Addr().Is4In6()
	unknown := !local.IsValid() || local.IsUnspecified()
	var wild, anyExact *socket
	for _, s := range r.socks {
		if s.natt != natt || s.is6 != is6 {
			continue
		}
		if s.exact && s.addr.Addr() == local {
			return s
		}
		if !s.exact {
			wild = s
		} else if anyExact == nil {
			anyExact = s
		}
	}
	if wild == nil && unknown {
		// Source not known (e.g. ESP right after a restart, before any
		// IKE message): any socket of the family will do.
		return anyExact
	}
	return wild
}

// encryptedISAKMP reports whether b is an ISAKMP message with the
// encryption flag (RFC 2408 3.1: flags at offset 19, bit 0).
func encryptedISAKMP(b []byte) bool { return len(b) >= 28 && b[19]&0x01 != 0 }

func (r *Runtime) send(v ikev1.Send) {
	if r.gated(1) {
		return
	}
	natt := v.Local.Port() == r.cfg.NATTPort || v.Keepalive
	s := r.pick(v.Local.Addr(), v.Remote, natt)
	if s == nil {
		r.count(func(st *Stats) { st.SendErrors++ })
		r.log.Error("no socket to send from", "local", v.Local.String(), "remote", v.Remote.String())
		return
	}
	data := v.Data
	if natt && !v.Keepalive {
		data = make([]byte, 4+len(v.Data))
		copy(data[4:], v.Data)
	}
	// Remember the source for ESP to this peer only once keys exist (an
	// encrypted message, or a keepalive): a reply to a spoofed message 1
	// must not grow the map (one entry per forged source address).
	if v.Local.Addr().IsValid() && !v.Local.Addr().IsUnspecified() && (v.Keepalive || encryptedISAKMP(v.Data)) {
		if old, ok := r.srcFor.Load(v.Remote.Addr()); !ok || old.(netip.Addr) != v.Local.Addr() {
			r.srcFor.Store(v.Remote.Addr(), v.Local.Addr())
		}
	}
	if err := s.write(data, v.Local.Addr(), v.Remote); err != nil {
		r.count(func(st *Stats) { st.SendErrors++ })
		if r.loglim.allow("send_failed") {
			r.log.Warn("send failed", "local", v.Local.String(), "remote", v.Remote.String(), "err", err)
		}
	}
}

// counterSync reads the data plane's counters periodically, feeds them to
// the engine and persists them (batched, DESIGN.md invariant 3).
func (r *Runtime) counterSync() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.CounterSync)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		// SyncedAt is taken before the read: the counters are at least as
		// recent as it (a takeover's jump covers what was sent after it).
		now := r.now().UnixNano()
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CounterSync)
		m, err := r.cfg.DataPlane.Counters(ctx)
		cancel()
		if err != nil {
			r.log.Warn("reading data plane counters failed", "err", err)
			continue
		}
		if len(m) == 0 {
			continue
		}
		for k, c := range m {
			c.SyncedAt = now
			m[k] = c
		}
		select {
		case r.events <- event{fn: func(_ time.Time, e *ikev1.Engine) []ikev1.Action {
			e.UpdateCounters(m)
			return []ikev1.Action{ikev1.Persist{Counters: m}}
		}}:
		case <-r.done:
			return
		}
	}
}

// Close stops the runtime: sockets, timers and goroutines.
func (r *Runtime) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.closeSockets()
		r.mu.Lock()
		for _, te := range r.timers {
			te.t.Stop()
		}
		r.mu.Unlock()
	})
	r.wg.Wait()
	return nil
}
