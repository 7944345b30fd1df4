// Command clusterhs measures the IKEv1 handshake rate against a 3-node
// ikegw cluster (issue 7 item 1, setup c): every SA is committed through
// Raft (mutual TLS, bbolt with fsync) before the message it guards is
// sent. It builds the cluster lab of deploy/gwlab (3 gateways, no witness,
// userspace data plane, a load namespace on the outside segment), runs
// cmd/ikeload against the outside VIP, and reports ikeload's JSON result
// with the replication cost read from the active node's metrics: Raft
// entries and sealed bytes proposed per tunnel, and the commit latency
// histogram's p50/p99 during the run.
//
//	go build -o /tmp/ikegwd ./cmd/ikegwd && go build -o /tmp/ikeload ./cmd/ikeload
//	go run ./bench/clusterhs -ikegwd /tmp/ikegwd -ikeload /tmp/ikeload -tunnels 2000
//
// A run is measured against one undisturbed active: when the active lost
// its role during ikeload (a fence, a lost leadership, another node
// taking over; read from the role machines' logs, so a fence followed by
// a re-activation of the same node counts too), the attempt is
// disturbed: it is recorded in the result ("disturbed": when, which node,
// why, the load) and the run starts again on a fresh lab, up to -attempts
// in all. Only an undisturbed attempt's figures are reported; when every
// attempt was disturbed clusterhs fails and lists them.
//
// Root only (network namespaces). bench/handshake.sh runs it as setup
// "cluster".
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"ikegw/deploy/gwlab"
)

