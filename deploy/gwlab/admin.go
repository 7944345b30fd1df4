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
)

// Status is the part of ikegwd's /v1/status view the lab reads (the admin
// API's types live in an internal package; the JSON names are its contract).
type Status struct {
	Node      string            `json:"node"`
	Version   string            `json:"version"`
	Dataplane string            `json:"dataplane"`
	Role      string            `json:"role"`
	IKESAs    int               `json:"ike_sas"`
	ChildSAs  int               `json:"child_sas"`
	Engine    map[string]uint64 `json:"engine"`
	Runtime   map[string]uint64 `json:"runtime"`
	Cluster   *ClusterStatus    `json:"cluster,omitempty"`
}

// ClusterStatus is a member's Raft view.
type ClusterStatus struct {
	State        string    `json:"state"`
	Term         uint64    `json:"term"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	LastIndex    uint64    `json:"last_index"`
	Leader       string    `json:"leader"`
	LeaderReady  bool      `json:"leader_ready"`
	LastTakeover *Takeover `json:"last_takeover,omitempty"`
}

// Takeover splits a gateway's last activation into its steps.
type Takeover struct {
	Started   time.Time `json:"started"`
	LoadMS    float64   `json:"load_ms"`
	CommitMS  float64   `json:"commit_ms"`
	InstallMS float64   `json:"install_ms"`
	EngineMS  float64   `json:"engine_ms"`
	IKESAs    int       `json:"ike_sas"`
	ChildSAs  int       `json:"child_sas"`
}

// Active reports whether the status says the node is the active gateway.
func (s Status) Active() bool { return strings.EqualFold(s.Role, "active") }

// GatewaySAs is the part of ikegwd's /v1/sas view the lab reads.
type GatewaySAs struct {
	IKE []struct {
		ICookie string `json:"icookie"`
		RCookie string `json:"rcookie"`
		State   string `json:"state"`
	} `json:"ike_sas"`
	Children []struct {
		SPIIn  string `json:"spi_in"`
		SPIOut string `json:"spi_out"`
		State  string `json:"state"`
	} `json:"child_sas"`
}

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
