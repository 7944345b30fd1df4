package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

func sockPath(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lab-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Join(d, "sub", "ctl.sock")
}

// A request reaches the handler and its answer (report included) comes
// back; errors travel as errors; the socket is 0600 and removed on Close.
func TestControlRoundTrip(t *testing.T) {
	path := sockPath(t)
	srv, err := listenCtl(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	var (
		mu  sync.Mutex
		got []request
	)
	go srv.serve(func(_ context.Context, r request) response {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
		switch r.Cmd {
		case cmdFailover:
			return response{Report: &gwlab.Report{Kind: gwlab.NodeDeath, Killed: "gw1", NewActive: "gw2",
				Outage: gwlab.Outage{Gap: 420 * time.Millisecond, Lost: 40, Resumed: true}}, Text: "report text"}
		case cmdStatus:
			return response{Text: "table"}
		}
		return response{Error: "unknown command " + r.Cmd}
	}, slog.Default())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	resp, err := call(ctx, path, request{Cmd: cmdFailover, NodeDeath: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Report == nil || resp.Report.Kind != gwlab.NodeDeath || resp.Report.Gap != 420*time.Millisecond || resp.Report.Lost != 40 || resp.Text != "report text" {
		t.Errorf("failover answer: %+v", resp)
	}
	mu.Lock()
	if len(got) != 1 || !got[0].NodeDeath || got[0].Planned {
		t.Errorf("handler saw %+v", got)
	}
	mu.Unlock()
	if resp, err := call(ctx, path, request{Cmd: cmdStatus}); err != nil || resp.Text != "table" {
		t.Errorf("status: %+v %v", resp, err)
	}
	if _, err := call(ctx, path, request{Cmd: "reboot"}); err == nil || !strings.Contains(err.Error(), "unknown command reboot") {
		t.Errorf("unknown command: %v", err)
	}
	// A second lab on the same socket is refused while this one answers.
	if _, err := listenCtl(path); err == nil || !strings.Contains(err.Error(), "another ikegw-lab is running") {
		t.Errorf("second listen: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket not removed: %v", err)
	}
	if _, err := call(ctx, path, request{Cmd: cmdStatus}); !errors.Is(err, ErrNoLab) {
		t.Errorf("call without a lab: %v, want ErrNoLab", err)
	}
}

// A socket left by a dead lab is replaced; a file that is no socket is not
// touched.
func TestControlStaleSocket(t *testing.T) {
	path := sockPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the socket file stays, nobody listens
	srv, err := listenCtl(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	srv.Close()

	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenCtl(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file at the socket path: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Error("the regular file was changed")
	}
}

// A malformed request gets an error answer, not a hang or a crash.
func TestControlBadRequest(t *testing.T) {
	path := sockPath(t)
	srv, err := listenCtl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go srv.serve(func(context.Context, request) response { t.Error("handler called"); return response{} }, slog.Default())
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("{not json\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	if !strings.Contains(string(buf[:n]), `"error":"bad request`) {
		t.Errorf("answer %q", buf[:n])
	}
}

func TestRenderTable(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ping := lab.PingRecord{Start: t0, End: t0.Add(time.Second), Sent: 100}
	for i := range 100 {
		if i >= 20 && i < 50 {
			continue
		}
		s := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		ping.Replies = append(ping.Replies, lab.Reply{Seq: i, Sent: s, Received: s.Add(time.Millisecond)})
	}
	nodes := []gwlab.NodeStatus{
		{Name: "gw1", Running: true, Role: "active", Status: gwlab.Status{IKESAs: 1, ChildSAs: 1}},
		{Name: "gw2", Cut: true, Err: errors.New("no socket")},
		{Name: "witness", Witness: true, Running: true, Role: "witness"},
	}
	last := &gwlab.Report{Kind: gwlab.DaemonDeath, Killed: "gw2", NewActive: "gw1", Outage: gwlab.Outage{Gap: 310 * time.Millisecond, Lost: 30},
		PeerSAUnchanged: true, SPIsUnchanged: true}
	s := renderTable(65*time.Second, nodes, ping, last)
	for _, want := range []string{
		"lab up 1m5s",
		"gw1      gateway  running           active       1        1",
		"gw2      gateway  dead (links cut)  (no answer)",
		"witness  witness  running           witness",
		"sent 100, received 70, lost 30, max gap 310 ms",
		"last failover: daemon-death of gw2 -> gw1, outage 310 ms, lost 30, SA unchanged yes",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
}
