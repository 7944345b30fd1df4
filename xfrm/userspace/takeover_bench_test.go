package userspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

// takeoverChildren returns n pairs to one peer, each with its own local
// /32 selector. shared: every pair has the remote selector 10.99.0.0/24
// (the lab's ikeload tunnels: one route in all); otherwise each has its
// own remote /32 (a route per pair).
func takeoverChildren(n int, shared bool) []*sa.ChildSA {
	cs := make([]*sa.ChildSA, n)
	for i := range cs {
		local := netip.AddrFrom4([4]byte{10, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		remote := netip.MustParsePrefix("10.99.0.0/24")
		if !shared {
			remote = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
		}
		cs[i] = &sa.ChildSA{Version: sa.RecordVersion, Connection: "bench", Child: "net", State: sa.ChildInstalled,
			Reqid: uint32(i + 1), Mode: sa.Tunnel, Protocol: xfrm.ProtoESP, EncapLocalPort: 4500, EncapRemotePort: 4500,
			In: sa.SADir{SPI: 0xc1000000 + uint32(i), Src: outerB, Dst: outerA, Encr: sa.EncrAESCBC, EncrKey: key(16, byte(i)),
				Integ: sa.IntegSHA256, IntegKey: key(32, byte(i+1)), TruncBits: 128},
			Out: sa.SADir{SPI: 0xc2000000 + uint32(i), Src: outerA, Dst: outerB, Encr: sa.EncrAESCBC, EncrKey: key(16, byte(i+2)),
				Integ: sa.IntegSHA256, IntegKey: key(32, byte(i+3)), TruncBits: 128},
			LocalTS:  []sa.TrafficSelector{{Prefix: netip.PrefixFrom(local, 32)}},
			RemoteTS: []sa.TrafficSelector{{Prefix: remote}},
			Lifetime: sa.Lifetime{SoftSeconds: 3000, HardSeconds: 3600},
			Counters: sa.Counters{OutSeq: 1000, InSeq: 900, ReplayBitmap: []uint64{^uint64(0)}},
		}
	}
	return cs
}

// jumpedCopies returns cs with the outbound sequence numbers jumped, as a
// takeover installs them.
func jumpedCopies(cs []*sa.ChildSA) []*sa.ChildSA {
	out := make([]*sa.ChildSA, len(cs))
	for i, c := range cs {
		j := *c
		j.Counters.OutSeq += 11_000_000
		out[i] = &j
	}
	return out
}

// benchEngine starts an engine on a real TUN device with routes in a
// network namespace of its own (root only).
func benchEngine(b *testing.B) *Engine {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a network namespace and a TUN device")
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	name := "ikegw-ubench-" + hex.EncodeToString(rnd[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", "10.64.0.0/32", "dev", "lo"}} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	e, err := New(Config{Sender: &wire{}, NetNSPath: "/var/run/netns/" + name, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// BenchmarkTakeoverInstall compares, on one engine with a real TUN device
// and routes, what a takeover does to the data plane with n pairs:
//
//   - install: InstallChild per pair with the jumped counters (what the
//     daemon's takeover does today);
//   - activate: the pairs were staged beforehand, with their routes (the
//     takeover staged them while its commit was in flight; a standby
//     keeping them pre-installed would pay the same); ActivateChildren
//     moves their counters to the jumped ones and lets them send;
//   - stage: StageChildren of every pair (what activate's pairs paid
//     earlier); it reports the Go heap each staged pair holds.
//
// Shapes: "shared" (one remote /24 for all pairs, as the lab's tunnels) and
// "own" (a remote /32 and so a route per pair).
//
//	go test -run '^$' -bench TakeoverInstall -benchtime 5x ./xfrm/userspace/
func BenchmarkTakeoverInstall(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, shared := range []bool{true, false} {
			shape := map[bool]string{true: "shared", false: "own"}[shared]
			cs := takeoverChildren(n, shared)
			jumped := jumpedCopies(cs)
			for _, mode := range []string{"install", "activate", "stage"} {
				b.Run(fmt.Sprintf("%d/%s/%s", n, shape, mode), func(b *testing.B) {
					benchTakeover(b, mode, cs, jumped)
				})
			}
		}
	}
}

func benchTakeover(b *testing.B, mode string, cs, jumped []*sa.ChildSA) {
	e := benchEngine(b)
	ctx := context.Background()
	var heap uint64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := e.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if mode == "activate" {
			if err := e.StageChildren(ctx, cs); err != nil {
				b.Fatal(err)
			}
		}
		var before runtime.MemStats
		if mode == "stage" {
			runtime.GC()
			runtime.ReadMemStats(&before)
		}
		b.StartTimer()
		switch mode {
		case "install":
			for _, c := range jumped {
				if err := e.InstallChild(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
		case "activate":
			if err := e.ActivateChildren(ctx, jumped); err != nil {
				b.Fatal(err)
			}
		case "stage":
			if err := e.StageChildren(ctx, cs); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if mode == "stage" {
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap = after.HeapAlloc - before.HeapAlloc
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/takeover")
	if mode == "stage" {
		b.ReportMetric(float64(heap)/float64(len(cs)), "heapB/pair")
	}
	if got, _ := e.Installed(ctx); len(got) != len(cs) {
		b.Fatalf("%d pairs installed, want %d", len(got), len(cs))
	}
}
