package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"ikegw/deploy/gwlab"
)

// DefaultSocket is where a running lab listens for commands.
const DefaultSocket = "/run/ikegw-lab/ctl.sock"

// Commands of the control socket.
const (
	cmdStatus   = "status"
	cmdFailover = "failover"
	cmdStop     = "stop"
)

// request is one command to the running lab (one JSON object per
// connection, answered by one response).
type request struct {
	Cmd       string `json:"cmd"`
	NodeDeath bool   `json:"node_death,omitempty"`
	Planned   bool   `json:"planned,omitempty"`
}

// response answers a request.
type response struct {
	Error  string        `json:"error,omitempty"`
	Text   string        `json:"text,omitempty"`
	Report *gwlab.Report `json:"report,omitempty"`
}

// ErrNoLab is returned by a client when no lab answers on the socket.
var ErrNoLab = errors.New("no running lab answers")

// maxRequest bounds a request's size.
const maxRequest = 4096

// ctlServer serves the control socket.
type ctlServer struct {
	ln   net.Listener
	path string
	wg   sync.WaitGroup
}

// listenCtl creates the socket (its directory 0700, the socket 0600). A
// socket left by a dead lab is replaced; one a live lab answers on is an
// error.
func listenCtl(path string) (*ctlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another ikegw-lab is running (stop it with `ikegw-lab stop`)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing a stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &ctlServer{ln: ln, path: path}, nil
}

// serve answers requests with handle until Close. Each connection carries
// one request.
func (s *ctlServer) serve(handle func(context.Context, request) response, log *slog.Logger) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			var req request
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
				_ = json.NewEncoder(c).Encode(response{Error: fmt.Sprintf("bad request: %v", err)})
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			resp := handle(context.Background(), req)
			if err := json.NewEncoder(c).Encode(resp); err != nil {
				log.Warn("control socket: answering failed", "cmd", req.Cmd, "err", err)
			}
		}()
	}
}

// Close stops accepting, waits for answers in progress and removes the
// socket.
func (s *ctlServer) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// call sends req to the lab on path and returns its answer; ErrNoLab
// (wrapped) when nothing listens there.
func call(ctx context.Context, path string, req request) (response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return response{}, fmt.Errorf("%w on %s: %w", ErrNoLab, path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return response{}, fmt.Errorf("control socket %s: sending %q: %w", path, req.Cmd, err)
	}
	var resp response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return response{}, fmt.Errorf("control socket %s: reading the answer to %q: %w", path, req.Cmd, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("lab: %s", resp.Error)
	}
	return resp, nil
}
