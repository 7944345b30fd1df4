package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"ikegw/cmd/api"
)

// membersJoin: `members join ADDR` (any node; the leader makes it a voter).
func membersJoin(cmd *cobra.Command, args []string) error {
	return memberChange(cmd, api.PathMembersJoin, url.Values{"addr": {args[0]}})
}

// membersRemove: `members remove NODE` (the leader; others name it).
func membersRemove(cmd *cobra.Command, args []string) error {
	return memberChange(cmd, api.PathMembersRemove, url.Values{"node": {args[0]}})
}

func memberChange(cmd *cobra.Command, path string, q url.Values) error {
	if err := checkOutput(); err != nil {
		return err
	}
	var c api.MemberChange
	if err := call(http.MethodPost, path, q, &c); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), c)
	}
	verb := map[string]string{"join": "joined: it is a voter now", "remove": "removed from Raft and gossip"}[c.Action]
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n\n", c.Node, verb)
	return membersTable(cmd.OutOrStdout(), api.Members{Members: c.Members})
}

// applyConfig: `config apply FILE`. Only the connections section is
// cluster-wide; the answer lists the node-local sections it ignored.
func applyConfig(cmd *cobra.Command, args []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return fmt.Errorf("config apply: %w", err)
	}
	var a api.ConfigApplied
	err = callBody(http.MethodPost, api.PathConfigApply, nil, bytes.NewReader(data), &a)
	if err != nil {
		if e, ok := errors.AsType[*httpError](err); ok && e.code == http.StatusUnprocessableEntity {
			return fmt.Errorf("%s: refused, nothing changed: %w", args[0], err)
		}
		return err
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), a)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "applied cluster-wide configuration version %d (Raft index %d): connections %s\n",
		a.Version, a.RaftIndex, strings.Join(a.Connections, ", "))
	if len(a.Ignored) > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "not replicated (node-local): %s\n", strings.Join(a.Ignored, ", "))
	}
	if a.Error != "" {
		return fmt.Errorf("config apply: %s", a.Error)
	}
	return nil
}

// showConfig: `config show`, the running configuration with the
// cluster-wide version it runs.
func showConfig(cmd *cobra.Command, _ []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	var a api.ConfigApplied
	if err := call(http.MethodGet, api.PathConfigApplied, nil, &a); err != nil {
		if e, ok := errors.AsType[*httpError](err); !ok || e.code != http.StatusNotFound {
			return err
		}
		a = api.ConfigApplied{} // an older ikegwd: no cluster-wide configuration
	}
	var y bytes.Buffer
	if err := call(http.MethodGet, api.PathConfig, nil, &y); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), struct {
			Applied api.ConfigApplied `json:"applied"`
			YAML    string            `json:"yaml"`
		}{a, y.String()})
	}
	out := cmd.OutOrStdout()
	if a.Version == 0 {
		fmt.Fprintln(out, "# connections: this node's file (no cluster-wide configuration applied yet)")
	} else {
		fmt.Fprintf(out, "# connections: cluster-wide version %d, loaded at Raft index %d (%s)\n", a.Version, a.RaftIndex, a.AppliedAt.Format(time.RFC3339))
	}
	if a.Error != "" {
		fmt.Fprintf(out, "# WARNING: %s\n", a.Error)
	}
	_, err := out.Write(y.Bytes())
	return err
}
