package daemon

// Fencing a frozen active (issue 8). A SIGSTOPped or starved ikegwd cannot
// fence itself: its VIPs stay in the kernel while a standby takes over, and
// when it runs again its data plane sends ESP before its role machine sees
// that the lease ran out. Two things outside the role machine's loop watch
// the lease the machine publishes (role.Callbacks.OnLease):
//
//   - the send gates (leaseGate): the IKE runtime and the userspace data
//     plane drop what they would send once the deadline passed, checked
//     with one atomic load and a clock read per batch;
//   - the supervisor (`ikegwd supervise`, Fence): the daemon writes each
//     deadline to a pipe as CLOCK_MONOTONIC nanoseconds (both processes
//     read the same clock); when a deadline passes without a renewal or an
//     "end", the supervisor removes the VIPs itself.
//
// The supervisor's decision and release, and the daemon's claim of the VIPs,
// hold an exclusive lock on STATE_DIR/vip.lock (flock): a supervisor that
// decided to fence (no renewal in the pipe) and then was held up cannot
// remove VIPs the resumed daemon claimed meanwhile, because the daemon
// publishes a fresh lease before it claims and the supervisor reads the
// pipe again once it holds the lock.
//
// The heartbeat carries the role machine's own deadline, so a daemon that is
// slow but renews in time is never fenced, and no timeout is guessed. A
// renewal that comes after the deadline passed is a lapse: the role machine
// fences too and claims the VIPs again only after a fresh confirmation.
//
// Not covered: a supervisor frozen together with its daemon (a whole-VM
// pause, SIGSTOP of the process group) fences nothing; that node's VIPs stay
// until it runs again, and then the send gates and the role machine's lapse
// fence it before it sends (SECURITY.md).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FenceFDEnv names the environment variable by which `ikegwd supervise`
// gives its child the descriptor of the lease heartbeat pipe.
const FenceFDEnv = "IKEGWD_FENCE_FD"

// FenceMargin is how long after a reported deadline the supervisor waits
// for a renewal before it removes the VIPs. The role machine fences itself
// at the deadline; the earliest another node can be elected is a heartbeat
// timeout after the confirmation, at least twice the lease in the shipped
// and lab timings.
const FenceMargin = 10 * time.Millisecond

// monoNow reads CLOCK_MONOTONIC, the clock the daemon and its supervisor
// share.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("CLOCK_MONOTONIC unreadable: " + err.Error()) // never on Linux
	}
	return ts.Nano()
}

// gateEpoch is the origin of leaseGate's deadlines (Go's monotonic clock,
// read without a system call).
var gateEpoch = time.Now()

// leaseGate is the send gate of a cluster gateway (runtime.Gate and
// userspace.Gate): open while the role machine's lease runs. It starts
// closed: a gateway sends nothing before its first quorum confirmation.
type leaseGate struct {
	end atomic.Int64 // deadline in ns since gateEpoch; 0: closed
}

// MaySend reports whether the lease runs now.
func (g *leaseGate) MaySend() bool { return int64(time.Since(gateEpoch)) < g.end.Load() }

// set takes the role machine's deadline; the zero time closes the gate.
func (g *leaseGate) set(deadline time.Time) {
	var v int64
	if !deadline.IsZero() {
		v = max(int64(deadline.Sub(gateEpoch)), 0)
	}
	g.end.Store(v)
}

// heartbeat writes the lease to the supervisor's pipe. Writes never block
// (a full pipe means the supervisor is not reading: the message is dropped
// and counted); a message is one line under PIPE_BUF, so it is atomic.
type heartbeat struct {
	fd    int
	log   *slog.Logger
	drops atomic.Uint64
	dead  atomic.Bool // the supervisor closed its end
}

// openHeartbeat returns the heartbeat the supervisor asked for through
// FenceFDEnv, nil when the daemon runs without it.
func openHeartbeat(log *slog.Logger) (*heartbeat, error) {
	v := os.Getenv(FenceFDEnv)
	if v == "" {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: want the number of an inherited descriptor (3 or more)", FenceFDEnv, v)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%s=%d: %w", FenceFDEnv, fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil, fmt.Errorf("%s=%d: not a pipe (mode %#o)", FenceFDEnv, fd, st.Mode)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("%s=%d: %w", FenceFDEnv, fd, err)
	}
	return &heartbeat{fd: fd, log: log}, nil
}

// lease reports a deadline (the zero time: the lease ended).
func (h *heartbeat) lease(deadline time.Time) {
	if h == nil || h.dead.Load() {
		return
	}
	var msg []byte
	if deadline.IsZero() {
		msg = []byte("end\n")
	} else {
		msg = strconv.AppendInt([]byte("lease "), monoNow()+int64(time.Until(deadline)), 10)
		msg = append(msg, '\n')
	}
	_, err := unix.Write(h.fd, msg)
	switch {
	case err == nil:
	case errors.Is(err, unix.EAGAIN):
		if h.drops.Add(1)%1000 == 1 {
			h.log.Warn("fence: the supervisor does not read the lease heartbeats; dropped", "dropped", h.drops.Load())
		}
	case errors.Is(err, unix.EPIPE):
		h.dead.Store(true)
		h.log.Error("fence: the supervisor is gone: nothing outside this process fences it now")
	default:
		h.log.Warn("fence: writing the lease heartbeat failed", "err", err)
	}
}

