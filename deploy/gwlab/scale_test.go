package gwlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scaleTunnels is the cluster's tunnel count in TestFailoverAtScale: the
// peer's (with the ping) plus ikeload's. Every counter sync (200 ms in the
// lab) then carries 1,000 pairs, so a node restarted between failovers is
// still applying its log when the next failover makes it leader. (300 were
// not enough: the build before the fix passed 5 rounds at 300 and failed
// round 5 at 1,000, 107 replayed sequence numbers, on a machine at load 11.)
const scaleTunnels = 1000

// TestFailoverAtScale is the regression test of issue 5's replayed ESP
// sequence numbers at 1,000 tunnels: a node restarted between failovers
// became leader while its FSM was still applying the log (raft counts an
// entry applied once it is queued for the FSM), took the fast path past the
// Barrier and installed the pairs from its stale store, below the numbers
// the peer had already seen. Here the active goes away in every way
// (daemon death, planned, node death, two planned: a planned handover to a
// node restarted a few seconds before was the reliable trigger), the dead node
// restarted in between, with scaleTunnels tunnels in the cluster; each
// failover must be seamless and the peer must never log a replayed
// sequence number, not even between failovers.
func TestFailoverAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("gwlab: a lab with ikeload's tunnels (-short)")
	}
	ikeload := filepath.Join(t.TempDir(), "ikeload")
	if out, err := exec.Command("go", "build", "-o", ikeload, "ikegw/cmd/ikeload").CombinedOutput(); err != nil {
		t.Fatalf("building ikeload: %v\n%s", err, out)
	}
	l := buildT(t, Options{Gateways: 2, Witness: true, LoadTunnels: scaleTunnels - 1, Ikeload: ikeload})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lctx, lcancel := context.WithTimeout(ctx, 2*time.Minute)
	res, err := l.SetupLoad(lctx)
	lcancel()
	if err != nil {
		t.Fatalf("setting up %d tunnels: %v", scaleTunnels-1, err)
	}
	t.Logf("ikeload: %d tunnels up (%.0f/s)", res.OK, res.Rate)
	var planned []string
	for round, kind := range []Kind{DaemonDeath, Planned, NodeDeath, Planned, Planned} {
		r, err := l.Failover(ctx, kind)
		t.Logf("round %d: %s of %s -> %s: outage %d ms, lost %d, ESP seq failures %d", round+1, kind, r.Killed, r.NewActive,
			r.Gap.Milliseconds(), r.Lost, r.SeqFailures)
		if kind == Planned {
			planned = append(planned, fmt.Sprintf("%d lost (%d ms)", r.Lost, r.Gap.Milliseconds()))
		}
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round+1, err, r)
		}
		if !r.OK() || !r.ActiveAgrees {
			t.Fatalf("round %d: not seamless:\n%s\nbefore: %s\nafter:  %s", round+1, r, r.Before, r.After)
		}
		if sp := r.Split; sp != nil && sp.ChildSAs < res.OK {
			t.Errorf("round %d: the new active took over %d pairs, want at least %d", round+1, sp.ChildSAs, res.OK)
		}
		if err := l.Restart(ctx, r.Killed); err != nil {
			t.Fatalf("round %d: restarting %s: %v", round+1, r.Killed, err)
		}
	}
	if n := strings.Count(l.Swan().Log(), SeqFailure); n != 0 {
		t.Fatalf("the peer logged %d replayed ESP sequence numbers (%q) over the whole test", n, SeqFailure)
	}
	// Issue 5 asks a planned failover to lose at most one ping. Logged,
	// not asserted: with the old active's flush after the transfer
	// (failover's "Planned handover") the release-to-claim gap at 1,000
	// tunnels is 4-15 ms, as with one tunnel, and at load 1.1-1.4 every
	// planned round here lost none (9 of 9); but here the target
	// restarted moments before and is still catching up (its staging can
	// outlast the grace), and at load 4.4-6.1 7 of 12 planned rounds lost
	// 2-5 (BENCHMARKS.md, "Planned handover at 1,000 tunnels"): such a
	// bound would fail most runs of a loaded `make test`.
	t.Logf("planned rounds (issue 5: at most 1 lost each): %s; load %.1f", strings.Join(planned, ", "), Load1())
}

func TestElectionTimes(t *testing.T) {
	at := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	log := strings.Join([]string{
		`time=2026-11-27T05:59:59.000Z level=INFO msg="entering candidate state" component=raft term=3`,
		`time=2026-11-27T05:59:59.100Z level=INFO msg="cluster: elected leader" component=cluster node=gw2 term=3`,
		`time=2026-11-27T06:00:00.300Z level=INFO msg="entering candidate state" component=raft term=5`,
		`time=2026-11-27T06:00:00.500Z level=INFO msg="entering candidate state" component=raft term=6`,
		`not a log line`,
		`time=2026-11-27T06:00:00.540Z level=INFO msg="cluster: elected leader" component=cluster node=gw2 term=6`,
		`time=2026-11-27T06:00:09.000Z level=INFO msg="cluster: elected leader" component=cluster node=gw2 term=8`,
	}, "\n")
	p := filepath.Join(t.TempDir(), "gw2.log")
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	c, e := electionTimes(p, at)
	if want := at.Add(500 * time.Millisecond); !c.Equal(want) {
		t.Errorf("candidate %s, want %s (the last candidacy before the leadership)", c, want)
	}
	if want := at.Add(540 * time.Millisecond); !e.Equal(want) {
		t.Errorf("elected %s, want %s", e, want)
	}
	if c, e := electionTimes(filepath.Join(t.TempDir(), "missing"), at); !c.IsZero() || !e.IsZero() {
		t.Errorf("missing log: %s %s", c, e)
	}
}
