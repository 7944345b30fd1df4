package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"ikegw/deploy/gwlab"
)

// benchRow is one failover of `ikegw-lab bench`, as a JSON line.
type benchRow struct {
	Tunnels int    `json:"tunnels"`
	Kind    string `json:"kind"`
	Run     int    `json:"run"`
	Killed  string `json:"killed"`
	Active  string `json:"new_active"`
	// OutageMS is the largest gap between ping replies through the
	// peer's tunnel; Lost the pings lost.
	OutageMS float64 `json:"outage_ms"`
	Lost     int     `json:"lost"`
	// DetectElectMS: from the failure until the new active's takeover
	// started (failure detection, election, Barrier); then its own
	// split; RestMS is what is left of the outage: VIP claim, the
	// announcements and the first packets.
	DetectElectMS float64 `json:"detect_elect_ms"`
	// Its parts, from the new active's log (absent when it does not
	// say): DetectMS until its Raft became a candidate, ElectMS until it
	// led, ReadyMS until its takeover started (Barrier or applied log).
	DetectMS  *float64 `json:"detect_ms,omitempty"`
	ElectMS   *float64 `json:"elect_ms,omitempty"`
	ReadyMS   *float64 `json:"ready_ms,omitempty"`
	LoadMS    float64  `json:"load_ms"`
	CommitMS  float64  `json:"commit_ms"`
	InstallMS float64  `json:"install_ms"`
	EngineMS  float64  `json:"engine_ms"`
	RestMS    float64  `json:"rest_ms"`
	ChildSAs  int      `json:"child_sas"`
	Seamless  bool     `json:"seamless"`
	// Why a run was not seamless: the ping resumed, the peer kept its IKE
	// SA and SPIs, replayed ESP sequence numbers it logged.
	Resumed     bool   `json:"resumed"`
	SAUnchanged bool   `json:"sa_unchanged"`
	SeqFailures int    `json:"seq_failures"`
	Err         string `json:"error,omitempty"`
	// The lab's timings of the run (BENCHMARKS.md: which sizes need
	// which), and how often the active lost its role while the load
	// tunnels were set up (a fence is followed by a flush and a full
	// re-install of the data plane).
	LeaseMS       float64 `json:"lease_ms"`
	HeartbeatMS   float64 `json:"heartbeat_ms"`
	CounterSyncMS float64 `json:"counter_sync_ms"`
	SetupLosses   int     `json:"setup_active_losses"`
	SetupS        float64 `json:"setup_s,omitempty"`
	Load1         float64 `json:"load1,omitempty"`
}

func benchCmd() *cobra.Command {
	var (
		o       gwlab.Options
		tunnels int
		runs    int
		kinds   string
		verbose bool
	)
	c := &cobra.Command{
		Use:   "bench",
		Short: "Failover outage vs tunnel count: build the lab with TUNNELS tunnels (the peer's plus ikeload's), kill the active RUNS times per kind, print one JSON line per failover",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("ikegw-lab bench needs root (network namespaces, veth, strongSwan)")
			}
			if tunnels < 1 || runs < 1 {
				return fmt.Errorf("--tunnels %d, --runs %d: want at least 1 each", tunnels, runs)
			}
			var ks []gwlab.Kind
			for _, k := range strings.Split(kinds, ",") {
				switch kk := gwlab.Kind(strings.TrimSpace(k)); kk {
				case gwlab.DaemonDeath, gwlab.NodeDeath, gwlab.Planned, gwlab.PlannedCLI:
					ks = append(ks, kk)
				default:
					return fmt.Errorf("--kinds: %q: want %s, %s, %s or %s", k, gwlab.DaemonDeath, gwlab.NodeDeath, gwlab.Planned, gwlab.PlannedCLI)
				}
			}
			o.Witness = true
			o.LoadTunnels = tunnels - 1
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return bench(ctx, cmd.OutOrStdout(), o, tunnels, runs, ks)
		},
	}
	f := c.Flags()
	f.IntVar(&tunnels, "tunnels", 1, "tunnels in the cluster: the peer's (with the ping) plus TUNNELS-1 set up by ikeload")
	f.IntVar(&runs, "runs", 5, "failovers per kind")
	f.StringVar(&kinds, "kinds", "daemon-death,node-death", "comma-separated failover kinds: daemon-death, node-death, planned, planned-cli")
	f.StringVar(&o.Bin, "bin", "bin/ikegwd", "ikegwd binary")
	f.StringVar(&o.Ikeload, "ikeload", "bin/ikeload", "ikeload binary (tunnels > 1)")
	f.StringVar(&o.Ctl, "ctl", "bin/ikegwctl", "ikegwctl binary (planned-cli)")
	f.StringVar(&o.Dir, "dir", "", "work directory (default: a temporary one, removed at the end)")
	f.BoolVar(&verbose, "verbose", false, "log every lab event")
	f.StringVar(&o.LogLevel, "log-level", "", "ikegwd's log.level: debug, info, warn or error (default info; the daemons' logs stay in --dir's logs/)")
	// The lab's defaults (lease 100 ms, heartbeat and election 200 ms,
	// counter sync 200 ms) suit 1 to 1,000 tunnels; larger sizes on a
	// loaded machine need a longer lease and ikegwd's 1 s sync
	// (BENCHMARKS.md, "Failover outage vs tunnel count").
	f.DurationVar(&o.LeaderLease, "lease", 0, "members' cluster.leader_lease (0: the lab's 100ms)")
	f.DurationVar(&o.HeartbeatTimeout, "heartbeat", 0, "members' cluster.heartbeat_timeout (0: the lab's 200ms)")
	f.DurationVar(&o.ElectionTimeout, "election", 0, "members' cluster.election_timeout (0: the lab's 200ms)")
	f.DurationVar(&o.CounterSync, "counter-sync", 0, "gateways' dataplane.counter_sync (0: the lab's 200ms; ikegwd's default is 1s)")
	return c
}

