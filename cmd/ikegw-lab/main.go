// Command ikegw-lab runs the ikegw cluster lab of issue 5 (deploy/gwlab)
// in network namespaces on this host: `run` builds it and keeps it up
// (status table, control socket) until Ctrl-C or `stop`; `failover` makes
// the running lab kill its active gateway and prints the outage report;
// `stop` ends the running lab, or removes what a crashed one left behind.
// It needs root.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

func main() {
	if err := root().Execute(); err != nil {
		os.Exit(1)
	}
}

func root() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:          "ikegw-lab",
		Short:        "ikegw cluster lab: gateways, witness, strongSwan peer and a ping through the tunnel, in network namespaces",
		SilenceUsage: true,
	}
	cmd.PersistentFlags().StringVar(&socket, "socket", DefaultSocket, "control socket of the running lab")
	cmd.AddCommand(runCmd(&socket), failoverCmd(&socket), stopCmd(&socket), statusCmd(&socket), benchCmd())
	return cmd
}

func runCmd(socket *string) *cobra.Command {
	var (
		o       gwlab.Options
		noWit   bool
		every   time.Duration
		verbose bool
	)
	c := &cobra.Command{
		Use:   "run",
		Short: "Build the lab and keep it running until Ctrl-C, SIGTERM or `ikegw-lab stop`",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("ikegw-lab run needs root (network namespaces, veth, strongSwan)")
			}
			if every <= 0 {
				return fmt.Errorf("--status-every %v: must be positive", every)
			}
			o.Witness = !noWit
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.Bin == "" {
				dir, err := os.MkdirTemp("", "ikegw-lab-bin-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				if o.Bin, err = buildIkegwd(ctx, dir); err != nil {
					return err
				}
			}
			return run(ctx, cmd.OutOrStdout(), *socket, o, every)
		},
	}
	f := c.Flags()
	f.IntVar(&o.Gateways, "gateways", 2, "number of gateways")
	f.BoolVar(&noWit, "no-witness", false, "no witness node (needs --gateways 3 or more)")
	f.StringVar(&o.Bin, "bin", "", "ikegwd binary (default: go build ikegw/cmd/ikegwd)")
	f.StringVar(&o.Dir, "dir", "", "work directory (default: a temporary one, removed at the end)")
	f.StringVar(&o.Dataplane, "dataplane", "userspace", "dataplane.kind of the gateways: userspace, kernel or auto")
	f.StringVar(&o.LogLevel, "log-level", "info", "ikegwd's log level")
	f.DurationVar(&every, "status-every", 3*time.Second, "how often to print the status table")
	f.BoolVar(&verbose, "verbose", false, "log every lab event")
	return c
}

// buildIkegwd builds ikegwd into dir (the current directory must be inside
// the ikegw module).
func buildIkegwd(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "ikegwd")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "ikegw/cmd/ikegwd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building ikegwd (run from the ikegw source tree, or pass --bin): %w\n%s", err, out)
	}
	return bin, nil
}

// run builds the lab, serves the control socket and prints the status
// table until ctx ends or a stop request arrives, then removes everything.
func run(ctx context.Context, out io.Writer, socket string, o gwlab.Options, every time.Duration) error {
	srv, err := listenCtl(socket)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(out, "building the lab (%d gateways, witness %v, %s data plane)...\n", o.Gateways, o.Witness, o.Dataplane)
	l, err := gwlab.Build(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "removing the lab...")
		if err := l.Close(); err != nil {
			fmt.Fprintf(out, "removing the lab: %v\n", err)
		}
	}()
	fmt.Fprintf(out, "lab up in %s (supervised: %v); control socket %s\n", l.Dir(), l.Supervised(), socket)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &handler{l: l, stop: cancel, out: out, start: time.Now()}
	go srv.serve(h.handle, slog.Default())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		fmt.Fprint(out, h.table(ctx))
		select {
		case <-ctx.Done():
			h.wait()
			return nil
		case <-t.C:
		}
	}
}

// handler answers control requests against the running lab.
type handler struct {
	l     *gwlab.Lab
	stop  context.CancelFunc
	out   io.Writer
	start time.Time

	mu     sync.Mutex // one failover (and the restart after it) at a time
	bg     sync.WaitGroup
	lastMu sync.Mutex
	last   *gwlab.Report
}

func (h *handler) wait() { h.bg.Wait() }

