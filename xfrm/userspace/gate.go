package userspace

// Gate decides whether this node may send ESP now. A cluster gateway's gate
// is open only while the lease its role machine published is running
// (failover/role Callbacks.OnLease): a frozen active that resumes after a
// standby took over must not send ESP with sequence numbers the new active
// has already used (issue 8). MaySend is called once per batch read from
// the TUN device, before any packet is sealed (a dropped packet uses no
// sequence number); it must be cheap (an atomic load and a clock read) and
// never block.
type Gate interface {
	MaySend() bool
}

// gateClosed reports whether the gate (if any) holds back a batch of n
// packets, and counts them (EngineStats.GateDrops) when it does.
func (e *Engine) gateClosed(n int) bool {
	if e.gate == nil || e.gate.MaySend() {
		return false
	}
	e.gateDrops.Add(uint64(n))
	return true
}
