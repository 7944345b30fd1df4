package hacompare

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

// Implementations compared.
const (
	ImplStrongSwanHA = "strongswan-ha"
	ImplIkegw        = "ikegw"
)

// Result is one failover, seen from the protected host and the peer.
type Result struct {
	Impl string `json:"impl"`
	Run  int    `json:"run"`
	// Warm is how long the host had pinged before the failure (at least
	// the requested warm-up; the kill itself takes a while under TCG).
	Warm time.Duration `json:"warm_ns"`
	// Outage is the largest gap between ping replies around the kill
	// (gwlab.MeasureOutage); Lost the requests that got no reply.
	Outage  time.Duration `json:"outage_ns"`
	Lost    int           `json:"lost"`
	Sent    int           `json:"sent"`
	Resumed bool          `json:"resumed"`
	// Takeover is when the survivor took over: for strongSwan when the
	// ha plugin gave it the peer's segment, for ikegw when its admin API
	// reported active.
	Takeover time.Duration `json:"takeover_ns"`
	// SeqFailures counts the peer's "ESP sequence number verification
	// failed" log lines (kernel-libipsec peer: one per dropped packet).
	SeqFailures int `json:"seq_failures"`
	// XfrmSeqErrors is the growth of XfrmInStateSeqError in the peer's
	// namespace, and XfrmReplay that of its SAs' replay drop counters
	// (outside the window plus replayed inside it; kernel ESP peer only,
	// 0 with kernel-libipsec).
	XfrmSeqErrors uint64 `json:"xfrm_seq_errors"`
	XfrmReplay    uint64 `json:"xfrm_replay"`
	// SeqFailuresBefore is the peer's SeqFailure log count before the
	// kill (nonzero: something replayed already in normal operation).
	SeqFailuresBefore int `json:"seq_failures_before"`
	// OSeqAtKill is the killed gateway's last outbound sequence number to
	// the peer (read from its cut-off namespace), OSeqAfter the survivor's
	// at the end of the run (strongSwan ha only; 0 when unknown).
	OSeqAtKill uint32 `json:"oseq_at_kill"`
	OSeqAfter  uint32 `json:"oseq_after"`
	// SameIKESA and SameSPIs: the peer kept its IKE SA and child SPIs.
	SameIKESA bool `json:"same_ike_sa"`
	SameSPIs  bool `json:"same_spis"`
	// Err is what went wrong, if anything (the other fields are filled
	// as far as the run got).
	Err string `json:"err,omitempty"`
}

// ReplayDrops is the peer's count of ESP packets dropped for their
// sequence number, whichever data plane it used.
func (r Result) ReplayDrops() uint64 {
	return max(uint64(r.SeqFailures), r.XfrmSeqErrors, r.XfrmReplay)
}

func (r Result) String() string {
	s := fmt.Sprintf("%s run %d: outage %d ms, lost %d of %d, resumed %v, takeover after %d ms, peer replay drops %d (log %d, XfrmInStateSeqError %d, SA replay %d; log before the kill %d), outbound seq at kill %d, survivor's after %d, same IKE SA %v, same SPIs %v",
		r.Impl, r.Run, r.Outage.Milliseconds(), r.Lost, r.Sent, r.Resumed, r.Takeover.Milliseconds(), r.ReplayDrops(),
		r.SeqFailures, r.XfrmSeqErrors, r.XfrmReplay, r.SeqFailuresBefore, r.OSeqAtKill, r.OSeqAfter, r.SameIKESA, r.SameSPIs)
	if r.Err != "" {
		s += ", error: " + r.Err
	}
	return s
}

// peerCounters are the peer's replay counters at one moment.
type peerCounters struct {
	logFailures int
	stat        XfrmStat
	replay      uint64
}

func readPeerCounters(ctx context.Context, peer *lab.NS, swan *lab.Swan) (peerCounters, error) {
	var c peerCounters
	c.logFailures = strings.Count(swan.Log(), gwlab.SeqFailure)
	var text string
	err := peer.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/xfrm_stat")
		text = string(b)
		return err
	})
	if err != nil {
		return c, fmt.Errorf("hacompare: peer xfrm_stat: %w", err)
	}
	if c.stat, err = ParseXfrmStat(text); err != nil {
		return c, err
	}
	out, err := peer.Run(ctx, "ip", "-s", "xfrm", "state")
	if err != nil {
		return c, fmt.Errorf("hacompare: peer ip -s xfrm state: %w", err)
	}
	states, err := ParseXfrmStates(out)
	if err != nil {
		return c, err
	}
	for _, s := range states {
		c.replay += s.OutsideWindow + s.Replay
	}
	return c, nil
}

