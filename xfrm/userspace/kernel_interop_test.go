package userspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

// interopPair is a pair with the given algorithms in both directions.
func interopPair(encr string, keyLen int, integ string) (kern, user *sa.ChildSA) {
	kern, user = pairFor(true)
	dirs := []*sa.SADir{&kern.Out, &kern.In}
	for i, d := range dirs {
		d.Encr, d.EncrKey, d.Integ, d.IntegKey, d.TruncBits = encr, key(keyLen, byte(0x20*i+1)), "", nil, 128
		if integ != "" {
			il, trunc := xfrm.IntegParams(integ)
			d.Integ, d.IntegKey, d.TruncBits = integ, key(il, byte(0x20*i+9)), uint16(trunc)
		}
	}
	user.Out, user.In = kern.In, kern.Out
	return kern, user
}

// ipXfrmState is the `ip xfrm state add` of one direction with UDP
// encapsulation on 4500.
func ipXfrmState(ns string, d *sa.SADir) []string {
	args := []string{"ip", "-n", ns, "xfrm", "state", "add", "src", d.Src.String(), "dst", d.Dst.String(),
		"proto", "esp", "spi", fmt.Sprintf("0x%08x", d.SPI), "reqid", "1", "mode", "tunnel",
		"replay-window", "32", "encap", "espinudp", "4500", "4500", "0.0.0.0"}
	if d.Encr == sa.EncrAESGCM {
		return append(args, "aead", d.Encr, "0x"+hex.EncodeToString(d.EncrKey), "128")
	}
	return append(args, "enc", d.Encr, "0x"+hex.EncodeToString(d.EncrKey),
		"auth-trunc", d.Integ, "0x"+hex.EncodeToString(d.IntegKey), fmt.Sprint(d.TruncBits))
}

