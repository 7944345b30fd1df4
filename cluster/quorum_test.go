package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// stallingLogs holds StoreLogs while stalled: a leader whose log write
// (fsync) is slow. entered is signalled when a write starts waiting.
type stallingLogs struct {
	raft.LogStore
	mu      sync.Mutex
	stall   chan struct{} // nil: not stalled
	entered chan struct{}
}

func (s *stallingLogs) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	ch := s.stall
	s.mu.Unlock()
	if ch != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-ch
	}
	return s.LogStore.StoreLogs(logs)
}

func (s *stallingLogs) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *stallingLogs) setStall(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on && s.stall == nil {
		s.stall = make(chan struct{})
	}
	if !on && s.stall != nil {
		close(s.stall)
		s.stall = nil
	}
}

// A leader whose leader loop is stuck in a log write is still confirmed by
// a quorum (raft's VerifyLeader is not: it waits for that loop), a follower
// is refused, and a leader cut off from the others is never confirmed.
func TestConfirmQuorumWhileLeaderLoopBlocked(t *testing.T) {
	stalls := make([]*stallingLogs, len(three))
	c := &tcluster{t: t, roles: three, sealer: testSealer(t)}
	c.logs = func(i int, l raft.LogStore) raft.LogStore {
		stalls[i] = &stallingLogs{LogStore: l, entered: make(chan struct{}, 1)}
		return stalls[i]
	}
	for i := range three {
		c.nodes = append(c.nodes, &tnode{id: "n" + string(rune('1'+i)), dir: t.TempDir()})
	}
	c.startAll()
	t.Cleanup(func() {
		for _, s := range stalls {
			s.setStall(false)
		}
		c.stopAll()
	})
	c.commit(UpsertIKE(testIKE(1)))
	lead := c.leader()
	li := 0
	for i, tn := range c.nodes {
		if tn == lead {
			li = i
		}
	}
	confirm := lead.n.QuorumConfirmer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := confirm.Confirm(ctx); err != nil {
		t.Fatalf("leader %s not confirmed: %v", lead.id, err)
	}
	for _, tn := range c.nodes {
		if tn != lead {
			if err := tn.n.QuorumConfirmer().Confirm(ctx); !errors.Is(err, raft.ErrNotLeader) {
				t.Errorf("follower %s: %v, want raft.ErrNotLeader", tn.id, err)
			}
		}
	}

	// Stall the leader's log write: a commit parks raft's leader loop in it.
	stalls[li].setStall(true)
	go func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer ccancel()
		_ = lead.n.Commit(cctx, UpsertIKE(testIKE(2)))
	}()
	select {
	case <-stalls[li].entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit never reached the leader's log write")
	}
	verify := lead.n.raft.VerifyLeader()
	verified := make(chan error, 1)
	go func() { verified <- verify.Error() }()
	select {
	case err := <-verified:
		t.Fatalf("premise: raft's VerifyLeader answered (%v) while its leader loop was stuck in a log write", err)
	case <-time.After(300 * time.Millisecond):
	}
	for i := range 3 {
		if err := confirm.Confirm(ctx); err != nil {
			t.Fatalf("confirmation %d with the leader loop stuck: %v", i+1, err)
		}
	}
	stalls[li].setStall(false)
	if err := <-verified; err != nil {
		t.Logf("VerifyLeader after the stall: %v", err)
	}

	// Cut off: no confirmation, whether raft has stepped down yet
	// (ErrNotLeader) or not (the context ends).
	c.isolate(lead)
	cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
	err := confirm.Confirm(cctx)
	ccancel()
	if err == nil {
		t.Fatal("a leader cut off from every other voter was confirmed")
	}
	t.Logf("cut-off leader: %v", err)

	// A new leader is elected among the others; reconnected, the old one
	// is not confirmed (its heartbeat is from an older term).
	nl := c.leader(lead)
	c.connectAll()
	cctx, ccancel = context.WithTimeout(context.Background(), 2*time.Second)
	err = confirm.Confirm(cctx)
	ccancel()
	if !errors.Is(err, ErrDeposed) && !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("the old leader after %s's election: %v, want ErrDeposed or raft.ErrNotLeader", nl.id, err)
	}
	if err := nl.n.QuorumConfirmer().Confirm(ctx); err != nil {
		t.Fatalf("new leader %s not confirmed: %v", nl.id, err)
	}
}

// A single-voter cluster confirms at once.
func TestConfirmQuorumSingleVoter(t *testing.T) {
	c := newCluster(t, []Role{RoleGateway}, false, nil)
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := lead.n.QuorumConfirmer().Confirm(ctx); err != nil {
		t.Fatal(err)
	}
}
