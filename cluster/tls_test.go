package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/cluster/certs"
	"ikegw/ike/sa"
	"ikegw/store"
)

// labFiles creates a CA, node certificates for names (IP SAN 127.0.0.1) and
// a cluster key in dir.
func labFiles(t testing.TB, dir string, names ...string) {
	t.Helper()
	ca, err := certs.GenerateCA(dir, "ikegw-test")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := ca.IssueNode(dir, n, nil, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.GenerateClusterKey(filepath.Join(dir, "cluster.key")); err != nil {
		t.Fatal(err)
	}
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTLSRefusesForeignAndMissingCertificates(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	labFiles(t, dir, "n1", "n2")
	labFiles(t, other, "n2")
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	cert, pool, err := certs.NodeFiles(dir, "n1").Load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewTLSStreamLayer("127.0.0.1:0", "", cert, pool, log)
	if err != nil {
		t.Fatal(err)
	}
	srvTrans := NewTLSTransport(srv, log)
	t.Cleanup(func() { srvTrans.Close() })
	// Answer RequestVote so a good client can complete an RPC.
	go func() {
		for rpc := range srvTrans.Consumer() {
			rpc.Respond(&raft.RequestVoteResponse{Term: 1}, nil)
		}
	}()
	addr := raft.ServerAddress(srv.Addr().String())
	vote := func(tr raft.Transport) error {
		var resp raft.RequestVoteResponse
		return tr.RequestVote("n1", addr, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("x"), Addr: []byte("x")}, Term: 1}, &resp)
	}

	// Same CA: accepted.
	goodCert, goodPool, err := certs.NodeFiles(dir, "n2").Load()
	if err != nil {
		t.Fatal(err)
	}
	good, err := NewTLSStreamLayer("127.0.0.1:0", "", goodCert, goodPool, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	goodTrans := NewTLSTransport(good, quietLog())
	t.Cleanup(func() { goodTrans.Close() })
	if err := vote(goodTrans); err != nil {
		t.Fatalf("RPC with a cluster certificate: %v", err)
	}

	// Another CA's certificate: refused and logged.
	// The client trusts our CA (so it would talk to us), but its own
	// certificate is signed by another CA.
	badCert, _, err := certs.NodeFiles(other, "n2").Load()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := NewTLSStreamLayer("127.0.0.1:0", "", badCert, pool, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	badTrans := NewTLSTransport(bad, quietLog())
	t.Cleanup(func() { badTrans.Close() })
	if err := vote(badTrans); err == nil {
		t.Fatal("RPC with a foreign CA's certificate succeeded")
	}
	waitFor(t, 5*time.Second, "refusal logged", func() bool {
		return strings.Count(logs.String(), "refused raft connection") >= 1
	})

	// No certificate at all: refused and logged.
	n := strings.Count(logs.String(), "refused raft connection")
	c, err := tls.Dial("tcp", string(addr), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatal("connection without a certificate was served")
	}
	waitFor(t, 5*time.Second, "second refusal logged", func() bool {
		return strings.Count(logs.String(), "refused raft connection") > n
	})
	// TLS 1.2 is refused too.
	c, err = tls.Dial("tcp", string(addr), &tls.Config{Certificates: []tls.Certificate{goodCert}, RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.2 handshake succeeded")
	}
	if strings.Contains(logs.String(), "BEGIN") || strings.Contains(logs.String(), "PRIVATE") {
		t.Error("key material in logs")
	}
}

// ikeN is a distinct IKE SA record for any i.
func ikeN(i int) *sa.IKESA {
	s := testIKE(0)
	binary.BigEndian.PutUint32(s.Cookies.I[:4], uint32(i))
	binary.BigEndian.PutUint32(s.Cookies.R[:4], uint32(i))
	return s
}

// ---- the node process: the test binary re-executed ----

const helperEnv = "IKEGW_CLUSTER_TEST_NODE"

// TestClusterNodeProcess is not a test: it is the body of a node process
// started by TestTLSProcessesKillLeader. It reads commands on stdin.
func TestClusterNodeProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for TestTLSProcessesKillLeader; runs only when re-executed")
	}
	// spec: name dir join
	f := strings.Split(spec, "|")
	if len(f) != 6 {
		t.Fatalf("bad %s %q", helperEnv, spec)
	}
	name, dir, join, role, raftBind := f[0], f[1], f[2], Role(f[3]), f[4]
	gossipPort, _ := strconv.Atoi(f[5])
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := openTLSNode(dir, name, join, raftBind, 3, log, func(c *Config) {
		c.Role = role
		c.Gossip.BindPort = gossipPort
	})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	var timesReady atomic.Int64 // leaderships that reached "ready"
	go func() {
		for ev := range n.LeadershipChanges() {
			if ev.Ready {
				timesReady.Add(1)
			}
		}
	}()
	fmt.Printf("ready %s %s\n", n.Addr(), n.GossipAddr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) == 0 {
			continue
		}
		switch w[0] {
		case "status":
			st := n.Stats()
			fmt.Printf("status %v %q %d %d\n", st.LeaderReady, st.LeaderID, st.Term, timesReady.Load())
		case "transfer":
			if err := n.TransferLeadership(w[1]); err != nil {
				fmt.Printf("error %v\n", err)
			} else {
				fmt.Println("ok")
			}
		case "commit":
			from, _ := strconv.Atoi(w[1])
			cnt, _ := strconv.Atoi(w[2])
			fmt.Println(commitRange(n, from, cnt))
		case "count":
			c := 0
			err := n.Store().View(func(tx *store.Tx) error {
				return tx.ForEachIKE(func(*sa.IKESA) error { c++; return nil })
			})
			fmt.Printf("count %d %v\n", c, err)
		}
	}
	_ = n.Shutdown()
	os.Exit(0)
}

