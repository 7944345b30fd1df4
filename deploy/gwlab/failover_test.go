package gwlab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"ikegw/deploy/lab"
)

// testWriter sends slog lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildT builds a lab for a test (root only; skips when ikegwd has no
// clustered mode; o.Bin defaults to this tree's ikegwd) and removes it at
// cleanup; when the test failed it first logs the end of every process's
// output and of the peer's log.
func buildT(t *testing.T, o Options) *Lab {
	t.Helper()
	lab.RequireRoot(t)
	clusteredIkegwd(t)
	if err := lab.Cleanup(lab.DefaultPrefix); err != nil {
		t.Logf("removing leftovers of earlier runs: %v", err)
	}
	if o.Bin == "" {
		o.Bin = ikegwdBin
	}
	o.Dir = t.TempDir()
	o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background() // Build applies o.StartTimeout (60 s by default)
	dumped := false
	dump := func() {
		if dumped {
			return
		}
		dumped = true
		logs, _ := filepath.Glob(filepath.Join(o.Dir, "logs", "*.log"))
		swan, _ := filepath.Glob(filepath.Join(o.Dir, "logs", "*", "charon.log"))
		files := append(logs, swan...)
		sort.Strings(files)
		for _, f := range files {
			b, _ := os.ReadFile(f)
			t.Logf("--- %s (tail) ---\n%s", filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), tail(string(b), 6000))
		}
	}
	l, err := Build(ctx, o)
	if err != nil {
		dump()
		t.Fatalf("building the lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dump()
		}
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	return l
}

