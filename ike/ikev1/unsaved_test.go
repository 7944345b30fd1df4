package ikev1

import (
	"bytes"
	"testing"
	"time"

	"ikegw/ike/sa"
)

// failOnce fails the first Persist that match accepts.
func failOnce(match func(Persist) bool) (func(Persist) bool, *int) {
	n := 0
	return func(p Persist) bool {
		if n == 0 && match(p) {
			n++
			return true
		}
		return false
	}, &n
}

// sentAfterPersist checks that every list of n that sends data also
// persists first, and returns how many lists sent it.
func sentAfterPersist(t *testing.T, n *node, data []byte) int {
	t.Helper()
	lists := 0
	for i, l := range n.lists {
		persisted := false
		for _, a := range l {
			switch v := a.(type) {
			case Persist:
				persisted = true
			case Send:
				if bytes.Equal(v.Data, data) {
					lists++
					if !persisted {
						t.Fatalf("%s: action list %d sends the reply without a Persist before it: %#v", n.name, i, l)
					}
				}
			}
		}
	}
	return lists
}

// TestFailedQuickModeCommitAnsweredAfterRecommit: the responder's commit
// of its Quick Mode reply fails (the runtime sends nothing). The
// initiator's retransmission of message 1 is answered with the same reply,
// but only behind a new Persist of the pair (and its install); the Quick
// Mode then completes with the pair of the first answer.
func TestFailedQuickModeCommitAnsweredAfterRecommit(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	fail, failed := failOnce(func(p Persist) bool { return len(p.Children) > 0 })
	b.failPersist = fail
	initiate(t, w, a, "to-b")
	if *failed != 1 || len(b.kids) != 0 || len(b.installed) != 0 {
		t.Fatalf("setup: %d failed commits, %d pairs persisted, %d installed: want the Quick Mode's commit failed", *failed, len(b.kids), len(b.installed))
	}
	var reply []byte
	for _, s := range b.eng.ikes {
		for _, x := range s.xchg {
			if x.unsaved {
				reply = x.lastSent
			}
		}
	}
	if reply == nil {
		t.Fatal("no exchange marked unsaved after the failed commit")
	}
	for range 6 {
		w.advance(5 * time.Second) // the initiator retransmits message 1
	}
	_, _, cb := checkPair(t, a, b)
	if st := b.eng.Stats(); st.Resaved != 1 || st.AnsweredFromCache == 0 {
		t.Fatalf("responder stats: %d resaved, %d answered from cache; want 1 and the retransmission answered from the cache", st.Resaved, st.AnsweredFromCache)
	}
	if got := sentAfterPersist(t, b, reply); got == 0 {
		t.Fatal("the reply whose commit failed was never sent")
	}
	if b.kids[cb.In.SPI] == nil || b.installed[cb.In.SPI] == nil {
		t.Fatalf("pair %08x: persisted %v, installed %v; want both after the new commit", cb.In.SPI, b.kids[cb.In.SPI] != nil, b.installed[cb.In.SPI] != nil)
	}
	checkPersistBeforeSend(t, b)
}

// TestFailedMainMode6CommitAnsweredAfterRecommit: the same for the
// responder's Main Mode message 6 (its commit carries the ISAKMP SA).
func TestFailedMainMode6CommitAnsweredAfterRecommit(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	fail, n := failOnce(func(p Persist) bool { return len(p.IKE) > 0 && len(p.Children) == 0 })
	b.failPersist = fail
	initiate(t, w, a, "to-b")
	if *n != 1 || len(b.store) != 0 {
		t.Fatalf("setup: %d failed commits, %d IKE SAs persisted: want message 6's commit failed", *n, len(b.store))
	}
	for range 6 {
		w.advance(5 * time.Second)
	}
	checkPair(t, a, b)
	if st := b.eng.Stats(); st.Resaved != 1 {
		t.Fatalf("responder resaved %d replies, want 1", st.Resaved)
	}
	if len(b.store) != 1 {
		t.Fatalf("%d IKE SAs persisted after the retransmission, want 1", len(b.store))
	}
	checkPersistBeforeSend(t, b)
}

// TestPersistFailedIgnoresOthers: a failed commit that carries no cached
// reply (or names an unknown SA) marks nothing, and a later retransmission
// of a committed reply needs no new commit.
func TestPersistFailedIgnoresOthers(t *testing.T) {
	a, b, w := pairNodes(t, "aes256-sha256-modp2048", "aes256-sha256")
	initiate(t, w, a, "to-b")
	checkPair(t, a, b)
	b.eng.PersistFailed(Persist{})
	b.eng.PersistFailed(Persist{IKE: []*sa.IKESA{{}}})
	for _, r := range b.store {
		b.eng.PersistFailed(Persist{IKE: []*sa.IKESA{r}})
	}
	for _, s := range b.eng.ikes {
		if s.p1 != nil && s.p1.unsaved {
			t.Error("phase 1 marked unsaved by a record without its exchange")
		}
		for _, x := range s.xchg {
			if x.unsaved {
				t.Errorf("exchange %08x marked unsaved", x.msgID)
			}
		}
	}
	if st := b.eng.Stats(); st.Resaved != 0 {
		t.Fatalf("%d resaved without a failure", st.Resaved)
	}
}