func (r *Result) addPeerDelta(before, after peerCounters) {
	r.SeqFailures = after.logFailures - before.logFailures
	r.SeqFailuresBefore = before.logFailures
	r.XfrmSeqErrors = after.stat.Delta(before.stat).SeqErrors()
	if after.replay >= before.replay {
		r.XfrmReplay = after.replay - before.replay
	}
}

// tunnel is the peer's single established IKE SA and child.
type tunnel struct {
	uniqueID          uint32
	spiI, spiR        string
	childIn, childOut string
}

func tunnelOf(sas []lab.IKESA) (tunnel, bool) {
	var t tunnel
	n := 0
	for _, s := range sas {
		if s.State != "ESTABLISHED" {
			continue
		}
		for _, c := range s.Children {
			if c.Name == "net" && c.State == "INSTALLED" {
				t = tunnel{s.UniqueID, s.InitiatorSPI, s.ResponderSPI, c.SPIIn, c.SPIOut}
				n++
			}
		}
	}
	return t, n == 1
}

// peerTunnel waits for the peer's single established tunnel.
func peerTunnel(ctx context.Context, swan *lab.Swan) (tunnel, error) {
	var t tunnel
	_, err := swan.WaitFor(ctx, func(sas []lab.IKESA) bool {
		var ok bool
		t, ok = tunnelOf(sas)
		return ok
	})
	if err != nil {
		return t, fmt.Errorf("hacompare: the peer has no single established tunnel: %w", err)
	}
	return t, nil
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
			return fmt.Errorf("no reply to a request sent since %s (sent %d, received %d, send error %v): %w",
				since.Format("15:04:05.000"), rec.Sent, rec.Received(), p.SendError(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// warmUp sleeps until the pinger has run for warm.
func warmUp(ctx context.Context, p *lab.Pinger, warm time.Duration) error {
	d := time.Until(p.Snapshot().Start.Add(warm))
	if d <= 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle is how long a run keeps watching after the ping resumed (as
// gwlab.Failover).
const settle = time.Second

// Failover lets the host ping for warm (from the pinger's start), kills
// the node serving the peer's segment and measures until the ping resumed
// and one more second passed.
func (h *HALab) Failover(ctx context.Context, warm time.Duration) (Result, error) {
	r := Result{Impl: ImplStrongSwanHA}
	active, err := h.Active()
	if err != nil {
		return r, err
	}
	n, err := h.nodeByName(active)
	if err != nil {
		return r, err
	}
	before, err := peerTunnel(ctx, h.peer)
	if err != nil {
		return r, err
	}
	cBefore, err := readPeerCounters(ctx, h.Peer, h.peer)
	if err != nil {
		return r, err
	}
	if err := warmUp(ctx, h.pinger, warm); err != nil {
		return r, err
	}
	sentBefore := h.pinger.Snapshot().Sent
	var errs []error
	kctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	// The failure is when the node is cut off, not when the kill started:
	// replies to requests sent in between do not end the outage.
	at, err := h.KillNode(kctx, n.idx)
	if err != nil {
		errs = append(errs, err)
	}
	cancel()
	wctx, cancel := context.WithTimeout(ctx, h.opts.WaitTimeout)
	defer cancel()
	// The dead node's kernel SAs outlive charon (its namespace is cut off
	// but still there): its last outbound sequence number.
	r.OSeqAtKill, _ = outboundSeq(wctx, n.ns)
	if err := waitReply(wctx, h.pinger, at); err != nil {
		errs = append(errs, fmt.Errorf("hacompare: strongSwan ha: the ping did not resume: %w", err))
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
	}
	end := time.Now()
	rec := h.pinger.Snapshot()
	o := gwlab.MeasureOutage(rec, at, end)
	r.Outage, r.Lost, r.Resumed, r.Sent = o.Gap, o.Lost, o.Resumed, rec.Sent-sentBefore
	r.Warm = at.Sub(rec.Start)
	logGaps(h.log, rec, at)
	h.mu.Lock()
	if h.holder != n.idx && h.movedAt.After(at) {
		r.Takeover = h.movedAt.Sub(at)
	}
	h.mu.Unlock()
	r.OSeqAfter, _ = outboundSeq(wctx, h.nodes[1-n.idx].ns)
	cAfter, err := readPeerCounters(wctx, h.Peer, h.peer)
	if err != nil {
		errs = append(errs, err)
	} else {
		r.addPeerDelta(cBefore, cAfter)
	}
	logSeqFailures(h.log, h.peer.Log())
	if sas, err := h.peer.ListSAs(wctx); err != nil {
		errs = append(errs, err)
	} else if after, ok := tunnelOf(sas); ok {
		r.SameIKESA = after.uniqueID == before.uniqueID && after.spiI == before.spiI && after.spiR == before.spiR
		r.SameSPIs = after.childIn == before.childIn && after.childOut == before.childOut
	}
	err = errors.Join(errs...)
	if err != nil {
		r.Err = err.Error()
	}
	h.log.Info("hacompare: failover", "result", r.String())
	return r, err
}

// RunHA builds a strongSwan ha lab, runs one failover and removes the lab.
func RunHA(ctx context.Context, o HAOptions, warm time.Duration) (Result, error) {
	h, err := BuildHA(ctx, o)
	if err != nil {
		return Result{Impl: ImplStrongSwanHA, Warm: warm, Err: err.Error()}, err
	}
	r, err := h.Failover(ctx, warm)
	if cerr := h.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return r, err
}

// IkegwOptions configure RunIkegw.
type IkegwOptions struct {
	// Bin is the ikegwd binary.
	Bin string
	// PingInterval: 50 ms if zero.
	PingInterval time.Duration
	// HeartbeatTimeout, ElectionTimeout, LeaderLease: Raft timings (as
	// TestFailoverKernelVM: 1 s, 1 s, 500 ms if zero; TCG is slow).
	HeartbeatTimeout, ElectionTimeout, LeaderLease time.Duration
	Logger                                         *slog.Logger
}

// RunIkegw builds gwlab (2 gateways + witness, kernel data plane), lets the
// host ping for warm, kills the active gateway's node (ikegwNodeDeath) and
// removes the lab.
func RunIkegw(ctx context.Context, o IkegwOptions, warm time.Duration) (r Result, err error) {
	r = Result{Impl: ImplIkegw, Warm: warm}
	if o.PingInterval <= 0 {
		o.PingInterval = 50 * time.Millisecond
	}
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = time.Second
	}
	if o.ElectionTimeout <= 0 {
		o.ElectionTimeout = time.Second
	}
	if o.LeaderLease <= 0 {
		o.LeaderLease = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l, err := gwlab.Build(ctx, gwlab.Options{Gateways: 2, Witness: true, Dataplane: "kernel", Bin: o.Bin, Logger: o.Logger,
		StartTimeout: 5 * time.Minute, WaitTimeout: 120 * time.Second, PingInterval: o.PingInterval,
		HeartbeatTimeout: o.HeartbeatTimeout, ElectionTimeout: o.ElectionTimeout, LeaderLease: o.LeaderLease})
	if err != nil {
		r.Err = err.Error()
		return r, err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
			if r.Err == "" {
				r.Err = cerr.Error()
			}
		}
	}()
	r2, err := ikegwNodeDeath(ctx, l, o.Logger, warm)
	r2.Impl, r2.Run = r.Impl, r.Run
	r = r2
	if err != nil {
		r.Err = err.Error()
	}
	return r, err
}

// ikegwNodeDeath is gwlab's node death with this package's timing: the
// active gateway's links (outside, inside, cluster) go down in one `ip
// -batch` (cut off), then every process in its namespace gets SIGKILL.
// gwlab.Failover does the same with a 10 s budget for all its `ip`
// commands, which a loaded TCG guest exceeds (its error ends the run
// before anything is measured), and takes the failure time before its
// first command.
func ikegwNodeDeath(ctx context.Context, l *gwlab.Lab, log *slog.Logger, warm time.Duration) (Result, error) {
	r := Result{}
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	active, err := l.WaitActive(wctx, "")
	if err != nil {
		return r, err
	}
	n, err := l.Node(active)
	if err != nil {
		return r, err
	}
	before, err := l.PeerState(wctx)
	if err != nil {
		return r, err
	}
	cBefore, err := readPeerCounters(wctx, l.Peer, l.Swan())
	if err != nil {
		return r, err
	}
	if err := warmUp(ctx, l.Pinger(), warm); err != nil {
		return r, err
	}
	sentBefore := l.Pinger().Snapshot().Sent
	var errs []error
	cmd := exec.CommandContext(wctx, "ip", "-n", n.NS.Name(), "-batch", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("link set %s down\nlink set %s down\nlink set %s down\n", gwlab.IfOutside, gwlab.IfInside, gwlab.IfCluster))
	if out, err := cmd.CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("hacompare: ikegw: cutting %s's links: %w: %s", active, err, out))
	}
	at := time.Now()
	if err := killAll(wctx, n.NS); err != nil {
		errs = append(errs, err)
	}
	newActive, err := l.WaitActive(wctx, active)
	if err != nil {
		errs = append(errs, err)
	} else {
		r.Takeover = time.Since(at)
	}
	if err := waitReply(wctx, l.Pinger(), at); err != nil {
		errs = append(errs, fmt.Errorf("hacompare: ikegw: the ping did not resume (new active %q): %w", newActive, err))
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
	}
	rec := l.Pinger().Snapshot()
	out := gwlab.MeasureOutage(rec, at, time.Now())
	r.Outage, r.Lost, r.Resumed, r.Sent = out.Gap, out.Lost, out.Resumed, rec.Sent-sentBefore
	r.Warm = at.Sub(rec.Start)
	logGaps(log, rec, at)
	cAfter, err := readPeerCounters(wctx, l.Peer, l.Swan())
	if err != nil {
		errs = append(errs, err)
	} else {
		r.addPeerDelta(cBefore, cAfter)
	}
	if after, err := l.PeerState(wctx); err != nil {
		errs = append(errs, err)
	} else {
		r.SameIKESA = after.UniqueID == before.UniqueID && after.InitiatorSPI == before.InitiatorSPI && after.ResponderSPI == before.ResponderSPI
		r.SameSPIs = after.ChildSPIIn == before.ChildSPIIn && after.ChildSPIOut == before.ChildSPIOut
	}
	logSeqFailures(log, l.Swan().Log())
	log.Info("hacompare: failover", "result", r.String(), "killed", active, "new_active", newActive)
	return r, errors.Join(errs...)
}

// logGaps logs the kill time and every gap of more than 4 intervals
// between replies (arrival order), for the record.
func logGaps(log *slog.Logger, rec lab.PingRecord, at time.Time) {
	log.Info("hacompare: kill", "at", at.Format("15:04:05.000"), "ping_start", rec.Start.Format("15:04:05.000"), "sent", rec.Sent, "received", rec.Received())
	prev := rec.Start
	prevSeq := -1
	for _, rp := range rec.Replies {
		if d := rp.Received.Sub(prev); d > 200*time.Millisecond {
			log.Info("hacompare: reply gap", "from_seq", prevSeq, "to_seq", rp.Seq, "gap_ms", d.Milliseconds(),
				"until", rp.Received.Format("15:04:05.000"), "sent", rp.Sent.Format("15:04:05.000"))
		}
		prev, prevSeq = rp.Received, rp.Seq
	}
}

// logSeqFailures logs how many replayed packets the peer's log names and
// the sequence numbers of the first and the last.
func logSeqFailures(log *slog.Logger, peerLog string) {
	var seqs []string
	for _, line := range strings.Split(peerLog, "\n") {
		if i := strings.Index(line, "[seq "); i >= 0 {
			seqs = append(seqs, strings.TrimSuffix(line[i+5:], "]"))
		}
	}
	if len(seqs) > 0 {
		log.Info("hacompare: the peer dropped replayed ESP packets", "count", len(seqs), "first_seq", seqs[0], "last_seq", seqs[len(seqs)-1])
	}
}

// outboundSeq is the oseq of ns's outbound SA to the peer.
func outboundSeq(ctx context.Context, ns *lab.NS) (uint32, error) {
	out, err := ns.Run(ctx, "ip", "-s", "xfrm", "state")
	if err != nil {
		return 0, err
	}
	states, err := ParseXfrmStates(out)
	if err != nil {
		return 0, err
	}
	for _, s := range states {
		if s.Dst == gwlab.PeerOutside.Addr().String() {
			return s.OSeq, nil
		}
	}
	return 0, fmt.Errorf("hacompare: %s: no SA to %s", ns.Name(), gwlab.PeerOutside.Addr())
}

func randomPSK() (lab.Secret, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("hacompare: PSK: %w", err)
	}
	return lab.Secret(hex.EncodeToString(b[:])), nil
}
