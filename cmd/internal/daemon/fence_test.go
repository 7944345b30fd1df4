package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestLeaseGate(t *testing.T) {
	var g leaseGate
	if g.MaySend() {
		t.Fatal("a new gate is open: a gateway would send before its first confirmation")
	}
	g.set(time.Now().Add(time.Hour))
	if !g.MaySend() {
		t.Fatal("closed with an hour of lease left")
	}
	g.set(time.Now().Add(-time.Millisecond))
	if g.MaySend() {
		t.Fatal("open after the deadline")
	}
	g.set(time.Now().Add(time.Hour))
	g.set(time.Time{})
	if g.MaySend() {
		t.Fatal("open after the lease ended (zero time)")
	}
	g.set(gateEpoch.Add(-time.Hour))
	if g.MaySend() {
		t.Fatal("open with a deadline before the epoch")
	}
	// Runs out by itself.
	g.set(time.Now().Add(20 * time.Millisecond))
	deadline := time.Now().Add(10 * time.Second)
	for g.MaySend() {
		if time.Now().After(deadline) {
			t.Fatal("still open 10s after a 20ms lease")
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkLeaseGate(b *testing.B) {
	var g leaseGate
	g.set(time.Now().Add(time.Hour))
	for b.Loop() {
		if !g.MaySend() {
			b.Fatal("closed")
		}
	}
}

func TestParseFence(t *testing.T) {
	for _, tc := range []struct {
		in       string
		deadline int64
		end      bool
		bad      bool
	}{
		{in: "lease 123456789", deadline: 123456789},
		{in: "end", end: true},
		{in: "lease", bad: true},
		{in: "lease -5", bad: true},
		{in: "lease 0", bad: true},
		{in: "lease 12x", bad: true},
		{in: "released", bad: true},
		{in: "", bad: true},
		{in: strings.Repeat("z", 300), bad: true},
	} {
		d, end, err := parseFence([]byte(tc.in))
		if tc.bad {
			if !errors.Is(err, ErrFenceMessage) {
				t.Errorf("%.20q: error %v, want ErrFenceMessage", tc.in, err)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Errorf("%.20q: error of %d bytes quotes the whole line", tc.in, len(err.Error()))
			}
			continue
		}
		if err != nil || d != tc.deadline || end != tc.end {
			t.Errorf("%q: %d, %v, %v; want %d, %v", tc.in, d, end, err, tc.deadline, tc.end)
		}
	}
}

// fenceRig runs a Fencer on a real pipe with a fake release.
type fenceRig struct {
	t        *testing.T
	w        *os.File
	f        *Fencer
	releases atomic.Int32
	done     chan error
	cancel   context.CancelFunc
}

func newFenceRig(t *testing.T, margin time.Duration) *fenceRig {
	return newFenceRigRelease(t, margin, nil)
}

// newFenceRigRelease: release, when set, replaces the counting one.
func newFenceRigRelease(t *testing.T, margin time.Duration, release func(context.Context) error) *fenceRig {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	r := &fenceRig{t: t, w: os.NewFile(uintptr(p[1]), "w"), done: make(chan error, 1)}
	r.f = &Fencer{FD: p[0], Margin: margin, Log: quietLog(), Release: func(context.Context) error {
		r.releases.Add(1)
		return nil
	}}
	if release != nil {
		r.f.Release = release
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.w.Close()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Fencer.Run did not return")
		}
		unix.Close(p[0])
	})
	return r
}

func (r *fenceRig) send(format string, a ...any) {
	r.t.Helper()
	if _, err := fmt.Fprintf(r.w, format+"\n", a...); err != nil {
		r.t.Fatal(err)
	}
}

func (r *fenceRig) lease(d time.Duration) { r.send("lease %d", monoNow()+int64(d)) }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFencerRenewalsKeepVIPs: a daemon that renews before each deadline,
// however late relative to a guess, is never fenced; one that ends its
// lease is not fenced either.
func TestFencerRenewalsKeepVIPs(t *testing.T) {
	r := newFenceRig(t, 5*time.Millisecond)
	// Renewals of a 300ms lease, written every 50ms for 600ms: each comes
	// well before the previous deadline even on a loaded machine.
	for range 12 {
		r.lease(300 * time.Millisecond)
		time.Sleep(50 * time.Millisecond)
	}
	r.send("end")
	time.Sleep(400 * time.Millisecond)
	if n := r.releases.Load(); n != 0 {
		t.Fatalf("%d releases for a daemon that renewed in time and then ended its lease", n)
	}
}

// TestFencerFencesFrozenDaemon: a deadline that passes without a renewal
// removes the VIPs once; a late renewal (the daemon ran again, its lease
// long gone) does not fence again; a fresh lease re-arms the fencer.
func TestFencerFencesFrozenDaemon(t *testing.T) {
	r := newFenceRig(t, 5*time.Millisecond)
	t0 := time.Now()
	r.lease(50 * time.Millisecond)
	waitUntil(t, "the fence", func() bool { return r.releases.Load() == 1 })
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Fatalf("fenced %v after a 50ms lease was reported: before the deadline", d)
	}
	// The resumed daemon's stale renewal: already past.
	r.lease(-10 * time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	if n := r.releases.Load(); n != 1 {
		t.Fatalf("%d releases after a stale renewal, want 1", n)
	}
	// Re-activated with a fresh confirmation, then frozen again.
	r.lease(40 * time.Millisecond)
	waitUntil(t, "the second fence", func() bool { return r.releases.Load() == 2 })
	if r.f.Fences.Load() != 2 {
		t.Fatalf("Fences %d, want 2", r.f.Fences.Load())
	}
}

// TestFencerReadsBeforeDeciding: a renewal already in the pipe when the
// deadline passes counts (the fencer reads everything before it decides),
// even split across writes; garbage lines are skipped.
func TestFencerReadsBeforeDeciding(t *testing.T) {
	r := newFenceRig(t, time.Millisecond)
	next := monoNow() + int64(time.Hour)
	r.send("nonsense")
	fmt.Fprintf(r.w, "lease %d", next)
	time.Sleep(20 * time.Millisecond)
	r.send("")
	r.lease(30 * time.Millisecond)
	r.lease(time.Hour)
	time.Sleep(150 * time.Millisecond)
	if n := r.releases.Load(); n != 0 {
		t.Fatalf("%d releases with an hour of lease reported", n)
	}
}

// TestFencerRetriesFailedRelease: a release that fails is tried again.
func TestFencerRetriesFailedRelease(t *testing.T) {
	var calls atomic.Int32
	r := newFenceRigRelease(t, time.Millisecond, func(context.Context) error {
		if calls.Add(1) == 1 {
			return errors.New("netlink: busy")
		}
		return nil
	})
	r.lease(10 * time.Millisecond)
	waitUntil(t, "a second try", func() bool { return calls.Load() >= 2 })
}

// TestFencerEndsAtEOF: the daemon exiting closes the pipe and Run returns.
func TestFencerEndsAtEOF(t *testing.T) {
	r := newFenceRig(t, time.Millisecond)
	r.lease(time.Hour)
	r.w.Close()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run after EOF: %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return at EOF")
	}
}

