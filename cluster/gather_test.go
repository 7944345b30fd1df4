package cluster

import (
	"testing"
	"time"
)

// landings drives g through rounds landings, each answering answered
// commits of which back start again within the window (the rest later);
// it returns what the last landing asked for with queued commits waiting.
func landings(g *gatherer, t0 time.Time, rounds, answered, back, queued int) int {
	const round = 2 * time.Millisecond
	want := 0
	for r := range rounds {
		at := t0.Add(time.Duration(r) * round)
		want = g.landed(at, answered, queued)
		for i := range answered {
			start := at.Add(10 * time.Microsecond)
			if i >= back {
				start = at.Add(g.window + time.Microsecond)
			}
			g.arrived(start)
		}
	}
	return want
}

func TestGathererWaitsForCallersThatComeBack(t *testing.T) {
	g := gatherer{window: 300 * time.Microsecond}
	t0 := time.Unix(1000, 0)
	if w := g.landed(t0, 16, 8); w != 0 {
		t.Fatalf("first landing, no history: want %d, expected 0 (propose at once)", w)
	}
	if w := landings(&g, t0, 12, 16, 16, 8); w != 8+16 {
		t.Fatalf("after 12 landings whose 16 callers all came back: want %d, expected 24 (8 queued + 16)", w)
	}
}

func TestGathererDoesNotWaitForIndependentArrivals(t *testing.T) {
	g := gatherer{window: 300 * time.Microsecond}
	// One in eight answered commits is followed within the window by
	// another (arrivals that do not depend on the answers).
	if w := landings(&g, time.Unix(1000, 0), 50, 8, 1, 3); w != 0 {
		t.Fatalf("independent arrivals: want %d, expected 0", w)
	}
	// Callers that commit again only later than the window: no wait.
	if w := landings(&g, time.Unix(2000, 0), 50, 16, 0, 0); w != 0 {
		t.Fatalf("callers back after the window: want %d, expected 0", w)
	}
}

func TestGathererForgets(t *testing.T) {
	g := gatherer{window: 300 * time.Microsecond}
	t0 := time.Unix(1000, 0)
	if w := landings(&g, t0, 20, 16, 16, 0); w != 16 {
		t.Fatalf("loop committers: want %d, expected 16", w)
	}
	// The load turns into independent arrivals: within a few landings the
	// committer proposes at once again.
	if w := landings(&g, t0.Add(time.Second), 5, 16, 0, 4); w != 0 {
		t.Fatalf("5 landings after the callers stopped coming back: want %d, expected 0", w)
	}
}

func TestGathererIgnoresCommitsFromBeforeTheLanding(t *testing.T) {
	g := gatherer{window: 300 * time.Microsecond}
	t0 := time.Unix(1000, 0)
	for r := range 20 {
		at := t0.Add(time.Duration(r) * 2 * time.Millisecond)
		g.landed(at, 8, 8)
		for range 8 { // queued during the round: started before it landed
			g.arrived(at.Add(-time.Millisecond))
		}
	}
	if w := g.landed(t0.Add(time.Second), 8, 8); w != 0 {
		t.Fatalf("commits started before each landing counted as callers coming back: want %d", w)
	}
}