func bench(ctx context.Context, out io.Writer, o gwlab.Options, tunnels, runs int, kinds []gwlab.Kind) error {
	if o.LoadTunnels == 0 {
		o.Ikeload = ""
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	l, err := gwlab.Build(bctx, o)
	cancel()
	if err != nil {
		return err
	}
	defer l.Close()
	lo := l.Options()
	var setupLosses int
	var setupS float64
	if o.LoadTunnels > 0 {
		t0 := time.Now()
		lctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		res, err := l.SetupLoad(lctx)
		cancel()
		losses, lerr := l.ActiveLosses(t0)
		for _, a := range losses {
			fmt.Fprintf(os.Stderr, "ikegw-lab bench: during the setup the active lost its role: %s\n", a)
		}
		if err != nil {
			if len(losses) > 0 {
				return fmt.Errorf("%w (the active lost its role %d times during the setup, lease %v, counter sync %v)", err, len(losses), lo.LeaderLease, lo.CounterSync)
			}
			return err
		}
		if lerr != nil {
			return lerr
		}
		setupLosses, setupS = len(losses), time.Since(t0).Seconds()
		fmt.Fprintf(os.Stderr, "ikegw-lab bench: %d load tunnels up (%.0f tunnels/s, %.1f s, the active lost its role %d times)\n", res.OK, res.Rate, setupS, setupLosses)
	}
	enc := json.NewEncoder(out)
	for _, k := range kinds {
		for run := 1; run <= runs; run++ {
			fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			r, ferr := l.Failover(fctx, k)
			cancel()
			row := benchRow{Tunnels: tunnels, Kind: string(k), Run: run, Killed: r.Killed, Active: r.NewActive,
				OutageMS: float64(r.Gap.Microseconds()) / 1e3, Lost: r.Lost, Seamless: r.OK() && ferr == nil,
				Resumed: r.Resumed, SAUnchanged: r.PeerSAUnchanged && r.SPIsUnchanged, SeqFailures: r.SeqFailures,
				LeaseMS: ms(lo.LeaderLease), HeartbeatMS: ms(lo.HeartbeatTimeout), CounterSyncMS: ms(lo.CounterSync),
				SetupLosses: setupLosses, SetupS: setupS, Load1: gwlab.Load1()}
			if s := r.Split; s != nil {
				row.DetectElectMS = max(0, float64(s.Started.Sub(r.At).Microseconds())/1e3)
				row.LoadMS, row.CommitMS, row.InstallMS, row.EngineMS, row.ChildSAs = s.LoadMS, s.CommitMS, s.InstallMS, s.EngineMS, s.ChildSAs
				row.RestMS = max(0, row.OutageMS-row.DetectElectMS-s.LoadMS-s.CommitMS-s.InstallMS-s.EngineMS)
				if !r.Candidate.IsZero() && !r.Elected.IsZero() {
					pms := func(d time.Duration) *float64 { v := ms(d); return &v }
					row.DetectMS, row.ElectMS, row.ReadyMS = pms(r.Candidate.Sub(r.At)), pms(r.Elected.Sub(r.Candidate)), pms(s.Started.Sub(r.Elected))
				}
			}
			if ferr != nil {
				row.Err = ferr.Error()
			}
			if err := enc.Encode(row); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.Killed != "" && k != gwlab.PlannedCLI {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				err := l.Restart(rctx, r.Killed)
				cancel()
				if err != nil {
					return fmt.Errorf("restarting %s: %w", r.Killed, err)
				}
			}
			time.Sleep(time.Second) // let the restarted node settle as standby
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
