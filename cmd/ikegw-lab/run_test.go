package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

// syncBuffer is a bytes.Buffer safe for the run loop and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunFailoverStop drives the command as `make run`, `make failover`
// and `make stop` do: run serves the control socket, failover answers with
// a seamless report, stop ends run, and nothing of the lab is left.
func TestRunFailoverStop(t *testing.T) {
	lab.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := buildIkegwd(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Skip when this ikegwd predates the clustered mode (no cluster section).
	probe := t.TempDir() + "/probe.yaml"
	if err := os.WriteFile(probe, []byte("node: {name: p, state_dir: /tmp}\ncluster: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := gwlab.CheckConfig(ctx, bin, probe); err != nil && strings.Contains(err.Error(), "field cluster not found") {
		t.Skip("this ikegwd has no clustered mode")
	}
	sock := sockPath(t)
	out := &syncBuffer{}
	done := make(chan struct{}) // closed when run returned runErr
	var runErr error
	go func() {
		defer close(done)
		runErr = run(ctx, out, sock, gwlab.Options{Gateways: 2, Witness: true, Bin: bin, Dir: t.TempDir(),
			Logger: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn}))}, 500*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("ikegw-lab run output:\n%s", out.String())
		}
	}()
	// Wait until the lab is up (the status answer has a table).
	for {
		resp, err := call(ctx, sock, request{Cmd: cmdStatus})
		if err == nil && strings.Contains(resp.Text, "active") {
			break
		}
		select {
		case <-done:
			t.Fatalf("run ended before the lab was up: %v", runErr)
		case <-ctx.Done():
			t.Fatalf("the lab did not come up: %v", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	resp, err := call(ctx, sock, request{Cmd: cmdFailover})
	if err != nil {
		t.Fatalf("failover: %v\n%s", err, resp.Text)
	}
	if resp.Report == nil || !resp.Report.OK() || !strings.Contains(resp.Text, "peer IKE SA same:  yes") {
		t.Fatalf("failover report not seamless:\n%s", resp.Text)
	}
	t.Logf("failover through the control socket: outage %d ms, lost %d", resp.Report.Gap.Milliseconds(), resp.Report.Lost)
	if _, err := call(ctx, sock, request{Cmd: cmdStop}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if runErr != nil {
			t.Fatalf("run: %v", runErr)
		}
	case <-ctx.Done():
		t.Fatal("run did not end after stop")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	if !strings.Contains(out.String(), "removing the lab") {
		t.Errorf("run did not say it removed the lab:\n%s", out.String())
	}
}
