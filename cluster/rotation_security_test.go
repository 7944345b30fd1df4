package cluster

import (
	"bytes"
	"strings"
	"testing"
)

// TestGossipKeyRotation: previous gossip keys are accepted but never used
// to send. A node that sends with a key its peer does not hold cannot join
// it; with the new key installed as a previous key first (rotation step 1)
// every combination of the rotation's steps talks.
func TestGossipKeyRotation(t *testing.T) {
	dir := t.TempDir()
	labFiles(t, dir, "old", "step1", "step2", "new", "bad")
	k1, k2 := bytes.Repeat([]byte{0x11}, 32), bytes.Repeat([]byte{0x22}, 32)
	open := func(name string, primary []byte, previous ...[]byte) *Node {
		n, err := openTLSNode(dir, name, "", "127.0.0.1:0", 0, quietLog(), func(c *Config) {
			c.Gossip.SecretKey, c.Gossip.PreviousKeys = primary, previous
		})
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		t.Cleanup(func() { _ = n.Shutdown() })
		return n
	}
	old := open("old", k1)         // before the rotation
	step1 := open("step1", k1, k2) // new key accepted
	step2 := open("step2", k2, k1) // new key sends, old accepted
	newOnly := open("new", k2)     // after the rotation
	if err := step2.Join(old.GossipAddr()); err == nil {
		t.Error("a node sending with the new key joined a node that only has the old one (step 1 skipped)")
	}
	for _, c := range []struct {
		from, to *Node
		what     string
	}{
		{step1, old, "step 1 -> before"},
		{step2, step1, "step 2 -> step 1"},
		{newOnly, step2, "after -> step 2"},
	} {
		if err := c.from.Join(c.to.GossipAddr()); err != nil {
			t.Errorf("%s: join refused: %v", c.what, err)
		}
	}
	err := newOnly.Join(old.GossipAddr())
	if err == nil {
		t.Error("a node with only the new key joined a node with only the old one")
	}
	if _, err := openTLSNode(dir, "bad", "", "127.0.0.1:0", 0, quietLog(), func(c *Config) {
		c.Gossip.PreviousKeys = [][]byte{make([]byte, 7)}
	}); err == nil || !strings.Contains(err.Error(), "previous key 1 is 7 bytes") {
		t.Errorf("a 7-byte previous key: %v", err)
	}
}