// kernelHasESP tells whether this kernel can install an ESP state with UDP
// encapsulation (the host's cannot; the VM's can).
func kernelHasESP(t *testing.T, ns string) error {
	d := &sa.SADir{SPI: 0x1000, Src: outerA, Dst: outerB, Encr: sa.EncrAESGCM, EncrKey: key(20, 1)}
	out, err := exec.Command(ipXfrmState(ns, d)[0], ipXfrmState(ns, d)[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	run(t, "ip", "-n", ns, "xfrm", "state", "flush")
	return nil
}

// TestKernelInterop pings between the Linux kernel's ESP (XFRM states and
// policies with espinudp encapsulation, set by hand) in one namespace and
// the userspace engine in another, for every algorithm the engine has. It
// needs a kernel with ESP: on the host it skips; run it in the VM with
//
//	go test -c -o ~/.cache/userspace.test ./xfrm/userspace
//	scripts/vm/run.sh ~/.cache/userspace.test -test.run KernelInterop -test.v
func TestKernelInterop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth, TUN and XFRM states")
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	probe := "ikegw-up-" + hex.EncodeToString(rnd[:])
	run(t, "ip", "netns", "add", probe)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", probe).Run() })
	if err := kernelHasESP(t, probe); err != nil {
		t.Skipf("this kernel has no ESP with UDP encapsulation (%v); run the test in the VM (scripts/vm/run.sh)", err)
	}
	cases := []struct {
		encr   string
		keyLen int
		integ  string
	}{
		{sa.EncrAESGCM, 20, ""}, {sa.EncrAESGCM, 36, ""},
		{sa.EncrAESCBC, 16, sa.IntegSHA1}, {sa.EncrAESCBC, 32, sa.IntegSHA256},
		{sa.EncrAESCBC, 32, sa.IntegSHA384}, {sa.EncrAESCBC, 16, sa.IntegSHA512},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s-%d-%s", c.encr, c.keyLen, c.integ)
		t.Run(name, func(t *testing.T) { kernelInterop(t, interopPairOf(c.encr, c.keyLen, c.integ)) })
	}
}

func interopPairOf(encr string, keyLen int, integ string) [2]*sa.ChildSA {
	k, u := interopPair(encr, keyLen, integ)
	return [2]*sa.ChildSA{k, u}
}

func kernelInterop(t *testing.T, pair [2]*sa.ChildSA) {
	kc, uc := pair[0], pair[1]
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	k := &nsNode{name: "ikegw-uk-" + id, outer: outerA, inner: netip.MustParseAddr("10.1.0.1")}
	u := &nsNode{name: "ikegw-uu-" + id, outer: outerB, inner: netip.MustParseAddr("10.2.0.1")}
	vethK, vethU := "vuk"+id, "vuu"+id
	for _, n := range []*nsNode{k, u} {
		run(t, "ip", "netns", "add", n.name)
		name := n.name
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	}
	run(t, "ip", "link", "add", vethK, "netns", k.name, "type", "veth", "peer", "name", vethU, "netns", u.name)
	for _, x := range []struct {
		n    *nsNode
		veth string
	}{{k, vethK}, {u, vethU}} {
		ns := []string{"ip", "-n", x.n.name}
		run(t, append(ns, "link", "set", "lo", "up")...)
		run(t, append(ns, "link", "set", x.veth, "up")...)
		run(t, append(ns, "addr", "add", x.n.outer.String()+"/24", "dev", x.veth)...)
		run(t, append(ns, "addr", "add", x.n.inner.String()+"/32", "dev", "lo")...)
	}

	// Kernel side: states, policies, a route for the remote network and
	// a UDP socket on 4500 with UDP_ENCAP_ESPINUDP (as charon opens it),
	// without which the kernel does not decapsulate.
	run(t, ipXfrmState(k.name, &kc.Out)...)
	run(t, ipXfrmState(k.name, &kc.In)...)
	run(t, "ip", "-n", k.name, "xfrm", "policy", "add", "src", "10.1.0.0/24", "dst", "10.2.0.0/24", "dir", "out",
		"tmpl", "src", outerA.String(), "dst", outerB.String(), "proto", "esp", "reqid", "1", "mode", "tunnel")
	run(t, "ip", "-n", k.name, "xfrm", "policy", "add", "src", "10.2.0.0/24", "dst", "10.1.0.0/24", "dir", "in",
		"tmpl", "src", outerB.String(), "dst", outerA.String(), "proto", "esp", "reqid", "1", "mode", "tunnel")
	run(t, "ip", "-n", k.name, "route", "add", "10.2.0.0/24", "dev", vethK, "src", "10.1.0.1")
	encapSocket(t, k.path())

	// Userspace side.
	u.capture = 3
	u.listen(t)
	e := u.start(t, uc)

	const count = 20
	if got := k.ping(t, u.inner, count, 10); got != count {
		st, _ := e.Stats(uc.ID())
		out, _ := exec.Command("ip", "-n", k.name, "-s", "xfrm", "state").CombinedOutput()
		t.Fatalf("%d of %d replies between kernel ESP and the engine\nengine %+v %+v\nkernel:\n%s", got, count, st, e.EngineStats(), out)
	}
	st, _ := e.Stats(uc.ID())
	t.Logf("engine %+v", st)
	saveKernelPackets(t, &kc.Out, u)
	if st.InPackets != count || st.OutPackets != count || st.AuthFailures+st.ReplayDrops+st.PolicyDrops != 0 {
		t.Fatalf("engine counters %+v", st)
	}
	if kst := kernelStats(t, k.name, &kc.In); kst.replay+kst.replayWindow != 0 || kst.failed != 0 {
		t.Fatalf("kernel inbound state: %+v", kst)
	}

	// Takeover in miniature against the kernel: the engine dies, a new one
	// starts from its last synced counters with OutSeq + margin. The
	// kernel, a real peer, must see no replay and no integrity failure.
	synced, err := e.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u.engine.Store(nil)
	e.Close()
	const margin = 1000
	next := *uc
	next.Counters = synced[uc.ID()]
	next.Counters.OutSeq += margin
	e2 := u.start(t, &next)
	if got := k.ping(t, u.inner, count, 10); got != count {
		t.Fatalf("after takeover: %d of %d replies", got, count)
	}
	kst := kernelStats(t, k.name, &kc.In)
	t.Logf("kernel inbound after takeover %+v", kst)
	if kst.replay+kst.replayWindow != 0 || kst.failed != 0 || kst.seq != count+margin+count {
		t.Fatalf("kernel inbound state after takeover: %+v, want seq %d and no drops", kst, count+margin+count)
	}

	// Negative control, strongSwan ha style: a new engine whose outbound
	// sequence numbers restart from zero. The kernel must drop its packets
	// as replays: this is what the margin prevents, and proves the check
	// above can fail.
	u.engine.Store(nil)
	e2.Close()
	restart := *uc
	restart.Counters = sa.Counters{}
	u.start(t, &restart)
	if got := k.ping(t, u.inner, 5, 2); got != 0 {
		t.Fatalf("a restart from sequence 0 got %d replies through; the kernel should drop them as replays", got)
	}
	if kst := kernelStats(t, k.name, &kc.In); kst.replay+kst.replayWindow < 5 {
		t.Fatalf("kernel counted no replays for sequence numbers that went back: %+v", kst)
	}
}

// saveKernelPackets writes the ESP packets the kernel sent, with the keys
// that sealed them, to $IKEGW_VM_OUT (set by scripts/vm/run.sh) for
// xfrm/esp/testdata/kernel (copy them there by hand after a run with
// IKEGW_VM_KEEP=1): wire bytes from a real peer.
func saveKernelPackets(t *testing.T, d *sa.SADir, n *nsNode) {
	dir := os.Getenv("IKEGW_VM_OUT")
	if dir == "" {
		return
	}
	n.capMu.Lock()
	pkts := n.captured
	n.capMu.Unlock()
	type vector struct {
		Kernel   string   `json:"kernel"`
		SPI      uint32   `json:"spi"`
		Encr     string   `json:"encr"`
		EncrKey  string   `json:"encrKey"`
		Integ    string   `json:"integ,omitempty"`
		IntegKey string   `json:"integKey,omitempty"`
		Trunc    uint16   `json:"truncBits"`
		Inner    string   `json:"inner"` // what every packet carries: src>dst proto
		Packets  []string `json:"packets"`
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	v := vector{Kernel: unix.ByteSliceToString(uts.Release[:]), SPI: d.SPI, Encr: d.Encr, EncrKey: hex.EncodeToString(d.EncrKey),
		Integ: d.Integ, IntegKey: hex.EncodeToString(d.IntegKey), Trunc: d.TruncBits, Inner: "10.1.0.1>10.2.0.1 icmp echo request"}
	for _, p := range pkts {
		v.Packets = append(v.Packets, hex.EncodeToString(p))
	}
	b, _ := json.MarshalIndent(v, "", " ")
	name := strings.NewReplacer("(", "-", ")", "", "/", "-").Replace(strings.TrimSuffix(fmt.Sprintf("%s-%d-%s", d.Encr, len(d.EncrKey), d.Integ), "-")) + ".json"
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Errorf("saving kernel packets: %v", err)
	}
}

type xfrmStats struct {
	seq          uint64 // highest inbound sequence number (anti-replay context)
	replayWindow uint64 // dropped as older than the window
	replay       uint64 // dropped as duplicates
	failed       uint64 // integrity failures
}

var (
	reReplayStats = regexp.MustCompile(`replay-window (\d+) replay (\d+) failed (\d+)`)
	reReplaySeq   = regexp.MustCompile(`anti-replay context: seq 0x([0-9a-f]+)`)
)

// kernelStats reads an SA's replay counters with `ip -s xfrm state get`.
func kernelStats(t *testing.T, ns string, d *sa.SADir) xfrmStats {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-s", "xfrm", "state", "get", "src", d.Src.String(), "dst", d.Dst.String(),
		"proto", "esp", "spi", fmt.Sprintf("0x%08x", d.SPI)).CombinedOutput()
	if err != nil {
		t.Fatalf("ip xfrm state get: %v\n%s", err, out)
	}
	m := reReplayStats.FindStringSubmatch(string(out))
	q := reReplaySeq.FindStringSubmatch(string(out))
	if m == nil || q == nil {
		t.Fatalf("no replay statistics in:\n%s", out)
	}
	var st xfrmStats
	st.replayWindow, _ = strconv.ParseUint(m[1], 10, 64)
	st.replay, _ = strconv.ParseUint(m[2], 10, 64)
	st.failed, _ = strconv.ParseUint(m[3], 10, 64)
	st.seq, _ = strconv.ParseUint(q[1], 16, 64)
	return st
}

// encapSocket opens a UDP socket on 4500 in the namespace at path with
// UDP_ENCAP_ESPINUDP set, for the test's lifetime.
func encapSocket(t *testing.T, path string) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var conn *net.UDPConn
	err = inNetNS(ns, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 4500})
		if err != nil {
			return err
		}
		rc, err := conn.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP)
		})
		if err == nil {
			err = serr
		}
		return err
	})
	if err != nil {
		t.Fatalf("encap socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
}
