package cluster

import (
	"bytes"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"ikegw/cluster/certs"
	"ikegw/ike/sa"
	"ikegw/store"
)

func memberByID(t *testing.T, n *Node, id string) (Member, bool) {
	t.Helper()
	ms, err := n.Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func readyLeader(t *testing.T, nodes []*Node) *Node {
	t.Helper()
	var l *Node
	waitFor(t, 20*time.Second, "a ready leader", func() bool {
		for _, n := range nodes {
			if n != nil && n.IsLeaderReady() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

func TestMembershipJoinLeaveReap(t *testing.T) {
	dir := t.TempDir()
	labFiles(t, dir, "n1", "n2", "n3", "n4", "n5", "n6")
	fast := func(c *Config) { c.Gossip.ReapFailedAfter = time.Second }
	var nodes []*Node
	start := func(name string, expect int, tune ...func(*Config)) *Node {
		join := ""
		if len(nodes) > 0 {
			join = nodes[0].GossipAddr()
		}
		n, err := openTLSNode(dir, name, join, "127.0.0.1:0", expect, quietLog(), append([]func(*Config){fast}, tune...)...)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { _ = n.Shutdown() })
		nodes = append(nodes, n)
		return n
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		start(name, 3)
	}
	l := readyLeader(t, nodes)
	voters := func() int {
		ms, err := readyLeader(t, nodes).Members()
		if err != nil {
			t.Fatal(err)
		}
		v := 0
		for _, m := range ms {
			if m.Voter {
				v++
			}
		}
		return v
	}
	if v := voters(); v != 3 {
		t.Fatalf("%d voters after bootstrap, want 3", v)
	}
	m, ok := memberByID(t, l, "n2")
	if !ok || m.Status != "alive" || m.Role != RoleGateway || m.Version != "test" || m.MaxCommand != MaxCommandType || !m.InRaft {
		t.Errorf("member n2: %+v", m)
	}

	// A late node (a witness) joins: the leader adds it as a voter.
	n4 := start("n4", 3, func(c *Config) { c.Role = RoleWitness })
	waitFor(t, 20*time.Second, "n4 to become a voter", func() bool {
		m, ok := memberByID(t, readyLeader(t, nodes), "n4")
		return ok && m.Voter && m.Role == RoleWitness
	})
	waitFor(t, 10*time.Second, "n4 to hold the Raft configuration", func() bool { return n4.hasRaftState() })

	// It leaves for good: the leader removes it.
	if err := n4.Leave(); err != nil {
		t.Fatal(err)
	}
	nodes[3] = nil
	waitFor(t, 20*time.Second, "n4 to be removed", func() bool {
		m, ok := memberByID(t, readyLeader(t, nodes), "n4")
		return !ok || !m.InRaft
	})

	// A node with another gossip key cannot join.
	n5, err := openTLSNode(dir, "n5", "", "127.0.0.1:0", 0, quietLog(), func(c *Config) { c.Gossip.SecretKey = bytes.Repeat([]byte{0x17}, 32) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n5.Shutdown() })
	if err := n5.Join(nodes[0].GossipAddr()); err == nil {
		t.Error("join with a wrong gossip key succeeded")
	}
	if _, ok := memberByID(t, readyLeader(t, nodes), "n5"); ok {
		t.Error("node with a wrong gossip key became a member")
	}

	// A node that fails (no leave) is removed after ReapFailedAfter.
	n6 := start("n6", 3)
	waitFor(t, 20*time.Second, "n6 to become a voter", func() bool {
		m, ok := memberByID(t, readyLeader(t, nodes), "n6")
		return ok && m.Voter
	})
	_ = n6.Shutdown()
	nodes[len(nodes)-1] = nil
	waitFor(t, 30*time.Second, "failed n6 to be reaped", func() bool {
		m, ok := memberByID(t, readyLeader(t, nodes), "n6")
		return !ok || !m.InRaft
	})
	if v := voters(); v != 3 {
		t.Errorf("%d voters after reaping, want 3", v)
	}

	// With three voters left, a failed one is kept (until a replacement
	// joins): reaping it would leave two voters.
	var victim int
	for i, n := range nodes[:3] {
		if !n.IsLeaderReady() {
			victim = i
		}
	}
	vid := nodes[victim].ID()
	_ = nodes[victim].Shutdown()
	nodes[victim] = nil
	waitFor(t, 30*time.Second, vid+" seen failed for 2 reap periods", func() bool {
		m, ok := memberByID(t, readyLeader(t, nodes), vid)
		return ok && m.Status == "failed" && time.Since(m.FailedSince) > 2*time.Second
	})
	if m, _ := memberByID(t, readyLeader(t, nodes), vid); !m.InRaft || !m.Voter {
		t.Errorf("failed %s was reaped down to two voters: %+v", vid, m)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	labFiles(t, dir, "n1")
	base := Files{DataDir: filepath.Join(dir, "d"), ClusterKey: filepath.Join(dir, "cluster.key"), TLS: certs.NodeFiles(dir, "n1"), RaftBind: "127.0.0.1:0"}
	cfg := Config{NodeID: "n1", Log: quietLog()}
	for name, f := range map[string]func(*Files){
		"missing key":  func(f *Files) { f.ClusterKey = filepath.Join(dir, "nope") },
		"missing cert": func(f *Files) { f.TLS.Cert = filepath.Join(dir, "nope.pem") },
		"bad bind":     func(f *Files) { f.RaftBind = "127.0.0.1:99999" },
	} {
		fs := base
		f(&fs)
		if n, err := Open(cfg, fs); err == nil {
			n.Shutdown()
			t.Errorf("%s: Open succeeded", name)
		}
	}
	// A database sealed under another key is a clear startup error.
	n, err := Open(cfg, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.key")
	if err := store.GenerateClusterKey(other); err != nil {
		t.Fatal(err)
	}
	fs := base
	fs.ClusterKey = other
	if n, err := Open(cfg, fs); err == nil {
		n.Shutdown()
		t.Error("Open with another cluster key succeeded")
	} else {
		t.Logf("wrong key: %v", err)
	}
}

// FuzzNodeMeta feeds arbitrary membership metadata (it arrives from the
// network): it must never panic, and unreadable metadata must leave the
// member out of bootstrap, reconcile and the feature gate.
func FuzzNodeMeta(f *testing.F) {
	good, _ := sa.Marshal(nodeMeta{RaftAddr: "127.0.0.1:1", Role: RoleGateway, MaxCommand: 3, Expect: 3})
	f.Add(good)
	f.Add([]byte{0xa1, 0x01, 0x60})
	f.Fuzz(func(t *testing.T, data []byte) {
		n := &Node{log: quietLog(), roles: map[string]Role{}}
		g := &gossip{n: n, members: map[string]*memberState{}, wake: make(chan struct{}, 1)}
		g.update(&memberlist.Node{Name: "x", Addr: net.IPv4(127, 0, 0, 1), Port: 1, Meta: data}, memberlist.StateAlive)
		g.update(&memberlist.Node{Name: "x", Addr: net.IPv4(127, 0, 0, 1), Port: 1, Meta: data}, memberlist.StateDead)
		ms := g.snapshot()
		if len(ms) != 1 {
			t.Fatalf("%d members", len(ms))
		}
		if g.members["x"].badMet && ms[0].RaftAddr != "" {
			t.Fatal("unreadable metadata exposed a raft address")
		}
		_ = g.clusterMaxCommand()
	})
}
