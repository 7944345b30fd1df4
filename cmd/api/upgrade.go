package api

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Rolling upgrades. PlanUpgrade is a pure function of the member list (as
// PathMembers and PathStatus describe it) and the target version: ikegwctl
// computes the plan itself from views every ikegwd version serves, so it
// works while the members still run an older build.

// Errors of the upgrade planner (errors.Is).
var (
	// ErrUpgradeTarget: no target version could be chosen, or a version
	// cannot be ordered.
	ErrUpgradeTarget = errors.New("upgrade: target version")
	// ErrUpgradeRefused: the next step would drop redundancy now; the
	// refusal names why. Wait (a member rejoining, catching up) and retry.
	ErrUpgradeRefused = errors.New("upgrade: step refused")
)

// UpgradeMember is one member as the planner sees it.
type UpgradeMember struct {
	ID      string `json:"id"`
	Role    string `json:"role"` // gateway | witness
	Version string `json:"version"`
	// MaxCommand is the highest Raft command type the member's build
	// applies; 0 when the node asked does not report it (older builds).
	MaxCommand uint8  `json:"max_command,omitempty"`
	Status     string `json:"status"` // alive, suspect, failed, left, raft-only
	Voter      bool   `json:"voter"`
	Leader     bool   `json:"leader"`
	Active     bool   `json:"active"`
	// Lag is the number of log entries the member has not applied yet; -1
	// when unknown (only the node asked knows its own).
	Lag int64 `json:"lag"`
	// Upgraded: the member runs the target version (set by PlanUpgrade).
	Upgraded bool `json:"upgraded"`
}

// Kinds of upgrade steps.
const (
	StepRestart  = "restart"  // restart Node with the new binary, state kept
	StepHandover = "handover" // the active Node hands over to To (planned failover)
)

// UpgradeStep is one step of a rolling upgrade.
type UpgradeStep struct {
	Kind string `json:"kind"`
	Node string `json:"node"`
	To   string `json:"to,omitempty"` // handover only
	// Text says what the operator does (or what `upgrade next` does).
	Text string `json:"text"`
}

// UpgradePlan is the answer of the planner.
type UpgradePlan struct {
	Target string `json:"target"`
	// TargetFrom is "flag" (given) or "newest" (the newest version a
	// member runs).
	TargetFrom string          `json:"target_from"`
	Members    []UpgradeMember `json:"members"`
	// EffectiveMaxCommand is the cluster's: the lowest MaxCommand of the
	// alive members (0 when some member's is unknown). Command types above
	// it stay off.
	EffectiveMaxCommand uint8 `json:"effective_max_command,omitempty"`
	// Steps are the remaining steps in order; Steps[0] is the next one.
	Steps []UpgradeStep `json:"steps"`
	// Done: every member runs Target.
	Done bool `json:"done"`
	// Refused says why Steps[0] may not be taken now ("" when it may).
	Refused string `json:"refused,omitempty"`
}

// MaxLagEntries is how many log entries a member may still have to apply
// for the cluster to count it as caught up.
const MaxLagEntries = 64

// UpgradeMembers joins the views of PathMembers and the asked node's
// PathStatus (for its own apply lag) into the planner's input.
func UpgradeMembers(m Members, self Status) []UpgradeMember {
	out := make([]UpgradeMember, 0, len(m.Members))
	for _, x := range m.Members {
		u := UpgradeMember{ID: x.ID, Role: x.Role, Version: x.Version, MaxCommand: x.MaxCommand, Status: x.Status,
			Voter: x.Voter, Leader: x.Leader, Active: x.Active, Lag: -1}
		if x.ID == self.Node && self.Cluster != nil {
			c := self.Cluster
			u.Lag = 0
			if top := max(c.CommitIndex, c.LastIndex); top > c.AppliedIndex {
				u.Lag = int64(top - c.AppliedIndex)
			}
		}
		out = append(out, u)
	}
	return out
}

// PlanUpgrade orders a rolling upgrade to target (the newest version a
// member runs when empty): the old standby gateways one at a time, then the
// old witnesses, then a handover from an old active to an upgraded healthy
// standby, then the old active. It checks whether the first step may be
// taken now: every member alive, a Raft voter and caught up; a restart must
// leave a Raft quorum; a handover needs an upgraded alive standby gateway.
// A refusal is reported in Refused (and by NextUpgradeStep as an error).
func PlanUpgrade(members []UpgradeMember, target string) (UpgradePlan, error) {
	p := UpgradePlan{Target: target, TargetFrom: "flag", Steps: []UpgradeStep{}}
	if len(members) == 0 {
		return p, fmt.Errorf("%w: the member list is empty", ErrUpgradeTarget)
	}
	if target == "" {
		p.TargetFrom = "newest"
		for _, m := range members {
			if m.Version == "" {
				return p, fmt.Errorf("%w: member %s reports no version; name the target with --target", ErrUpgradeTarget, m.ID)
			}
			if p.Target == "" {
				p.Target = m.Version
				continue
			}
			c, err := CompareVersions(m.Version, p.Target)
			if err != nil {
				return p, fmt.Errorf("%w: member %s: %w; name the target with --target", ErrUpgradeTarget, m.ID, err)
			}
			if c > 0 {
				p.Target = m.Version
			}
		}
	}
	p.Members = slices.Clone(members)
	slices.SortFunc(p.Members, func(a, b UpgradeMember) int { return cmp.Compare(a.ID, b.ID) })
	eff, known := uint8(255), true
	var active *UpgradeMember
	for i := range p.Members {
		m := &p.Members[i]
		m.Upgraded = sameVersion(m.Version, p.Target)
		if m.Status == "alive" {
			if m.MaxCommand == 0 {
				known = false
			}
			eff = min(eff, m.MaxCommand)
		}
		if m.Active {
			active = m
		}
	}
	if known && eff != 255 {
		p.EffectiveMaxCommand = eff
	}

	// The order: old standby gateways, old witnesses, then the active.
	var gws, wits []*UpgradeMember
	for i := range p.Members {
		m := &p.Members[i]
		if m.Upgraded || m.Active {
			continue
		}
		if m.Role == RoleWitness {
			wits = append(wits, m)
		} else {
			gws = append(gws, m)
		}
	}
	restart := func(m *UpgradeMember) UpgradeStep {
		return UpgradeStep{Kind: StepRestart, Node: m.ID,
			Text: fmt.Sprintf("restart %s (%s, now %s) with the %s binary, state directory kept; then run `upgrade next` again", m.ID, m.Role, orDash(m.Version), p.Target)}
	}
	for _, m := range append(gws, wits...) {
		p.Steps = append(p.Steps, restart(m))
	}
	if active != nil && !active.Upgraded {
		to := handoverTarget(p.Members)
		toName := to
		if to == "" && len(gws) > 0 {
			toName = gws[0].ID // upgraded by then
		}
		p.Steps = append(p.Steps, UpgradeStep{Kind: StepHandover, Node: active.ID, To: toName,
			Text: fmt.Sprintf("hand the active role over from %s to the upgraded standby %s (planned failover)", active.ID, orDash(toName))},
			restart(active))
	}
	if len(p.Steps) == 0 {
		p.Done = true
		return p, nil
	}
	p.Refused = refusal(p.Members, p.Steps[0])
	return p, nil
}

// handoverTarget is the first upgraded, alive, voting, caught-up standby
// gateway ("" if none).
func handoverTarget(ms []UpgradeMember) string {
	for _, m := range ms {
		if m.Upgraded && !m.Active && m.Role == "gateway" && m.Status == "alive" && m.Voter && m.Lag <= MaxLagEntries {
			return m.ID
		}
	}
	return ""
}

// refusal says why step may not be taken now ("" if it may).
func refusal(ms []UpgradeMember, step UpgradeStep) string {
	var active, leader string
	voters, aliveVoters := 0, 0
	for _, m := range ms {
		if m.Status != "alive" {
			return fmt.Sprintf("member %s is %s: a step now would leave the cluster without redundancy; wait until it is alive", m.ID, m.Status)
		}
		if !m.Voter {
			return fmt.Sprintf("member %s is not a Raft voter (yet): wait until the leader has added it", m.ID)
		}
		if m.Lag > MaxLagEntries {
			return fmt.Sprintf("member %s lags %d log entries behind (more than %d): wait until it has caught up", m.ID, m.Lag, MaxLagEntries)
		}
		voters++
		aliveVoters++
		if m.Active {
			active = m.ID
		}
		if m.Leader {
			leader = m.ID
		}
	}
	if leader == "" {
		return "the cluster has no Raft leader: wait for an election"
	}
	if active == "" {
		return "no gateway is active: the cluster is not serving; restore service before upgrading"
	}
	quorum := voters/2 + 1
	switch step.Kind {
	case StepRestart:
		if aliveVoters-1 < quorum {
			return fmt.Sprintf("restarting %s would leave %d of %d Raft voters, below the quorum of %d", step.Node, aliveVoters-1, voters, quorum)
		}
	case StepHandover:
		if handoverTarget(ms) == "" {
			return fmt.Sprintf("no upgraded, alive, caught-up standby gateway to hand %s over to: restart a standby gateway with the new binary first", step.Node)
		}
	}
	return ""
}

// sameVersion: equal strings, or equal semantic versions ("v1.2.0" and
// "1.2.0").
func sameVersion(a, b string) bool {
	c, err := CompareVersions(a, b)
	return a == b || (err == nil && c == 0 && strings.TrimPrefix(a, "v") == strings.TrimPrefix(b, "v"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// NextUpgradeStep returns the plan's next step, or an error wrapping
// ErrUpgradeRefused with the reason; nil and no error when the upgrade is
// done.
func NextUpgradeStep(p UpgradePlan) (*UpgradeStep, error) {
	if p.Done || len(p.Steps) == 0 {
		return nil, nil
	}
	if p.Refused != "" {
		s := p.Steps[0]
		return nil, fmt.Errorf("%w: %s %s: %s", ErrUpgradeRefused, s.Kind, s.Node, p.Refused)
	}
	return &p.Steps[0], nil
}

// CompareVersions orders two semantic versions ([v]MAJOR.MINOR.PATCH with
// an optional -prerelease and +build, as `git describe` tags are): -1, 0
// or 1. Anything else (e.g. "dev") is an error naming the version.
func CompareVersions(a, b string) (int, error) {
	pa, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	pb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := range 3 {
		if c := cmp.Compare(pa.num[i], pb.num[i]); c != 0 {
			return c, nil
		}
	}
	// A release is newer than its prereleases.
	switch {
	case pa.pre == "" && pb.pre == "":
		return 0, nil
	case pa.pre == "":
		return 1, nil
	case pb.pre == "":
		return -1, nil
	}
	fa, fb := strings.Split(pa.pre, "."), strings.Split(pb.pre, ".")
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := strconv.ParseUint(fa[i], 10, 64)
		nb, eb := strconv.ParseUint(fb[i], 10, 64)
		var c int
		switch {
		case ea == nil && eb == nil:
			c = cmp.Compare(na, nb)
		case ea == nil:
			c = -1 // numeric identifiers sort first
		case eb == nil:
			c = 1
		default:
			c = strings.Compare(fa[i], fb[i])
		}
		if c != 0 {
			return c, nil
		}
	}
	return cmp.Compare(len(fa), len(fb)), nil
}

type version struct {
	num [3]uint64
	pre string
}

func parseVersion(s string) (version, error) {
	var v version
	bad := func(why string) (version, error) {
		return v, fmt.Errorf("version %q is not a semantic version ([v]MAJOR.MINOR.PATCH[-PRE][+BUILD]): %s", s, why)
	}
	rest := strings.TrimPrefix(s, "v")
	rest, _, _ = strings.Cut(rest, "+")
	rest, v.pre, _ = strings.Cut(rest, "-")
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return bad("want three numbers")
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || p == "" || (len(p) > 1 && p[0] == '0') {
			return bad(fmt.Sprintf("%q is not a number", p))
		}
		v.num[i] = n
	}
	if strings.Contains(s, "-") && v.pre == "" {
		return bad("empty prerelease")
	}
	return v, nil
}
