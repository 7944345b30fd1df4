package api

import (
	"errors"
	"strings"
	"testing"
)

func mem(id, role, version string, active bool) UpgradeMember {
	return UpgradeMember{ID: id, Role: role, Version: version, MaxCommand: 8, Status: "alive", Voter: true, Leader: active, Active: active, Lag: -1}
}

func steps(p UpgradePlan) string {
	var s []string
	for _, x := range p.Steps {
		if x.Kind == StepHandover {
			s = append(s, "handover "+x.Node+"->"+x.To)
		} else {
			s = append(s, x.Kind+" "+x.Node)
		}
	}
	return strings.Join(s, ", ")
}

// A 2 gateways + witness cluster walks from v1.0.0 to v1.1.0: standby,
// witness, handover, old active; each state's plan is what remains.
func TestPlanUpgradeWalk(t *testing.T) {
	const old, cur = "v1.0.0", "v1.1.0"
	for _, tc := range []struct {
		name    string
		members []UpgradeMember
		target  string
		want    string
		from    string
	}{
		{"all old, target given", []UpgradeMember{mem("gw1", "gateway", old, true), mem("gw2", "gateway", old, false), mem("witness", "witness", old, false)},
			cur, "restart gw2, restart witness, handover gw1->gw2, restart gw1", "flag"},
		{"all old, no target: nothing newer", []UpgradeMember{mem("gw1", "gateway", old, true), mem("gw2", "gateway", old, false), mem("witness", "witness", old, false)},
			"", "", "newest"},
		{"standby upgraded", []UpgradeMember{mem("gw1", "gateway", old, true), mem("gw2", "gateway", cur, false), mem("witness", "witness", old, false)},
			"", "restart witness, handover gw1->gw2, restart gw1", "newest"},
		{"only the active is old", []UpgradeMember{mem("gw1", "gateway", old, true), mem("gw2", "gateway", cur, false), mem("witness", "witness", cur, false)},
			"", "handover gw1->gw2, restart gw1", "newest"},
		{"handed over", []UpgradeMember{mem("gw1", "gateway", old, false), mem("gw2", "gateway", cur, true), mem("witness", "witness", cur, false)},
			"", "restart gw1", "newest"},
		{"done", []UpgradeMember{mem("gw1", "gateway", cur, false), mem("gw2", "gateway", cur, true), mem("witness", "witness", cur, false)},
			"", "", "newest"},
		{"three gateways, standbys by name", []UpgradeMember{mem("gw3", "gateway", old, false), mem("gw1", "gateway", old, false), mem("gw2", "gateway", old, true)},
			cur, "restart gw1, restart gw3, handover gw2->gw1, restart gw2", "flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanUpgrade(tc.members, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if got := steps(p); got != tc.want {
				t.Fatalf("steps %q, want %q", got, tc.want)
			}
			if p.Target != cur && tc.target != "" || p.TargetFrom != tc.from {
				t.Fatalf("target %q from %q", p.Target, p.TargetFrom)
			}
			if p.Done != (tc.want == "") || p.Refused != "" {
				t.Fatalf("done %v refused %q", p.Done, p.Refused)
			}
			next, err := NextUpgradeStep(p)
			if err != nil || (next == nil) != p.Done || (next != nil && *next != p.Steps[0]) {
				t.Fatalf("next %+v, %v", next, err)
			}
		})
	}
}

// Steps that would drop redundancy are refused, with the reason.
func TestPlanUpgradeRefusals(t *testing.T) {
	const old, cur = "1.0.0", "1.1.0"
	base := func() []UpgradeMember {
		return []UpgradeMember{mem("gw1", "gateway", old, true), mem("gw2", "gateway", old, false), mem("witness", "witness", old, false)}
	}
	for _, tc := range []struct {
		name    string
		members func() []UpgradeMember
		want    string
	}{
		{"a member failed", func() []UpgradeMember { m := base(); m[2].Status = "failed"; return m }, "member witness is failed"},
		{"a member suspect", func() []UpgradeMember { m := base(); m[1].Status = "suspect"; return m }, "member gw2 is suspect"},
		{"a member only in Raft", func() []UpgradeMember { m := base(); m[1].Status = "raft-only"; return m }, "member gw2 is raft-only"},
		{"a member not a voter yet", func() []UpgradeMember { m := base(); m[1].Voter = false; return m }, "gw2 is not a Raft voter"},
		{"a member lagging", func() []UpgradeMember { m := base(); m[1].Lag = MaxLagEntries + 1; return m }, "gw2 lags 65 log entries"},
		{"no leader", func() []UpgradeMember { m := base(); m[0].Leader = false; return m }, "no Raft leader"},
		{"no active", func() []UpgradeMember { m := base(); m[0].Active = false; return m }, "no gateway is active"},
		{"two voters: no quorum margin", func() []UpgradeMember { return base()[:2] }, "would leave 1 of 2 Raft voters, below the quorum of 2"},
		{"no upgraded standby gateway to hand over to", func() []UpgradeMember {
			return []UpgradeMember{mem("gw1", "gateway", old, true), mem("w1", "witness", cur, false), mem("w2", "witness", cur, false)}
		}, "no upgraded, alive, caught-up standby gateway to hand gw1 over to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanUpgrade(tc.members(), cur)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(p.Refused, tc.want) {
				t.Fatalf("refused %q, want it to say %q (steps %s)", p.Refused, tc.want, steps(p))
			}
			next, err := NextUpgradeStep(p)
			if next != nil || !errors.Is(err, ErrUpgradeRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("next %+v, %v", next, err)
			}
		})
	}
	// A lag that is known and small does not block; the standby that was
	// just restarted counts once it has caught up.
	m := base()
	m[1].Lag = 3
	if p, _ := PlanUpgrade(m, cur); p.Refused != "" {
		t.Fatalf("small lag refused: %s", p.Refused)
	}
}

