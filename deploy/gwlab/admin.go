package gwlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"ikegw/cmd/api"
)

// The admin API's views (package ikegw/cmd/api), as the lab reads them.
type (
	Status        = api.Status
	ClusterStatus = api.ClusterStatus
	Takeover      = api.Takeover
	GatewaySAs    = api.SAs
)

// isActive reports whether a status says the node is the active gateway.
func isActive(s Status) bool { return strings.EqualFold(s.Role, api.RoleActive) }

// adminGet GETs path from the admin API on the unix socket sock into out.
func adminGet(ctx context.Context, sock, path string, out any) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ikegwd"+path, nil)
	if err != nil {
		return fmt.Errorf("gwlab: admin %s GET %s: %w", sock, path, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("gwlab: admin %s GET %s: %w", sock, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("gwlab: admin %s GET %s: reading the answer: %w", sock, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gwlab: admin %s GET %s: %s: %s", sock, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("gwlab: admin %s GET %s: decoding the answer: %w", sock, path, err)
	}
	return nil
}
