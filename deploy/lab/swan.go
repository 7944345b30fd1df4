package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// charonPaths are where Debian and upstream install charon.
var charonPaths = []string{"/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon", "/usr/lib/strongswan/charon"}

// ErrNoStrongSwan is returned when charon or swanctl is not installed.
var ErrNoStrongSwan = errors.New("lab: strongSwan not installed (Debian: strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins)")

// Swan is a running strongSwan charon inside a namespace, in a mount
// namespace of its own: /run is a private tmpfs (pid file, vici socket) and
// /etc/swanctl is the instance's directory. Its swanctl commands run with
// `nsenter -t PID -m -n swanctl`.
type Swan struct {
	ns      *NS
	cfg     SwanConfig
	dir     string
	confPth string
	logPath string
	proc    *Proc
}

// Dir is the instance directory (strongswan.conf, swanctl/, charon.log).
func (s *Swan) Dir() string { return s.dir }

// Proc is the charon process.
func (s *Swan) Proc() *Proc { return s.proc }

// NS is the namespace charon runs in.
func (s *Swan) NS() *NS { return s.ns }

// LogPath is charon's log file.
func (s *Swan) LogPath() string { return s.logPath }

// Log returns charon's log so far.
func (s *Swan) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", s.logPath, err)
	}
	return string(b)
}

// WaitLog waits until charon's log contains substr (e.g. "established").
func (s *Swan) WaitLog(ctx context.Context, substr string) error {
	return waitText(ctx, s.Log, s.proc.done, substr, fmt.Sprintf("netns %s: charon log %s", s.ns.name, s.logPath))
}

// StartStrongSwan starts charon in ns with cfg for a test: it fails the
// test on error, and stops charon (SIGTERM, then SIGKILL) in t.Cleanup;
// when the test failed it logs the end of charon's log first.
func StartStrongSwan(t testing.TB, ns *NS, cfg SwanConfig) *Swan {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := ns.StartStrongSwan(ctx, cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab: charon log of netns %s (%s):\n%s", ns.name, s.logPath, tail(s.Log(), 12000))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("lab: stopping charon in %s: %v", ns.name, err)
		}
	})
	return s
}

