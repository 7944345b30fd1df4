package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

// Options configure Run.
type Options struct {
	// Bin is the ikegwd binary (required).
	Bin string
	// Rounds of faults; 20 if zero.
	Rounds int
	// Peers is the number of chaos peers (besides gwlab's own), 1..20; 4
	// if zero. Tunnels is each one's number of tunnels (children), 2..150;
	// 50 if zero.
	Peers, Tunnels int
	// Gateways (2 if zero) and Witness (ThreeGateways false: a witness).
	Gateways int
	// NoWitness runs Gateways gateways without a witness (needs 3+).
	NoWitness bool
	// Seed chooses the faults; a random one (printed) if zero.
	Seed int64
	// Kinds are the faults drawn from; every kind if empty.
	Kinds []Kind
	// Dir is the lab's work directory (a temporary one if empty; kept
	// when KeepDir).
	Dir string
	// Out gets the progress lines and the summary table; os.Stdout if nil.
	Out io.Writer
	// Logger gets the lab's event lines; a discarding one if nil.
	Logger *slog.Logger
	// SettleTimeout bounds each wait for the cluster and the peers to
	// settle after a fault, and for the members' records to catch up;
	// 120 s if zero. Reaching it is a violation ("settle").
	SettleTimeout time.Duration
	// ChurnInterval is the pause between two tunnel operations of one
	// peer; 300 ms if zero.
	ChurnInterval time.Duration
	// PingInterval of the pingers through the pinned tunnels; 50 ms if zero.
	PingInterval time.Duration
	// DPDDelay on both sides; 10 s if zero.
	DPDDelay time.Duration
	// PeerExchanges is the chaos peers' charon.max_ikev1_exchanges: how
	// many IKEv1 exchanges (Quick Modes and Informationals) per IKE SA
	// charon keeps the IV of; 0 keeps strongSwan's default, 3. With 3, a
	// burst of DELETEs from the gateway during a peer's Quick Mode makes
	// charon forget that Quick Mode's IV (see README).
	PeerExchanges int
}

func (o *Options) setDefaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Rounds, 20)
	def(&o.Peers, 4)
	def(&o.Tunnels, 50)
	def(&o.Gateways, 2)
	switch {
	case o.Bin == "":
		return fmt.Errorf("%w: Bin (the ikegwd binary) is required", ErrOptions)
	case o.Rounds < 1:
		return fmt.Errorf("%w: Rounds %d: want at least 1", ErrOptions, o.Rounds)
	case o.Peers < 1 || o.Peers > 20:
		return fmt.Errorf("%w: Peers %d: want 1..20", ErrOptions, o.Peers)
	case o.Tunnels < 2 || o.Tunnels > 150:
		return fmt.Errorf("%w: Tunnels %d: want 2..150 (one pinned, the others churned)", ErrOptions, o.Tunnels)
	case o.PeerExchanges < 0 || o.PeerExchanges > 1000:
		return fmt.Errorf("%w: PeerExchanges %d: want 0 (strongSwan's default) or 1..1000", ErrOptions, o.PeerExchanges)
	case o.NoWitness && o.Gateways < 3:
		return fmt.Errorf("%w: %d gateways without a witness: want 3 or more", ErrOptions, o.Gateways)
	}
	if o.Seed == 0 {
		o.Seed = rand.Int64()
	}
	if len(o.Kinds) == 0 {
		o.Kinds = slices.Clone(AllKinds)
	}
	for _, k := range o.Kinds {
		if !slices.Contains(AllKinds, k) {
			return fmt.Errorf("%w: fault kind %q: want one of %s", ErrOptions, k, kindList())
		}
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&o.SettleTimeout, 120 * time.Second}, {&o.ChurnInterval, 300 * time.Millisecond}, {&o.PingInterval, 50 * time.Millisecond}, {&o.DPDDelay, 10 * time.Second}} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return fmt.Errorf("%w: negative duration %v", ErrOptions, *d.v)
		}
	}
	return nil
}