// commitRange commits ikeN(from..from+cnt-1) from 16 concurrent committers.
func commitRange(n *Node, from, cnt int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, cnt)
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs <- n.Commit(ctx, UpsertIKE(ikeN(i)))
			}
		}()
	}
	for i := from; i < from+cnt; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return "error " + err.Error()
		}
	}
	return "ok"
}

// openTLSNode opens a production node on loopback with gossip bootstrap.
func openTLSNode(dir, name, join, raftBind string, expect int, log *slog.Logger, tune ...func(*Config)) (*Node, error) {
	cfg := Config{
		NodeID: name, Role: RoleGateway, Log: log,
		Gossip: &GossipConfig{
			BindAddr: "127.0.0.1", SecretKey: bytes.Repeat([]byte{0x42}, 32),
			BootstrapExpect: expect, Version: "test", ReconcileInterval: 200 * time.Millisecond, LocalTimings: true,
		},
	}
	for _, f := range tune {
		f(&cfg)
	}
	if join != "" {
		cfg.Gossip.Join = []string{join}
	}
	return Open(cfg, Files{
		DataDir: filepath.Join(dir, name), ClusterKey: filepath.Join(dir, "cluster.key"),
		TLS: certs.NodeFiles(dir, name), RaftBind: raftBind,
	})
}

type proc struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	log  *syncBuf
	raft string
	gsp  string
}

func (p *proc) ask(t *testing.T, line string) []string {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, line); err != nil {
		t.Fatalf("%s: send %q: %v", p.name, line, err)
	}
	if !p.out.Scan() {
		t.Fatalf("%s: no answer to %q (%v); its log:\n%s", p.name, line, p.out.Err(), p.log.String())
	}
	return strings.Fields(p.out.Text())
}

func startProc(t *testing.T, dir, name, join string, role Role) *proc {
	return startProcAt(t, dir, name, join, role, "127.0.0.1:0", 0)
}

// startProcAt starts a node process on the given Raft and gossip ports
// (a restart on the same ports, as in production).
func startProcAt(t *testing.T, dir, name, join string, role Role, raftBind string, gossipPort int) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestClusterNodeProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join([]string{name, dir, join, string(role), raftBind, strconv.Itoa(gossipPort)}, "|"))
	p := &proc{name: name, cmd: cmd, log: &syncBuf{}}
	cmd.Stderr = p.log
	var err error
	if p.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, p.log.String())
		}
	})
	if !p.out.Scan() {
		t.Fatalf("%s did not start: %s", name, p.log.String())
	}
	w := strings.Fields(p.out.Text())
	if len(w) != 3 || w[0] != "ready" {
		t.Fatalf("%s: %q; log:\n%s", name, p.out.Text(), p.log.String())
	}
	p.raft, p.gsp = w[1], w[2]
	return p
}

