package gwlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"ikegw/deploy/lab"
)

// Release is a build of ikegwd and ikegwctl.
type Release struct {
	Version  string // stamped with -ldflags -X
	Ikegwd   string
	Ikegwctl string
}

// versionFlags stamps version into both commands.
func versionFlags(version string) string {
	return "-X ikegw/cmd/internal/daemon.Version=" + version + " -X main.Version=" + version
}

// goBuild builds ikegwd and ikegwctl of the module in srcDir into outDir
// with this toolchain (GOTOOLCHAIN=local).
func goBuild(ctx context.Context, srcDir, outDir, version string) (Release, error) {
	r := Release{Version: version, Ikegwd: filepath.Join(outDir, "ikegwd"), Ikegwctl: filepath.Join(outDir, "ikegwctl")}
	for _, b := range []struct{ out, pkg string }{{r.Ikegwd, "./cmd/ikegwd"}, {r.Ikegwctl, "./cmd/ikegwctl"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", versionFlags(version), "-o", b.out, b.pkg)
		cmd.Dir = srcDir
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			return r, fmt.Errorf("gwlab: go build %s in %s (version %s): %w\n%s", b.pkg, srcDir, version, err, tail(string(out), 4000))
		}
	}
	return r, nil
}

// BuildTree builds ikegwd and ikegwctl from the module at srcDir (the
// current source tree) into outDir, stamped with version.
func BuildTree(ctx context.Context, srcDir, outDir, version string) (Release, error) {
	return goBuild(ctx, srcDir, outDir, version)
}

// ErrNoCommit is returned by BuildCommit when the repository does not hold
// the commit (a shallow clone).
var ErrNoCommit = errors.New("gwlab: commit not in the repository")

// BuildCommit builds ikegwd and ikegwctl as they were at commit of the git
// repository repo: `git archive` of the commit into workDir/src, then
// go build there (dependencies from the module cache or the proxy). Only
// reads the repository (safe.directory=* so that a clone owned by another
// user, as in CI, is read too).
func BuildCommit(ctx context.Context, repo, commit, workDir, version string) (Release, error) {
	if out, err := exec.CommandContext(ctx, "git", "-c", "safe.directory=*", "-C", repo, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		return Release{}, fmt.Errorf("%w: %s is not in %s (%v: %s); a shallow clone lacks it: git fetch --unshallow",
			ErrNoCommit, commit, repo, err, strings.TrimSpace(string(out)))
	}
	src := filepath.Join(workDir, "src")
	if err := os.MkdirAll(src, 0o700); err != nil {
		return Release{}, fmt.Errorf("gwlab: %w", err)
	}
	tarball := filepath.Join(workDir, "src.tar")
	if out, err := exec.CommandContext(ctx, "git", "-c", "safe.directory=*", "-C", repo, "archive", "--format=tar", "-o", tarball, commit).CombinedOutput(); err != nil {
		return Release{}, fmt.Errorf("gwlab: git archive %s: %w: %s", commit, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		return Release{}, fmt.Errorf("gwlab: unpacking %s: %w: %s", tarball, err, strings.TrimSpace(string(out)))
	}
	os.Remove(tarball)
	return goBuild(ctx, src, workDir, version)
}

// StopNode stops a member's ikegwd (SIGTERM: a standby or witness shuts
// down and stays a Raft voter; the active one would hand over) and waits
// until no process is left in its namespace. Its state directory is kept.
func (l *Lab) StopNode(ctx context.Context, name string) error {
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	if p := n.Proc(); p != nil {
		if err := p.Stop(); err != nil {
			return fmt.Errorf("gwlab: stopping %s: %w", name, err)
		}
	}
	for {
		pids, err := nsPids(ctx, n.NS.Name())
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gwlab: %s: processes %v still in its namespace after ikegwd stopped: %w", name, pids, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StartWith starts a stopped member with another ikegwd binary (an
// upgrade: same config file and state directory; the binary must accept
// the config, checked first) and waits until it rejoined: it answers, is
// not active, knows the leader and caught up with the commit index the
// others had when it started.
func (l *Lab) StartWith(ctx context.Context, name, bin string) error {
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	if p := n.Proc(); p != nil && !p.Exited() {
		return fmt.Errorf("gwlab: %s: ikegwd (pid %d) still runs: StopNode first", name, p.Pid())
	}
	if err := CheckConfig(ctx, bin, n.ConfigPath); err != nil {
		return err
	}
	cmd := "run"
	if l.supervised && !n.Witness {
		cmd = "supervise"
	}
	p, err := n.NS.StartSpec(lab.ProcSpec{Label: "ikegwd-" + cmd, Argv: []string{bin, cmd, "-c", n.ConfigPath}})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return l.waitRejoined(ctx, n)
}

// AdminGet GETs path from member name's admin API into out.
func (l *Lab) AdminGet(ctx context.Context, name, path string, out any) error {
	n, err := l.Node(name)
	if err != nil {
		return err
	}
	return adminGet(ctx, n.Socket, path, out)
}

// WaitPingSince waits for a ping reply to a request sent at or after
// since.
func (l *Lab) WaitPingSince(ctx context.Context, since time.Time) error {
	return l.waitReply(ctx, since)
}

// WaitActive waits until one gateway other than not reports the active
// role and returns it.
func (l *Lab) WaitActive(ctx context.Context, not string) (string, error) {
	return l.waitActive(ctx, not)
}
