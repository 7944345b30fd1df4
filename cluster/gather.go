package cluster

import "time"

// gatherer decides, each time the committer's last entry in flight lands,
// how many commits to wait for before it proposes the next entry.
//
// Callers that commit in a loop call Commit again as soon as their
// previous Commit returns. Proposing the next entry the moment one lands
// leaves them out of it: they wait a whole round for it, then their own,
// and concurrent committers settle into two cohorts that alternate (at 16
// committers, two rounds per commit). Commits that arrive independently
// (handshakes from many peers) do not come back when answered, and holding
// an entry back for them only adds latency.
//
// So the gatherer measures which kind it serves: after each landing it
// counts the commits that started within window of it, and keeps a moving
// average of that count over the commits the landing answered. While at
// least half of them come back, it asks for the queued commits and all the
// answered ones (the committer stops waiting when arrivals pause, so one
// that does not come back costs a short gap). Below half it asks for
// nothing, and the committer proposes at once: independent arrivals
// within a window much shorter than a round are a small fraction of the
// commits a round answers.
type gatherer struct {
	window time.Duration
	// back is the moving average (weight 1/4 per landing) of the fraction
	// of answered commits followed within window by a new one.
	back float64

	// The landing being observed.
	landedAt time.Time
	answered int
	arrivals int
}

// arrived counts a commit that started at start.
func (g *gatherer) arrived(start time.Time) {
	if g.answered > 0 && !start.Before(g.landedAt) && start.Sub(g.landedAt) <= g.window {
		g.arrivals++
	}
}

// landed records that an entry answering answered commits landed at now,
// with queued commits waiting, and returns how many commits to gather
// before proposing: 0 to propose at once.
func (g *gatherer) landed(now time.Time, answered, queued int) int {
	if g.answered > 0 {
		g.back += (min(1, float64(g.arrivals)/float64(g.answered)) - g.back) / 4
	}
	g.landedAt, g.answered, g.arrivals = now, answered, 0
	if g.back < 0.5 {
		return 0
	}
	return queued + answered
}
