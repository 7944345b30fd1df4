package gwlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"ikegw/deploy/lab"
)

// Kind is a way for the active gateway to go away.
type Kind string

// The failures the lab can inflict on the active gateway.
const (
	// DaemonDeath: SIGKILL of ikegwd alone; the machine (and the
	// supervisor) lives on.
	DaemonDeath Kind = "daemon-death"
	// NodeDeath: the machine dies: cables cut, every process killed.
	NodeDeath Kind = "node-death"
	// Planned: SIGTERM to the active ikegwd, which hands over.
	Planned Kind = "planned"
	// PlannedCLI: `ikegwctl failover --to OTHER` against the active
	// ikegwd (Options.Ctl), which hands over to that gateway and stays up
	// as a standby.
	PlannedCLI Kind = "planned-cli"
)

// SeqFailure is what strongSwan logs when an ESP packet's sequence number
// fails replay checking (a new active restarted its outbound counter).
const SeqFailure = "ESP sequence number verification failed"

// PeerState is the peer's view of its one tunnel.
type PeerState struct {
	UniqueID     uint32
	InitiatorSPI string // cookies, hex
	ResponderSPI string
	ChildSPIIn   string // the peer's inbound SPI, hex
	ChildSPIOut  string
}

func (p PeerState) String() string {
	return fmt.Sprintf("IKE SA #%d %s_i %s_r, child in %s out %s", p.UniqueID, p.InitiatorSPI, p.ResponderSPI, p.ChildSPIIn, p.ChildSPIOut)
}

// PeerSAs returns the peer's IKE SAs with their children.
func (l *Lab) PeerSAs(ctx context.Context) ([]lab.IKESA, error) { return l.swan.ListSAs(ctx) }

// peerStateOf returns the state when the peer has exactly one established
// IKE SA with an installed child "net".
func peerStateOf(sas []lab.IKESA) (PeerState, bool) {
	var est []lab.IKESA
	for _, s := range sas {
		if s.State == "ESTABLISHED" {
			est = append(est, s)
		}
	}
	if len(est) != 1 {
		return PeerState{}, false
	}
	s := est[0]
	var kids []lab.ChildSA
	for _, c := range s.Children {
		if c.Name == "net" && c.State == "INSTALLED" {
			kids = append(kids, c)
		}
	}
	if len(kids) != 1 {
		return PeerState{}, false
	}
	return PeerState{UniqueID: s.UniqueID, InitiatorSPI: s.InitiatorSPI, ResponderSPI: s.ResponderSPI,
		ChildSPIIn: kids[0].SPIIn, ChildSPIOut: kids[0].SPIOut}, true
}

// peerState waits until the peer has one established IKE SA with one
// installed child and returns it.
func (l *Lab) peerState(ctx context.Context) (PeerState, error) {
	var st PeerState
	_, err := l.swan.WaitFor(ctx, func(sas []lab.IKESA) bool {
		var ok bool
		st, ok = peerStateOf(sas)
		return ok
	})
	if err != nil {
		return PeerState{}, fmt.Errorf("gwlab: the peer has no single established tunnel: %w", err)
	}
	return st, nil
}

// PeerState returns the peer's current tunnel (one established IKE SA with
// one installed child), waiting for it until ctx ends.
func (l *Lab) PeerState(ctx context.Context) (PeerState, error) { return l.peerState(ctx) }