// StartStrongSwan writes the instance's strongswan.conf and swanctl.conf,
// starts charon, waits until its vici socket answers and loads the
// configuration (swanctl --load-all). Nothing is initiated unless a child
// has StartAction "start". On error charon is stopped again.
func (ns *NS) StartStrongSwan(ctx context.Context, cfg SwanConfig) (*Swan, error) {
	charon := ""
	for _, p := range charonPaths {
		if _, err := os.Stat(p); err == nil {
			charon = p
			break
		}
	}
	if charon == "" {
		return nil, ErrNoStrongSwan
	}
	if _, err := exec.LookPath("swanctl"); err != nil {
		return nil, ErrNoStrongSwan
	}
	dir, err := ns.lab.newDir(ns.short + "-swan")
	if err != nil {
		return nil, err
	}
	s := &Swan{ns: ns, cfg: cfg, dir: dir, confPth: filepath.Join(dir, "strongswan.conf"), logPath: filepath.Join(dir, "charon.log")}
	sc, err := cfg.StrongswanConf(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: %w", ns.name, err)
	}
	swc, err := cfg.SwanctlConf()
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: %w", ns.name, err)
	}
	swDir := filepath.Join(dir, "swanctl")
	// swanctl --load-all reads these credential directories; empty ones
	// keep it quiet.
	for _, sub := range []string{"", "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12", "conf.d"} {
		if err := os.MkdirAll(filepath.Join(swDir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
	}
	if err := os.WriteFile(s.confPth, []byte(sc), 0o600); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if err := os.WriteFile(filepath.Join(swDir, "swanctl.conf"), []byte(swc), 0o600); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	// unshare execs sh, which execs charon: the Proc's pid is charon's.
	script := `set -e; mount -t tmpfs -o mode=0755 lab-run /run; mount --bind "$1" /etc/swanctl; exec "$2"`
	proc, err := ns.StartSpec(ProcSpec{
		Label: "charon",
		Argv:  []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", swDir, charon},
		Env:   []string{"STRONGSWAN_CONF=" + s.confPth},
	})
	if err != nil {
		return nil, err
	}
	s.proc = proc
	if err := s.waitVici(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if out, err := s.Swanctl(ctx, "--load-all"); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("lab: netns %s: loading swanctl.conf: %w\n%s", ns.name, err, out)
	}
	ns.lab.log.Info("strongswan started", "netns", ns.name, "pid", proc.Pid(), "dir", dir)
	return s, nil
}

// waitVici waits until charon's vici socket answers `swanctl --stats`.
func (s *Swan) waitVici(ctx context.Context) error {
	sock := fmt.Sprintf("/proc/%d/root/run/charon.vici", s.proc.Pid())
	var lastErr error
	for {
		if s.proc.Exited() {
			return fmt.Errorf("lab: netns %s: charon exited during startup: %v\noutput:\n%s\nlog:\n%s",
				s.ns.name, s.proc.Wait(ctx), tail(s.proc.Output(), 4000), tail(s.Log(), 4000))
		}
		if _, err := os.Stat(sock); err == nil {
			if _, err := s.Swanctl(ctx, "--stats"); err == nil {
				return nil
			} else {
				lastErr = err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: netns %s: charon's vici socket not answering: %w (last: %v)\nlog:\n%s", s.ns.name, ctx.Err(), lastErr, tail(s.Log(), 4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Swanctl runs swanctl with args in charon's mount and network namespaces
// and returns its combined output.
func (s *Swan) Swanctl(ctx context.Context, args ...string) (string, error) {
	if s.proc.Exited() {
		return "", fmt.Errorf("lab: netns %s: swanctl %s: charon (pid %d) has exited", s.ns.name, strings.Join(args, " "), s.proc.Pid())
	}
	// -r: entering a mount namespace resets the root to the namespace's
	// root mount; keep charon's root instead (they differ under a chroot,
	// such as the VM's, where swanctl lives only in the chroot).
	nsArgs := append([]string{"-t", strconv.Itoa(s.proc.Pid()), "-m", "-n", "-r", "swanctl"}, args...)
	return runCmd(ctx, "", []string{"STRONGSWAN_CONF=" + s.confPth}, "nsenter", nsArgs...)
}

// childOrIKE tells whether name is a child name or a connection name.
func (s *Swan) childOrIKE(name string) (string, error) {
	isConn, isChild := false, false
	for _, c := range s.cfg.Conns {
		if c.Name == name {
			isConn = true
		}
		if slices.ContainsFunc(c.Children, func(ch SwanChild) bool { return ch.Name == name }) {
			isChild = true
		}
	}
	switch {
	case isChild:
		return "--child", nil
	case isConn:
		return "--ike", nil
	}
	return "", fmt.Errorf("lab: netns %s: %q is neither a connection nor a child in the config", s.ns.name, name)
}

// Initiate initiates a child (name of a child: phase 1 and that child) or a
// connection (name of a connection: phase 1 only, for IKEv1) and waits
// until it is established or failed.
func (s *Swan) Initiate(ctx context.Context, name string) error {
	flag, err := s.childOrIKE(name)
	if err != nil {
		return err
	}
	out, err := s.Swanctl(ctx, "--initiate", flag, name)
	if err != nil {
		return fmt.Errorf("lab: netns %s: initiate %s: %w", s.ns.name, name, err)
	}
	if !strings.Contains(out, "initiate completed successfully") {
		return fmt.Errorf("lab: netns %s: initiate %s: no success reported:\n%s", s.ns.name, name, tail(out, 2000))
	}
	return nil
}

// Terminate closes a child or an IKE SA (by child or connection name),
// sending DELETEs, and waits for it.
func (s *Swan) Terminate(ctx context.Context, name string) error {
	flag, err := s.childOrIKE(name)
	if err != nil {
		return err
	}
	if _, err := s.Swanctl(ctx, "--terminate", flag, name); err != nil {
		return fmt.Errorf("lab: netns %s: terminate %s: %w", s.ns.name, name, err)
	}
	return nil
}

// RekeyChild starts a rekeying (a new Quick Mode) of the named child. It
// returns when charon accepted the request; wait for the new SA with
// WaitFor.
func (s *Swan) RekeyChild(ctx context.Context, child string) error {
	if _, err := s.Swanctl(ctx, "--rekey", "--child", child); err != nil {
		return fmt.Errorf("lab: netns %s: rekey child %s: %w", s.ns.name, child, err)
	}
	return nil
}

// RekeyIKE starts a rekeying of the named connection's IKE SA.
func (s *Swan) RekeyIKE(ctx context.Context, conn string) error {
	if _, err := s.Swanctl(ctx, "--rekey", "--ike", conn); err != nil {
		return fmt.Errorf("lab: netns %s: rekey IKE %s: %w", s.ns.name, conn, err)
	}
	return nil
}

// ListSAs returns charon's current IKE SAs with their children.
func (s *Swan) ListSAs(ctx context.Context) ([]IKESA, error) {
	out, err := s.Swanctl(ctx, "--list-sas", "--raw")
	if err != nil {
		return nil, err
	}
	sas, err := ParseListSAs(out)
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: %w", s.ns.name, err)
	}
	return sas, nil
}

// WaitFor polls ListSAs every 100 ms until cond holds and returns the SAs
// that satisfied it, or ctx's error with the last SAs seen.
func (s *Swan) WaitFor(ctx context.Context, cond func([]IKESA) bool) ([]IKESA, error) {
	var last []IKESA
	var lastErr error
	for {
		sas, err := s.ListSAs(ctx)
		if err == nil {
			if cond(sas) {
				return sas, nil
			}
			last = sas
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("lab: netns %s: waiting for SA condition: %w (last SAs: %+v, last error: %v)", s.ns.name, ctx.Err(), last, lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops charon with SIGTERM (it sends DELETEs for its SAs), SIGKILL
// after the lab's StopTimeout.
func (s *Swan) Stop() error { return s.proc.Stop() }

// Kill stops charon with SIGKILL: no DELETEs, its peers notice only through
// DPD. (With kernel-libipsec the data plane dies with it.)
func (s *Swan) Kill() error { return s.proc.Kill() }