// RoundResult is one line of the summary.
type RoundResult struct {
	Round    int
	Fault    Fault
	Node     string // the node the fault hit ("" for the cluster segment)
	Tunnels  int    // tunnels checked
	ChurnOK  int    // tunnel set-ups and tear-downs that succeeded
	ChurnErr int    // and that failed (not a violation: availability)
	// Stale counts the active's installed children no peer holds after
	// the round (not a violation; see Stale).
	Stale      int
	Violations int
	Took       time.Duration
}

// Result is the outcome of Run.
type Result struct {
	Seed       int64
	Plan       []Fault
	Rounds     []RoundResult
	Violations []Violation
	Samples    int // VIP samples taken
	SampleErrs int
	// ChurnErrors are the first failed tunnel operations, for the record.
	ChurnErrors []string
}

// OK reports whether no invariant was violated.
func (r *Result) OK() bool { return len(r.Violations) == 0 }

// WriteTable prints the summary table and every violation.
func (r *Result) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "chaos summary (seed %d)\n", r.Seed)
	fmt.Fprintf(w, "%5s  %-28s  %-8s  %7s  %9s  %10s  %6s  %6s\n", "round", "fault", "node", "tunnels", "churn ok", "churn err", "stale", "viol.")
	tot := RoundResult{}
	for _, rr := range r.Rounds {
		node := rr.Node
		if node == "" {
			node = "-"
		}
		f := rr.Fault.String()
		if rr.Round == 0 {
			f = "(setup)"
		}
		fmt.Fprintf(w, "%5d  %-28s  %-8s  %7d  %9d  %10d  %6d  %6d\n", rr.Round, f, node, rr.Tunnels, rr.ChurnOK, rr.ChurnErr, rr.Stale, rr.Violations)
		tot.Tunnels += rr.Tunnels
		tot.ChurnOK += rr.ChurnOK
		tot.ChurnErr += rr.ChurnErr
		tot.Violations += rr.Violations
	}
	fmt.Fprintf(w, "%5s  %-28s  %-8s  %7d  %9d  %10d  %6s  %6d\n", "total", "", "", tot.Tunnels, tot.ChurnOK, tot.ChurnErr, "", tot.Violations)
	fmt.Fprintf(w, "VIP samples: %d every %v (%d with a read error)\n", r.Samples, SampleInterval, r.SampleErrs)
	for _, e := range r.ChurnErrors {
		fmt.Fprintf(w, "churn error: %s\n", e)
	}
	if len(r.Violations) == 0 {
		fmt.Fprintf(w, "no violations\n")
		return
	}
	fmt.Fprintf(w, "%d VIOLATIONS:\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  %s\n", v)
	}
}

type runner struct {
	o       Options
	log     *slog.Logger
	lab     *gwlab.Lab
	peers   []*peer
	sampler *Sampler
	seqs    *SeqMonitor
	res     *Result
}

// maxChurnErrors bounds Result.ChurnErrors.
const maxChurnErrors = 20