// fence is the daemon's side: the send gate and the heartbeat, fed by the
// role machine's OnLease.
type fence struct {
	gate leaseGate
	hb   *heartbeat // nil: not supervised
}

func newFence(log *slog.Logger) (*fence, error) {
	hb, err := openHeartbeat(log)
	if err != nil {
		return nil, err
	}
	if hb != nil {
		log.Info("fence: reporting the lease to the supervisor", "fd", hb.fd)
	}
	return &fence{hb: hb}, nil
}

// onLease is the role machine's OnLease: the gate first (it is what stops
// packets), then the supervisor.
func (f *fence) onLease(deadline time.Time) {
	f.gate.set(deadline)
	f.hb.lease(deadline)
}

// VIPLockPath is the lock the daemon's VIP claims and the supervisor's
// fences take (see the top of this file).
func VIPLockPath(cfg *Config) string { return filepath.Join(cfg.Node.StateDir, "vip.lock") }

// vipLock is an exclusive flock on VIPLockPath, taken by a process's own
// open file (flock excludes open files, not processes).
type vipLock struct{ fd int }

// openVIPLock opens (creating, 0600) the lock file.
func openVIPLock(path string) (*vipLock, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("VIP lock %s: %w", path, err)
	}
	return &vipLock{fd: fd}, nil
}

