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

// Bounds of an admin answer: most are small and come at once; the SA
// listing grows with the tunnels (about 1 KiB per IKE SA and pair: 10,000
// tunnels are over 8 MiB) and a loaded node takes seconds to build it.
const (
	adminTimeout    = 2 * time.Second
	adminLimit      = 8 << 20
	adminSAsTimeout = 60 * time.Second
	adminSAsLimit   = 1 << 30
)

// adminGet GETs path from the admin API on the unix socket sock into out.
func adminGet(ctx context.Context, sock, path string, out any) error {
	return adminGetBounded(ctx, sock, path, out, adminTimeout, adminLimit)
}

// adminGetSAs GETs the node's SA listing (/v1/sas) into out.
func adminGetSAs(ctx context.Context, sock string, out *GatewaySAs) error {
	return adminGetBounded(ctx, sock, "/v1/sas", out, adminSAsTimeout, adminSAsLimit)
}

// adminGetBounded is adminGet with the answer's time and size bounds; an
// answer over limit is an error, not a truncated document.
func adminGetBounded(ctx context.Context, sock, path string, out any, timeout time.Duration, limit int64) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("gwlab: admin %s GET %s: reading the answer: %w", sock, path, err)
	}
	if int64(len(body)) > limit {
		return fmt.Errorf("gwlab: admin %s GET %s: the answer is longer than %d bytes", sock, path, limit)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gwlab: admin %s GET %s: %s: %s", sock, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("gwlab: admin %s GET %s: decoding the answer: %w", sock, path, err)
	}
	return nil
}
