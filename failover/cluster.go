package failover

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"

	"ikegw/cluster"
	"ikegw/failover/role"
)

// ErrNoGateway: no other healthy gateway voter can take leadership.
var ErrNoGateway = errors.New("failover: no other healthy gateway voter to hand leadership to")

// Leadership adapts a cluster.Node to role.Leadership.
type Leadership struct {
	node    *cluster.Node
	confirm *cluster.QuorumConfirmer

	mu     sync.Mutex
	prefer string // node the next StepDown hands leadership to (planned failover --to)
}

// Prefer makes the next StepDown hand leadership to the named gateway (and
// fail if it cannot) instead of any healthy one.
func (l *Leadership) Prefer(to string) {
	l.mu.Lock()
	l.prefer = to
	l.mu.Unlock()
}

var _ role.Leadership = (*Leadership)(nil)

// NewLeadership adapts node. Only one role machine may use it: it consumes
// node.LeadershipChanges.
func NewLeadership(node *cluster.Node) *Leadership {
	return &Leadership{node: node, confirm: node.QuorumConfirmer()}
}

// Subscribe forwards the node's leadership events until ctx ends.
func (l *Leadership) Subscribe(ctx context.Context) <-chan role.Event {
	out := make(chan role.Event, 64)
	in := l.node.LeadershipChanges()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-in:
				ready := ev.Ready || (ev.Leader && l.fastReady(ev.Term))
				select {
				case out <- role.Event{Leader: ev.Leader, Ready: ready, Term: ev.Term}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// LeaderReady reports whether the node is leader and ready, and the term.
// Ready is the cluster's (Barrier done) or, earlier, every entry of an
// earlier term applied (see fastReady).
func (l *Leadership) LeaderReady() (bool, uint64) {
	term := l.node.Raft().CurrentTerm()
	ready := l.node.IsLeaderReady() || l.fastReady(term)
	return ready, term
}

// fastReady: this node is leader in term and has applied every entry of an
// earlier term in its log (cluster.Node.PriorTermsApplied), so its store
// already holds everything the Barrier would wait for. After a planned
// handover that is the usual case: the old leader's last commit index
// reached the target before the transfer.
func (l *Leadership) fastReady(term uint64) bool {
	r := l.node.Raft()
	if r.State() != raft.Leader || r.CurrentTerm() != term {
		return false
	}
	return l.node.PriorTermsApplied()
}

// VerifyQuorum returns nil once a quorum acknowledged this leader after the
// call began, by whichever of two ways answers first: raft's VerifyLeader
// (a vote counted from every heartbeat and replication reply raft gets,
// so a lost segment on one connection is made up by the next heartbeat,
// but taken up only by raft's leader loop, which may be busy writing the
// log or feeding the FSM) and cluster.QuorumConfirmer (heartbeats sent
// straight over the transport, which that loop does not hold up). It
// fails when this node is no longer leader or a voter is in a newer term;
// ctx bounds the wait.
func (l *Leadership) VerifyQuorum(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Buffered for both: the loser finishes on its own (raft answers
	// every VerifyLeader, at the latest when it steps down).
	res := make(chan error, 2)
	f := l.node.Raft().VerifyLeader()
	go func() { res <- f.Error() }()
	go func() { res <- l.confirm.Confirm(ctx) }()
	select {
	case err := <-res:
		if err != nil {
			return fmt.Errorf("failover: verify leadership: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Target names the gateway a planned handover would go to: to when it is
// another voting gateway, otherwise (to empty) the first other healthy
// voting gateway in name order. The leader transfers to it with StepDown
// after Prefer(target).
func (l *Leadership) Target(to string) (string, error) {
	ms, err := l.node.Members()
	if err != nil {
		return "", fmt.Errorf("failover: handover target: %w", err)
	}
	for _, m := range ms {
		if m.ID == l.node.ID() || !m.Voter || m.Role != cluster.RoleGateway {
			continue
		}
		if to != "" {
			if m.ID == to {
				return to, nil
			}
			continue
		}
		if m.Status == "alive" || m.Status == "raft-only" {
			return m.ID, nil
		}
	}
	if to != "" {
		return "", fmt.Errorf("%w: %q is not another voting gateway", ErrNoGateway, to)
	}
	return "", ErrNoGateway
}

// StepDown hands leadership to another healthy gateway voter, trying each
// in name order. On a node that is not the leader there is nothing to hand
// over and it returns nil.
func (l *Leadership) StepDown() error {
	if l.node.Raft().State() != raft.Leader {
		return nil
	}
	l.mu.Lock()
	prefer := l.prefer
	l.prefer = ""
	l.mu.Unlock()
	ms, err := l.node.Members()
	if err != nil {
		return fmt.Errorf("failover: step down: %w", err)
	}
	if prefer != "" {
		for _, m := range ms {
			if m.ID == prefer && m.ID != l.node.ID() && m.Voter && m.Role == cluster.RoleGateway {
				if err := l.node.TransferLeadership(m.ID); err != nil {
					return fmt.Errorf("failover: step down to %s: %w", prefer, err)
				}
				return nil
			}
		}
		return fmt.Errorf("%w: %q is not another voting gateway", ErrNoGateway, prefer)
	}
	var errs []error
	for _, m := range ms {
		if m.ID == l.node.ID() || !m.Voter || m.Role != cluster.RoleGateway {
			continue
		}
		if m.Status != "alive" && m.Status != "raft-only" {
			continue
		}
		err := l.node.TransferLeadership(m.ID)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return ErrNoGateway
	}
	return fmt.Errorf("%w: %w", ErrNoGateway, errors.Join(errs...))
}
