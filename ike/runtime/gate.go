package runtime

import "errors"

// Gate decides whether this node may send now. A cluster gateway's gate is
// open only while the lease its role machine published is running
// (failover/role Callbacks.OnLease): a frozen active that resumes after a
// standby took over must not answer IKE or send ESP with sequence numbers
// the new active has already used (issue 8). MaySend is called once per
// message or ESP batch, from several goroutines; it must be cheap (an
// atomic load and a clock read) and never block.
type Gate interface {
	MaySend() bool
}

// gated reports whether the gate (if any) lets n packets out; when it does
// not, they are counted in Stats.GateDrops.
func (r *Runtime) gated(n int) bool {
	if r.cfg.Gate == nil || r.cfg.Gate.MaySend() {
		return false
	}
	r.count(func(st *Stats) { st.GateDrops += uint64(n) })
	return true
}

// ErrGateClosed: an ESP send refused by the closed send gate.
var ErrGateClosed = errors.New("runtime: send gate closed: this node's lease ran out")
