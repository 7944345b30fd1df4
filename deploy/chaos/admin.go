package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// adminDo sends one request to the admin API on the unix socket sock and
// decodes a 200 answer into out (when not nil).
func adminDo(ctx context.Context, sock, method, path string, body []byte, out any) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ikegwd"+path, rd)
	if err != nil {
		return fmt.Errorf("chaos: admin %s %s %s: %w", sock, method, path, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("chaos: admin %s %s %s: %w", sock, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("chaos: admin %s %s %s: reading the answer: %w", sock, method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("chaos: admin %s %s %s: %s: %s", sock, method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("chaos: admin %s %s %s: decoding the answer: %w", sock, method, path, err)
	}
	return nil
}
