package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// ErrDeposed: a voter answered a quorum confirmation from a newer term, so
// this node is no longer the leader (whatever its raft still says).
var ErrDeposed = errors.New("cluster: a voter is in a newer term: no longer leader")

// confirmRetry separates the attempts at a voter whose confirmation
// failed (a refused dial, a reset connection) within one ConfirmQuorum.
const confirmRetry = 10 * time.Millisecond

// QuorumConfirmer confirms this node's leadership with a quorum (Confirm).
// Make one with Node.QuorumConfirmer and keep it: it remembers which voters
// still have a heartbeat of an earlier call in flight.
type QuorumConfirmer struct {
	n *Node

	mu   sync.Mutex
	busy map[raft.ServerID]bool
}

// QuorumConfirmer returns a confirmer for this node.
func (n *Node) QuorumConfirmer() *QuorumConfirmer {
	return &QuorumConfirmer{n: n, busy: map[raft.ServerID]bool{}}
}

func (q *QuorumConfirmer) claim(id raft.ServerID) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.busy[id] {
		return false
	}
	q.busy[id] = true
	return true
}

func (q *QuorumConfirmer) release(id raft.ServerID) {
	q.mu.Lock()
	delete(q.busy, id)
	q.mu.Unlock()
}

// Confirm returns nil once a quorum of voters (this node included)
// has acknowledged a heartbeat this leader sent after the call began: each
// of them then heard from this leader, in its current term, at a time no
// earlier than the call's start. It is what raft's VerifyLeader establishes,
// without raft's leader loop: VerifyLeader queues a request that the leader
// loop takes up between its other work, and that loop writes the log
// (fsync) and feeds the FSM synchronously, so a slow disk or a long apply
// (a large counters sync) delayed every confirmation by as much (seen in the
// lab at load 8: fences for "no quorum confirmation for 100-174ms" while
// raft, whose heartbeats run on their own goroutines, kept its leadership).
// Confirm sends the same heartbeat raft's replication goroutines send
// (an AppendEntries carrying only the term and the leader, which a
// follower's transport handles on its fast path, off its own main loop) to
// every other voter, directly over the transport.
//
// It retries a voter whose RPC failed and waits until a quorum answered,
// ctx ends, or this node is no longer leader in the term it started in
// (raft.ErrNotLeader), or a voter answers from a newer term (ErrDeposed).
// A voter still working on an earlier call's heartbeat is not asked again
// until that one returns, so a cut-off voter costs one goroutine, not one
// per call. Only the leader's role machine calls it (failover.Leadership,
// which races it against VerifyLeader: under packet loss raft's vote,
// counted from every heartbeat and replication reply, often comes first).
func (q *QuorumConfirmer) Confirm(ctx context.Context) error {
	n := q.n
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("cluster: confirm quorum: %w", raft.ErrNotLeader)
	}
	term := n.raft.CurrentTerm()
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("cluster: confirm quorum: configuration: %w", err)
	}
	self := raft.ServerID(n.cfg.NodeID)
	var others []raft.Server
	voters, selfVoter := 0, false
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == self {
			selfVoter = true
			continue
		}
		others = append(others, s)
	}
	if !selfVoter {
		return fmt.Errorf("cluster: confirm quorum: %s is not a voter of the configuration", self)
	}
	need := voters/2 + 1 - 1 // acknowledgements besides this node's own
	if need <= 0 {
		return nil
	}
	addr := n.trans.LocalAddr()
	req := raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{
			// raft.DefaultConfig's, which Open keeps (node.go).
			ProtocolVersion: raft.ProtocolVersionMax,
			ID:              []byte(self),
			Addr:            n.trans.EncodePeer(self, addr),
		},
		// Term and the header's Addr make it a heartbeat (the
		// deprecated Leader field is only read when Addr is empty).
		Term: term,
	}

	type answer struct {
		s    raft.Server
		resp raft.AppendEntriesResponse
		err  error
	}
	results := make(chan answer, len(others))
	ask := func(s raft.Server) bool {
		if !q.claim(s.ID) {
			return false
		}
		go func() {
			a := answer{s: s}
			r := req // each RPC encodes its own copy
			a.err = n.trans.AppendEntries(s.ID, s.Address, &r, &a.resp)
			q.release(s.ID)
			results <- a
		}()
		return true
	}
	waiting := map[raft.ServerID]raft.Server{} // to ask (again)
	for _, s := range others {
		if !ask(s) {
			waiting[s.ID] = s
		}
	}
	acked := 0
	retry := time.NewTimer(confirmRetry)
	defer retry.Stop()
	for {
		select {
		case a := <-results:
			switch {
			case a.err == nil && a.resp.Term > term:
				return fmt.Errorf("%w (%s is in term %d, this leader in %d)", ErrDeposed, a.s.ID, a.resp.Term, term)
			case a.err == nil && a.resp.Success && a.resp.Term == term:
				acked++
				if acked >= need {
					// Raft may have stepped down meanwhile (its own lease
					// check, a transfer) while the voters still took this
					// node for the leader of term: not a confirmation.
					if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
						return fmt.Errorf("cluster: confirm quorum: %w (term %d)", raft.ErrNotLeader, term)
					}
					return nil
				}
			default:
				waiting[a.s.ID] = a.s
			}
		case <-retry.C:
			retry.Reset(confirmRetry)
			if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
				return fmt.Errorf("cluster: confirm quorum: %w (term %d)", raft.ErrNotLeader, term)
			}
			for id, s := range waiting {
				if ask(s) {
					delete(waiting, id)
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-n.shutdown:
			return fmt.Errorf("cluster: confirm quorum: %w", raft.ErrRaftShutdown)
		}
	}
}
