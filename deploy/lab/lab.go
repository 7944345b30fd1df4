// Package lab builds throw-away network labs on one Linux host for ikegw's
// acceptance tests and `make run`: network namespaces joined by veth pairs
// and bridges, processes started inside them (strongSwan peers, ikegwd),
// nftables faults (drop all / drop N% between two addresses) and an ICMP
// pinger that records when each reply arrived.
//
// Everything a Lab creates is named with a prefix, the creating process's
// pid and a random tag, so concurrent runs never collide and Cleanup can
// remove what a crashed run left behind without touching live runs.
// Lab.Close (registered with t.Cleanup by NewT) stops every process and
// deletes every namespace it created, also when the test failed.
//
// The package only ever touches namespaces it created: traffic stays
// inside them, and the host's own network namespace is never changed. It needs root; tests skip
// through RequireRoot when not root. It drives iproute2 (`ip`), `nft`,
// `unshare`/`nsenter` and strongSwan's `charon`/`swanctl` as commands, and
// enters a namespace in-process (setns on a locked OS thread) only to open
// the pinger's raw socket.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultPrefix starts the name of every namespace a Lab creates unless
// Options.Prefix says otherwise. Cleanup(DefaultPrefix) removes leftovers.
const DefaultPrefix = "ikgwlab-"

// Errors callers may test for with errors.Is.
var (
	// ErrNotRoot is returned when an operation needs root and we are not.
	ErrNotRoot = errors.New("lab: root privileges required")
	// ErrClosed is returned by operations on a Lab after Close.
	ErrClosed = errors.New("lab: lab is closed")
	// ErrBadName is returned for a namespace, interface or config name that
	// is empty, too long or has characters outside [A-Za-z0-9_.-].
	ErrBadName = errors.New("lab: bad name")
)

// CmdError is returned when a command run for the lab fails: it names the
// command, the namespace (empty for the host) and carries its output.
type CmdError struct {
	NS     string   // namespace the command ran in; "" for the host
	Args   []string // the command and its arguments
	Output string   // combined stdout and stderr, trimmed
	Err    error    // the exec error (exit status, not found, context)
}

func (e *CmdError) Error() string {
	where := "host"
	if e.NS != "" {
		where = "netns " + e.NS
	}
	out := e.Output
	if len(out) > 2000 {
		out = "..." + out[len(out)-2000:] // the reason is usually at the end
	}
	if out == "" {
		return fmt.Sprintf("lab: %s: %q: %v", where, strings.Join(e.Args, " "), e.Err)
	}
	return fmt.Sprintf("lab: %s: %q: %v: %s", where, strings.Join(e.Args, " "), e.Err, out)
}

func (e *CmdError) Unwrap() error { return e.Err }

// RequireRoot skips the test, with the reason, unless the process runs as
// root. CI runs as root, so tests using it run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab: needs root (network namespaces, veth, nftables, strongSwan); running as uid " + strconv.Itoa(os.Geteuid()))
	}
}

// Options configure New.
type Options struct {
	// Prefix starts every namespace name; DefaultPrefix if empty. Up to 20
	// characters of [A-Za-z0-9_.-]; the pid follows it directly, so end it
	// with '-' and make it no prefix of another lab's prefix.
	Prefix string
	// Dir holds logs and configs; a new temporary directory (removed by
	// Close) if empty. A given Dir is kept.
	Dir string
	// Logger receives one line per lab event; slog.Default() if nil.
	Logger *slog.Logger
	// StopTimeout is how long Proc.Stop waits after SIGTERM before SIGKILL;
	// 5 s if zero.
	StopTimeout time.Duration
}

// Lab owns a set of namespaces and processes and removes them on Close.
// Its methods are safe for concurrent use.
type Lab struct {
	prefix  string
	tag     string // "<prefix><pid>-<rand>-"
	dir     string
	ownDir  bool
	log     *slog.Logger
	stopTO  time.Duration
	mu      sync.Mutex
	closed  bool
	nss     []*NS
	procs   []*Proc
	faults  []*Fault
	counter int
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func checkName(what, name string, max int) error {
	if name == "" || len(name) > max || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s %q (want 1..%d characters of [A-Za-z0-9_.-])", ErrBadName, what, name, max)
	}
	return nil
}