func TestPlanUpgradeEffectiveMaxCommand(t *testing.T) {
	m := []UpgradeMember{mem("gw1", "gateway", "1.0.0", true), mem("gw2", "gateway", "1.1.0", false), mem("witness", "witness", "1.1.0", false)}
	m[1].MaxCommand, m[2].MaxCommand = 9, 9
	p, err := PlanUpgrade(m, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.EffectiveMaxCommand != 8 {
		t.Fatalf("effective %d, want the old member's 8", p.EffectiveMaxCommand)
	}
	m[0].Status = "failed" // a failed member does not hold features back
	if p, _ = PlanUpgrade(m, ""); p.EffectiveMaxCommand != 9 {
		t.Fatalf("effective %d with the old member failed, want 9", p.EffectiveMaxCommand)
	}
	m[0].Status, m[0].MaxCommand = "alive", 0 // not reported: unknown
	if p, _ = PlanUpgrade(m, ""); p.EffectiveMaxCommand != 0 {
		t.Fatalf("effective %d with one unknown, want 0 (unknown)", p.EffectiveMaxCommand)
	}
}

func TestPlanUpgradeTargetErrors(t *testing.T) {
	if _, err := PlanUpgrade(nil, ""); !errors.Is(err, ErrUpgradeTarget) {
		t.Fatalf("empty list: %v", err)
	}
	m := []UpgradeMember{mem("gw1", "gateway", "dev", true), mem("gw2", "gateway", "1.1.0", false)}
	_, err := PlanUpgrade(m, "")
	if !errors.Is(err, ErrUpgradeTarget) || !strings.Contains(err.Error(), `"dev"`) || !strings.Contains(err.Error(), "--target") {
		t.Fatalf("unorderable versions: %v", err)
	}
	// With a target, any version string works: members either run it or not.
	p, err := PlanUpgrade(m, "dev")
	if err != nil || steps(p) != "restart gw2" {
		t.Fatalf("target dev: %s, %v", steps(p), err)
	}
	m[0].Version = ""
	if _, err := PlanUpgrade(m, ""); !errors.Is(err, ErrUpgradeTarget) || !strings.Contains(err.Error(), "gw1 reports no version") {
		t.Fatalf("no version: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.2.3", "1.2.3", 0}, {"v1.2.3", "1.2.3", 0}, {"1.2.3", "1.2.4", -1}, {"1.10.0", "1.9.9", 1}, {"2.0.0", "1.99.99", 1},
		{"1.2.3-rc.1", "1.2.3", -1}, {"1.2.3", "1.2.3-rc.1", 1}, {"1.2.3-rc.2", "1.2.3-rc.10", -1}, {"1.2.3-alpha", "1.2.3-beta", -1},
		{"1.2.3-1", "1.2.3-alpha", -1}, {"1.2.3-rc", "1.2.3-rc.1", -1}, {"1.2.3+abc", "1.2.3+def", 0},
		{"v0.3.0-12-gabcdef0", "v0.3.0", -1},
	} {
		got, err := CompareVersions(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
	}
	for _, bad := range []string{"dev", "", "1.2", "1.2.3.4", "1.x.3", "01.2.3", "1.2.3-", "v"} {
		if _, err := CompareVersions(bad, "1.0.0"); err == nil || !strings.Contains(err.Error(), "not a semantic version") {
			t.Errorf("CompareVersions(%q): %v, want an error", bad, err)
		}
	}
}

func TestUpgradeMembersSelfLag(t *testing.T) {
	m := Members{Members: []Member{{ID: "gw1", Role: "gateway", Version: "1.0.0", MaxCommand: 8, Status: "alive", Voter: true, Active: true, Leader: true},
		{ID: "gw2", Role: "gateway", Version: "1.0.0", Status: "alive", Voter: true}}, Active: "gw1"}
	self := Status{Node: "gw2", Cluster: &ClusterStatus{CommitIndex: 100, AppliedIndex: 90, LastIndex: 100}}
	us := UpgradeMembers(m, self)
	if len(us) != 2 || us[0].Lag != -1 || us[1].Lag != 10 || us[0].MaxCommand != 8 || !us[0].Active || us[1].Active {
		t.Fatalf("%+v", us)
	}
}

// FuzzCompareVersions: versions come from other members' metadata; the
// parser never panics, and the order is antisymmetric and reflexive.
func FuzzCompareVersions(f *testing.F) {
	for _, s := range []string{"1.2.3", "v0.3.0-12-gabcdef0", "1.2.3-rc.1+build.5", "dev", "", "1..2", "v1.2.3-"} {
		f.Add(s, "1.2.3")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, errA := CompareVersions(a, b)
		ba, errB := CompareVersions(b, a)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%q vs %q: errors %v / %v", a, b, errA, errB)
		}
		if errA == nil && ab != -ba {
			t.Fatalf("%q vs %q = %d but %q vs %q = %d", a, b, ab, b, a, ba)
		}
		if c, err := CompareVersions(a, a); err == nil && c != 0 {
			t.Fatalf("%q vs itself = %d", a, c)
		}
	})
}
