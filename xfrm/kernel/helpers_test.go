package kernel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"ikegw/ike/sa"
)

// inVM is set by scripts/vm/run.sh: there the kernel has ESP, and a probe
// failure is a test failure instead of a skip.
var inVM = os.Getenv("IKEGW_IN_VM") == "1"

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, XFRM)")
	}
}

var (
	probeOnce sync.Once
	probeErr  error
)

// needESP skips when the kernel cannot hold ESP states, except in the VM
// where that is a failure.
func needESP(t testing.TB) {
	t.Helper()
	needRoot(t)
	probeOnce.Do(func() { probeErr = Probe(context.Background()) })
	if probeErr != nil {
		if inVM {
			t.Fatalf("IKEGW_IN_VM=1 but the kernel cannot hold ESP states: %v", probeErr)
		}
		t.Skipf("kernel ESP unavailable (%v); these tests run in the VM: scripts/vm/test-kernel.sh", probeErr)
	}
}

func randName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newNamedNS creates a named network namespace removed at cleanup and
// returns its name and path.
func newNamedNS(t testing.TB) (string, string) {
	t.Helper()
	name := randName("ikegwk-")
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name, "/run/netns/" + name
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs f on a thread in the namespace at path.
func inNS(t testing.TB, path string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	f()
}

func newDP(t testing.TB, nsPath string) *DataPlane {
	t.Helper()
	d, err := New(context.Background(), Config{NetNS: nsPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Flush(context.Background()); err != nil && err.Error() != "xfrm: data plane closed" {
			t.Errorf("flush: %v", err)
		}
		_ = d.Close()
	})
	return d
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// suite is an ESP algorithm combination.
type suite struct {
	name           string
	encr           string
	encrLen        int
	integ          string
	integLen, bits int
}

var suites = []suite{
	{"aes128-cbc-sha1", sa.EncrAESCBC, 16, sa.IntegSHA1, 20, 96},
	{"aes128-cbc-sha256", sa.EncrAESCBC, 16, sa.IntegSHA256, 32, 128},
	{"aes128-cbc-sha384", sa.EncrAESCBC, 16, sa.IntegSHA384, 48, 192},
	{"aes128-cbc-sha512", sa.EncrAESCBC, 16, sa.IntegSHA512, 64, 256},
	{"aes256-cbc-sha1", sa.EncrAESCBC, 32, sa.IntegSHA1, 20, 96},
	{"aes256-cbc-sha256", sa.EncrAESCBC, 32, sa.IntegSHA256, 32, 128},
	{"aes256-cbc-sha384", sa.EncrAESCBC, 32, sa.IntegSHA384, 48, 192},
	{"aes256-cbc-sha512", sa.EncrAESCBC, 32, sa.IntegSHA512, 64, 256},
	{"aes128-gcm16", sa.EncrAESGCM, 20, "", 0, 128},
	{"aes256-gcm16", sa.EncrAESGCM, 36, "", 0, 128},
}

func keyFor(label string, spi uint32, n int) []byte {
	var out []byte
	for i := byte(0); len(out) < n; i++ {
		h := sha256.Sum256(binary.BigEndian.AppendUint32([]byte(label+string([]byte{i})), spi))
		out = append(out, h[:]...)
	}
	return out[:n]
}

func dir(s suite, spi uint32, src, dst netip.Addr) sa.SADir {
	d := sa.SADir{SPI: spi, Src: src, Dst: dst, Encr: s.encr, EncrKey: keyFor("e", spi, s.encrLen), TruncBits: uint16(s.bits)}
	if s.integ != "" {
		d.Integ, d.IntegKey = s.integ, keyFor("a", spi, s.integLen)
	}
	return d
}

// mirrored returns the two ends of one tunnel: a (addrA, tsA) and b.
func mirrored(s suite, spiA, spiB uint32, addrA, addrB netip.Addr, tsA, tsB netip.Prefix, reqid uint32) (*sa.ChildSA, *sa.ChildSA) {
	base := sa.ChildSA{Version: 1, Mode: sa.Tunnel, Protocol: 50, Reqid: reqid, State: sa.ChildInstalled,
		Established: time.Now().UnixNano()}
	a, b := base, base
	a.In, a.Out = dir(s, spiA, addrB, addrA), dir(s, spiB, addrA, addrB)
	b.In, b.Out = dir(s, spiB, addrA, addrB), dir(s, spiA, addrB, addrA)
	a.LocalTS, a.RemoteTS = []sa.TrafficSelector{{Prefix: tsA}}, []sa.TrafficSelector{{Prefix: tsB}}
	b.LocalTS, b.RemoteTS = []sa.TrafficSelector{{Prefix: tsB}}, []sa.TrafficSelector{{Prefix: tsA}}
	return &a, &b
}

// getSA reads one SA with XFRM_MSG_GETSA.
func (d *DataPlane) getSA(ctx context.Context, id saID) (*stateInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := d.c.exchange(ctx, []request{{typ: nl.XFRM_MSG_GETSA, body: id.usersaID(), reply: true, op: "get SA " + id.String()}})
	if res[0].err != nil {
		return nil, res[0].err
	}
	return parseState(res[0].body)
}

// ourPolicies counts the policies in d's reqid range.
func (d *DataPlane) ourPolicies(ctx context.Context) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pols, err := d.dumpPolicies(ctx)
	n := 0
	for _, p := range pols {
		if d.ownsPolicy(p) {
			n++
		}
	}
	return n, err
}

// newVethPair creates namespaces A and B joined by a veth: vA 192.0.2.1/24
// and 2001:db8::1/64 in A, vB 192.0.2.2/24 and 2001:db8::2/64 in B.
func newVethPair(t testing.TB) (nsA, pathA, nsB, pathB string) {
	t.Helper()
	nsA, pathA = newNamedNS(t)
	nsB, pathB = newNamedNS(t)
	run(t, "ip", "-n", nsA, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", nsB)
	for _, x := range []struct{ ns, dev, addr, addr6 string }{{nsA, "vA", "192.0.2.1/24", "2001:db8::1/64"}, {nsB, "vB", "192.0.2.2/24", "2001:db8::2/64"}} {
		run(t, "ip", "-n", x.ns, "addr", "add", x.addr, "dev", x.dev)
		run(t, "ip", "-n", x.ns, "addr", "add", x.addr6, "dev", x.dev, "nodad")
		run(t, "ip", "-n", x.ns, "link", "set", x.dev, "up")
	}
	return nsA, pathA, nsB, pathB
}
