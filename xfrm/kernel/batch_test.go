package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

// manyPairs returns n pairs from addrA's side, each with its own remote
// /32 selector inside 10.128.0.0/9 and its own reqid, and local selector
// local.
func manyPairs(n int, spiBase uint32, local netip.Prefix) []*sa.ChildSA {
	out := make([]*sa.ChildSA, n)
	for i := range out {
		remote := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
		c, _ := mirrored(suites[1], spiBase+uint32(2*i), spiBase+uint32(2*i+1), addrA, addrB, local, remote, uint32(i+1))
		out[i] = c
	}
	return out
}

// policyReqids reads the template reqids of one policy.
func (d *DataPlane) policyReqids(ctx context.Context, k policyKey) ([]uint32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := d.c.exchange(ctx, []request{{typ: nl.XFRM_MSG_GETPOLICY, body: k.encodeID(), reply: true, op: "get " + k.String()}})
	if res[0].err != nil {
		return nil, res[0].err
	}
	pi, err := parsePolicy(res[0].body)
	if err != nil {
		return nil, err
	}
	return pi.reqids, nil
}

func TestInstallChildrenBatch(t *testing.T) {
	needESP(t)
	ns, path := newNamedNS(t)
	d := newDP(t, path)
	ctx := ctxT(t)
	cs := manyPairs(300, 0x20000000, tsA)
	// Pair 150 collides with a foreign inbound policy.
	bad := cs[150]
	run(t, "ip", "-n", ns, "xfrm", "policy", "add", "src", bad.RemoteTS[0].Prefix.String(), "dst", tsA.String(), "dir", "in",
		"tmpl", "src", "192.0.2.2", "dst", "192.0.2.1", "proto", "esp", "reqid", "9", "mode", "tunnel")
	err := d.InstallChildren(ctx, cs)
	if !errors.Is(err, xfrm.ErrConflict) || !strings.Contains(err.Error(), fmt.Sprintf("spi=0x%08x", bad.In.SPI)) {
		t.Fatalf("batch with one conflicting pair: %v, want ErrConflict naming spi 0x%08x", err, bad.In.SPI)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
		t.Errorf("%d errors for one bad pair:\n%v", n, err)
	}
	ids, _ := d.Installed(ctx)
	if len(ids) != 299 {
		t.Errorf("%d pairs installed, want 299", len(ids))
	}
	if _, err := d.getSA(ctx, saID{addrA, bad.In.SPI}); !notFound(err) {
		t.Errorf("SA of the refused pair left: %v", err)
	}
	if n, _ := d.ourPolicies(ctx); n != 299*3 {
		t.Errorf("%d policies of ours, want %d", n, 299*3)
	}
	cnt, err := d.Counters(ctx)
	if err != nil || len(cnt) != 299 {
		t.Errorf("Counters: %d pairs, %v", len(cnt), err)
	}
	// The whole batch again is idempotent for the installed pairs.
	if err := d.InstallChildren(ctx, append(cs[:150:150], cs[151:]...)); err != nil {
		t.Errorf("reinstalling the batch: %v", err)
	}
	// Again with higher outbound sequence numbers: a standby's takeover
	// jump, raised in one pipelined pass.
	var jumped []*sa.ChildSA
	for i, c := range cs {
		if i != 150 {
			j := cloneChild(c)
			j.Counters.OutSeq = 777
			jumped = append(jumped, j)
		}
	}
	if err := d.InstallChildren(ctx, jumped); err != nil {
		t.Fatalf("jumping the batch: %v", err)
	}
	cnt, err = d.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range jumped {
		if got := cnt[c.In.SPI].OutSeq; got != 777 {
			t.Fatalf("pair 0x%08x: outbound sequence %d after the jump, want 777", c.In.SPI, got)
		}
	}
}

