// Command ikegwd is the ikegw gateway daemon.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ikegw/cluster/certs"
	"ikegw/cmd/internal/daemon"
	"ikegw/store"
)

func main() {
	if err := root().Execute(); err != nil {
		os.Exit(1)
	}
}

func root() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "ikegwd",
		Short:         "ikegw gateway daemon: IKEv1/IPsec with replicated SA state",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	cmd.AddCommand(runCmd(), superviseCmd(), cleanupCmd(), checkCmd(), keygenCmd(), certsCmd(), versionCmd())
	return cmd
}

func runCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemon.LoadConfig(path)
			if err != nil {
				return err
			}
			log := daemon.NewLogger(cfg.Log)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			n, err := daemon.Start(ctx, cfg, log)
			if err != nil {
				log.Error("start failed", "err", err)
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			for {
				select {
				case <-ctx.Done():
					if err := n.Handover(); err != nil {
						log.Warn("handover before stopping failed", "err", err)
					}
					log.Info("stopping (SAs stay persisted; no DELETE is sent)")
					n.Stop()
					return nil
				case <-hup:
					if err := n.Reload(context.Background(), path); err != nil {
						log.Error("reload failed; the running configuration is unchanged", "err", err)
					}
				}
			}
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "/etc/ikegw/ikegwd.yaml", "configuration file")
	return c
}

func cleanupCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove what a dead ikegwd left behind: its VIPs and owned kernel SAs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemon.LoadConfig(path)
			if err != nil {
				return err
			}
			return daemon.Cleanup(context.Background(), cfg, daemon.NewLogger(cfg.Log))
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "/etc/ikegw/ikegwd.yaml", "configuration file")
	return c
}

// superviseCmd runs `ikegwd run` as a child and cleans up the moment it
// dies, however it dies (SIGKILL included): the VIPs and kernel SAs of a
// dead daemon must not compete with the new active node. It also fences a
// frozen child (SIGSTOP, starved): the child reports its role machine's
// lease on a pipe (fd 3) and the supervisor removes the VIPs when a
// deadline passes without a renewal (daemon.Fencer). A supervisor frozen
// with its child fences nothing (SECURITY.md).
func superviseCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "supervise",
		Short: "Run the daemon as a child and remove its VIPs and SAs when it dies",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemon.LoadConfig(path)
			if err != nil {
				return err
			}
			log := daemon.NewLogger(cfg.Log).With("component", "supervisor")
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if err := daemon.Cleanup(context.Background(), cfg, log); err != nil {
				log.Warn("cleanup before start", "err", err)
			}
			child := exec.Command(self, "run", "-c", path)
			child.Stdout, child.Stderr = os.Stdout, os.Stderr
			fencer, stopFence, err := startFence(cfg, log, child)
			if err != nil {
				return err
			}
			defer stopFence()
			if err := child.Start(); err != nil {
				return err
			}
			fencer()
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			done := make(chan error, 1)
			go func() { done <- child.Wait() }()
			for {
				select {
				case s := <-sigs:
					child.Process.Signal(s)
				case err := <-done:
					log.Warn("ikegwd exited; cleaning up", "err", err)
					if cerr := daemon.Cleanup(context.Background(), cfg, log); cerr != nil {
						log.Error("cleanup after exit failed", "err", cerr)
					}
					if ee, ok := err.(*exec.ExitError); ok {
						os.Exit(max(ee.ExitCode(), 1))
					}
					return err
				}
			}
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "/etc/ikegw/ikegwd.yaml", "configuration file")
	return c
}

func checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate a configuration file and exit",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := daemon.LoadConfig(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (node %s, %d connections)\n", args[0], cfg.Node.Name, len(cfg.Connections))
			return nil
		},
	}
}

func keygenCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Create a new cluster key file (mode 0600); refuses to overwrite",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := store.GenerateClusterKey(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster key written to %s\n", out)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "/var/lib/ikegw/cluster.key", "where to write the key")
	return c
}

// certsCmd makes a lab CA and node certificates for the cluster's mutual
// TLS, so nobody runs openssl by hand; `certs ike` does the same for IKE
// certificate authentication.
func certsCmd() *cobra.Command {
	var dir, cn string
	c := &cobra.Command{
		Use:     "certs NAME=IP[,IP...] ...",
		Short:   "Create a cluster CA (if DIR has none) and a certificate for each node that has none (keys 0600)",
		Example: "  ikegwd certs --dir /etc/ikegw/certs gw1=10.99.0.1 gw2=10.99.0.2 witness=10.99.0.3",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var nodes []certs.Node
			for _, a := range args {
				name, ips, ok := strings.Cut(a, "=")
				if !ok || name == "" || ips == "" {
					return fmt.Errorf("certs: %q: want NAME=IP[,IP...] (the addresses other nodes dial it on)", a)
				}
				n := certs.Node{Name: name, DNS: []string{name}}
				for _, s := range strings.Split(ips, ",") {
					ip := net.ParseIP(s)
					if ip == nil {
						return fmt.Errorf("certs: %q: %q is not an IP address", a, s)
					}
					n.IPs = append(n.IPs, ip)
				}
				nodes = append(nodes, n)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			issued, err := certs.Lab(dir, cn, nodes)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "certificates in %s; issued now: %s\n", dir, strings.Join(issued, ", "))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "/etc/ikegw/certs", "certificate directory (CA and node files)")
	c.Flags().StringVar(&cn, "cn", "ikegw cluster CA", "the CA's common name")
	c.AddCommand(certsIKECmd())
	return c
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), daemon.Version) },
	}
}

// startFence prepares the lease heartbeat pipe of a cluster gateway with
// VIPs: the write end becomes the child's fd 3 (daemon.FenceFDEnv). The
// returned start runs the fencer once the child started; stop ends it and
// frees the VIP manager.
func startFence(cfg *daemon.Config, log *slog.Logger, child *exec.Cmd) (start, stop func(), err error) {
	nothing := func() {}
	if cfg.Cluster == nil || len(cfg.Failover.VIPs) == 0 {
		return nothing, nothing, nil
	}
	// The VIP lock lives there (the daemon creates it too at start).
	if err := os.MkdirAll(cfg.Node.StateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("supervise: state directory: %w", err)
	}
	release, closeVIPs, err := daemon.ReleaseVIPs(cfg, log)
	if err != nil {
		return nil, nil, fmt.Errorf("supervise: fence: %w", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		closeVIPs()
		return nil, nil, fmt.Errorf("supervise: fence pipe: %w", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		closeVIPs()
		return nil, nil, fmt.Errorf("supervise: fence pipe: %w", err)
	}
	w := os.NewFile(uintptr(p[1]), "fence-heartbeat")
	child.ExtraFiles = []*os.File{w} // fd 3 in the child
	child.Env = append(os.Environ(), daemon.FenceFDEnv+"=3")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	f := &daemon.Fencer{FD: p[0], Release: release, Log: log, LockPath: daemon.VIPLockPath(cfg)}
	start = func() {
		// The child holds its own copy now: ours would hide its exit
		// (no EOF).
		w.Close()
		go func() {
			defer close(done)
			if err := f.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("fence: stopped; a frozen daemon is no longer fenced", "err", err)
			}
		}()
	}
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		unix.Close(p[0])
		closeVIPs()
	}
	return start, stop, nil
}
