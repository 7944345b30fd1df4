package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"ikegw/deploy/lab"
)

// ikegwdBin is the ikegwd binary TestChaosShort runs: built from this
// tree, or $IKEGW_LAB_IKEGWD.
var ikegwdBin string

func TestMain(m *testing.M) {
	if bin := os.Getenv("IKEGW_LAB_IKEGWD"); bin != "" {
		ikegwdBin = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ikegwdBin = filepath.Join(dir, "ikegwd")
	code := 1
	if out, err := exec.Command("go", "build", "-o", ikegwdBin, "ikegw/cmd/ikegwd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ikegwd: %v\n%s", err, out)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// The sampler sees a VIP held on two up interfaces, and does not count
// one whose link is down (a dead node's).
func TestSamplerSeesOverlap(t *testing.T) {
	l := lab.NewT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	br, err := l.NewBridge(ctx, "seg")
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParsePrefix("192.0.2.10/24")
	var names, nss []string
	var nodes []*lab.NS
	for i := 1; i <= 2; i++ {
		ns, err := l.NewNS(ctx, fmt.Sprintf("g%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := br.Attach(ctx, ns, "out0"); err != nil {
			t.Fatal(err)
		}
		if err := ns.AddAddr(ctx, "out0", netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), 24)); err != nil {
			t.Fatal(err)
		}
		names, nss, nodes = append(names, ns.Name()), append(nss, ns.Name()), append(nodes, ns)
	}
	s, err := NewSampler(names, nss, []netip.Addr{vip.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	stopped := false
	defer func() {
		if !stopped {
			s.Stop()
		}
	}()
	waitSamples := func(n int) {
		t.Helper()
		start := s.Samples()
		for {
			if s.Samples() >= start+n {
				return
			}
			if ctx.Err() != nil {
				t.Fatal("the sampler took no samples")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// One holder, then the VIP on the second node's down link: no overlap.
	if err := nodes[0].AddAddr(ctx, "out0", vip); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].SetLink(ctx, "out0", false); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].AddAddr(ctx, "out0", vip); err != nil {
		t.Fatal(err)
	}
	s.SetPhase(1, "down link")
	waitSamples(20)
	if o, _, _, _ := s.Take(); len(o) != 0 {
		t.Fatalf("a VIP on a down link counted as held: %v", o)
	}
	// The second node's link comes up: two holders.
	s.SetPhase(2, "both up")
	if err := nodes[1].SetLink(ctx, "out0", true); err != nil {
		t.Fatal(err)
	}
	waitSamples(20)
	if err := nodes[1].DelAddr(ctx, "out0", vip); err != nil {
		t.Fatal(err)
	}
	waitSamples(5)
	s.Stop()
	stopped = true
	o, _, errs, lastErr := s.Take()
	if errs != 0 {
		t.Errorf("%d sample errors, last %v", errs, lastErr)
	}
	if len(o) != 1 || o[0].VIP != vip.Addr() || len(o[0].Holders) != 2 || o[0].Round != 2 || o[0].Samples < 2 {
		t.Fatalf("overlaps %v, want one of both nodes in round 2", o)
	}
	t.Logf("seen: %s", o[0])
}

// TestChaosShort is the CI form of `make chaos`: 2 gateways and a witness,
// gwlab's peer plus 2 peers x 10 tunnels, 4 seeded rounds of daemon death,
// node death (restart with its disk), partitions and 10% loss on the
// cluster links (seed 20261144: loss 10.1s, kill-node active, kill-daemon
// active, partition standby 7.8s). SIGSTOP of the active has its own
// test (TestChaosStop), so this seed's plan stays as it was.
// The peers track 16 IKEv1 exchanges per IKE SA instead of strongSwan's 3:
// with 3, a burst of DELETEs from a new active during a peer's Quick Mode
// makes charon lose the Quick Mode's IV and renegotiate phase 1 (`make
// chaos` keeps the default and shows it). The checks are the full ones.
// IKEGW_CHAOS_SEED picks another seed.
func TestChaosShort(t *testing.T) {
	seed := int64(20261144)
	if s := os.Getenv("IKEGW_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("IKEGW_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	res, dir, err := chaosRun(t, "short", 8*time.Minute, Options{Rounds: 4, Peers: 2, Tunnels: 10, Seed: seed,
		Kinds: []Kind{KillDaemon, KillNode, Partition, Loss}, PeerExchanges: 16}, nil)
	if err != nil || res == nil || !res.OK() {
		dumpLogs(t, dir)
		if err != nil {
			t.Fatalf("the chaos run failed: %v", err)
		}
		t.Fatalf("%d invariant violations (seed %d; reproduce with IKEGW_CHAOS_SEED=%d)", len(res.Violations), seed, seed)
	}
	if len(res.Rounds) != 5 {
		t.Fatalf("%d rounds reported, want the setup check and 4", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Tunnels < 3 {
			t.Errorf("round %d checked only %d tunnels (gwlab's and each peer's pinned one at least)", r.Round, r.Tunnels)
		}
	}
	if res.Samples < 100 {
		t.Errorf("only %d VIP samples", res.Samples)
	}
}

// chaosRun is one chaos run of a test: it skips without root or strongSwan,
// runs o (Bin, Dir, Out and Logger filled in) in a fresh directory removed
// at the end, within timeout, and logs the progress and the summary table.
// extra, if not nil, adds a line to that log from the run's directory.
func chaosRun(t *testing.T, name string, timeout time.Duration, o Options, extra func(dir string) string) (*Result, string, error) {
	t.Helper()
	lab.RequireRoot(t)
	if _, err := exec.LookPath("swanctl"); err != nil {
		t.Skip("chaos: strongSwan (swanctl) is not installed: scripts/deps.sh installs it")
	}
	dir, err := os.MkdirTemp("", "chaos-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var out strings.Builder
	logf, err := os.Create(filepath.Join(dir, "events.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	o.Bin, o.Dir, o.Out, o.Logger = ikegwdBin, filepath.Join(dir, "lab"), &out, slog.New(slog.NewTextHandler(logf, nil))
	res, err := Run(ctx, o)
	var table strings.Builder
	if res != nil {
		res.WriteTable(&table)
	}
	more := ""
	if extra != nil {
		more = "\n" + extra(dir)
	}
	t.Logf("progress:\n%s\n%s%s", out.String(), table.String(), more)
	return res, dir, err
}

// dumpLogs logs the tail of every log file of the run.
func dumpLogs(t *testing.T, dir string) {
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".log") {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				t.Logf("%s: %v", f, err)
			}
			continue
		}
		s := string(b)
		if len(s) > 6000 {
			s = "..." + s[len(s)-6000:]
		}
		t.Logf("--- %s:\n%s", f, s)
	}
}