func main() {
	var (
		ikegwd, ikeload, proposal, esp, out string
		tunnels, conc                       int
		timeout, counterSync                time.Duration
		attempts                            int
	)
	flag.StringVar(&ikegwd, "ikegwd", "", "ikegwd binary (required)")
	flag.StringVar(&ikeload, "ikeload", "", "ikeload binary (required)")
	flag.IntVar(&tunnels, "tunnels", 2000, "tunnels to set up")
	flag.IntVar(&conc, "concurrency", 64, "tunnels in setup at once")
	flag.StringVar(&proposal, "proposal", gwlab.LoadIKEProposal, "IKE proposal (the lab's load connection accepts "+gwlab.LoadIKEProposal+")")
	flag.StringVar(&esp, "esp", gwlab.LoadESPProposal, "ESP proposal")
	flag.DurationVar(&timeout, "timeout", 10*time.Minute, "bound for the whole run")
	flag.DurationVar(&counterSync, "counter-sync", time.Second, "the gateways' dataplane.counter_sync (ikegwd's default; the lab's failover tests use 200ms)")
	flag.IntVar(&attempts, "attempts", 3, "attempts in all when the active loses its role during a run (each on a fresh lab)")
	flag.StringVar(&out, "o", "-", "where to write the JSON result")
	flag.Parse()
	if ikegwd == "" || ikeload == "" {
		fmt.Fprintln(os.Stderr, "clusterhs: -ikegwd and -ikeload are required")
		os.Exit(2)
	}
	if attempts < 1 {
		fmt.Fprintln(os.Stderr, "clusterhs: -attempts must be at least 1")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := retry(attempts, func(n int) (result, *disturbance, error) {
		return run(ctx, ikegwd, ikeload, tunnels, conc, proposal, esp, counterSync)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterhs:", err)
		os.Exit(1)
	}
	w := os.Stdout
	if out != "-" {
		f, err := os.Create(out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "clusterhs:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "clusterhs:", err)
		os.Exit(1)
	}
}

// result is ikeload's JSON with the replication figures added.
type result map[string]any

// disturbance is why an attempt does not measure one undisturbed active.
type disturbance struct {
	Attempt int `json:"attempt"`
	// Before and After are the active's name at the start and the end.
	Before string `json:"active_before"`
	After  string `json:"active_after"`
	// Losses are the times a gateway left the active role during the run.
	Losses []string `json:"losses"`
	Load1  float64  `json:"load1"`
	// Logs are the nodes' last log lines (the lab directory is removed).
	Logs string `json:"-"`
}

func (d *disturbance) Error() string {
	return fmt.Sprintf("attempt %d: the active lost its role during the run (%s -> %s, load %.1f): %s", d.Attempt, d.Before, d.After, d.Load1, strings.Join(d.Losses, "; "))
}

// retry runs attempt until one is undisturbed, at most n times. The
// result of the undisturbed attempt records every disturbed one before
// it ("attempts", "disturbed"); a failure stops at once; n disturbed
// attempts are an error that lists them.
func retry(n int, attempt func(i int) (result, *disturbance, error)) (result, error) {
	var dist []*disturbance
	for i := 1; i <= n; i++ {
		res, d, err := attempt(i)
		if err != nil {
			return nil, fmt.Errorf("attempt %d: %w", i, err)
		}
		if d != nil {
			d.Attempt = i
			dist = append(dist, d)
			fmt.Fprintf(os.Stderr, "clusterhs: disturbed, not measured: %v; the nodes' last log lines:\n%s", d, d.Logs)
			continue
		}
		res["attempts"] = i
		res["disturbed"] = dist
		if dist == nil {
			res["disturbed"] = []*disturbance{}
		}
		return res, nil
	}
	errs := make([]error, len(dist))
	for i, d := range dist {
		errs[i] = d
	}
	return nil, fmt.Errorf("every one of %d attempts was disturbed: %w", n, errors.Join(errs...))
}

// run is one attempt on a fresh lab; a non-nil disturbance means its
// figures are not a measurement (the result is then nil).
func run(ctx context.Context, ikegwd, ikeload string, tunnels, conc int, proposal, esp string, counterSync time.Duration) (result, *disturbance, error) {
	dir, err := os.MkdirTemp("", "chs")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	l, err := gwlab.Build(ctx, gwlab.Options{Gateways: 3, Dir: dir, Bin: ikegwd, Ikeload: ikeload, LoadTunnels: tunnels,
		LogLevel: "warn", Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// Production-like Raft timings: the benchmark is about the commit
		// path, not about detecting failures fast.
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLease: 500 * time.Millisecond,
		// Every established pair's counters are replicated once per sync
		// interval: the lab's 200 ms would add five times the production
		// replication of idle pairs to the handshake cost.
		CounterSync: counterSync})
	if err != nil {
		return nil, nil, fmt.Errorf("lab: %w", err)
	}
	defer l.Close()
	active, err := l.Active(ctx)
	if err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(dir, active, "admin.sock")
	before, err := scrape(ctx, sock)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics of %s before the run: %w", active, err)
	}
	first := gwlab.LoadNet.Addr().Next()
	last := first
	for range tunnels - 1 {
		last = last.Next()
	}
	args := []string{"netns", "exec", l.Load.Name(), ikeload,
		"-target", gwlab.OutsideVIP.Addr().String(), "-local", first.String() + "-" + last.String(),
		"-tunnels", strconv.Itoa(tunnels), "-concurrency", strconv.Itoa(conc), "-proposal", proposal, "-esp", esp, "-encap",
		"-psk-file", filepath.Join(dir, "psk"), "-ts-base", gwlab.LoadTS.Addr().String(), "-remote-ts", gwlab.InsideNet.String(),
		"-tunnel-timeout", "30s", "-duration", "5m", "-o", "json"}
	t0 := time.Now()
	cpu0 := nodeCPU(dir)
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	res := result{}
	if jerr := json.Unmarshal(raw, &res); jerr != nil {
		return nil, nil, fmt.Errorf("ikeload: %v; output: %v: %s", err, jerr, stderr.String())
	}
	losses, lerr := l.ActiveLosses(t0)
	if lerr != nil {
		return nil, nil, lerr
	}
	a, aerr := l.Active(ctx)
	if aerr != nil {
		a = "none (" + aerr.Error() + ")"
	}
	if len(losses) > 0 || a != active {
		d := &disturbance{Before: active, After: a, Load1: gwlab.Load1(), Logs: logTails(dir, 8)}
		for _, x := range losses {
			d.Losses = append(d.Losses, x.String())
		}
		return nil, d, nil
	}
	after, err := scrape(ctx, sock)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics of %s after the run: %w", active, err)
	}
	cpu1 := nodeCPU(dir)
	ok, _ := res["ok"].(float64)
	var total float64
	for name, c := range cpu1 {
		ms := c - cpu0[name]
		res["cpu_ms_"+name] = round(ms)
		total += ms
	}
	if ok > 0 {
		res["cpu_ms_per_tunnel"] = round((cpu1[active]-cpu0[active])/ok*1000) / 1000
		res["cluster_cpu_ms_per_tunnel"] = round(total/ok*1000) / 1000
	}
	res["setup"] = "cluster"
	res["counter_sync"] = counterSync.String()
	res["cluster"] = "3 gateways, Raft over mutual TLS, bbolt with fsync"
	if ok > 0 {
		res["raft_entries_per_tunnel"] = round((after.entries - before.entries) / ok)
		res["raft_bytes_per_tunnel"] = round((after.bytes - before.bytes) / ok)
	}
	d := after.hist.minus(before.hist)
	res["raft_commits"] = d.count
	if d.count > 0 { // JSON has no NaN
		res["raft_commit_p50_ms"] = round(d.quantile(0.50) * 1000)
		res["raft_commit_p99_ms"] = round(d.quantile(0.99) * 1000)
	}
	return res, nil, nil
}

func round(v float64) float64 { return math.Round(v*10) / 10 }

// nodeCPU returns the user+system CPU time in ms of each gateway's
// `ikegwd run` process of the lab in dir, by node name (gw1.yaml -> gw1).
func nodeCPU(dir string) map[string]float64 {
	out := map[string]float64{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	hz := 100.0 // USER_HZ on Linux
	for _, e := range ents {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		cl, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		if len(args) < 4 || args[1] != "run" || args[2] != "-c" || !strings.HasPrefix(args[3], dir+"/") {
			continue
		}
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		stm, _ := strconv.ParseFloat(f[12], 64)
		out[strings.TrimSuffix(filepath.Base(args[3]), ".yaml")] = (ut + stm) * 1000 / hz
	}
	return out
}

type metrics struct {
	entries, bytes float64
	hist           histogram
}

type histogram struct {
	le    []float64 // upper bounds, ascending
	cum   []float64 // cumulative counts
	count float64
}

func (h histogram) minus(o histogram) histogram {
	d := histogram{le: h.le, cum: make([]float64, len(h.cum)), count: h.count - o.count}
	for i := range h.cum {
		d.cum[i] = h.cum[i]
		if i < len(o.cum) {
			d.cum[i] -= o.cum[i]
		}
	}
	return d
}

// quantile estimates the q-quantile by linear interpolation inside the
// bucket that holds it, as Prometheus' histogram_quantile does.
func (h histogram) quantile(q float64) float64 {
	if h.count == 0 || len(h.le) == 0 {
		return math.NaN()
	}
	rank := q * h.count
	lo, prev := 0.0, 0.0
	for i, c := range h.cum {
		if c >= rank {
			if math.IsInf(h.le[i], 1) {
				return lo
			}
			if c == prev {
				return h.le[i]
			}
			return lo + (h.le[i]-lo)*(rank-prev)/(c-prev)
		}
		lo, prev = h.le[i], c
	}
	return lo
}

// scrape reads the node's Prometheus metrics through its admin socket.
func scrape(ctx context.Context, sock string) (metrics, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://admin/v1/metrics", nil)
	if err != nil {
		return metrics{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return metrics{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return metrics{}, fmt.Errorf("GET /v1/metrics: %s: %s", resp.Status, b)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (metrics, error) {
	var m metrics
	var seen int
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := sample(line)
		if !ok {
			continue
		}
		switch {
		case name == "ikegw_raft_proposed_entries_total":
			m.entries, seen = val, seen|1
		case name == "ikegw_raft_proposed_bytes_total":
			m.bytes, seen = val, seen|2
		case name == "ikegw_raft_commit_seconds_count":
			m.hist.count, seen = val, seen|4
		case strings.HasPrefix(name, "ikegw_raft_commit_seconds_bucket{"):
			i := strings.Index(name, `le="`)
			if i < 0 {
				continue
			}
			s := name[i+4:]
			s = s[:strings.IndexByte(s, '"')]
			le, err := strconv.ParseFloat(s, 64)
			if err != nil {
				continue
			}
			m.hist.le = append(m.hist.le, le)
			m.hist.cum = append(m.hist.cum, val)
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if seen != 7 || len(m.hist.le) == 0 {
		return m, errors.New("metrics lack ikegw_raft_proposed_* or ikegw_raft_commit_seconds (is this node clustered and new enough?)")
	}
	return m, nil
}

// sample splits "name{labels} value" (the name keeps its labels).
func sample(line string) (string, float64, bool) {
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(line[i+1:], 64)
	if err != nil {
		return "", 0, false
	}
	return line[:i], v, true
}

// logTails returns the last n lines of each node's log in the lab
// directory dir (logs/*.log), each headed by its file name.
func logTails(dir string, n int) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(f), strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
}