// TestSharedPolicies: two pairs on the same selectors (a rekey with a new
// reqid) share the policies, which point at the newest pair; deleting it
// points them back at the older one, deleting both removes them.
func TestSharedPolicies(t *testing.T) {
	needESP(t)
	_, path := newNamedNS(t)
	d := newDP(t, path)
	ctx := ctxT(t)
	old, _ := mirrored(suites[0], 0x30000010, 0x30000011, addrA, addrB, tsA, tsB, 10)
	nu, _ := mirrored(suites[0], 0x30000020, 0x30000021, addrA, addrB, tsA, tsB, 11)
	key := policyKey{sel: selector(tsA, tsB, 0, 0, 0), dir: policyOut}
	check := func(when string, want uint32) {
		t.Helper()
		r, err := d.policyReqids(ctx, key)
		if want == 0 {
			if !notFound(err) {
				t.Errorf("%s: policy still there (%v, %v)", when, r, err)
			}
			return
		}
		if err != nil || len(r) != 1 || r[0] != DefaultReqidBase+want {
			t.Errorf("%s: policy reqids %v (%v), want %d", when, r, err, DefaultReqidBase+want)
		}
	}
	for _, c := range []*sa.ChildSA{old, nu} {
		if err := d.InstallChild(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	check("both installed", 11)
	if err := d.DeleteChild(ctx, nu); err != nil {
		t.Fatal(err)
	}
	check("newest deleted", 10)
	if err := d.DeleteChild(ctx, old); err != nil {
		t.Fatal(err)
	}
	check("both deleted", 0)
}

func benchPairs(def int) int {
	if n, err := strconv.Atoi(os.Getenv("IKEGW_BENCH_PAIRS")); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkInstallPairs measures SA pair installs (2 SAs and 3 policies
// each): one request at a time, one pair per call (its 5 requests in one
// send), the whole set with InstallChildren (64 requests per send), and the
// library's own calls on one persistent handle for reference. Run it in the
// VM: scripts/vm/test-kernel.sh -test.run '^$' -test.bench InstallPairs -test.benchtime 1x
//
// "host": 10,000 host-to-host pairs (/32 selectors both sides), whose
// policies the kernel hashes. "subnet": 1,000 pairs with a /24 local
// selector: such "inexact" policies sit on one list per direction that the
// kernel walks on every insert, so their cost grows with the number
// installed and dominates (see the package documentation).
func BenchmarkInstallPairs(b *testing.B) {
	needESP(b)
	for _, shape := range []struct {
		name  string
		n     int
		local netip.Prefix
	}{
		{"host", benchPairs(10000), netip.MustParsePrefix("10.1.0.1/32")},
		{"subnet", benchPairs(10000) / 10, tsA},
	} {
		cs := manyPairs(shape.n, 0x40000000, shape.local)
		for _, mode := range []string{"one-request-at-a-time", "per-pair", "batched", "library"} {
			b.Run(shape.name+"/"+mode, func(b *testing.B) {
				benchInstall(b, cs, mode)
			})
		}
	}
}

func benchInstall(b *testing.B, cs []*sa.ChildSA, mode string) {
	n := len(cs)
	_, path := newNamedNS(b)
	window := 64
	if mode == "one-request-at-a-time" {
		window = 1
	}
	d, err := New(context.Background(), Config{NetNS: path, Window: window})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	var h *netlink.Handle
	if mode == "library" {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			b.Fatal(err)
		}
		defer ns.Close()
		if h, err = netlink.NewHandleAt(ns, unix.NETLINK_XFRM); err != nil {
			b.Fatal(err)
		}
		defer h.Close()
	}
	b.ResetTimer()
	for range b.N {
		switch mode {
		case "batched":
			if err := d.InstallChildren(ctx, cs); err != nil {
				b.Fatal(err)
			}
		case "library":
			for _, c := range cs {
				if err := libraryInstall(h, d, c); err != nil {
					b.Fatal(err)
				}
			}
		default:
			for _, c := range cs {
				if err := d.InstallChild(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		if err := d.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// libraryInstall installs a pair with vishvananda/netlink's XfrmStateAdd
// and XfrmPolicyAdd, one request and ack at a time on h's socket.
func libraryInstall(h *netlink.Handle, d *DataPlane, c *sa.ChildSA) error {
	reqid := int(d.cfg.ReqidBase + c.Reqid)
	ip := func(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
	ipnet := func(p netip.Prefix) *net.IPNet {
		return &net.IPNet{IP: ip(p.Addr()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	for i, dir := range []*sa.SADir{&c.In, &c.Out} {
		st := &netlink.XfrmState{Src: ip(dir.Src), Dst: ip(dir.Dst), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
			Spi: int(dir.SPI), Reqid: reqid, Crypt: &netlink.XfrmStateAlgo{Name: dir.Encr, Key: dir.EncrKey},
			Auth:   &netlink.XfrmStateAlgo{Name: dir.Integ, Key: dir.IntegKey, TruncateLen: int(dir.TruncBits)},
			Replay: &netlink.XfrmReplayState{OSeq: uint32(c.Counters.OutSeq)}}
		if i == 0 {
			st.ReplayWindow = 32
		}
		if err := h.XfrmStateAdd(st); err != nil {
			return err
		}
	}
	l, r := ipnet(c.LocalTS[0].Prefix), ipnet(c.RemoteTS[0].Prefix)
	for _, p := range []*netlink.XfrmPolicy{
		{Src: l, Dst: r, Dir: netlink.XFRM_DIR_OUT, Tmpls: []netlink.XfrmPolicyTmpl{{Src: ip(c.Out.Src), Dst: ip(c.Out.Dst), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: reqid}}},
		{Src: r, Dst: l, Dir: netlink.XFRM_DIR_IN, Tmpls: []netlink.XfrmPolicyTmpl{{Src: ip(c.In.Src), Dst: ip(c.In.Dst), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: reqid}}},
		{Src: r, Dst: l, Dir: netlink.XFRM_DIR_FWD, Tmpls: []netlink.XfrmPolicyTmpl{{Src: ip(c.In.Src), Dst: ip(c.In.Dst), Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: reqid}}},
	} {
		if err := h.XfrmPolicyAdd(p); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkCounters reads the counters of 10,000 installed pairs (two
// pipelined GETAE per pair), the periodic sync of the active node.
func BenchmarkCounters(b *testing.B) {
	needESP(b)
	n := benchPairs(10000)
	cs := manyPairs(n, 0x48000000, netip.MustParsePrefix("10.1.0.1/32"))
	_, path := newNamedNS(b)
	d, err := New(context.Background(), Config{NetNS: path})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.InstallChildren(ctx, cs); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = d.Flush(ctx) }()
	b.ResetTimer()
	for range b.N {
		m, err := d.Counters(ctx)
		if err != nil || len(m) != n {
			b.Fatalf("%d pairs, %v", len(m), err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "pairs/s")
}