// waitReply waits for a ping reply to a request sent at or after since.
func (l *Lab) waitReply(ctx context.Context, since time.Time) error {
	for {
		rec := l.pinger.Snapshot()
		for i := len(rec.Replies) - 1; i >= 0; i-- {
			if !rec.Replies[i].Sent.Before(since) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gwlab: ping %s -> %s: no reply to a request sent since %s: %w (sent %d, received %d, send error: %v)",
				HostInside.Addr(), PeerProtected, since.Format("15:04:05.000"), ctx.Err(), rec.Sent, rec.Received(), l.pinger.SendError())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Outage is what the ping saw around one failure.
type Outage struct {
	// Gap is the largest time between consecutive replies from the last
	// reply before the failure to the end of the window; a reply to a
	// request sent before the failure but received after it (in flight)
	// does not end the outage.
	Gap time.Duration
	// Lost is the number of requests, from the one after the last reply
	// before the failure to the last one answered in the window (the last
	// one sent when none was), that got no reply.
	Lost int
	// Resumed is whether a request sent after the failure was answered
	// within the window.
	Resumed bool
	// SendGap is the largest time between consecutive requests sent from
	// the last one before the failure to the end of the window: the
	// pinger's own stall (the process running it not scheduled on a
	// loaded machine), which also shows in Gap without a lost ping.
	SendGap time.Duration
}

// MeasureOutage computes the Outage of rec for a failure at at, looking
// at replies received up to end.
func MeasureOutage(rec lab.PingRecord, at, end time.Time) Outage {
	// Replies in arrival order, without those in flight at the failure.
	var rs []lab.Reply
	for _, r := range rec.Replies {
		if r.Received.After(end) {
			continue
		}
		if r.Sent.Before(at) && r.Received.After(at) {
			continue
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b lab.Reply) int { return a.Received.Compare(b.Received) })
	prev := rec.Start
	prevSeq := -1
	start := 0
	for i, r := range rs {
		if r.Received.After(at) {
			break
		}
		prev, prevSeq, start = r.Received, r.Seq, i+1
	}
	var o Outage
	answered := map[int]bool{}
	maxSeq := -1
	for _, r := range rs[start:] {
		if d := r.Received.Sub(prev); d > o.Gap {
			o.Gap = d
		}
		prev = r.Received
		if !r.Sent.Before(at) {
			o.Resumed = true
		}
		answered[r.Seq] = true
		maxSeq = max(maxSeq, r.Seq)
	}
	if d := end.Sub(prev); d > o.Gap {
		o.Gap = d
	}
	// Requests answered in flight were not lost either.
	for _, r := range rec.Replies {
		if !r.Received.After(end) {
			answered[r.Seq] = true
		}
	}
	if maxSeq < 0 {
		maxSeq = rec.Sent // never resumed: everything after the last reply was lost
	}
	for s := prevSeq + 1; s < maxSeq; s++ {
		if !answered[s] {
			o.Lost++
		}
	}
	var last time.Time
	for _, t := range rec.SentTimes {
		if t.After(end) {
			break
		}
		if t.After(at) && !last.IsZero() {
			o.SendGap = max(o.SendGap, t.Sub(last))
		}
		last = t
	}
	return o
}

// Report is the outcome of one failover.
type Report struct {
	Kind      Kind
	Killed    string    // the gateway that was active
	NewActive string    // the gateway active afterwards ("" if none)
	At        time.Time // when the failure was inflicted
	// Takeover is the time from the failure until the new active's admin
	// API reported the role.
	Takeover time.Duration
	Outage
	Sent int // requests sent in the window
	// Before and After are the peer's tunnel around the failure.
	Before, After PeerState
	// PeerSAUnchanged: same IKE SA (uniqueid, cookies); SPIsUnchanged:
	// same child SPIs.
	PeerSAUnchanged bool
	SPIsUnchanged   bool
	// ActiveAgrees: the new active lists the peer's IKE SA and child.
	ActiveAgrees bool
	// SeqFailures counts new SeqFailure lines in the peer's log.
	SeqFailures int
	// Split is the new active's own account of its takeover (nil if it
	// gave none).
	Split *Takeover
	// Candidate and Elected are when the new active's Raft became a
	// candidate (its election timeout ran out: the failure detected) and
	// leader, from its log (zero when the log does not say: e.g. a planned
	// handover's target is elected without a timeout).
	Candidate, Elected time.Time
	// DeadClean (daemon death only) is how long after the kill the dead
	// daemon's node last held a VIP or a TUN device; -1 if it still did
	// when the report was made.
	DeadClean time.Duration
}

// OK reports whether the failover was seamless: the ping resumed, the
// peer kept its SAs and saw no replayed sequence numbers, and (daemon
// death) the dead daemon's node let go of its VIPs and TUN device.
func (r Report) OK() bool {
	return r.Resumed && r.PeerSAUnchanged && r.SPIsUnchanged && r.SeqFailures == 0 && r.NewActive != "" &&
		(r.Kind != DaemonDeath || r.DeadClean >= 0)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// String is a multi-line human summary.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "failover (%s) of %s -> %s\n", r.Kind, r.Killed, orNone(r.NewActive))
	fmt.Fprintf(&b, "  outage:            %d ms (largest gap between ping replies)\n", r.Gap.Milliseconds())
	if r.SendGap > 50*time.Millisecond {
		fmt.Fprintf(&b, "  pinger stalled:    %d ms (largest gap between its own requests: part of the outage is the loaded machine's, not the failover's)\n", r.SendGap.Milliseconds())
	}
	fmt.Fprintf(&b, "  lost pings:        %d (of %d sent in the window)\n", r.Lost, r.Sent)
	fmt.Fprintf(&b, "  ping resumed:      %s\n", yesNo(r.Resumed))
	fmt.Fprintf(&b, "  new active after:  %d ms\n", r.Takeover.Milliseconds())
	fmt.Fprintf(&b, "  peer IKE SA same:  %s (%s_i %s_r #%d)\n", yesNo(r.PeerSAUnchanged), r.After.InitiatorSPI, r.After.ResponderSPI, r.After.UniqueID)
	fmt.Fprintf(&b, "  child SPIs same:   %s (in %s out %s)\n", yesNo(r.SPIsUnchanged), r.After.ChildSPIIn, r.After.ChildSPIOut)
	fmt.Fprintf(&b, "  active agrees:     %s\n", yesNo(r.ActiveAgrees))
	fmt.Fprintf(&b, "  ESP seq failures:  %d\n", r.SeqFailures)
	if r.Kind == DaemonDeath {
		if r.DeadClean >= 0 {
			fmt.Fprintf(&b, "  dead node clean:   after %d ms (no VIP, no TUN)\n", r.DeadClean.Milliseconds())
		} else {
			fmt.Fprintf(&b, "  dead node clean:   NO (still holds a VIP or a TUN device)\n")
		}
	}
	if s := r.Split; s != nil {
		fmt.Fprintf(&b, "  takeover on %s:   load %.1f ms, commit %.1f ms, install %.1f ms, engine %.1f ms (%d IKE SAs, %d children)\n",
			orNone(r.NewActive), s.LoadMS, s.CommitMS, s.InstallMS, s.EngineMS, s.IKESAs, s.ChildSAs)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// settle is how long Failover keeps watching after the ping resumed.
const settle = time.Second

// Failover makes the active gateway go away (kind), waits for another
// gateway to become active and the ping to resume, watches one more second
// and reports. The report is filled as far as it got also on error. The
// dead node stays dead: call Restart to bring it back.
func (l *Lab) Failover(ctx context.Context, kind Kind) (Report, error) {
	r := Report{Kind: kind}
	// The cluster may still be settling (a node that just rejoined); wait
	// for one active gateway, up to WaitTimeout.
	actx, cancel := context.WithTimeout(ctx, l.opts.WaitTimeout)
	active, err := l.waitActive(actx, "")
	cancel()
	if err != nil {
		return r, err
	}
	r.Killed = active
	pctx, cancel := context.WithTimeout(ctx, l.opts.WaitTimeout)
	r.Before, err = l.peerState(pctx)
	cancel()
	if err != nil {
		return r, err
	}
	seqBefore := strings.Count(l.swan.Log(), SeqFailure)
	sentBefore := l.pinger.Snapshot().Sent
	n, err := l.Node(active)
	if err != nil {
		return r, err
	}
	r.At = time.Now()
	var clean chan time.Duration
	switch kind {
	case DaemonDeath:
		err = l.KillDaemon(active)
		if err == nil {
			clean = make(chan time.Duration, 1)
			go func() { clean <- l.waitClean(ctx, n, r.At) }()
		}
	case NodeDeath:
		err = l.KillNode(active)
	case Planned:
		var pid int
		if pid, err = l.daemonPid(n); err == nil {
			if pid == 0 {
				err = fmt.Errorf("gwlab: %s: no ikegwd is running", active)
			} else if kerr := syscall.Kill(pid, syscall.SIGTERM); kerr != nil {
				err = fmt.Errorf("gwlab: %s: SIGTERM to pid %d: %w", active, pid, kerr)
			}
		}
	case PlannedCLI:
		err = l.ctlFailover(ctx, n)
	default:
		err = fmt.Errorf("%w: failover kind %q: want %s, %s, %s or %s", ErrOptions, kind, DaemonDeath, NodeDeath, Planned, PlannedCLI)
	}
	if err != nil {
		return r, err
	}
	wctx, cancel := context.WithTimeout(ctx, l.opts.WaitTimeout)
	defer cancel()
	var errs []error
	if r.NewActive, err = l.waitActive(wctx, active); err != nil {
		errs = append(errs, err)
	} else {
		r.Takeover = time.Since(r.At)
	}
	if err := l.waitReply(wctx, r.At); err != nil {
		errs = append(errs, err)
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
	}
	end := time.Now()
	rec := l.pinger.Snapshot()
	r.Outage = MeasureOutage(rec, r.At, end)
	r.Sent = rec.Sent - sentBefore
	sas, err := l.swan.ListSAs(wctx)
	if err != nil {
		errs = append(errs, err)
	}
	after, ok := peerStateOf(sas)
	if !ok {
		errs = append(errs, fmt.Errorf("gwlab: after the failover the peer has no single established tunnel: %+v", sas))
	}
	r.After = after
	r.PeerSAUnchanged = ok && after.UniqueID == r.Before.UniqueID && after.InitiatorSPI == r.Before.InitiatorSPI && after.ResponderSPI == r.Before.ResponderSPI
	r.SPIsUnchanged = ok && after.ChildSPIIn == r.Before.ChildSPIIn && after.ChildSPIOut == r.Before.ChildSPIOut
	r.SeqFailures = strings.Count(l.swan.Log(), SeqFailure) - seqBefore
	if r.NewActive != "" && ok {
		agree, err := l.agrees(wctx, r.NewActive, after)
		if err != nil {
			errs = append(errs, err)
		}
		r.ActiveAgrees = agree
		if st, err := l.NodeAdminStatus(wctx, r.NewActive); err == nil && st.Cluster != nil {
			r.Split = st.Cluster.LastTakeover
		}
		if n, err := l.Node(r.NewActive); err == nil {
			if p := n.Proc(); p != nil {
				r.Candidate, r.Elected = electionTimes(p.OutputPath(), r.At)
			}
		}
	}
	if clean != nil {
		r.DeadClean = <-clean
		if r.DeadClean < 0 {
			errs = append(errs, fmt.Errorf("gwlab: %s still holds a VIP or a TUN device %v after its daemon was killed", r.Killed, cleanTimeout))
		}
	}
	l.log.Info("gwlab: failover", "kind", kind, "killed", r.Killed, "new_active", r.NewActive,
		"outage_ms", r.Gap.Milliseconds(), "lost", r.Lost, "sa_unchanged", r.PeerSAUnchanged, "spis_unchanged", r.SPIsUnchanged, "seq_failures", r.SeqFailures)
	return r, errors.Join(errs...)
}

// electionTimes reads an ikegwd log (slog text) for the first Raft
// "entering candidate state" and "cluster: elected leader" lines at or
// after at; the election is the last candidacy before the first
// leadership.
func electionTimes(path string, at time.Time) (candidate, elected time.Time) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		isCand := strings.Contains(line, `msg="entering candidate state"`)
		isLeader := strings.Contains(line, `msg="cluster: elected leader"`)
		if !isCand && !isLeader {
			continue
		}
		f, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		ts, _, _ := strings.Cut(f, " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || t.Before(at) {
			continue
		}
		if isCand {
			candidate = t
		} else {
			elected = t
			if candidate.After(elected) {
				candidate = time.Time{}
			}
			return candidate, elected
		}
	}
	return time.Time{}, time.Time{}
}

// ctlFailover runs `ikegwctl --socket SOCK failover --to OTHER` against
// active node n, OTHER being the first other gateway whose links are up.
func (l *Lab) ctlFailover(ctx context.Context, n *Node) error {
	if l.opts.Ctl == "" {
		return fmt.Errorf("%w: a %s failover needs Options.Ctl (the ikegwctl binary)", ErrOptions, PlannedCLI)
	}
	to := ""
	for _, o := range l.nodes {
		o.mu.Lock()
		cut := o.cut
		o.mu.Unlock()
		if o != n && !o.Witness && !cut {
			to = o.Name
			break
		}
	}
	if to == "" {
		return fmt.Errorf("gwlab: no other gateway to hand %s's role to", n.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.opts.Ctl, "--socket", n.Socket, "failover", "--to", to).CombinedOutput()
	if err != nil {
		return fmt.Errorf("gwlab: ikegwctl failover --to %s on %s: %w: %s", to, n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// cleanTimeout bounds waiting for a dead daemon's leftovers to go.
const cleanTimeout = 5 * time.Second

// waitClean polls n until it holds no VIP and no TUN device and returns
// the time since at; -1 after cleanTimeout.
func (l *Lab) waitClean(ctx context.Context, n *Node, at time.Time) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, cleanTimeout)
	defer cancel()
	for {
		vips, tuns, err := n.HeldVIPs(ctx)
		if err == nil && len(vips) == 0 && len(tuns) == 0 {
			return time.Since(at)
		}
		select {
		case <-ctx.Done():
			l.log.Warn("gwlab: dead daemon's leftovers", "node", n.Name, "vips", vips, "tuns", tuns, "err", err)
			return -1
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// agrees reports whether gateway name lists the peer's IKE SA (cookies)
// and its child (crossed SPIs).
func (l *Lab) agrees(ctx context.Context, name string, p PeerState) (bool, error) {
	n, err := l.Node(name)
	if err != nil {
		return false, err
	}
	var g GatewaySAs
	if err := adminGetSAs(ctx, n.Socket, &g); err != nil {
		return false, err
	}
	ike, child := false, false
	for _, s := range g.IKE {
		if s.ICookie == p.InitiatorSPI && s.RCookie == p.ResponderSPI {
			ike = true
		}
	}
	for _, c := range g.Children {
		if c.SPIIn == p.ChildSPIOut && c.SPIOut == p.ChildSPIIn {
			child = true
		}
	}
	return ike && child, nil
}

// GatewaySAs returns what gateway name's admin API lists.
func (l *Lab) GatewaySAs(ctx context.Context, name string) (GatewaySAs, error) {
	n, err := l.Node(name)
	if err != nil {
		return GatewaySAs{}, err
	}
	var g GatewaySAs
	err = adminGetSAs(ctx, n.Socket, &g)
	return g, err
}

// NodeAdminStatus returns gateway name's /v1/status.
func (l *Lab) NodeAdminStatus(ctx context.Context, name string) (Status, error) {
	n, err := l.Node(name)
	if err != nil {
		return Status{}, err
	}
	var s Status
	// A status counts every SA (seconds on a loaded node with 10,000):
	// the SA listing's time bound, not the 2 s of the small answers.
	err = adminGetBounded(ctx, n.Socket, "/v1/status", &s, adminSAsTimeout, adminLimit)
	return s, err
}

// ExpireARP makes the peer and the protected host forget the VIPs' MAC
// addresses, as 60 s of ARP ageing would (their neighbour entries for the
// VIPs are deleted, so the next packet resolves them again), then waits
// until a ping sent after that is answered and both resolved each VIP to
// gateway active's own interface. After a daemon death that shows the dead
// node answers no ARP for the VIPs any more: had it answered, an entry
// could name its MAC, and packets sent to it would be lost.
func (l *Lab) ExpireARP(ctx context.Context, active string) error {
	n, err := l.Node(active)
	if err != nil {
		return err
	}
	checks := []struct {
		ns   string
		dev  string
		vip  netip.Addr
		gwIf string
	}{{l.Peer.Name(), "eth0", OutsideVIP.Addr(), IfOutside}, {l.Host.Name(), "eth0", InsideVIP.Addr(), IfInside}}
	for _, c := range checks {
		if out, err := exec.CommandContext(ctx, "ip", "-n", c.ns, "neigh", "flush", "to", c.vip.String(), "dev", c.dev).CombinedOutput(); err != nil {
			return fmt.Errorf("gwlab: ip -n %s neigh flush %s: %w: %s", c.ns, c.vip, err, strings.TrimSpace(string(out)))
		}
	}
	mark := time.Now()
	if err := l.waitReply(ctx, mark); err != nil {
		return fmt.Errorf("gwlab: after the VIPs' ARP entries expired: %w", err)
	}
	for _, c := range checks {
		want, err := linkMAC(ctx, n.NS.Name(), c.gwIf)
		if err != nil {
			return err
		}
		for {
			got, state, err := neighMAC(ctx, c.ns, c.vip)
			if err == nil && got == want && state != "INCOMPLETE" && state != "FAILED" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("gwlab: %s resolves %s to %q (%s, err %v), want %s's %s %s: %w", c.ns, c.vip, got, state, err, active, c.gwIf, want, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// linkMAC is the hardware address of interface dev in namespace ns.
func linkMAC(ctx context.Context, ns, dev string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-j", "link", "show", "dev", dev).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gwlab: ip -n %s link show %s: %w: %s", ns, dev, err, strings.TrimSpace(string(out)))
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return "", fmt.Errorf("gwlab: ip -n %s link show %s: unexpected output %q (%v)", ns, dev, out, err)
	}
	return links[0].Address, nil
}

// neighMAC is namespace ns's neighbour entry for addr: MAC and state.
func neighMAC(ctx context.Context, ns string, addr netip.Addr) (mac, state string, err error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-j", "neigh", "show", "to", addr.String()).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("gwlab: ip -n %s neigh show %s: %w: %s", ns, addr, err, strings.TrimSpace(string(out)))
	}
	var ents []struct {
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if err := json.Unmarshal(out, &ents); err != nil {
		return "", "", fmt.Errorf("gwlab: ip -n %s neigh show %s: unexpected output %q: %w", ns, addr, out, err)
	}
	if len(ents) == 0 {
		return "", "NONE", nil
	}
	return ents[0].LLAddr, strings.Join(ents[0].State, ","), nil
}
