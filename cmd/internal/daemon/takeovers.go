package daemon

import (
	"sync/atomic"
	"time"

	"ikegw/cluster"
)

// takeoverStats counts this node's takeovers (activations) and times their
// phases, for the failover metrics. Safe for concurrent use.
type takeoverStats struct {
	ok, failed atomic.Uint64
	total      cluster.Latency
	load       cluster.Latency
	commit     cluster.Latency
	install    cluster.Latency
	engine     cluster.Latency
}

// record counts one activation: its split when it succeeded, or a failure.
func (s *takeoverStats) record(t TakeoverTimes, err error) {
	if err != nil {
		s.failed.Add(1)
		return
	}
	s.ok.Add(1)
	s.total.Observe(time.Since(t.Started))
	s.load.Observe(t.Load)
	s.commit.Observe(t.Commit)
	s.install.Observe(t.Install)
	s.engine.Observe(t.Engine)
}

// phases returns the histograms by phase label.
func (s *takeoverStats) phases() map[string]*cluster.Latency {
	return map[string]*cluster.Latency{"total": &s.total, "load": &s.load, "commit": &s.commit, "install": &s.install, "engine": &s.engine}
}
