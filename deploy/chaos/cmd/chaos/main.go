// Command chaos runs issue 8's chaos test (package ikegw/deploy/chaos) and
// prints its summary table: root, strongSwan and network namespaces
// needed.
//
//	go run ./deploy/chaos/cmd/chaos [-rounds 20] [-peers 4] [-tunnels 50] [-seed N] [-faults all] [-bin ikegwd]
//
// Without -bin it builds ikegwd from this source tree. Without -dir the
// lab's files go to a temporary directory, kept (and named) when an
// invariant was violated: every daemon's and charon's log is in its logs/.
// It exits 0 when no
// invariant was violated, 1 on a violation (each printed with its
// evidence), 2 when the run could not be carried out.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"ikegw/deploy/chaos"
)

func main() { os.Exit(run()) }

func run() int {
	var o chaos.Options
	var faults string
	var verbose bool
	flag.StringVar(&o.Bin, "bin", "", "ikegwd binary (default: go build ikegw/cmd/ikegwd)")
	flag.IntVar(&o.Rounds, "rounds", 20, "rounds of faults")
	flag.IntVar(&o.Peers, "peers", 4, "strongSwan peers besides the lab's own")
	flag.IntVar(&o.Tunnels, "tunnels", 50, "tunnels (children) per peer")
	flag.IntVar(&o.Gateways, "gateways", 2, "gateways")
	flag.BoolVar(&o.NoWitness, "no-witness", false, "no witness (needs -gateways 3 or more)")
	flag.Int64Var(&o.Seed, "seed", 0, "seed of the fault sequence (0: random, printed)")
	flag.StringVar(&faults, "faults", "all", "fault kinds: all or a comma-separated list of kill-daemon, kill-node, partition, loss, stop")
	flag.StringVar(&o.Dir, "dir", "", "lab work directory (default: a temporary one, removed unless something was violated)")
	flag.DurationVar(&o.SettleTimeout, "settle", 120*time.Second, "deadline of each settle wait")
	flag.IntVar(&o.PeerExchanges, "peer-exchanges", 0, "the peers' charon.max_ikev1_exchanges (0: strongSwan's default, 3)")
	flag.BoolVar(&verbose, "v", false, "log the lab's events to stderr")
	flag.Parse()
	kinds, err := chaos.ParseKinds(faults)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	o.Kinds = kinds
	if verbose {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "chaos: needs root (network namespaces, nftables)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.Bin == "" {
		dir, err := os.MkdirTemp("", "chaos-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
		defer os.RemoveAll(dir)
		o.Bin = filepath.Join(dir, "ikegwd")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", o.Bin, "ikegw/cmd/ikegwd").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: building ikegwd: %v\n%s", err, out)
			return 2
		}
	}
	// The lab's directory (configs, every daemon's and charon's log) is
	// kept when something was violated, for the post-mortem.
	ownDir := o.Dir == ""
	if ownDir {
		d, err := os.MkdirTemp("", "chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 2
		}
		o.Dir = d
	}
	res, err := chaos.Run(ctx, o)
	if ownDir {
		if err == nil && res != nil && res.OK() {
			os.RemoveAll(o.Dir)
		} else {
			defer fmt.Fprintf(os.Stderr, "chaos: the lab's configs and logs are kept in %s\n", o.Dir)
		}
	}
	if res != nil {
		res.WriteTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	if !res.OK() {
		return 1
	}
	return 0
}
