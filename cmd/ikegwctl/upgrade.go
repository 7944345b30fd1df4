package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ikegw/cmd/api"
)

// ExitRefused is the exit code of `upgrade next` when the next step would
// drop redundancy now (a member down, lagging or not a voter, no quorum
// margin, no upgraded standby): wait and run it again.
const ExitRefused = 3

// refusedError carries ExitRefused.
type refusedError struct{ error }

func (refusedError) ExitCode() int { return ExitRefused }

func (e refusedError) Unwrap() error { return e.error }

func upgradeCommand() *cobra.Command {
	var target string
	c := &cobra.Command{Use: "upgrade", Short: "Rolling upgrade: standbys and the witness first, one at a time, then a handover, then the old active",
		Long: `upgrade plan shows every member's version and MaxCommand, the target version
(--target, or the newest version a member runs) and the remaining steps.
upgrade next says which node to restart with the new binary now, or, when
only the active node is old, hands the active role over to an upgraded
standby (run it against the active node). A step that would drop
redundancy is refused with exit code 3.`}
	c.PersistentFlags().StringVar(&target, "target", "", "version to upgrade to (default: the newest version a member runs)")
	c.AddCommand(&cobra.Command{Use: "plan", Short: "Show the members, the target version and the remaining steps", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(); err != nil {
				return err
			}
			p, _, err := upgradePlan(target)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), p)
			}
			return printPlan(cmd.OutOrStdout(), p)
		}},
		&cobra.Command{Use: "next", Short: "Take or show the next step (exit 3 when it would drop redundancy now)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return upgradeNext(cmd.OutOrStdout(), target) }})
	return c
}

// upgradePlan computes the plan from the members and status views of the
// node asked (every ikegwd version serves them, so this works before any
// member is upgraded). It also returns the asked node's name.
func upgradePlan(target string) (api.UpgradePlan, string, error) {
	var st api.Status
	if err := call(http.MethodGet, api.PathStatus, nil, &st); err != nil {
		return api.UpgradePlan{}, "", err
	}
	if st.Cluster == nil {
		return api.UpgradePlan{}, st.Node, fmt.Errorf("upgrade: node %s is %s, not a cluster member: a standalone node is upgraded by restarting it", st.Node, st.Role)
	}
	var m api.Members
	if err := call(http.MethodGet, api.PathMembers, nil, &m); err != nil {
		return api.UpgradePlan{}, st.Node, err
	}
	p, err := api.PlanUpgrade(api.UpgradeMembers(m, st), target)
	return p, st.Node, err
}

// NextResult is the -o json answer of `upgrade next`.
type NextResult struct {
	Plan api.UpgradePlan `json:"plan"`
	// Step is the step taken (handover) or to take now (restart); nil when
	// the upgrade is done.
	Step *api.UpgradeStep `json:"step,omitempty"`
	// Performed: ikegwctl did the step itself (a handover).
	Performed bool          `json:"performed"`
	Failover  *api.Failover `json:"failover,omitempty"`
	Done      bool          `json:"done"`
}

func upgradeNext(out io.Writer, target string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	p, self, err := upgradePlan(target)
	if err != nil {
		return err
	}
	step, err := api.NextUpgradeStep(p)
	if err != nil {
		return refusedError{err}
	}
	res := NextResult{Plan: p, Step: step, Done: step == nil}
	if step != nil && step.Kind == api.StepHandover {
		if self != step.Node {
			return fmt.Errorf("upgrade next: the next step is the handover from %s to %s: run it against %s (the active node), not %s",
				step.Node, step.To, step.Node, self)
		}
		var f api.Failover
		if err := call(http.MethodPost, api.PathFailover, url.Values{"to": {step.To}}, &f); err != nil {
			return fmt.Errorf("upgrade next: handover from %s to %s: %w", step.Node, step.To, err)
		}
		res.Performed, res.Failover = true, &f
	}
	if output == "json" {
		return printJSON(out, res)
	}
	switch {
	case step == nil:
		_, err = fmt.Fprintf(out, "upgrade done: every member runs %s (effective max command %s)\n", p.Target, maxCommand(p.EffectiveMaxCommand))
	case res.Performed:
		_, err = fmt.Fprintf(out, "%s handed the active role over to %s (leader now %q); next: restart %s with the %s binary, then run `upgrade next` again\n",
			res.Failover.From, step.To, res.Failover.Leader, step.Node, p.Target)
	default:
		_, err = fmt.Fprintf(out, "now: %s\n", step.Text)
	}
	return err
}

func printPlan(out io.Writer, p api.UpgradePlan) error {
	from := "given with --target"
	if p.TargetFrom == "newest" {
		from = "the newest version a member runs"
	}
	fmt.Fprintf(out, "target version: %s (%s)\neffective max command: %s\n\n", p.Target, from, maxCommand(p.EffectiveMaxCommand))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tROLE\tVERSION\tMAX COMMAND\tSTATUS\tVOTER\tLEADER\tACTIVE\tLAG\tUPGRADED")
	for _, m := range p.Members {
		lag := "?"
		if m.Lag >= 0 {
			lag = fmt.Sprint(m.Lag)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\t%t\t%t\t%s\t%t\n", m.ID, m.Role, dash(m.Version), maxCommand(m.MaxCommand), m.Status,
			m.Voter, m.Leader, m.Active, lag, m.Upgraded)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if p.Done {
		_, err := fmt.Fprintf(out, "\nnothing to do: every member runs %s\n", p.Target)
		return err
	}
	fmt.Fprintln(out, "\nsteps:")
	for i, s := range p.Steps {
		fmt.Fprintf(out, "  %d. %s\n", i+1, s.Text)
	}
	if p.Refused != "" {
		_, err := fmt.Fprintf(out, "\nnext step REFUSED now: %s\n", p.Refused)
		return err
	}
	next := "`ikegwctl upgrade next` says which node to restart"
	if p.Steps[0].Kind == api.StepHandover {
		next = "`ikegwctl upgrade next` on " + p.Steps[0].Node + " (the active node) performs it"
	}
	_, err := fmt.Fprintf(out, "\nnext step allowed now: %s\n", next)
	return err
}
