package gwlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ikegw/cluster"
	"ikegw/cmd/api"
	"ikegw/deploy/lab"
)

// upgradeBase is an older ikegw the rolling-upgrade tests start from.
type upgradeBase struct {
	// commit is built with BuildCommit (the repository must hold it).
	commit string
	// gatesCommand: the base lacks a command type of this tree, so the
	// test proves the newer command stays off in the mixed cluster (the
	// test fails if it does not lack one).
	gatesCommand bool
}

var (
	// upgradeFromLast is the newest landed release (dc95aa2, the end of
	// the third build session): its handovers stage the target and its
	// standbys forward tunnel traffic to the VIP holder, so every handover
	// of the upgrade is as good as this tree's.
	upgradeFromLast = upgradeBase{commit: "dc95aa2"}
	// upgradeFromPreHandover is 3cd90c8 ("cmd/api: the admin API views
	// move out of cmd/internal"), the newest commit without the Handover
	// command (type 9): it has the clustered mode, `ikegwd supervise`,
	// planned failover with `?to=` and the admin views gwlab reads, and
	// accepts gwlab's configs. Its own handover releases the VIPs without
	// standby forwarding.
	upgradeFromPreHandover = upgradeBase{commit: "3cd90c8", gatesCommand: true}
)

// The versions stamped into the two builds (semantic, so `upgrade plan`
// can tell the newer one without --target).
const (
	upgradeOldVersion = "v0.9.0"
	upgradeNewVersion = "v1.0.0"
)

// ctlRun runs ikegwctl with args against member sock; it returns stdout,
// stderr and the exit code.
func ctlRun(ctx context.Context, bin, sock string, args ...string) (string, string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--socket", sock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.String(), errb.String(), -1, fmt.Errorf("ikegwctl %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), 0, nil
}