// Run builds the lab, runs the rounds and returns the result; the lab is
// removed before it returns. An error means the run could not be carried
// out (the lab could not be built, the context ended); violations are in
// the Result.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	r := &runner{o: o, log: o.Logger, seqs: NewSeqMonitor()}
	r.res = &Result{Seed: o.Seed, Plan: Plan(o.Seed, o.Rounds, o.Kinds, !o.NoWitness)}
	fmt.Fprintf(o.Out, "chaos: seed %d, %d rounds, %d gateways%s, %d peers x %d tunnels, faults %v\n", o.Seed, o.Rounds, o.Gateways,
		map[bool]string{true: "", false: " + witness"}[o.NoWitness], o.Peers, o.Tunnels, o.Kinds)
	for i, f := range r.res.Plan {
		fmt.Fprintf(o.Out, "chaos: plan: round %d: %s (lead %.1fs)\n", i+1, f, f.Lead.Seconds())
	}
	r.lab, err = gwlab.Build(ctx, gwlab.Options{Gateways: o.Gateways, Witness: !o.NoWitness, Bin: o.Bin, Dir: o.Dir, Logger: o.Logger,
		DPDDelay: o.DPDDelay, StartTimeout: 2 * time.Minute, WaitTimeout: o.SettleTimeout})
	if err != nil {
		return r.res, err
	}
	defer func() {
		for _, p := range r.peers {
			if p.ownPing && p.pinger != nil {
				p.pinger.Stop()
			}
		}
		if r.sampler != nil {
			r.sampler.Stop()
		}
		err = errors.Join(err, r.lab.Close())
	}()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := r.applyConfig(sctx); err != nil {
		return r.res, err
	}
	if err := r.startPeers(sctx); err != nil {
		return r.res, err
	}
	fmt.Fprintf(o.Out, "chaos: lab up (%s); setting up %d tunnels\n", r.lab.Dir(), o.Peers*o.Tunnels)
	t0 := time.Now()
	if err := r.establish(sctx); err != nil {
		return r.res, err
	}
	// gwlab's own peer: one pinned tunnel, never churned.
	r.peers = append(r.peers, &peer{name: "peer", swan: r.lab.Swan(), children: []string{"net"}, pinned: "net", pinger: r.lab.Pinger(),
		want: map[string]childWant{"net": wantUp}})
	fmt.Fprintf(o.Out, "chaos: %d tunnels up in %v\n", o.Peers*o.Tunnels+1, time.Since(t0).Round(time.Millisecond))
	for _, p := range r.peers {
		sas, err := p.swan.ListSAs(sctx)
		if err != nil {
			return r.res, err
		}
		est, other := Phase1Of(peerConn, sas)
		if len(est) != 1 || len(other) != 0 {
			return r.res, fmt.Errorf("chaos: %s: want one established IKE SA after setup, have %v and %v", p.name, est, other)
		}
		p.base = est[0]
	}
	var names, nss []string
	for _, n := range r.lab.Nodes() {
		if !n.Witness {
			names, nss = append(names, n.Name), append(nss, n.NS.Name())
		}
	}
	if r.sampler, err = NewSampler(names, nss, []netip.Addr{gwlab.OutsideVIP.Addr(), gwlab.InsideVIP.Addr()}); err != nil {
		return r.res, err
	}
	r.sampler.Start()
	// Round 0 checks the lab as set up.
	if !r.round(ctx, 0, Fault{}) {
		fmt.Fprintf(o.Out, "chaos: the lab as set up did not settle: no rounds run\n")
		return r.res, nil
	}
	for i, f := range r.res.Plan {
		if err := ctx.Err(); err != nil {
			return r.res, err
		}
		if !r.round(ctx, i+1, f) {
			fmt.Fprintf(o.Out, "chaos: stopping after round %d: the lab did not settle\n", i+1)
			break
		}
	}
	return r.res, nil
}

func (r *runner) violate(round int, check, what, evidence string) {
	v := Violation{Round: round, Check: check, What: what, Evidence: evidence}
	r.res.Violations = append(r.res.Violations, v)
	fmt.Fprintf(r.o.Out, "VIOLATION %s\n", v)
}

// round runs one round; false when the lab did not settle (later rounds
// would test nothing).
func (r *runner) round(ctx context.Context, n int, f Fault) bool {
	start := time.Now()
	before := len(r.res.Violations)
	rr := RoundResult{Round: n, Fault: f}
	settled := true
	if n > 0 {
		rng := rand.New(rand.NewPCG(uint64(r.o.Seed), uint64(n)))
		ch := r.startChurn(rng)
		r.sampler.SetPhase(n, "churn before "+string(f.Kind))
		sleep(ctx, f.Lead)
		r.sampler.SetPhase(n, string(f.Kind))
		node, err := r.inject(ctx, n, f)
		rr.Node = node
		if err != nil {
			r.violate(n, "settle", fmt.Sprintf("fault %s: %v", f, err), "")
			settled = false
		}
		r.sampler.SetPhase(n, "settling after "+string(f.Kind))
		if settled {
			if err := r.waitCluster(ctx); err != nil {
				r.violate(n, "settle", "the cluster did not settle after "+f.String(), err.Error())
				settled = false
			}
		}
		rr.ChurnOK, rr.ChurnErr = ch.stop()
		for _, e := range ch.errs {
			if len(r.res.ChurnErrors) < maxChurnErrors {
				r.res.ChurnErrors = append(r.res.ChurnErrors, fmt.Sprintf("round %d: %s", n, clip(e, 300)))
			}
		}
	}
	r.sampler.SetPhase(n, "check")
	if settled {
		rr.Tunnels, rr.Stale, settled = r.check(ctx, n)
	}
	overlaps, samples, errs, lastErr := r.sampler.Take()
	for _, o := range overlaps {
		r.violate(o.Round, "vip", "two gateways held a VIP at once", o.String())
	}
	r.res.Samples, r.res.SampleErrs = samples, errs
	if lastErr != nil && errs > 0 {
		r.log.Warn("chaos: sampler read errors", "count", errs, "last", lastErr)
	}
	rr.Violations = len(r.res.Violations) - before
	rr.Took = time.Since(start)
	r.res.Rounds = append(r.res.Rounds, rr)
	fmt.Fprintf(r.o.Out, "chaos: round %d: %s on %s: %d tunnels checked, churn %d ok %d failed, %d stale, %d violations (%v)\n",
		n, map[bool]string{true: f.String(), false: "(setup)"}[n > 0], orDash(rr.Node), rr.Tunnels, rr.ChurnOK, rr.ChurnErr, rr.Stale, rr.Violations, rr.Took.Round(time.Millisecond))
	return settled
}