// New creates an empty lab. Callers must Close it; tests use NewT.
func New(opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := checkName("lab prefix", prefix, 20); err != nil {
		return nil, err
	}
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, fmt.Errorf("lab: random tag: %w", err)
	}
	l := &Lab{
		prefix: prefix,
		tag:    fmt.Sprintf("%s%d-%s-", prefix, os.Getpid(), hex.EncodeToString(rb[:])),
		log:    opts.Logger,
		stopTO: opts.StopTimeout,
		dir:    opts.Dir,
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.stopTO <= 0 {
		l.stopTO = 5 * time.Second
	}
	if l.dir == "" {
		d, err := os.MkdirTemp("", "ikgwlab-")
		if err != nil {
			return nil, fmt.Errorf("lab: work directory: %w", err)
		}
		l.dir, l.ownDir = d, true
	} else if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab: work directory %s: %w", l.dir, err)
	}
	l.log.Info("lab created", "tag", l.tag, "dir", l.dir)
	return l, nil
}

// NewT creates a lab for a test: it skips unless root, first removes
// leftovers of crashed earlier runs (Cleanup(DefaultPrefix)), keeps its
// files in t.TempDir(), and registers Close with t.Cleanup. When the test
// failed, Close first logs the tail of every process's output.
func NewT(t testing.TB) *Lab {
	t.Helper()
	RequireRoot(t)
	if err := Cleanup(DefaultPrefix); err != nil {
		t.Logf("lab: removing leftovers of earlier runs: %v", err)
	}
	l, err := New(Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			procs := slices.Clone(l.procs)
			l.mu.Unlock()
			for _, p := range procs {
				t.Logf("lab: output of %s (netns %s, pid %d):\n%s", p.name, p.nsName, p.Pid(), tail(p.Output(), 8000))
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab: close: %v", err)
		}
	})
	return l
}

// testWriter sends slog lines to t.Log (safe after the test only until
// cleanup ends; the lab logs nothing after Close).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

// Dir is the lab's work directory (logs, configs).
func (l *Lab) Dir() string { return l.dir }

// Tag is the string every namespace name of this lab starts with.
func (l *Lab) Tag() string { return l.tag }

func (l *Lab) newDir(name string) (string, error) {
	l.mu.Lock()
	l.counter++
	n := l.counter
	l.mu.Unlock()
	d := filepath.Join(l.dir, fmt.Sprintf("%s.%d", name, n))
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	return d, nil
}

// Close stops every process (SIGTERM, then SIGKILL after StopTimeout),
// removes the faults and deletes every namespace the lab created, in
// reverse order. It is idempotent; it returns every error it met joined.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, faults, nss := l.procs, l.faults, l.nss
	l.mu.Unlock()

	// Stop the processes in parallel: each may take StopTimeout.
	stopErrs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopErrs[i] = p.Stop()
		}()
	}
	wg.Wait()
	errs := slices.DeleteFunc(stopErrs, func(err error) bool { return err == nil })
	for i := len(faults) - 1; i >= 0; i-- {
		if err := faults[i].Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNS(nss[i].name); err != nil {
			errs = append(errs, err)
		}
	}
	if l.ownDir {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("lab: removing %s: %w", l.dir, err))
		}
	}
	l.log.Info("lab closed", "tag", l.tag, "namespaces", len(nss), "processes", len(procs))
	return errors.Join(errs...)
}

// deleteNS kills every process still inside the namespace, then deletes it.
// A namespace that does not exist is not an error.
func deleteNS(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for range 50 {
		pids, err := nsPids(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := runCmd(context.Background(), "", nil, "ip", "netns", "delete", name); err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

const netnsDir = "/run/netns"

func nsPids(name string) ([]int, error) {
	out, err := runCmd(context.Background(), "", nil, "ip", "netns", "pids", name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("lab: ip netns pids %s: unexpected output %q", name, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Cleanup removes what crashed earlier runs left behind: every namespace
// whose name starts with prefix and whose creating process (the pid in its
// name) no longer exists, with every process inside it. Namespaces of live
// runs, including this process's, are left alone.
func Cleanup(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: empty cleanup prefix", ErrBadName)
	}
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lab: cleanup: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 {
			continue
		}
		if pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := deleteNS(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// runCmd runs a command on the host (ns == "") or inside a namespace through
// `ip netns exec`, returning its combined output.
func runCmd(ctx context.Context, ns string, env []string, name string, args ...string) (string, error) {
	argv := append([]string{name}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return string(out), &CmdError{NS: ns, Args: append([]string{name}, args...), Output: strings.TrimSpace(string(out)), Err: err}
	}
	return string(out), nil
}
