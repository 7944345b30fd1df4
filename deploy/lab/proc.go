package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrProcExited is returned by Signal when the process has already exited.
var ErrProcExited = errors.New("lab: process already exited")

// ProcSpec describes a long-running process to start in a namespace.
type ProcSpec struct {
	// Label names the process in logs and its output file; argv[0]'s base
	// name if empty.
	Label string
	// Argv is the program and its arguments; the program is looked up in
	// PATH inside the namespace (`ip netns exec` execs it directly, so the
	// Proc's pid is the program's own).
	Argv []string
	// Env is added to the test process's environment.
	Env []string
	// Dir is the working directory; the caller's if empty.
	Dir string
}

// Proc is a process running inside a namespace. Its stdout and stderr go to
// a file in the lab directory (OutputPath). It is stopped by Lab.Close at
// the latest; the test process's death kills it too (SIGKILL as parent
// death signal), and Cleanup catches anything else.
type Proc struct {
	name    string
	nsName  string
	cmd     *exec.Cmd
	outPath string
	stopTO  time.Duration
	done    chan struct{}
	mu      sync.Mutex
	waitErr error
}

// Start starts argv inside the namespace; see StartSpec.
func (ns *NS) Start(label string, argv ...string) (*Proc, error) {
	return ns.StartSpec(ProcSpec{Label: label, Argv: argv})
}

// StartSpec starts a long-running process inside the namespace. The lab
// stops it on Close.
func (ns *NS) StartSpec(spec ProcSpec) (*Proc, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, fmt.Errorf("lab: netns %s: start: empty command", ns.name)
	}
	label := spec.Label
	if label == "" {
		label = filepath.Base(spec.Argv[0])
	}
	if err := checkName("process label", label, 64); err != nil {
		return nil, err
	}
	l := ns.lab
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.counter++
	outPath := filepath.Join(l.dir, fmt.Sprintf("%s-%s.%d.log", ns.short, label, l.counter))
	l.mu.Unlock()
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab: netns %s: start %s: %w", ns.name, label, err)
	}
	defer out.Close() // the child has its own copy
	argv := append([]string{"netns", "exec", ns.name}, spec.Argv...)
	cmd := exec.Command("ip", argv...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = spec.Dir
	if len(spec.Env) > 0 {
		cmd.Env = append(os.Environ(), spec.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &Proc{name: label, nsName: ns.name, cmd: cmd, outPath: outPath, stopTO: l.stopTO, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if err := cmd.Start(); err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: netns %s: start %s (%s): %w", ns.name, label, strings.Join(spec.Argv, " "), err)
	}
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	l.log.Info("process started", "netns", ns.name, "label", label, "pid", cmd.Process.Pid, "output", outPath)
	return p, nil
}

// Name is the process's label.
func (p *Proc) Name() string { return p.name }

// Pid is the process id (the program's own, in the host pid namespace).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// OutputPath is the file receiving the process's stdout and stderr.
func (p *Proc) OutputPath() string { return p.outPath }

// Output returns what the process has written so far.
func (p *Proc) Output() string {
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.outPath, err)
	}
	return string(b)
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit error (nil for
// status 0), or ctx's error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.waitErr != nil {
			return fmt.Errorf("lab: netns %s: %s (pid %d): %w", p.nsName, p.name, p.Pid(), p.waitErr)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lab: netns %s: waiting for %s (pid %d): %w", p.nsName, p.name, p.Pid(), ctx.Err())
	}
}

// Signal sends sig to the process; ErrProcExited if it is gone.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return ErrProcExited
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		if p.Exited() || errors.Is(err, os.ErrProcessDone) {
			return ErrProcExited
		}
		return fmt.Errorf("lab: netns %s: signal %v to %s (pid %d): %w", p.nsName, sig, p.name, p.Pid(), err)
	}
	return nil
}

// Kill sends SIGKILL and waits until the process is gone. Killing a process
// that already exited is not an error.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, ErrProcExited) {
		return err
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, waits up to the lab's StopTimeout, then SIGKILLs.
// It returns once the process is gone; stopping an exited process is not
// an error.
func (p *Proc) Stop() error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, ErrProcExited) {
			return nil
		}
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(p.stopTO):
	}
	return p.Kill()
}

// WaitOutput waits until the process's output contains substr (a readiness
// line, say). It fails early, with the output, if the process exits first.
func (p *Proc) WaitOutput(ctx context.Context, substr string) error {
	return waitText(ctx, p.Output, p.done, substr, fmt.Sprintf("netns %s: %s (pid %d) output", p.nsName, p.name, p.Pid()))
}

// waitText polls text() every 20 ms until it contains substr, ctx ends or
// done closes (checked once more after done, so a last line is not missed).
func waitText(ctx context.Context, text func() string, done <-chan struct{}, substr, what string) error {
	for {
		select {
		case <-done:
			if t := text(); strings.Contains(t, substr) {
				return nil
			} else {
				return fmt.Errorf("lab: %s: process exited before %q appeared:\n%s", what, substr, tail(t, 2000))
			}
		default:
		}
		if strings.Contains(text(), substr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: %s: waiting for %q: %w:\n%s", what, substr, ctx.Err(), tail(text(), 2000))
		case <-done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Capture runs tcpdump on ifname inside the namespace, writing every packet
// (optionally only those matching a pcap filter expression) unbuffered to a
// pcap file in the lab directory, and returns once tcpdump is listening.
// Stop the Proc (SIGTERM) to finish the file; OutputPath has tcpdump's
// messages, the returned path the capture.
func (ns *NS) Capture(ctx context.Context, ifname, filter string) (*Proc, string, error) {
	if err := checkName("interface name", ifname, 15); err != nil {
		return nil, "", err
	}
	l := ns.lab
	l.mu.Lock()
	l.counter++
	path := filepath.Join(l.dir, fmt.Sprintf("%s-%s.%d.pcap", ns.short, ifname, l.counter))
	l.mu.Unlock()
	argv := []string{"tcpdump", "-n", "-U", "--immediate-mode", "-s", "0", "-i", ifname, "-w", path}
	if filter != "" {
		argv = append(argv, filter)
	}
	p, err := ns.StartSpec(ProcSpec{Label: "tcpdump-" + ifname, Argv: argv})
	if err != nil {
		return nil, "", err
	}
	if err := p.WaitOutput(ctx, "listening on"); err != nil {
		_ = p.Kill()
		return nil, "", err
	}
	return p, path, nil
}
