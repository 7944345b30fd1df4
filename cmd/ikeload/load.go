package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
)

// Options configure one load run.
type Options struct {
	Target         netip.Addr
	Port, NATTPort uint16 // responder ports
	// Local holds the source addresses, one per tunnel (at least Tunnels).
	Local                    []netip.Addr
	LocalPort, LocalNATTPort uint16
	Tunnels, Concurrency     int
	// Engines is the number of initiator engines (event loops); each binds
	// its own share of Local. 1 binds the wildcard address.
	Engines       int
	Proposal, ESP string
	PSK           []byte
	// TSBase + i is tunnel i's local traffic selector (a host prefix);
	// RemoteTS is every tunnel's remote one.
	TSBase   netip.Addr
	RemoteTS netip.Prefix
	// TunnelTimeout bounds one setup, Duration the whole run.
	TunnelTimeout, Duration time.Duration
	// Retransmit is the first retransmission timeout of IKE requests.
	Retransmit time.Duration
	// Encap forces UDP encapsulation (strongSwan's encap=yes).
	Encap bool
	Log   *slog.Logger
}

// Result is what a run measured. Latencies are in milliseconds.
type Result struct {
	Target      string  `json:"target"`
	Proposal    string  `json:"proposal"`
	ESP         string  `json:"esp"`
	Tunnels     int     `json:"tunnels"`
	Concurrency int     `json:"concurrency"`
	Engines     int     `json:"engines"`
	Encap       bool    `json:"encap"`
	OK          int     `json:"ok"`
	Failed      int     `json:"failed"`
	Timeouts    int     `json:"timeouts"`
	NotStarted  int     `json:"not_started"`
	ElapsedS    float64 `json:"elapsed_s"`
	TunnelsPerS float64 `json:"tunnels_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// Engine counters summed over the initiator engines.
	Retransmits  uint64 `json:"retransmits"`
	Phase1Failed uint64 `json:"phase1_failed"`
	Phase2Failed uint64 `json:"phase2_failed"`
	// InitiatorCPUms is the CPU time (user + system) this process used
	// during the run: whether the generator itself was the bottleneck.
	InitiatorCPUms float64 `json:"initiator_cpu_ms"`
}

// WriteTable prints the result as an aligned table.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tproposal\ttunnels\tconc\tok\tfailed\telapsed_s\ttunnels/s\tp50_ms\tp99_ms\tmax_ms\tretransmits\t")
	fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", r.Target, r.Proposal, r.Tunnels, r.Concurrency,
		r.OK, r.Failed, r.ElapsedS, r.TunnelsPerS, r.P50ms, r.P99ms, r.MaxMs, r.Retransmits)
	_ = tw.Flush()
}

// ParseAddrList parses comma-separated addresses, ranges "a-b" and
// prefixes "p/n" (every address of the prefix), in order, stopping after
// limit addresses.
func ParseAddrList(s string, limit int) ([]netip.Addr, error) {
	var out []netip.Addr
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		var from, to netip.Addr
		switch {
		case item == "":
			return nil, fmt.Errorf("empty item in %q", s)
		case strings.Contains(item, "/"):
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("prefix %q: %w", item, err)
			}
			p = p.Masked()
			from, to = p.Addr(), lastAddr(p)
		case strings.Contains(item, "-"):
			a, b, _ := strings.Cut(item, "-")
			var err error
			if from, err = netip.ParseAddr(strings.TrimSpace(a)); err != nil {
				return nil, fmt.Errorf("range %q: %w", item, err)
			}
			if to, err = netip.ParseAddr(strings.TrimSpace(b)); err != nil {
				return nil, fmt.Errorf("range %q: %w", item, err)
			}
			if from.BitLen() != to.BitLen() || to.Less(from) {
				return nil, fmt.Errorf("range %q: end before start or mixed address families", item)
			}
		default:
			a, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("address %q: %w", item, err)
			}
			from, to = a, a
		}
		for a := from; a.IsValid() && len(out) < limit; a = a.Next() {
			out = append(out, a)
			if a == to {
				break
			}
		}
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// addN returns a + n (wrapping is the caller's problem: n is bounded by
// the tunnel count, which Validate checks against the address space).
func addN(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}

func (o *Options) validate() error {
	switch {
	case !o.Target.IsValid():
		return errors.New("no target address")
	case o.Tunnels < 1:
		return fmt.Errorf("tunnels %d: want at least 1", o.Tunnels)
	case o.Concurrency < 1:
		return fmt.Errorf("concurrency %d: want at least 1", o.Concurrency)
	case o.Engines < 1 || o.Engines > o.Tunnels:
		return fmt.Errorf("engines %d: want 1..tunnels (%d)", o.Engines, o.Tunnels)
	case len(o.Local) < o.Tunnels:
		return fmt.Errorf("%d local addresses for %d tunnels: every tunnel needs its own source address", len(o.Local), o.Tunnels)
	case len(o.PSK) == 0:
		return errors.New("no pre-shared key")
	case o.TunnelTimeout <= 0 || o.Duration <= 0:
		return errors.New("tunnel timeout and duration must be positive")
	case !o.TSBase.IsValid() || !o.RemoteTS.IsValid():
		return errors.New("traffic selectors missing")
	}
	if last := addN(o.TSBase, o.Tunnels-1); !last.IsValid() || last.BitLen() != o.TSBase.BitLen() || last.Less(o.TSBase) {
		return fmt.Errorf("ts-base %s has no room for %d tunnels", o.TSBase, o.Tunnels)
	}
	return nil
}

// connections builds one connection per tunnel.
func (o *Options) connections() ([]*config.Connection, error) {
	ike, err := config.ParseIKEProposal(o.Proposal, false)
	if err != nil {
		return nil, fmt.Errorf("proposal %q: %w", o.Proposal, err)
	}
	esp, err := config.ParseESPProposal(o.ESP, false)
	if err != nil {
		return nil, fmt.Errorf("esp %q: %w", o.ESP, err)
	}
	conns := make([]*config.Connection, o.Tunnels)
	ts := o.TSBase
	for i := range conns {
		c := &config.Connection{
			Name:  tunnelName(i),
			Local: o.Local[i], Remote: o.Target, LocalPort: o.LocalPort, RemotePort: o.Port,
			Auth: config.AuthPSK, PSK: config.Secret(o.PSK), Proposals: ike,
			IKELifetime: config.DefaultIKELifetime, DPDAction: config.DPDNone,
			Keyingtries: 1, ForceEncap: o.Encap,
			Retransmit: config.RetransmitConfig{Timeout: o.Retransmit, Tries: config.DefaultRetransmitTries, Base: config.DefaultRetransmitBase},
			Children: []*config.Child{{
				Name: "net", Mode: sa.Tunnel, ESPProposals: esp,
				LocalTS:   []sa.TrafficSelector{{Prefix: netip.PrefixFrom(ts, ts.BitLen())}},
				RemoteTS:  []sa.TrafficSelector{{Prefix: o.RemoteTS}},
				RekeyTime: config.DefaultRekeyTime, LifeTime: config.DefaultRekeyTime + config.DefaultRekeyTime/10,
				StartAction: "none",
			}},
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("tunnel %d: %w", i, err)
		}
		conns[i] = c
		ts = ts.Next()
	}
	return conns, nil
}

func tunnelName(i int) string { return fmt.Sprintf("t%06d", i) }

// recorder is the data plane and the persistence of the initiator: it
// keeps records in memory and reports each tunnel's first installed pair.
type recorder struct {
	mu      sync.Mutex
	ikes    map[[16]byte]*sa.IKESA
	kids    map[uint32]*sa.ChildSA
	done    map[string]chan struct{} // by connection name, closed on install
	commits int
}

func newRecorder() *recorder {
	return &recorder{ikes: map[[16]byte]*sa.IKESA{}, kids: map[uint32]*sa.ChildSA{}, done: map[string]chan struct{}{}}
}

func (r *recorder) waiter(conn string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.done[conn]
	if ch == nil {
		ch = make(chan struct{})
		r.done[conn] = ch
	}
	return ch
}

func (r *recorder) Persist(_ context.Context, p ikev1.Persist) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commits++
	for _, s := range p.IKE {
		r.ikes[s.Cookies.Key()] = s
	}
	for _, c := range p.DeleteIKE {
		delete(r.ikes, c.Key())
	}
	for _, c := range p.Children {
		r.kids[c.In.SPI] = c
	}
	for _, spi := range p.DeleteChildren {
		delete(r.kids, spi)
	}
	return nil
}

func (r *recorder) InstallChild(_ context.Context, c *sa.ChildSA) error {
	r.mu.Lock()
	ch := r.done[c.Connection]
	if ch == nil {
		ch = make(chan struct{})
		r.done[c.Connection] = ch
	}
	select {
	case <-ch:
	default:
		close(ch)
	}
	r.mu.Unlock()
	return nil
}

func (r *recorder) DeleteChild(context.Context, *sa.ChildSA) error { return nil }

func (r *recorder) Counters(context.Context) (map[uint32]sa.Counters, error) { return nil, nil }

// Run sets up the tunnels and measures them.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	conns, err := o.connections()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	// Tunnel i runs on engine i % Engines.
	rec := newRecorder()
	rts := make([]*runtime.Runtime, o.Engines)
	// The runtimes outlive ctx so their counters can be read at the end.
	runCtx, runCancel := context.WithCancel(context.Background())
	var runWG sync.WaitGroup
	defer func() {
		runCancel()
		for _, rt := range rts {
			if rt != nil {
				_ = rt.Close()
			}
		}
		runWG.Wait()
	}()
	for w := range o.Engines {
		var mine []*config.Connection
		var listen []netip.Addr
		for i := w; i < len(conns); i += o.Engines {
			mine = append(mine, conns[i])
			listen = append(listen, conns[i].Local)
		}
		if o.Engines == 1 {
			listen = nil // the wildcard: one socket pair for every source address
		}
		eng, err := ikev1.New(ikev1.Config{Connections: mine, Log: o.Log.With("engine", w), HalfOpenTimeout: o.TunnelTimeout})
		if err != nil {
			return nil, err
		}
		rt, err := runtime.New(runtime.Config{Engine: eng, Listen: listen, Port: o.LocalPort, NATTPort: o.LocalNATTPort,
			Persister: rec, DataPlane: rec, CounterSync: -1, Log: o.Log.With("engine", w)})
		if err != nil {
			return nil, err
		}
		rts[w] = rt
		runWG.Add(1)
		go func() {
			defer runWG.Done()
			if err := rt.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				o.Log.Error("runtime stopped", "engine", w, "err", err)
			}
		}()
	}

	type outcome struct {
		lat      time.Duration
		ok       bool
		timeout  bool
		started  bool
		finished time.Time
	}
	outcomes := make([]outcome, o.Tunnels)
	cpu0 := cpuTime()
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range min(o.Concurrency, o.Tunnels) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				name := conns[i].Name
				done := rec.waiter(name)
				t0 := time.Now()
				outcomes[i].started = true
				if err := rts[i%o.Engines].Initiate(ctx, name); err != nil {
					if ctx.Err() == nil {
						o.Log.Warn("initiate failed", "tunnel", name, "err", err)
					}
					continue
				}
				tm := time.NewTimer(o.TunnelTimeout)
				select {
				case <-done:
					now := time.Now()
					outcomes[i].ok, outcomes[i].lat, outcomes[i].finished = true, now.Sub(t0), now
				case <-tm.C:
					outcomes[i].timeout = true
				case <-ctx.Done():
				}
				tm.Stop()
			}
		}()
	}
feed:
	for i := range o.Tunnels {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	end := time.Now()
	cpu1 := cpuTime()

	res := &Result{Target: o.Target.String(), Proposal: o.Proposal, ESP: o.ESP, Tunnels: o.Tunnels,
		Concurrency: o.Concurrency, Engines: o.Engines, Encap: o.Encap, InitiatorCPUms: ms(cpu1 - cpu0)}
	var lats []time.Duration
	last := start
	for _, oc := range outcomes {
		switch {
		case oc.ok:
			res.OK++
			lats = append(lats, oc.lat)
			if oc.finished.After(last) {
				last = oc.finished
			}
		case !oc.started:
			res.NotStarted++
		default:
			res.Failed++
			if oc.timeout {
				res.Timeouts++
			}
		}
	}
	if res.OK == 0 {
		last = end
	}
	res.ElapsedS = last.Sub(start).Seconds()
	if res.ElapsedS > 0 {
		res.TunnelsPerS = round1(float64(res.OK) / res.ElapsedS)
	}
	slices.Sort(lats)
	res.P50ms, res.P90ms, res.P99ms = ms(percentile(lats, 0.50)), ms(percentile(lats, 0.90)), ms(percentile(lats, 0.99))
	if len(lats) > 0 {
		res.MaxMs = ms(lats[len(lats)-1])
	}
	res.ElapsedS = math.Round(res.ElapsedS*1000) / 1000
	for _, rt := range rts {
		var st ikev1.Stats
		if err := rt.Do(context.Background(), func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) {
			st = e.Stats()
			return nil, nil
		}); err != nil {
			o.Log.Warn("reading engine counters", "err", err)
		}
		res.Retransmits += st.Retransmits
		res.Phase1Failed += st.Phase1Failed
		res.Phase2Failed += st.Phase2Failed
	}
	if ctx.Err() != nil && res.OK+res.Failed < o.Tunnels {
		o.Log.Warn("run stopped before every tunnel was tried", "reason", context.Cause(ctx), "tried", res.OK+res.Failed, "tunnels", o.Tunnels)
	}
	return res, nil
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(q*float64(len(sorted)))) - 1
	k = max(0, min(k, len(sorted)-1))
	return sorted[k]
}

func ms(d time.Duration) float64 { return round1(float64(d) / float64(time.Millisecond)) }

func round1(f float64) float64 { return math.Round(f*10) / 10 }