// leaderOf polls the processes until one is a ready leader.
func leaderOf(t *testing.T, ps []*proc) *proc {
	t.Helper()
	var l *proc
	waitFor(t, 20*time.Second, "a ready leader among the processes", func() bool {
		for _, p := range ps {
			if w := p.ask(t, "status"); len(w) > 1 && w[1] == "true" {
				l = p
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	return l
}

// commitOnLeader commits ikeN(from..from+cnt-1) on the ready leader,
// retrying on the new leader if leadership moves meanwhile (a shared,
// loaded machine may starve a leader past its lease). It returns the
// leader that acknowledged every record.
func commitOnLeader(t *testing.T, ps []*proc, from, cnt int) *proc {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		l := leaderOf(t, ps)
		w := l.ask(t, fmt.Sprintf("commit %d %d", from, cnt))
		if w[0] == "ok" {
			return l
		}
		msg := strings.Join(w, " ")
		if !strings.Contains(msg, ErrNotLeader.Error()) && !strings.Contains(msg, ErrLeadershipLost.Error()) || time.Now().After(deadline) {
			t.Fatalf("commit on %s: %s", l.name, msg)
		}
		t.Logf("commit on %s: %s; retrying on the new leader", l.name, msg)
	}
}

// TestTLSProcessesKillLeader runs three node processes (this test binary
// re-executed) with real TCP + mutual TLS, bbolt stores with fsync and
// memberlist bootstrap, commits, SIGKILLs the leader and checks that the
// survivors elect a leader and hold every committed record.
func TestTLSProcessesKillLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	dir := t.TempDir()
	labFiles(t, dir, "n1", "n2", "n3")
	p1 := startProc(t, dir, "n1", "", RoleGateway)
	p2 := startProc(t, dir, "n2", p1.gsp, RoleGateway)
	p3 := startProc(t, dir, "n3", p1.gsp, RoleGateway)
	ps := []*proc{p1, p2, p3}
	l := commitOnLeader(t, ps, 0, 300)
	if err := l.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = l.cmd.Wait()
	var rest []*proc
	for _, p := range ps {
		if p != l {
			rest = append(rest, p)
		}
	}
	nl := leaderOf(t, rest)
	// The new leader applied every committed entry before declaring itself
	// ready; the other survivor learns the commit index from it.
	if w := nl.ask(t, "count"); w[1] != "300" {
		t.Errorf("new leader %s holds %s records after the old one died, want 300 (%v)", nl.name, w[1], w)
	}
	for _, p := range rest {
		waitFor(t, 10*time.Second, p.name+" to hold 300 records", func() bool {
			return p.ask(t, "count")[1] == "300"
		})
	}
	commitOnLeader(t, rest, 300, 50)
	for _, p := range rest {
		waitFor(t, 10*time.Second, p.name+" to hold 350 records", func() bool {
			return p.ask(t, "count")[1] == "350"
		})
	}
	// The killed node restarts on its data and its ports, and catches up.
	_, gport, _ := net.SplitHostPort(l.gsp)
	gp, _ := strconv.Atoi(gport)
	back := startProcAt(t, dir, l.name, rest[0].gsp, RoleGateway, l.raft, gp)
	waitFor(t, 20*time.Second, back.name+" to catch up after kill -9 and restart", func() bool {
		return back.ask(t, "count")[1] == "350"
	})
	commitOnLeader(t, []*proc{back, rest[0], rest[1]}, 350, 10)
	waitFor(t, 10*time.Second, back.name+" to hold 360 records", func() bool {
		return back.ask(t, "count")[1] == "360"
	})
}

// TestTLSProcessesWitnessNeverStaysLeader runs two gateways and a witness as
// processes over TLS. Whatever the elections do, while the witness and a
// gateway are up a ready gateway ends up leading, also after the leading
// gateway is SIGKILLed.
func TestTLSProcessesWitnessNeverStaysLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	dir := t.TempDir()
	labFiles(t, dir, "g1", "g2", "w1")
	w := startProc(t, dir, "w1", "", RoleWitness)
	g1 := startProc(t, dir, "g1", w.gsp, RoleGateway)
	g2 := startProc(t, dir, "g2", w.gsp, RoleGateway)
	all := []*proc{w, g1, g2}
	gatewayLeads := func(ps []*proc) *proc {
		var l *proc
		waitFor(t, 30*time.Second, "a gateway to lead", func() bool {
			l = leaderOf(t, ps)
			return l != w
		})
		return l
	}
	gatewayLeads(all)
	// Move leadership to the witness: it must hand it back to a gateway.
	waitFor(t, 30*time.Second, "the witness to have led", func() bool {
		if w.ask(t, "status")[4] != "0" {
			return true
		}
		if l := leaderOf(t, all); l != w {
			if got := l.ask(t, "transfer w1"); got[0] != "ok" {
				t.Logf("transfer to the witness: %v (retrying)", got)
			}
		}
		return false
	})
	commitOnLeader(t, all, 0, 20)
	l := gatewayLeads(all)
	if err := l.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = l.cmd.Wait()
	var rest []*proc
	for _, p := range all {
		if p != l {
			rest = append(rest, p)
		}
	}
	nl := gatewayLeads(rest)
	if nl.ask(t, "count")[1] != "20" {
		t.Errorf("surviving gateway %s lost records", nl.name)
	}
}
