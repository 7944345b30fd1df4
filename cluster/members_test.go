package cluster

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRemoveAndAddMember: an admin removes a standby voter through the
// leader (refusals first: itself, an unknown node, a removal that breaks
// the quorum), the cluster keeps committing, and the node is joined back
// by its gossip address.
func TestRemoveAndAddMember(t *testing.T) {
	dir := t.TempDir()
	names := []string{"m1", "m2", "m3", "m4", "m5"}
	labFiles(t, dir, names...)
	var nodes []*Node
	start := func(name, join string, expect int) *Node {
		// Restarted nodes come back on new ports: let their names move.
		n, err := openTLSNode(dir, name, join, "127.0.0.1:0", expect, quietLog(), func(c *Config) { c.Gossip.DeadNodeReclaimTime = 100 * time.Millisecond })
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { _ = n.Shutdown() })
		return n
	}
	for _, name := range names {
		join := ""
		if len(nodes) > 0 {
			join = nodes[0].GossipAddr()
		}
		nodes = append(nodes, start(name, join, len(names)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	voters := func() map[string]bool {
		ms, err := readyLeader(t, nodes).Members()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, m := range ms {
			if m.Voter {
				out[m.ID] = true
			}
		}
		return out
	}
	waitFor(t, 20*time.Second, "5 voters", func() bool { return len(voters()) == 5 })
	l := readyLeader(t, nodes)
	if err := l.RemoveMember(ctx, l.ID()); !errors.Is(err, ErrRemoveSelf) {
		t.Fatalf("leader removing itself: %v", err)
	}
	if err := l.RemoveMember(ctx, "nobody"); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: %v", err)
	}
	var o []*Node // the followers
	for _, n := range nodes {
		if n != l {
			o = append(o, n)
		}
	}
	if err := o[0].RemoveMember(ctx, o[1].ID()); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("remove on a follower: %v", err)
	}
	replace := func(old, n *Node) {
		for j, m := range nodes {
			if m == old {
				nodes[j] = n
			}
		}
	}
	// Two followers stop: the cluster (3 of 5) still has a quorum.
	for _, n := range o[2:] {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
		replace(n, nil)
	}
	waitFor(t, 60*time.Second, "the stopped members to be seen failed", func() bool {
		return !l.gossip.alive(o[2].ID()) && !l.gossip.alive(o[3].ID())
	})
	// Removing an alive follower would leave 4 voters, 2 alive: refused.
	err := l.RemoveMember(ctx, o[0].ID())
	if !errors.Is(err, ErrQuorum) {
		t.Fatalf("removal without quorum: %v", err)
	}
	t.Logf("refused as it should: %v", err)
	// Removing a dead one leaves 4 voters, 3 alive: done.
	if err := l.RemoveMember(ctx, o[3].ID()); err != nil {
		t.Fatalf("remove the dead %s: %v", o[3].ID(), err)
	}
	// Now {leader, o0, o1, o2 (dead)}: removing o0 leaves 3 voters, 2 alive.
	victim := o[0]
	if err := l.RemoveMember(ctx, victim.ID()); err != nil {
		t.Fatalf("remove %s: %v", victim.ID(), err)
	}
	if v := voters(); len(v) != 3 || v[victim.ID()] || v[o[3].ID()] {
		t.Fatalf("voters after removals: %v", v)
	}
	waitFor(t, 10*time.Second, "the removed node to know it", victim.Removed)
	// It stays out: reconcile does not add it back.
	time.Sleep(2 * time.Second)
	if v := voters(); v[victim.ID()] {
		t.Fatalf("the removed node was added back: %v", v)
	}
	// The cluster still commits (2 of 3).
	if err := readyLeader(t, nodes).Commit(ctx, UpsertIKE(testIKE(7))); err != nil {
		t.Fatalf("commit after removal: %v", err)
	}
	// {leader, o1, o2 (dead)}: removing o1 would leave 1 of 2 alive.
	if err := l.RemoveMember(ctx, o[1].ID()); !errors.Is(err, ErrQuorum) {
		t.Fatalf("removal leaving one alive voter of two: %v", err)
	}
	n2 := start(o[2].ID(), l.GossipAddr(), 0)
	replace(o[2], n2)

	// Join it back: it is restarted (a removed node left gossip) and an
	// admin joins it through any member, here a follower.
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}
	nv := start(victim.ID(), "", 0)
	replace(victim, nv)
	victim = nv
	via := o[1] // a follower
	waitFor(t, 20*time.Second, "the leader to see the restarted node", func() bool { return l.gossip.alive(n2.ID()) })
	name, err := via.AddMember(ctx, victim.GossipAddr())
	if err != nil || name != victim.ID() {
		t.Fatalf("join back through %s: %q %v", via.ID(), name, err)
	}
	if v := voters(); len(v) != 4 || !v[victim.ID()] {
		t.Fatalf("voters after join: %v", v)
	}
	if _, err := via.AddMember(ctx, "nohostport"); err == nil {
		t.Fatal("join with a bad address accepted")
	}
}