// gitTop is the repository holding the upgrade bases: $IKEGW_LAB_REPO, or
// the git work tree of the test.
func gitTop(t *testing.T, commit string) string {
	t.Helper()
	if r := os.Getenv("IKEGW_LAB_REPO"); r != "" {
		return r
	}
	out, err := exec.Command("git", "-c", "safe.directory=*", "rev-parse", "--show-toplevel").CombinedOutput()
	if err != nil {
		t.Fatalf("the rolling-upgrade test builds commit %s of this repository, but this is no git work tree: %v: %s", commit, err, out)
	}
	return strings.TrimSpace(string(out))
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v %s", err, out)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// TestRollingUpgrade is issue 6's rolling upgrade from the last landed
// release: the lab cluster (2 gateways + witness) starts on ikegwd of
// upgradeFromLast, the peer's tunnel is up with a ping every 10 ms, and the
// cluster is upgraded to this tree node by node as `ikegwctl upgrade next`
// says (standby, witness, handover, old active), each node restarted with
// the new binary and its state directory kept. The peer keeps its IKE SA
// and SPIs and sees no ESP sequence failure, the ping resumes after every
// step, `upgrade next` refuses while a member is down, and the effective
// MaxCommand stays the old build's until the last old member is gone.
func TestRollingUpgrade(t *testing.T) { rollingUpgrade(t, upgradeFromLast) }

// TestRollingUpgradeNewCommand is the same upgrade from the newest commit
// without the Handover command type: a new command type stays off (the
// upgraded active's announcement is refused) while an old gateway is left,
// and is on once every member applies it.
func TestRollingUpgradeNewCommand(t *testing.T) { rollingUpgrade(t, upgradeFromPreHandover) }

func rollingUpgrade(t *testing.T, base upgradeBase) {
	lab.RequireRoot(t)
	clusteredIkegwd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	upgradeFromCommit := base.commit
	repo := gitTop(t, upgradeFromCommit)
	work := t.TempDir()
	oldRel, err := BuildCommit(ctx, repo, upgradeFromCommit, filepath.Join(work, "old"), upgradeOldVersion)
	if err != nil {
		t.Fatalf("building ikegw %s (the version upgraded from): %v", upgradeFromCommit, err)
	}
	newRel, err := BuildTree(ctx, moduleRoot(t), filepath.Join(work, "new"), upgradeNewVersion)
	if err != nil {
		t.Fatalf("building this tree: %v", err)
	}
	// Raft timings longer than the lab's default (200/200/100 ms): with one
	// of the three voters restarting, the two left must confirm each
	// other within the lease, and on a loaded 2-core host they did not
	// (seen with 100 and 250 ms leases: needless takeovers, the role
	// moving back and forth). Planned handovers do not wait for these.
	l := buildT(t, Options{Gateways: 2, Witness: true, Bin: oldRel.Ikegwd,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLease: 500 * time.Millisecond})
	ctl := func(sock string, args ...string) (string, string, int) {
		t.Helper()
		out, errOut, code, err := ctlRun(ctx, newRel.Ikegwctl, sock, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out, errOut, code
	}
	sockOf := func(name string) string {
		t.Helper()
		n, err := l.Node(name)
		if err != nil {
			t.Fatal(err)
		}
		return n.Socket
	}
	for _, s := range l.Status(ctx) {
		if s.Err != nil || s.Status.Version != upgradeOldVersion {
			t.Fatalf("%s: version %q (%v), want the old build's %s", s.Name, s.Status.Version, s.Err, upgradeOldVersion)
		}
	}
	initial, err := l.PeerState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster on %s (%s), peer tunnel %s", upgradeFromCommit, upgradeOldVersion, initial)
	{
		// The plan, as an operator sees it before anything is upgraded
		// (this ikegwctl against the old daemons).
		first, err := l.Active(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, code := ctl(sockOf(first), "upgrade", "plan", "--target", upgradeNewVersion)
		if code != 0 || !strings.Contains(out, "1. restart") || !strings.Contains(out, "next step allowed now") {
			t.Fatalf("upgrade plan on %s: exit %d:\n%s%s", first, code, out, errOut)
		}
		t.Logf("ikegwctl upgrade plan on %s:\n%s", first, out)
	}

	// checkPeer: the tunnel is the one established on the old build.
	checkPeer := func(step string) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		st, err := l.PeerState(pctx)
		if err != nil {
			t.Fatalf("after %s: %v", step, err)
		}
		if st != initial {
			t.Fatalf("after %s the peer's tunnel changed: %s, was %s", step, st, initial)
		}
		if n := strings.Count(l.Swan().Log(), SeqFailure); n != 0 {
			t.Fatalf("after %s the peer logged %q %d times", step, SeqFailure, n)
		}
	}
	// checkMaxCommand: asked of an upgraded member, the effective
	// MaxCommand is the lowest any alive member advertises; the old
	// members' while one is left.
	oldMax, effMax := uint8(0), uint8(0) // the old build's max_command; the cluster's effective one
	checkMaxCommand := func(upgraded string) {
		t.Helper()
		var m api.Members
		if err := l.AdminGet(ctx, upgraded, api.PathMembers, &m); err != nil {
			t.Fatal(err)
		}
		low, olds := uint8(255), 0
		for _, x := range m.Members {
			if x.MaxCommand == 0 {
				t.Fatalf("%s reports no max_command for %s: %+v", upgraded, x.ID, m)
			}
			low = min(low, x.MaxCommand)
			if x.Version == upgradeOldVersion {
				olds++
				oldMax = x.MaxCommand
			} else if x.MaxCommand != uint8(cluster.MaxCommandType) {
				t.Fatalf("upgraded member %s advertises max_command %d, this build applies up to %d", x.ID, x.MaxCommand, cluster.MaxCommandType)
			}
		}
		if m.EffectiveMaxCommand != low {
			t.Fatalf("effective max_command %d, want the lowest advertised %d (%+v)", m.EffectiveMaxCommand, low, m)
		}
		effMax = m.EffectiveMaxCommand
		if olds > 0 && m.EffectiveMaxCommand != oldMax {
			t.Fatalf("with %d old member(s) the effective max_command is %d, want the old build's %d", olds, m.EffectiveMaxCommand, oldMax)
		}
		t.Logf("%s: effective max_command %d with %d old member(s) (old build %d, this build %d)", upgraded, m.EffectiveMaxCommand, olds, oldMax, cluster.MaxCommandType)
	}

	// takeoverOf describes the last takeover of node (its own account).
	takeoverOf := func(node string) string {
		st, err := l.NodeAdminStatus(ctx, node)
		if err != nil || st.Cluster == nil || st.Cluster.LastTakeover == nil {
			return fmt.Sprintf("%s: no takeover split (%v)", node, err)
		}
		sp := st.Cluster.LastTakeover
		return fmt.Sprintf("%s's takeover: load %.1f, commit %.1f, install %.1f, engine %.1f ms, staged %v (late %v) %s",
			node, sp.LoadMS, sp.CommitMS, sp.InstallMS, sp.EngineMS, sp.Staged, sp.StagedLate, sp.Unstaged)
	}

	// gapCheck: issue 6 asks for at most one lost ping per handover. A
	// handover is staged (announced, the target ready before the old
	// active lets go) when every member applies the Handover command; in
	// a cluster with a member that predates it (upgradeFromPreHandover
	// until the last old node is upgraded) the target must first commit
	// its jumped counters (a Raft round with four fdatasyncs, 2-9 ms
	// here): 15-29 ms, 0-2 lost pings. Those are reported; every staged
	// handover is held to the bound.
	gapCheck := func(label string, o Outage) {
		t.Helper()
		if o.Lost <= plannedMaxLost {
			return
		}
		msg := fmt.Sprintf("%s lost %d pings (largest gap %d ms, largest gap between the pinger's own requests %d ms); issue 6 wants at most %d",
			label, o.Lost, o.Gap.Milliseconds(), o.SendGap.Milliseconds(), plannedMaxLost)
		if effMax != 0 && effMax < uint8(cluster.TypeHandover) {
			t.Logf("%s (not held to it: a member applies command types up to %d only, so the handover is not staged)", msg, effMax)
			return
		}
		t.Error(msg)
	}

	// probeHandover is a planned failover (`ikegwctl failover --to`) from
	// the active gateway to the other one. This build announces it with
	// the Handover command; when the base lacks that type
	// (upgradeFromPreHandover), in a mixed cluster Commit refuses it
	// (ErrUnsupportedByCluster) and the handover goes on without it; once
	// every member is upgraded it is announced.
	refusedText := cluster.ErrUnsupportedByCluster.Error()
	probeHandover := func(label string, mixed bool) string {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		from, err := l.WaitActive(wctx, "")
		wcancel()
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		to := "gw1"
		if from == "gw1" {
			to = "gw2"
		}
		n, err := l.Node(from)
		if err != nil {
			t.Fatal(err)
		}
		mark := len(n.Proc().Output())
		seqBefore := strings.Count(l.Swan().Log(), SeqFailure)
		at := time.Now()
		if out, errOut, code := ctl(n.Socket, "failover", "--to", to); code != 0 {
			t.Fatalf("%s: ikegwctl failover --to %s on %s: exit %d: %s%s", label, to, from, code, out, errOut)
		}
		wctx, wcancel = context.WithTimeout(ctx, 20*time.Second)
		now, err := l.WaitActive(wctx, from)
		if err == nil {
			err = l.WaitPingSince(wctx, at)
		}
		wcancel()
		if err != nil {
			t.Fatalf("%s: after the failover from %s to %s: %v", label, from, to, err)
		}
		time.Sleep(settle)
		o := MeasureOutage(l.Pinger().Snapshot(), at, time.Now())
		logs := n.Proc().Output()[mark:]
		refused := strings.Contains(logs, refusedText)
		t.Logf("%s: failover %s -> %s (active now %s): largest ping gap %d ms, %d lost; handover announcement refused: %v; %s",
			label, from, to, now, o.Gap.Milliseconds(), o.Lost, refused, takeoverOf(now))
		if n := strings.Count(l.Swan().Log(), SeqFailure) - seqBefore; n != 0 {
			t.Fatalf("%s: the peer logged %q %d times", label, SeqFailure, n)
		}
		checkPeer(label)
		switch {
		case mixed && !refused:
			t.Fatalf("%s: %s (this build) handed over in a cluster with an old member, but its log does not show the newer command refused (%q)", label, from, refusedText)
		case !mixed && refused:
			t.Fatalf("%s: every member is upgraded, yet %s's handover announcement was refused: %s", label, from, tail(logs, 2000))
		}
		gapCheck(label, o)
		return now
	}

	handovers, refusals, unplanned := 0, 0, 0
	probedMixed := false
	expected := ""
	for round := 1; ; round++ {
		if round > 10 {
			t.Fatal("the upgrade did not finish in 10 steps")
		}
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		active, err := l.WaitActive(wctx, "")
		wcancel()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if expected != "" && active != expected {
			unplanned++
			t.Logf("round %d: UNPLANNED: the active role moved from %s to %s between steps; role events:\n%s", round, expected, active, roleEvents(l))
		}
		if !probedMixed && oldMax > 0 && oldMax < uint8(cluster.MaxCommandType) {
			// An upgraded active with an old gateway left: the newer
			// command must stay off.
			var m api.Members
			if err := l.AdminGet(ctx, active, api.PathMembers, &m); err != nil {
				t.Fatal(err)
			}
			activeNew, oldGateway := false, false
			for _, x := range m.Members {
				activeNew = activeNew || (x.ID == active && x.Version == upgradeNewVersion)
				oldGateway = oldGateway || (x.Role == "gateway" && x.Version == upgradeOldVersion)
			}
			if activeNew && oldGateway {
				probedMixed = true
				expected = probeHandover(fmt.Sprintf("round %d, mixed cluster", round), true)
				continue
			}
		}
		// The step as `upgrade next` on the active node says; a refusal
		// (a member still rejoining as seen by gossip) is retried.
		var res struct {
			Step      *api.UpgradeStep `json:"step"`
			Performed bool             `json:"performed"`
			Done      bool             `json:"done"`
		}
		var at time.Time
		deadline := time.Now().Add(30 * time.Second)
		for {
			at = time.Now()
			out, errOut, code := ctl(sockOf(active), "-o", "json", "upgrade", "next", "--target", upgradeNewVersion)
			if code == 0 {
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("upgrade next -o json: %v\n%s", err, out)
				}
				break
			}
			if code != 3 || time.Now().After(deadline) {
				t.Fatalf("round %d: upgrade next on %s: exit %d: %s%s", round, active, code, out, errOut)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if res.Done {
			break
		}
		step := *res.Step
		seqBefore := strings.Count(l.Swan().Log(), SeqFailure)
		switch step.Kind {
		case api.StepRestart:
			if step.Node == active {
				t.Fatalf("round %d: upgrade next says restart the active node %s", round, active)
			}
			if err := l.StopNode(ctx, step.Node); err != nil {
				t.Fatal(err)
			}
			// While it is down, the next step is refused (exit 3), naming it.
			rdeadline := time.Now().Add(20 * time.Second)
			for {
				_, errOut, code := ctl(sockOf(active), "upgrade", "next", "--target", upgradeNewVersion)
				if code == 3 && strings.Contains(errOut, "member "+step.Node+" is ") {
					refusals++
					t.Logf("round %d: with %s down: %s", round, step.Node, strings.TrimSpace(errOut))
					break
				}
				if time.Now().After(rdeadline) {
					t.Fatalf("round %d: %s is down but upgrade next still answers exit %d: %s", round, step.Node, code, errOut)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err := l.StartWith(ctx, step.Node, newRel.Ikegwd); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			expected = active
			if now, err := l.Active(ctx); err != nil || now != active {
				// Not what the step should do, but the tunnel must survive
				// it (checked below); the plan adapts.
				unplanned++
				t.Logf("round %d: UNPLANNED: the active role moved from %s to %q (%v) while %s restarted; role events:\n%s",
					round, active, now, err, step.Node, roleEvents(l))
				expected = ""
			}
			var st Status
			if err := l.AdminGet(ctx, step.Node, api.PathStatus, &st); err != nil || st.Version != upgradeNewVersion {
				t.Fatalf("round %d: %s runs %q after the restart (%v), want %s", round, step.Node, st.Version, err, upgradeNewVersion)
			}
			checkMaxCommand(step.Node)
		case api.StepHandover:
			if !res.Performed || step.Node != active {
				t.Fatalf("round %d: handover %+v not performed on the active %s", round, step, active)
			}
			handovers++
			hctx, hcancel := context.WithTimeout(ctx, 20*time.Second)
			now, err := l.WaitActive(hctx, active)
			hcancel()
			if err != nil {
				t.Fatalf("round %d: after the handover from %s: %v", round, active, err)
			}
			if now != step.To {
				t.Fatalf("round %d: %s is active after the handover, want %s", round, now, step.To)
			}
			expected = now
		default:
			t.Fatalf("round %d: unknown step %+v", round, step)
		}
		wctx, wcancel = context.WithTimeout(ctx, 20*time.Second)
		err = l.WaitPingSince(wctx, at)
		wcancel()
		if err != nil {
			t.Fatalf("round %d (%s %s): the ping did not resume: %v", round, step.Kind, step.Node, err)
		}
		time.Sleep(settle)
		o := MeasureOutage(l.Pinger().Snapshot(), at, time.Now())
		t.Logf("round %d: %s %s%s: largest ping gap %d ms (largest gap between the pinger's own requests %d ms), %d lost", round, step.Kind, step.Node,
			map[bool]string{true: " -> " + step.To}[step.Kind == api.StepHandover], o.Gap.Milliseconds(), o.SendGap.Milliseconds(), o.Lost)
		if n := strings.Count(l.Swan().Log(), SeqFailure) - seqBefore; n != 0 {
			t.Fatalf("round %d: the peer logged %q %d times", round, SeqFailure, n)
		}
		checkPeer(fmt.Sprintf("round %d (%s %s)", round, step.Kind, step.Node))
		if step.Kind == api.StepHandover {
			t.Logf("round %d: %s", round, takeoverOf(step.To))
			gapCheck(fmt.Sprintf("round %d: the handover %s -> %s", round, step.Node, step.To), o)
		}
	}

	if refusals != 3 || handovers+unplanned == 0 {
		t.Fatalf("%d handovers, %d unplanned role moves, %d refusals: want 3 refusals (one per restarted node) and a handover", handovers, unplanned, refusals)
	}
	if handovers == 0 {
		t.Logf("NOTE: no handover was needed: the active role moved to an upgraded gateway during a restart")
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	active, err := l.WaitActive(wctx, "")
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	var m api.Members
	if err := l.AdminGet(ctx, active, api.PathMembers, &m); err != nil {
		t.Fatal(err)
	}
	for _, x := range m.Members {
		if x.Version != upgradeNewVersion || x.Status != "alive" || !x.Voter {
			t.Fatalf("after the upgrade: member %+v", x)
		}
	}
	if m.EffectiveMaxCommand != uint8(cluster.MaxCommandType) {
		t.Fatalf("after the upgrade the effective max_command is %d, want this build's %d", m.EffectiveMaxCommand, cluster.MaxCommandType)
	}
	if oldMax < uint8(cluster.MaxCommandType) {
		t.Logf("command types %d..%d switched on only now: every member applies them", oldMax+1, cluster.MaxCommandType)
		if !probedMixed {
			t.Logf("NOTE: no upgraded active with an old gateway left occurred (role moves): the refusal in the mixed cluster was not probed")
		}
	} else {
		if base.gatesCommand {
			t.Fatalf("%s applies every command type this tree has (up to %d): it cannot show a new command type staying off; choose an older base", upgradeFromCommit, cluster.MaxCommandType)
		}
		t.Logf("NOTE: this tree has no command type %s lacks (both apply up to %d); TestRollingUpgradeNewCommand upgrades from a base that lacks one",
			upgradeFromCommit, cluster.MaxCommandType)
	}
	// A planned failover between two members of this build, announced.
	probeHandover("after the upgrade", false)
	wctx, wcancel = context.WithTimeout(ctx, 20*time.Second)
	active, err = l.WaitActive(wctx, "")
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := ctl(sockOf(active), "-o", "json", "upgrade", "plan")
	var p api.UpgradePlan
	if code != 0 || json.Unmarshal([]byte(out), &p) != nil || !p.Done || p.Target != upgradeNewVersion {
		t.Fatalf("upgrade plan after the upgrade: exit %d %+v %s%s", code, p, out, errOut)
	}
	// The old ikegwctl still reads the new daemons.
	out, errOut, code, err = ctlRun(ctx, oldRel.Ikegwctl, sockOf(active), "members", "list")
	if err != nil || code != 0 || !strings.Contains(out, upgradeNewVersion) {
		t.Fatalf("ikegwctl of %s against the upgraded cluster: exit %d %v\n%s%s", upgradeFromCommit, code, err, out, errOut)
	}
	agree, err := l.agrees(ctx, active, initial)
	if err != nil || !agree {
		t.Fatalf("the active %s does not list the peer's tunnel %s (%v)", active, initial, err)
	}
	checkPeer("the upgrade")
}

// roleEvents returns the role and leadership lines of every member's
// recent output, to explain an unplanned role move.
func roleEvents(l *Lab) string {
	var b strings.Builder
	for _, n := range l.Nodes() {
		p := n.Proc()
		if p == nil {
			continue
		}
		for _, line := range strings.Split(tail(p.Output(), 60000), "\n") {
			for _, k := range []string{"role: state", "lost leadership", "stepping down", "election won", "handover", "heartbeat timeout"} {
				if strings.Contains(line, k) {
					fmt.Fprintf(&b, "  %s: %s\n", n.Name, line)
					break
				}
			}
		}
	}
	return b.String()
}

// A commit the repository lacks (a shallow clone) is a clear error naming
// it, before anything is built.
func TestBuildCommitMissing(t *testing.T) {
	repo := os.Getenv("IKEGW_LAB_REPO")
	if repo == "" {
		out, err := exec.Command("git", "-c", "safe.directory=*", "rev-parse", "--show-toplevel").Output()
		if err != nil {
			t.Skipf("not a git work tree: %v", err)
		}
		repo = strings.TrimSpace(string(out))
	}
	const missing = "00000000000000000000000000000000000000ff"
	_, err := BuildCommit(context.Background(), repo, missing, t.TempDir(), "v0.0.1")
	if !errors.Is(err, ErrNoCommit) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "shallow") {
		t.Fatalf("missing commit: %v", err)
	}
}
