package cluster

import (
	"net"
	"testing"

	"github.com/hashicorp/memberlist"

	"ikegw/ike/sa"
)

// ClusterMaxCommand is the lowest MaxCommand of the alive members: an
// older member holds newer command types off until it leaves or fails.
func TestClusterMaxCommand(t *testing.T) {
	if got := (&Node{}).ClusterMaxCommand(); got != MaxCommandType {
		t.Fatalf("without membership: %d, want this build's %d", got, MaxCommandType)
	}
	n := &Node{log: quietLog(), roles: map[string]Role{}}
	g := &gossip{n: n, members: map[string]*memberState{}, wake: make(chan struct{}, 1)}
	n.gossip = g
	add := func(name string, maxCmd CommandType, state memberlist.NodeStateType) {
		meta, err := sa.Marshal(nodeMeta{RaftAddr: "127.0.0.1:1", Role: RoleGateway, MaxCommand: maxCmd})
		if err != nil {
			t.Fatal(err)
		}
		g.update(&memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 1, Meta: meta}, state)
	}
	add("new", MaxCommandType, memberlist.StateAlive)
	if got := n.ClusterMaxCommand(); got != MaxCommandType {
		t.Fatalf("one current member: %d, want %d", got, MaxCommandType)
	}
	add("old", 3, memberlist.StateAlive)
	if got := n.ClusterMaxCommand(); got != 3 {
		t.Fatalf("with an old member alive: %d, want 3", got)
	}
	add("old", 3, memberlist.StateDead)
	if got := n.ClusterMaxCommand(); got != MaxCommandType {
		t.Fatalf("the old member failed: %d, want %d", got, MaxCommandType)
	}
}
