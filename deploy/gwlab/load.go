package gwlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"ikegw/deploy/lab"
)

// buildLoad creates the load generator's namespace: LoadOutside on the
// outside segment and one source address per tunnel (from LoadNet) on lo.
func (l *Lab) buildLoad(ctx context.Context, outside *lab.Bridge) error {
	var err error
	if l.Load, err = l.base.NewNS(ctx, "load"); err != nil {
		return err
	}
	if _, err := outside.Attach(ctx, l.Load, "eth0"); err != nil {
		return err
	}
	if err := l.Load.AddAddr(ctx, "eth0", LoadOutside); err != nil {
		return err
	}
	var batch strings.Builder
	for _, a := range loadAddrs(l.opts.LoadTunnels) {
		fmt.Fprintf(&batch, "addr add %s/32 dev lo\n", a)
	}
	f := filepath.Join(l.dir, "load-addrs.batch")
	if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
		return fmt.Errorf("gwlab: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "ip", "-n", l.Load.Name(), "-batch", f).CombinedOutput(); err != nil {
		return fmt.Errorf("gwlab: adding %d load addresses: %w: %s", l.opts.LoadTunnels, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// loadAddrs are the first n host addresses of LoadNet.
func loadAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	a := LoadNet.Addr().Next()
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// LoadResult is ikeload's summary (the fields the lab reads).
type LoadResult struct {
	Tunnels int     `json:"tunnels"`
	OK      int     `json:"ok"`
	Failed  int     `json:"failed"`
	Rate    float64 `json:"tunnels_per_s"`
}

// SetupLoad sets up Options.LoadTunnels tunnels from the load namespace
// to the outside VIP with ikeload (Main Mode + Quick Mode, PSK, UDP
// encapsulation as the userspace data plane wants), and returns once
// ikeload is done and the active gateway lists that many more children
// (ikeload's result says how many: at least 95% of them, or an error).
// The tunnels carry no traffic: they are SAs the cluster replicates and a
// new active installs.
func (l *Lab) SetupLoad(ctx context.Context) (LoadResult, error) {
	n := l.opts.LoadTunnels
	if n == 0 || l.Load == nil {
		return LoadResult{}, fmt.Errorf("%w: SetupLoad needs LoadTunnels", ErrOptions)
	}
	addrs := loadAddrs(n)
	args := []string{"-target", OutsideVIP.Addr().String(), "-local", addrs[0].String() + "-" + addrs[n-1].String(),
		"-tunnels", strconv.Itoa(n), "-concurrency", "32", "-proposal", LoadIKEProposal, "-esp", LoadESPProposal, "-encap",
		"-psk-file", filepath.Join(l.dir, "psk"), "-ts-base", LoadTS.Addr().String(), "-remote-ts", InsideNet.String(),
		"-tunnel-timeout", "60s", "-duration", "10m", "-o", "json"}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.Load.Name(), l.opts.Ikeload}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res LoadResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return res, fmt.Errorf("gwlab: ikeload: %v (decoding its output: %v): %s", err, jerr, tail(stderr.String(), 2000))
	}
	// On a starved machine a few setups time out; the cluster then holds
	// a few tunnels less, which the caller sees in the result.
	if res.OK*100 < n*95 {
		return res, fmt.Errorf("gwlab: ikeload set up %d of %d tunnels (%d failed): %s", res.OK, n, res.Failed, tail(stderr.String(), 2000))
	}
	if res.OK != n {
		l.log.Warn("gwlab: ikeload did not set up every tunnel", "ok", res.OK, "want", n, "failed", res.Failed)
	}
	n = res.OK
	// The active lists them (plus the peer's). Its status opens every
	// sealed record in its store to count them (at 5,500 tunnels a
	// standby polled twice a second spent 12% of its CPU there), so it is
	// asked once a second, not in a loop that loads the node it measures.
	active, err := l.Active(ctx)
	if err != nil {
		return res, err
	}
	for {
		st, err := l.NodeAdminStatus(ctx, active)
		if err == nil && st.ChildSAs >= n+1 {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("gwlab: %s lists %d child SAs, want %d: %w (last error %v)", active, st.ChildSAs, n+1, ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// Load1 is the host's 1-minute load average (0 when /proc/loadavg cannot
// be read): the benchmarks record it beside every result.
func Load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