// clip shortens s to its first line and at most n bytes (swanctl errors
// carry charon's whole log of the attempt).
func clip(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > n {
		s = s[:n] + " ..."
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// roles returns the active gateway, the other gateways and the witness.
func (r *runner) roles(ctx context.Context) (active string, standbys []string, witness string, err error) {
	active, err = r.waitActive(ctx, "")
	if err != nil {
		return "", nil, "", err
	}
	for _, n := range r.lab.Nodes() {
		switch {
		case n.Witness:
			witness = n.Name
		case n.Name != active:
			standbys = append(standbys, n.Name)
		}
	}
	slices.Sort(standbys)
	return active, standbys, witness, nil
}

// waitActive polls until one gateway other than not is active.
func (r *runner) waitActive(ctx context.Context, not string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.SettleTimeout)
	defer cancel()
	var last error
	for {
		a, err := r.lab.Active(ctx)
		if err == nil && a != not {
			return a, nil
		}
		if err == nil {
			err = fmt.Errorf("%s is still active", a)
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("chaos: no active gateway other than %q: %w (last: %v)", not, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// inject inflicts f and undoes it (restart, heal, SIGCONT); it returns
// the node hit.
func (r *runner) inject(ctx context.Context, round int, f Fault) (node string, err error) {
	active, standbys, witness, err := r.roles(ctx)
	if err != nil {
		return "", err
	}
	switch f.Target {
	case TargetActive:
		node = active
	case TargetStandby:
		node = standbys[f.Pick%len(standbys)]
	case TargetWitness:
		node = witness
		if node == "" {
			node = standbys[f.Pick%len(standbys)]
		}
	}
	r.log.Info("chaos: fault", "round", round, "fault", f.String(), "node", node)
	switch f.Kind {
	case KillDaemon:
		if err := r.lab.KillDaemon(node); err != nil {
			return node, err
		}
		return node, r.restart(ctx, node, node == active, 0)
	case KillNode:
		if err := r.lab.KillNode(node); err != nil {
			return node, err
		}
		return node, r.restart(ctx, node, node == active, f.Hold)
	case Partition:
		n, nerr := r.lab.Node(node)
		if nerr != nil {
			return node, nerr
		}
		var faults []*lab.Fault
		defer func() {
			for _, fl := range faults {
				if rerr := fl.Remove(); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}()
		for _, o := range r.lab.Nodes() {
			if o.Name == node {
				continue
			}
			fl, err := n.NS.DropAll(ctx, n.ClusterAddr, o.ClusterAddr)
			if err != nil {
				return node, err
			}
			faults = append(faults, fl)
		}
		sleep(ctx, f.Hold)
		return node, nil
	case Loss:
		_, clus, _, berr := r.lab.Bridges()
		if berr != nil {
			return "", berr
		}
		var faults []*lab.Fault
		defer func() {
			for _, fl := range faults {
				if rerr := fl.Remove(); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}()
		nodes := r.lab.Nodes()
		for i, a := range nodes {
			for _, b := range nodes[i+1:] {
				fl, err := clus.NS.DropPercent(ctx, a.ClusterAddr, b.ClusterAddr, 10)
				if err != nil {
					return "", err
				}
				faults = append(faults, fl)
			}
		}
		sleep(ctx, f.Hold)
		return "", nil
	case Stop:
		pid, err := r.lab.DaemonPid(node)
		if err != nil {
			return node, err
		}
		if pid == 0 {
			return node, fmt.Errorf("chaos: %s: no ikegwd to stop", node)
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return node, fmt.Errorf("chaos: %s: SIGSTOP to pid %d: %w", node, pid, err)
		}
		sleep(ctx, f.Hold)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			return node, fmt.Errorf("chaos: %s: SIGCONT to pid %d: %w", node, pid, err)
		}
		return node, nil
	}
	return node, fmt.Errorf("%w: fault kind %q", ErrOptions, f.Kind)
}

// restart brings a killed node back after down; when it was the active,
// only once another gateway is active.
func (r *runner) restart(ctx context.Context, node string, wasActive bool, down time.Duration) error {
	if wasActive {
		if _, err := r.waitActive(ctx, node); err != nil {
			return err
		}
	}
	n, err := r.lab.Node(node)
	if err != nil {
		return err
	}
	// The supervisor cleans up after its daemon and exits: let it finish.
	if p := n.Proc(); p != nil {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
		case <-ctx.Done():
		}
	}
	sleep(ctx, down)
	rctx, cancel := context.WithTimeout(ctx, r.o.SettleTimeout)
	defer cancel()
	return r.lab.Restart(rctx, node)
}

// waitCluster waits until one gateway is active and every member runs,
// knows the leader and has applied what the leader committed.
func (r *runner) waitCluster(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.SettleTimeout)
	defer cancel()
	var last string
	for {
		ok, why := r.clusterSettled(ctx)
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos: cluster not settled after %v: %s", r.o.SettleTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *runner) clusterSettled(ctx context.Context) (bool, string) {
	st := r.lab.Status(ctx)
	var active []string
	var commit uint64
	for _, s := range st {
		if s.Err != nil || !s.Running || s.Cut || s.Status.Cluster == nil {
			return false, fmt.Sprintf("%s: running=%v cut=%v err=%v", s.Name, s.Running, s.Cut, s.Err)
		}
		if s.Role == api.RoleActive {
			active = append(active, s.Name)
		}
		if s.Status.Cluster.State == "Leader" {
			commit = s.Status.Cluster.CommitIndex
		}
	}
	if len(active) != 1 {
		return false, fmt.Sprintf("active gateways: %v", active)
	}
	for _, s := range st {
		c := s.Status.Cluster
		if c.Leader == "" || c.AppliedIndex < commit {
			return false, fmt.Sprintf("%s: leader %q, applied %d < leader's commit %d", s.Name, c.Leader, c.AppliedIndex, commit)
		}
	}
	return true, ""
}

// check settles the peers and checks every invariant; it returns the
// number of tunnels checked, the active's stale children and whether the
// lab settled.
func (r *runner) check(parent context.Context, round int) (int, int, bool) {
	// Each wait has its own deadline: a slow one does not eat the next.
	wait := func() (context.Context, context.CancelFunc) { return context.WithTimeout(parent, r.o.SettleTimeout) }
	ctx, cancel := wait()
	defer cancel()
	since := time.Now()
	// The peers: no exchange in flight.
	sas := make([][]lab.IKESA, len(r.peers))
	for i, p := range r.peers {
		got, err := p.swan.WaitFor(ctx, quiet)
		if err != nil {
			r.violate(round, "settle", p.name+": IKE and child SAs did not settle", err.Error())
			return 0, 0, false
		}
		sas[i] = got
	}
	// Traffic flows through every pinned tunnel the peer still holds (a
	// pinned tunnel that is gone is reported as lost below).
	ctx, cancel = wait()
	defer cancel()
	for i, p := range r.peers {
		if !slices.ContainsFunc(PeerTunnels(p.name, peerConn, sas[i]), func(t Tunnel) bool { return t.Child == p.pinned }) {
			continue
		}
		if err := waitReply(ctx, p.pinger, since); err != nil {
			r.violate(round, "dark", fmt.Sprintf("%s: no ping reply through tunnel %s", p.name, p.pinned), err.Error())
		}
	}
	// Re-read after the pings: SAs of every peer, settled.
	ctx, cancel = wait()
	defer cancel()
	var tunnels []Tunnel
	var broken []*peer
	for i, p := range r.peers {
		if got, err := p.swan.WaitFor(ctx, quiet); err == nil {
			sas[i] = got
		}
		bad := false
		if d := CheckPhase1(p.base, peerConn, sas[i]); d != "" {
			r.violate(round, "phase1", p.name+" renegotiated phase 1 or lost its IKE SA", d)
			bad = true
		}
		ts := PeerTunnels(p.name, peerConn, sas[i])
		tunnels = append(tunnels, ts...)
		var lost []string
		for c, w := range p.wants() {
			if w == wantUp && !slices.ContainsFunc(ts, func(t Tunnel) bool { return t.Child == c }) {
				lost = append(lost, c)
			}
		}
		if len(lost) > 0 {
			slices.Sort(lost)
			est, other := Phase1Of(peerConn, sas[i])
			r.violate(round, "lost", fmt.Sprintf("%s lost %d tunnels it did not tear down: %s", p.name, len(lost), strings.Join(lost, " ")),
				fmt.Sprintf("its IKE SAs now: established %v, other %v; %d tunnels installed", est, other, len(ts)))
			bad = true
		}
		if bad {
			broken = append(broken, p)
		}
		lines := SeqFailureLines(p.swan.Log())
		if len(lines) > p.seqSeen {
			r.violate(round, "seq", fmt.Sprintf("%s: %d ESP sequence number failures", p.name, len(lines)-p.seqSeen), strings.Join(lines[p.seqSeen:min(len(lines), p.seqSeen+5)], "\n"))
			p.seqSeen = len(lines)
		}
	}
	defer func() {
		for _, p := range broken {
			ctx, cancel := wait()
			r.repair(ctx, round, p)
			cancel()
		}
	}()
	// Every member knows every tunnel; replicated records may trail the
	// active by a little: poll until they agree or the deadline.
	ctx, cancel = wait()
	defer cancel()
	var views map[string]api.SAs
	var active string
	var missing []string
	for {
		var err error
		active, views, err = r.views(ctx)
		if err == nil {
			missing = Unknown(views, tunnels)
			if len(missing) == 0 {
				break
			}
		} else {
			missing = []string{err.Error()}
		}
		if ctx.Err() != nil {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	if len(missing) > 0 {
		ev := missing
		if len(ev) > 10 {
			ev = append(slices.Clone(ev[:10]), fmt.Sprintf("... and %d more", len(missing)-10))
		}
		r.violate(round, "known", fmt.Sprintf("%d tunnel views missing on the cluster", len(missing)), strings.Join(ev, "\n"))
	}
	stale := 0
	if views != nil {
		for _, b := range r.seqs.Observe(round, active, views) {
			r.violate(round, "outseq", "outbound sequence number went back", b)
		}
		stale = Stale(views[active], tunnels)
	}
	return len(tunnels), stale, true
}

// repair makes a peer that broke (its violations are reported) useful
// for the next rounds: its pinned tunnel is set up again, its IKE SA now
// is the new baseline and the expectations follow what it holds.
func (r *runner) repair(ctx context.Context, round int, p *peer) {
	sas, err := p.swan.ListSAs(ctx)
	if err == nil && !slices.ContainsFunc(PeerTunnels(p.name, peerConn, sas), func(t Tunnel) bool { return t.Child == p.pinned }) {
		if err = p.swan.Initiate(ctx, p.pinned); err == nil {
			sas, err = p.swan.ListSAs(ctx)
		}
	}
	if err != nil {
		r.violate(round, "settle", fmt.Sprintf("%s: could not be repaired after its violation", p.name), err.Error())
		return
	}
	est, other := Phase1Of(peerConn, sas)
	if len(est) != 1 || len(other) != 0 {
		r.violate(round, "settle", fmt.Sprintf("%s: could not be repaired after its violation", p.name), fmt.Sprintf("IKE SAs: established %v, other %v", est, other))
		return
	}
	p.base = est[0]
	ts := PeerTunnels(p.name, peerConn, sas)
	p.mu.Lock()
	for _, c := range p.children {
		p.want[c] = wantDown
	}
	for _, t := range ts {
		p.want[t.Child] = wantUp
	}
	p.mu.Unlock()
	fmt.Fprintf(r.o.Out, "chaos: round %d: %s repaired: IKE SA %s, %d tunnels\n", round, p.name, p.base, len(ts))
}

// views reads the active's SA view and every other member's replicated
// records (the witness's too when it answers).
func (r *runner) views(ctx context.Context) (string, map[string]api.SAs, error) {
	active, err := r.lab.Active(ctx)
	if err != nil {
		return "", nil, err
	}
	out := map[string]api.SAs{}
	for _, n := range r.lab.Nodes() {
		var v api.SAs
		if err := adminDo(ctx, n.Socket, http.MethodGet, api.PathSAs, nil, &v); err != nil {
			if n.Witness && strings.Contains(err.Error(), "no SA database") {
				continue
			}
			return "", nil, err
		}
		out[n.Name] = v
	}
	return active, out, nil
}

// quiet holds when no IKE SA of the peer is in an exchange: every IKE SA
// established and every child installed.
func quiet(sas []lab.IKESA) bool {
	for _, s := range sas {
		if s.State != "ESTABLISHED" {
			return false
		}
		for _, c := range s.Children {
			if c.State != "INSTALLED" {
				return false
			}
		}
	}
	return true
}

// waitReply waits for a reply to a request sent at or after since.
func waitReply(ctx context.Context, p *lab.Pinger, since time.Time) error {
	for {
		rec := p.Snapshot()
		for i := len(rec.Replies) - 1; i >= 0; i-- {
			if !rec.Replies[i].Sent.Before(since) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ping %s -> %s: no reply to a request sent since %s: %w (sent %d, received %d)",
				rec.Src, rec.Dst, since.Format("15:04:05.000"), ctx.Err(), rec.Sent, rec.Received())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// churn sets up and tears down the chaos peers' unpinned tunnels.
type churn struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	ok    int
	errs  []string
}

func (r *runner) startChurn(rng *rand.Rand) *churn {
	c := &churn{stopc: make(chan struct{})}
	for _, p := range r.peers {
		if !p.ownPing || len(p.children) < 2 {
			continue
		}
		// One generator per peer, seeded from the round's.
		prng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for {
				select {
				case <-c.stopc:
					return
				case <-time.After(r.o.ChurnInterval):
				}
				child := p.children[1+prng.IntN(len(p.children)-1)]
				if err := r.toggle(p, child); err != nil {
					c.mu.Lock()
					c.errs = append(c.errs, err.Error())
					c.mu.Unlock()
				} else {
					c.mu.Lock()
					c.ok++
					c.mu.Unlock()
				}
			}
		}()
	}
	return c
}

// stop ends the churn after the operations in flight and returns the
// counts.
func (c *churn) stop() (ok, failed int) {
	close(c.stopc)
	c.wg.Wait()
	return c.ok, len(c.errs)
}

// opTimeout bounds one tunnel operation: strongSwan's retransmissions
// (5 tries from 1 s, base 1.8) give up after about 41 s.
const opTimeout = 90 * time.Second

// toggle tears the child down when the peer holds it, sets it up
// otherwise.
func (r *runner) toggle(p *peer, child string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	sas, err := p.swan.ListSAs(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	up := false
	for _, t := range PeerTunnels(p.name, peerConn, sas) {
		if t.Child == child {
			up = true
		}
	}
	if up {
		if err := p.swan.Terminate(ctx, child); err != nil {
			p.setWant(child, wantUnknown)
			return fmt.Errorf("%s: tear down %s: %w", p.name, child, err)
		}
		p.setWant(child, wantDown)
		return nil
	}
	if err := p.swan.Initiate(ctx, child); err != nil {
		p.setWant(child, wantUnknown)
		return fmt.Errorf("%s: set up %s: %w", p.name, child, err)
	}
	p.setWant(child, wantUp)
	return nil
}