func (h *handler) handle(ctx context.Context, req request) response {
	switch req.Cmd {
	case cmdStatus:
		return response{Text: h.table(ctx)}
	case cmdStop:
		h.stop()
		return response{Text: "stopping the lab"}
	case cmdFailover:
		kind := gwlab.DaemonDeath
		switch {
		case req.NodeDeath && req.Planned:
			return response{Error: "--node-death and --planned exclude each other"}
		case req.NodeDeath:
			kind = gwlab.NodeDeath
		case req.Planned:
			kind = gwlab.Planned
		}
		h.mu.Lock()
		r, err := h.l.Failover(ctx, kind)
		h.lastMu.Lock()
		h.last = &r
		h.lastMu.Unlock()
		resp := response{Report: &r, Text: r.String()}
		if err != nil {
			resp.Error = err.Error()
		}
		fmt.Fprint(h.out, r.String())
		if r.Killed == "" {
			h.mu.Unlock()
			return resp
		}
		// Bring the dead node back as standby so the next failover has
		// somewhere to go; the next failover waits for it.
		h.bg.Add(1)
		go func() {
			defer h.bg.Done()
			defer h.mu.Unlock()
			rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := h.l.Restart(rctx, r.Killed); err != nil {
				fmt.Fprintf(h.out, "restarting %s: %v\n", r.Killed, err)
			} else {
				fmt.Fprintf(h.out, "%s restarted and rejoined as standby\n", r.Killed)
			}
		}()
		return resp
	}
	return response{Error: fmt.Sprintf("unknown command %q (want %s, %s or %s)", req.Cmd, cmdStatus, cmdFailover, cmdStop)}
}

// table renders the status table.
func (h *handler) table(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	h.lastMu.Lock()
	var last *gwlab.Report
	if h.last != nil {
		r := *h.last
		last = &r
	}
	h.lastMu.Unlock()
	return renderTable(time.Since(h.start), h.l.Status(ctx), h.l.Pinger().Snapshot(), last)
}

// renderTable is the status table: one line per node, then the ping.
func renderTable(up time.Duration, nodes []gwlab.NodeStatus, ping lab.PingRecord, last *gwlab.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n--- lab up %s ---\n", up.Round(time.Second))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tKIND\tPROCESS\tROLE\tIKE SAS\tCHILD SAS")
	for _, n := range nodes {
		kind := "gateway"
		if n.Witness {
			kind = "witness"
		}
		proc := "running"
		switch {
		case n.Cut:
			proc = "dead (links cut)"
		case !n.Running:
			proc = "stopped"
		}
		role := n.Role
		if n.Err != nil {
			role = "(no answer)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", n.Name, kind, proc, role, n.Status.IKESAs, n.Status.ChildSAs)
	}
	tw.Flush()
	fmt.Fprintf(&b, "ping %s -> %s: sent %d, received %d, lost %d, max gap %d ms\n",
		gwlab.HostInside.Addr(), gwlab.PeerProtected, ping.Sent, ping.Received(), ping.Sent-ping.Received(), ping.MaxGap().Milliseconds())
	if last != nil {
		fmt.Fprintf(&b, "last failover: %s of %s -> %s, outage %d ms, lost %d, SA unchanged %s\n",
			last.Kind, last.Killed, last.NewActive, last.Gap.Milliseconds(), last.Lost, yesNo(last.PeerSAUnchanged && last.SPIsUnchanged))
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func failoverCmd(socket *string) *cobra.Command {
	var nodeDeath, planned bool
	c := &cobra.Command{
		Use:   "failover",
		Short: "Kill the running lab's active gateway (SIGKILL of ikegwd; --node-death: the whole node) and print the report",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			resp, err := call(ctx, *socket, request{Cmd: cmdFailover, NodeDeath: nodeDeath, Planned: planned})
			if resp.Text != "" {
				fmt.Fprint(cmd.OutOrStdout(), resp.Text)
			}
			if err != nil {
				return err
			}
			if resp.Report != nil && !resp.Report.OK() {
				return errors.New("the failover was not seamless")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&nodeDeath, "node-death", false, "kill the whole node: cut its links and kill every process in it")
	c.Flags().BoolVar(&planned, "planned", false, "planned failover: SIGTERM to the active ikegwd (it hands over)")
	return c
}

func statusCmd(socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Print the running lab's status table",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := call(ctx, *socket, request{Cmd: cmdStatus})
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), resp.Text)
			return nil
		},
	}
}

func stopCmd(socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the running lab, or remove what a crashed lab left behind",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out := cmd.OutOrStdout()
			_, err := call(ctx, *socket, request{Cmd: cmdStop})
			if err == nil {
				fmt.Fprintln(out, "the running lab is stopping")
				wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer wcancel()
				return waitGone(wctx, *socket)
			}
			if !errors.Is(err, ErrNoLab) {
				return err
			}
			fmt.Fprintf(out, "no lab answers on %s; removing leftovers of dead labs\n", *socket)
			if err := lab.Cleanup(lab.DefaultPrefix); err != nil {
				return err
			}
			if err := os.Remove(*socket); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		},
	}
}

// waitGone waits until the lab has removed its control socket (it does so
// last, after removing the namespaces).
func waitGone(ctx context.Context, socket string) error {
	for {
		if _, err := os.Lstat(socket); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the lab did not finish stopping: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