// lock takes the lock, polling every millisecond until ctx ends (the
// holder never keeps it longer than a netlink release or claim, unless it
// is frozen: then the caller gives up).
func (l *vipLock) lock(ctx context.Context) error {
	for {
		err := unix.Flock(l.fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("VIP lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VIP lock: held by another process (the supervisor fencing?): %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func (l *vipLock) unlock() { _ = unix.Flock(l.fd, unix.LOCK_UN) }

func (l *vipLock) close() { unix.Close(l.fd) }

// roleVIPs is what the role machine drives (role.VIPs).
type roleVIPs interface {
	Claim(ctx context.Context) error
	Release(ctx context.Context) error
}

// lockedVIPs claims the VIPs under the VIP lock, so a supervisor's fence
// never lands after a claim it did not see the lease of.
type lockedVIPs struct {
	roleVIPs
	lk *vipLock
}

// Claim takes the lock for at most a second: a claim that cannot get it
// fails, and the role machine retries the activation later.
func (v lockedVIPs) Claim(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := v.lk.lock(lctx); err != nil {
		return err
	}
	defer v.lk.unlock()
	return v.roleVIPs.Claim(ctx)
}

// ErrFenceMessage: a line on the heartbeat pipe that is neither "lease N"
// nor "end".
var ErrFenceMessage = errors.New("fence: bad heartbeat message")

// parseFence decodes one heartbeat line (without its newline): a deadline
// in CLOCK_MONOTONIC nanoseconds, or end (the lease ended).
func parseFence(line []byte) (deadline int64, end bool, err error) {
	if string(line) == "end" {
		return 0, true, nil
	}
	v, ok := bytes.CutPrefix(line, []byte("lease "))
	if ok {
		if d, perr := strconv.ParseInt(string(v), 10, 64); perr == nil && d > 0 {
			return d, false, nil
		}
	}
	if len(line) > 40 {
		line = line[:40]
	}
	return 0, false, fmt.Errorf("%w %q: want \"lease <CLOCK_MONOTONIC ns>\" or \"end\"", ErrFenceMessage, line)
}

// Fencer is the supervisor's side: it reads the daemon's heartbeats from
// the pipe's read end and calls Release when a deadline passes (plus
// Margin) without a renewal or an end.
type Fencer struct {
	// FD is the read end of the heartbeat pipe (non-blocking).
	FD int
	// Release removes the VIPs (daemon.ReleaseVIPs).
	Release func(ctx context.Context) error
	// Margin defaults to FenceMargin.
	Margin time.Duration
	Log    *slog.Logger
	// Now defaults to CLOCK_MONOTONIC (tests).
	Now func() int64
	// LockPath, when set, is the VIP lock (VIPLockPath) held from the
	// decision to the end of the release.
	LockPath string
	// LockWait bounds the wait for the VIP lock (default 20ms).
	LockWait time.Duration
	lk       *vipLock

	deadline int64 // armed while > 0
	fenced   bool  // released after the deadline; only a later one re-arms
	buf      []byte
	// Fences counts the releases the fencer made.
	Fences atomic.Uint64
}

// Run reads heartbeats until the daemon closes its end (it exited) or ctx
// ends. Before it decides, it reads everything already in the pipe, so a
// renewal written before the deadline always counts.
func (f *Fencer) Run(ctx context.Context) error {
	if f.Margin == 0 {
		f.Margin = FenceMargin
	}
	if f.Now == nil {
		f.Now = monoNow
	}
	if f.LockWait == 0 {
		f.LockWait = lockWait
	}
	if f.Log == nil {
		f.Log = slog.Default()
	}
	if f.LockPath != "" {
		lk, err := openVIPLock(f.LockPath)
		if err != nil {
			return fmt.Errorf("fence: %w", err)
		}
		f.lk = lk
		defer lk.close()
	}
	for ctx.Err() == nil {
		wait := 100 * time.Millisecond // ctx is checked this often
		if f.deadline > 0 {
			wait = min(wait, time.Duration(f.deadline+int64(f.Margin)-f.Now()))
		}
		if wait > 0 {
			ms := int((wait + time.Millisecond - 1) / time.Millisecond)
			if _, err := unix.Poll([]unix.PollFd{{Fd: int32(f.FD), Events: unix.POLLIN}}, ms); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("fence: poll: %w", err)
			}
		}
		eof, err := f.drain()
		if err != nil {
			return err
		}
		if f.deadline > 0 && f.Now() >= f.deadline+int64(f.Margin) {
			if err := f.decide(ctx); err != nil {
				return err
			}
		}
		if eof {
			return nil
		}
	}
	return ctx.Err()
}

// drain reads and applies every message in the pipe; eof when the writer
// closed it.
func (f *Fencer) drain() (eof bool, err error) {
	var b [512]byte
	for {
		n, err := unix.Read(f.FD, b[:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return false, fmt.Errorf("fence: reading heartbeats: %w", err)
		case n == 0:
			return true, nil
		}
		f.buf = append(f.buf, b[:n]...)
		for {
			i := bytes.IndexByte(f.buf, '\n')
			if i < 0 {
				break
			}
			f.apply(f.buf[:i])
			f.buf = f.buf[i+1:]
		}
		if len(f.buf) > 256 {
			f.Log.Warn("fence: heartbeat line too long; dropped", "err", fmt.Errorf("%w: %d bytes without a newline", ErrFenceMessage, len(f.buf)))
			f.buf = f.buf[:0]
		}
	}
}

// ReleaseVIPs returns the supervisor's Fencer.Release: it removes the
// configured VIPs like Cleanup, through a VIP manager built once (a fence
// must be fast). nil when no VIP is configured.
func ReleaseVIPs(cfg *Config, log *slog.Logger) (release func(context.Context) error, closer func(), err error) {
	if len(cfg.Failover.VIPs) == 0 {
		return nil, func() {}, nil
	}
	v, err := newVIPs(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return v.Release, func() { v.Close() }, nil
}

func (f *Fencer) apply(line []byte) {
	d, end, err := parseFence(line)
	switch {
	case err != nil:
		f.Log.Warn("fence: heartbeat ignored", "err", err)
	case end:
		f.deadline, f.fenced = 0, false
	case f.fenced && d <= f.Now():
		// A renewal that came too late: the daemon sees the lapse
		// itself and claims again only after a newer one.
	default:
		f.deadline, f.fenced = d, false
	}
}

// decide fences under the VIP lock, after reading the pipe once more: a
// daemon that claimed the VIPs meanwhile published its fresh lease first.
// A lock the daemon keeps for more than lockWait is a daemon frozen in the
// middle of a claim (a live one renews its lease first, and the pipe shows
// it): the fence goes on without the lock.
//
// Without the lock, a supervisor held up between reading the pipe and the
// release could remove VIPs a resumed daemon had claimed meanwhile (a stop
// shorter than an election: the daemon fences on the lapse, activates
// again and claims).
func (f *Fencer) decide(ctx context.Context) error {
	if f.lk != nil {
		lctx, cancel := context.WithTimeout(ctx, f.LockWait)
		err := f.lk.lock(lctx)
		cancel()
		if err == nil {
			defer f.lk.unlock()
		} else if ctx.Err() != nil {
			return ctx.Err()
		} else {
			f.Log.Warn("fence: the VIP lock is held (a daemon frozen while claiming?); deciding without it", "err", err)
		}
		if _, err := f.drain(); err != nil {
			return err
		}
		if f.deadline == 0 || f.Now() < f.deadline+int64(f.Margin) {
			return nil
		}
	}
	f.fence(ctx)
	return nil
}

// lockWait bounds the supervisor's wait for the VIP lock.
const lockWait = 20 * time.Millisecond

func (f *Fencer) fence(ctx context.Context) {
	late := time.Duration(f.Now() - f.deadline)
	f.deadline, f.fenced = 0, true
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f.Fences.Add(1)
	if err := f.Release(rctx); err != nil {
		f.Log.Error("fence: the daemon's lease ran out and removing its VIPs failed; retrying", "late", late, "err", err)
		// Again in 100ms unless a renewal or an end comes first.
		f.deadline, f.fenced = f.Now()+int64(100*time.Millisecond-f.Margin), false
		return
	}
	f.Log.Warn("fence: the daemon's lease ran out without a renewal (frozen or starved); its VIPs are removed", "late", late)
}