// TestFailover is issue 5's acceptance scenario: 2 gateways + witness, the
// active dies 5 times in a row (daemon death and node death alternating,
// the dead node restarted as standby between rounds); each time the peer
// keeps its IKE SA and SPIs, sees no replayed ESP sequence number, and the
// ping resumes; after the first daemon death the VIPs' ARP entries expire
// and the peer still reaches the new active. Then a Quick Mode rekey
// started by the peer and DPD work against the new active, and planned
// failovers (SIGTERM, `ikegwctl failover --to`) hand over to a staged
// target (issue 5 wants at most one lost ping each: see the bound below).
func TestFailover(t *testing.T) {
	l := buildT(t, Options{Gateways: 2, Witness: true, Ctl: ikegwctlT(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	if !l.Supervised() {
		t.Log("ikegwd has no supervise subcommand: gateways run `ikegwd run` directly")
	}

	minUnplanned := 1 << 30 // fewest pings an unplanned failover lost
	for round := range 5 {
		kind := DaemonDeath
		if round%2 == 1 {
			kind = NodeDeath
		}
		r, err := l.Failover(ctx, kind)
		t.Logf("round %d: %s outage %d ms, lost %d of %d, new active after %d ms (%s -> %s)",
			round+1, kind, r.Gap.Milliseconds(), r.Lost, r.Sent, r.Takeover.Milliseconds(), r.Killed, r.NewActive)
		if kind == DaemonDeath {
			t.Logf("round %d: the dead daemon's VIPs and TUN were gone %d ms after the kill", round+1, r.DeadClean.Milliseconds())
		}
		if sp := r.Split; sp != nil {
			own := sp.LoadMS + sp.CommitMS + sp.InstallMS + sp.EngineMS
			t.Logf("round %d: new active after %d ms = detection and election %.0f ms + takeover %.1f ms (load %.1f, commit %.1f, install %.1f, engine %.1f) + claim and status poll",
				round+1, r.Takeover.Milliseconds(), max(0, float64(sp.Started.Sub(r.At))/1e6), own, sp.LoadMS, sp.CommitMS, sp.InstallMS, sp.EngineMS)
		}
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round+1, err, r)
		}
		if !r.OK() || !r.ActiveAgrees {
			t.Fatalf("round %d: not seamless:\n%s\nbefore: %s\nafter:  %s", round+1, r, r.Before, r.After)
		}
		minUnplanned = min(minUnplanned, r.Lost)
		if round == 0 {
			// Issue 5: after a daemon-only death, once the ARP caches
			// expired and were refreshed (60 s on real hosts) the peer
			// still reaches the new active. Rather than wait 60 s (or
			// lower the peer's base_reachable_time and wait for a
			// STALE/PROBE cycle, which only re-confirms the entry by
			// unicast), the test deletes the peer's and the host's
			// neighbour entries for the VIPs, the end state of ageing,
			// so the next packet resolves them by broadcast ARP, which the
			// dead node would answer if it still held a VIP.
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := l.ExpireARP(actx, r.NewActive)
			cancel()
			if err != nil {
				t.Fatalf("round %d: after the daemon death of %s: %v", round+1, r.Killed, err)
			}
			t.Logf("round %d: ARP entries expired and re-resolved to %s; ping flows", round+1, r.NewActive)
		}
		seq := strings.Count(l.Swan().Log(), SeqFailure)
		restartAt := time.Now()
		if err := l.Restart(ctx, r.Killed); err != nil {
			t.Fatalf("round %d: restarting %s: %v", round+1, r.Killed, err)
		}
		t.Logf("round %d: %s rejoined in %d ms; largest ping gap meanwhile %d ms", round+1, r.Killed,
			time.Since(restartAt).Milliseconds(), MeasureOutage(l.Pinger().Snapshot(), restartAt, time.Now()).Gap.Milliseconds())
		if n := strings.Count(l.Swan().Log(), SeqFailure) - seq; n != 0 {
			t.Fatalf("round %d: the peer logged %q %d times while %s restarted", round+1, SeqFailure, n, r.Killed)
		}
	}

	active, err := l.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("rekey", func(t *testing.T) {
		before, err := l.PeerState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Swan().RekeyChild(ctx, "net"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		var after PeerState
		for {
			sas, err := l.PeerSAs(wctx)
			if err == nil {
				if s, ok := peerStateOf(sas); ok && s.ChildSPIIn != before.ChildSPIIn {
					after = s
					break
				}
			}
			select {
			case <-wctx.Done():
				t.Fatalf("the peer's rekey of child net did not complete against %s (last SAs %+v, err %v)", active, sas, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		if after.UniqueID != before.UniqueID || after.InitiatorSPI != before.InitiatorSPI || after.ResponderSPI != before.ResponderSPI {
			t.Fatalf("phase 1 changed during the rekey: %s -> %s", before, after)
		}
		mark := time.Now()
		if err := l.waitReply(wctx, mark); err != nil {
			t.Fatalf("no ping through the rekeyed child: %v", err)
		}
		for !agreeNow(wctx, l, active, after) {
			select {
			case <-wctx.Done():
				t.Fatalf("%s does not list the rekeyed child %s", active, after)
			case <-time.After(100 * time.Millisecond):
			}
		}
	})

	t.Run("dpd", func(t *testing.T) {
		// Whichever gateway is active: on a starved machine the lab's
		// 100 ms lease may move the role meanwhile, and each activation
		// starts its engine's counters afresh.
		who, acked := "", uint64(0)
		deadline := time.Now().Add(2*l.opts.DPDDelay + 5*time.Second)
		for {
			a, err := l.Active(ctx)
			var st Status
			if err == nil {
				st, err = l.NodeAdminStatus(ctx, a)
			}
			if err == nil && st.Engine != nil {
				n := st.Engine["dpd_acked"]
				if a != who || n < acked { // another active, or a fence restarted its engine
					who, acked = a, n
				} else if n > acked {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no R-U-THERE of the active gateway (%s) acknowledged by the peer within %v (engine %+v, err %v)", who, 2*l.opts.DPDDelay+5*time.Second, st.Engine, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if log := l.Swan().Log(); strings.Contains(log, "DPD check timed out") {
			t.Errorf("the peer's DPD timed out")
		}
	})

	// Planned failovers, alternating SIGTERM to the active ikegwd and
	// `ikegwctl failover --to OTHER`; each hands over to a target that
	// staged its takeover first (see failover's package documentation).
	t.Run("planned", func(t *testing.T) {
		kinds := []Kind{Planned, PlannedCLI, Planned, PlannedCLI}
		var lost []int
		for i, kind := range kinds {
			r, err := l.Failover(ctx, kind)
			for try := 0; err != nil && r.NewActive == "" && strings.Contains(err.Error(), "not active: ask the active node") && try < 3; try++ {
				// The node found active lost the role (a fence on a
				// starved machine) before the CLI reached it: nothing
				// was handed over; ask the active one again.
				t.Logf("planned %d: %v; again", i+1, err)
				time.Sleep(500 * time.Millisecond)
				r, err = l.Failover(ctx, kind)
			}
			t.Logf("planned %d (%s): outage %d ms, lost %d of %d (%s -> %s)", i+1, kind, r.Gap.Milliseconds(), r.Lost, r.Sent, r.Killed, r.NewActive)
			if sp := r.Split; sp != nil {
				t.Logf("planned %d: new active after %d ms; its takeover: load %.1f, commit %.1f (0: staged), install %.1f, engine %.1f ms, staged %v (late %v)",
					i+1, r.Takeover.Milliseconds(), sp.LoadMS, sp.CommitMS, sp.InstallMS, sp.EngineMS, sp.Staged, sp.StagedLate)
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, r)
			}
			// Every member runs this tree, so the target finishes the
			// takeover the handover staged. A starved machine has
			// legitimate misses (the announcement failed or came too
			// late, another leader came between); a staging spoiled by
			// a handover or cancel applied after it is a bug.
			if sp := r.Split; sp == nil {
				t.Errorf("planned %d: the new active %s reports no takeover split", i+1, r.NewActive)
			} else if !sp.Staged {
				if sp.Unstaged == "" || strings.Contains(sp.Unstaged, "another handover") {
					t.Errorf("planned %d: the new active %s did not use the staged takeover (reason %q)", i+1, r.NewActive, sp.Unstaged)
				} else {
					t.Logf("planned %d: not staged: %s", i+1, sp.Unstaged)
				}
			}
			if !r.OK() {
				t.Fatalf("planned failover not seamless:\n%s", r)
			}
			lost = append(lost, r.Lost)
			if kind == Planned {
				// SIGTERM stops the old active's ikegwd after the handover.
				if err := l.Restart(ctx, r.Killed); err != nil {
					t.Fatalf("restarting %s: %v", r.Killed, err)
				}
			}
		}
		// Issue 5 wants at most one lost ping per planned failover. What
		// is left between the old active's release and the target's claim
		// is Raft round trips (transfer, the vote with its fsyncs, the new
		// leader's quorum check): 5-15 ms on a quiet machine, that is at
		// most one ping at 10 ms. It grows with the load (15-50 ms when the
		// shared 2-core machine runs at 10+), so `make test` runs this
		// package alone, after the others (Makefile, test-unit).
		for i, n := range lost {
			if n > plannedMaxLost {
				t.Errorf("planned %d (%s) lost %d pings; issue 5 wants at most %d (all: %v; unplanned ones lost at least %d)",
					i+1, kinds[i], n, plannedMaxLost, lost, minUnplanned)
			}
		}
	})
	if strings.Contains(l.Swan().Log(), SeqFailure) {
		t.Errorf("the peer's log has %q", SeqFailure)
	}
}

// plannedMaxLost is issue 5's (and issue 6's) bound on pings lost in a
// planned failover.
const plannedMaxLost = 1

var (
	ctlOnce sync.Once
	ctlBin  string
	ctlErr  error
)

// ikegwctlT builds ikegwctl from this tree once per test binary (next to
// the ikegwd TestMain built, or in a directory of the first caller).
func ikegwctlT(t *testing.T) string {
	t.Helper()
	ctlOnce.Do(func() {
		dir := filepath.Dir(ikegwdBin)
		if os.Getenv("IKEGW_LAB_IKEGWD") != "" {
			dir = t.TempDir()
		}
		ctlBin = filepath.Join(dir, "ikegwctl")
		if out, err := exec.Command("go", "build", "-o", ctlBin, "ikegw/cmd/ikegwctl").CombinedOutput(); err != nil {
			ctlErr = fmt.Errorf("building ikegwctl: %w\n%s", err, out)
		}
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlBin
}

func agreeNow(ctx context.Context, l *Lab, node string, p PeerState) bool {
	ok, err := l.agrees(ctx, node, p)
	return err == nil && ok
}

// TestFailoverThreeGateways: the variant without a witness (`ikegw-lab run
// --gateways 3 --no-witness`): the active node dies and one of the two
// other gateways takes over seamlessly.
func TestFailoverThreeGateways(t *testing.T) {
	l := buildT(t, Options{Gateways: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if n := len(l.Nodes()); n != 3 {
		t.Fatalf("%d nodes, want 3", n)
	}
	for _, n := range l.Nodes() {
		if n.Witness {
			t.Fatalf("%s is a witness", n.Name)
		}
	}
	r, err := l.Failover(ctx, NodeDeath)
	t.Logf("node death: outage %d ms, lost %d (%s -> %s)", r.Gap.Milliseconds(), r.Lost, r.Killed, r.NewActive)
	if err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	if !r.OK() || !r.ActiveAgrees {
		t.Fatalf("not seamless:\n%s", r)
	}
	if err := l.Restart(ctx, r.Killed); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if a, err := l.waitActive(wctx, ""); err != nil {
		t.Errorf("after the restart: %v", err)
	} else {
		t.Logf("after %s rejoined, %s is active", r.Killed, a)
	}
	for _, s := range l.Status(ctx) {
		if s.Err != nil {
			t.Errorf("%s: %v", s.Name, s.Err)
		}
	}
	// Close leaves no namespace (and so no process) of the lab behind.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), l.Tag()) {
			t.Errorf("namespace %s left after Close", e.Name())
		}
	}
}

// TestFailoverKernelVM is the SIGKILL scenario with the kernel data plane
// (XFRM states and policies instead of the userspace engine). The host
// kernel has no ESP, so it runs only inside the VM (scripts/vm/run.sh sets
// IKEGW_IN_VM=1), with slower Raft timings for TCG:
//
//	go test -c -o /tmp/gwlab.test ./deploy/gwlab && go build -o /tmp/ikegwd ./cmd/ikegwd
//	IKEGW_LAB_IKEGWD=/tmp/ikegwd IKEGW_VM_ENV=IKEGW_LAB_IKEGWD \
//	  scripts/vm/run.sh /tmp/gwlab.test -test.run KernelVM -test.v
func TestFailoverKernelVM(t *testing.T) {
	if os.Getenv("IKEGW_IN_VM") != "1" {
		t.Skip("kernel data plane: the host kernel has no ESP; runs inside the VM (IKEGW_IN_VM=1, scripts/vm/run.sh)")
	}
	l := buildT(t, Options{Gateways: 2, Witness: true, Dataplane: "kernel", StartTimeout: 5 * time.Minute,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLease: 500 * time.Millisecond, PingInterval: 20 * time.Millisecond,
		WaitTimeout: 90 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// The planned handover's target stages its kernel SAs without
	// policies and activates them at the takeover; the old active
	// flushes its pairs before the transfer (no send gate in the kernel).
	kinds := []Kind{DaemonDeath, Planned, NodeDeath}
	for i, kind := range kinds {
		r, err := l.Failover(ctx, kind)
		t.Logf("kernel data plane, %s: outage %d ms, lost %d (%s -> %s)", kind, r.Gap.Milliseconds(), r.Lost, r.Killed, r.NewActive)
		if sp := r.Split; sp != nil {
			t.Logf("kernel data plane, %s: takeover load %.1f, commit %.1f, install %.1f, engine %.1f ms, staged %v %s",
				kind, sp.LoadMS, sp.CommitMS, sp.InstallMS, sp.EngineMS, sp.Staged, sp.Unstaged)
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, r)
		}
		if !r.OK() || !r.ActiveAgrees {
			t.Fatalf("not seamless:\n%s", r)
		}
		if i < len(kinds)-1 {
			if err := l.Restart(ctx, r.Killed); err != nil {
				t.Fatal(err)
			}
		}
	}
}
