package cluster

import (
	"testing"
	"time"
)

func TestConfigIndex(t *testing.T) {
	c := newCluster(t, three, false, nil)
	c.commit(UpsertIKE(testIKE(1)))
	c.commit(ConfigApply(1, []byte("connections: []\n")))
	l := c.leader()
	at := l.n.Raft().AppliedIndex()
	c.commit(UpsertIKE(testIKE(2)), ConfigApply(2, []byte("connections: [x]\n")))
	at2 := l.n.Raft().AppliedIndex()
	c.commit(UpsertIKE(testIKE(3)))
	for _, tn := range c.nodes {
		waitFor(t, 10*time.Second, "the entries applied on "+tn.id, func() bool { return tn.n.Raft().AppliedIndex() >= at2+1 })
		if i, ok := tn.n.ConfigIndex(1); !ok || i != at {
			t.Errorf("%s: version 1 at %d %v, want %d", tn.id, i, ok, at)
		}
		if i, ok := tn.n.ConfigIndex(2); !ok || i != at2 {
			t.Errorf("%s: version 2 at %d %v, want %d", tn.id, i, ok, at2)
		}
		if _, ok := tn.n.ConfigIndex(3); ok {
			t.Errorf("%s: found a version never committed", tn.id)
		}
		if _, ok := tn.n.ConfigIndex(0); ok {
			t.Errorf("%s: found version 0", tn.id)
		}
	}
}