// TestHeartbeatToFencer: the daemon's heartbeat over a pipe, read by the
// fencer: renewals keep it armed, a lapse fences, "end" disarms; the
// heartbeat never blocks on a full pipe.
func TestHeartbeatToFencer(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Setenv(FenceFDEnv, fmt.Sprint(p[1]))
	fe, err := newFence(quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if fe.hb == nil {
		t.Fatal("no heartbeat with the variable set")
	}
	defer unix.Close(p[1])
	// Nobody reads yet: fill the pipe; lease must not block.
	done := make(chan struct{})
	go func() {
		for range 20000 {
			fe.onLease(time.Now().Add(time.Hour))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the heartbeat blocked on a full pipe")
	}
	if fe.hb.drops.Load() == 0 {
		t.Fatal("20,000 heartbeats into an unread pipe and none dropped")
	}
	if !fe.gate.MaySend() {
		t.Fatal("gate closed with an hour of lease")
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		t.Fatal(err)
	}
	var releases atomic.Int32
	f := &Fencer{FD: p[0], Margin: time.Millisecond, Log: quietLog(), Release: func(context.Context) error { releases.Add(1); return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- f.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
		unix.Close(p[0])
	}()
	waitUntil(t, "the fencer to read the full pipe", func() bool {
		n, err := unix.IoctlGetInt(p[0], unix.TIOCINQ)
		return err == nil && n == 0
	})
	fe.onLease(time.Now().Add(30 * time.Millisecond))
	waitUntil(t, "the fence of a lapsed heartbeat lease", func() bool { return releases.Load() == 1 })
	if fe.gate.MaySend() {
		t.Fatal("gate open after the lease ran out")
	}
	fe.onLease(time.Now().Add(30 * time.Millisecond))
	fe.onLease(time.Time{})
	time.Sleep(100 * time.Millisecond)
	if n := releases.Load(); n != 1 {
		t.Fatalf("%d releases after the lease ended cleanly, want 1", n)
	}
	if fe.gate.MaySend() {
		t.Fatal("gate open after the lease ended")
	}
}

func TestOpenHeartbeatRefusesBadFD(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notapipe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, v := range []string{"x", "1", "-3", fmt.Sprint(f.Fd()), "99999"} {
		t.Setenv(FenceFDEnv, v)
		if hb, err := openHeartbeat(quietLog()); err == nil || hb != nil || !strings.Contains(err.Error(), FenceFDEnv) {
			t.Errorf("%s=%s: %v, %v; want an error naming the variable", FenceFDEnv, v, hb, err)
		}
	}
	t.Setenv(FenceFDEnv, "")
	if hb, err := openHeartbeat(quietLog()); hb != nil || err != nil {
		t.Fatalf("unset: %v, %v", hb, err)
	}
}

// countVIPs counts claims (role.VIPs).
type countVIPs struct{ claims, releases atomic.Int32 }

func (c *countVIPs) Claim(context.Context) error   { c.claims.Add(1); return nil }
func (c *countVIPs) Release(context.Context) error { c.releases.Add(1); return nil }

// TestVIPLock: a claim waits while the supervisor holds the VIP lock and
// goes on once it is free; a claim that cannot get it within its context
// fails without claiming.
func TestVIPLock(t *testing.T) {
	path := t.TempDir() + "/vip.lock"
	sup, err := openVIPLock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.close()
	dl, err := openVIPLock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.close()
	c := &countVIPs{}
	v := lockedVIPs{roleVIPs: c, lk: dl}
	if err := sup.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = v.Claim(ctx)
	cancel()
	if err == nil || c.claims.Load() != 0 {
		t.Fatalf("claim under the supervisor's lock: %v, %d claims; want an error and none", err, c.claims.Load())
	}
	done := make(chan error, 1)
	go func() { done <- v.Claim(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if c.claims.Load() != 0 {
		t.Fatal("claimed while the supervisor held the lock")
	}
	sup.unlock()
	if err := <-done; err != nil || c.claims.Load() != 1 {
		t.Fatalf("claim after the lock was freed: %v, %d claims", err, c.claims.Load())
	}
	// The claim let go of it.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sup.lock(ctx); err != nil {
		t.Fatalf("lock after the claim: %v", err)
	}
	sup.unlock()
	if err := v.Release(context.Background()); err != nil || c.releases.Load() != 1 {
		t.Fatalf("release: %v, %d", err, c.releases.Load())
	}
}

// TestFencerUnderVIPLock: the supervisor decides while a claim holds the
// lock, the deadline already passed and no renewal in the pipe; the daemon
// publishes its fresh lease and claims before it lets go: no fence (without
// the lock the supervisor would remove the VIPs just claimed). A daemon
// frozen holding the lock with its lease gone is fenced without it.
func TestFencerUnderVIPLock(t *testing.T) {
	path := t.TempDir() + "/vip.lock"
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(p[1]), "w")
	var releases atomic.Int32
	f := &Fencer{FD: p[0], Margin: time.Millisecond, Log: quietLog(), LockPath: path, LockWait: 2 * time.Second,
		Release: func(context.Context) error { releases.Add(1); return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- f.Run(ctx) }()
	defer func() {
		cancel()
		w.Close()
		<-ran
		unix.Close(p[0])
	}()
	dl, err := openVIPLock(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.close()
	lease := func(d time.Duration) { fmt.Fprintf(w, "lease %d\n", monoNow()+int64(d)) }

	// The claim holds the lock across the deadline, then renews, claims
	// and lets go.
	if err := dl.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	lease(20 * time.Millisecond)
	time.Sleep(40 * time.Millisecond)
	lease(time.Hour)
	dl.unlock()
	time.Sleep(100 * time.Millisecond)
	if n := releases.Load(); n != 0 {
		t.Fatalf("%d releases of a daemon that renewed before claiming", n)
	}
	// Frozen holding the lock, its lease gone.
	if err := dl.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer dl.unlock()
	lease(10 * time.Millisecond)
	waitUntil(t, "a fence without the lock", func() bool { return releases.Load() == 1 })
}

// FuzzParseFence: any line the supervisor reads from the daemon's pipe is a
// deadline (positive), "end" or ErrFenceMessage, never a panic.
func FuzzParseFence(f *testing.F) {
	for _, s := range []string{"lease 123456789", "end", "lease -5", "lease 12x", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		d, end, err := parseFence(line)
		switch {
		case err != nil:
			if !errors.Is(err, ErrFenceMessage) {
				t.Fatalf("%q: error %v, want ErrFenceMessage", line, err)
			}
		case end:
			if d != 0 {
				t.Fatalf("%q: end with deadline %d", line, d)
			}
		case d <= 0:
			t.Fatalf("%q: deadline %d", line, d)
		}
	})
}
