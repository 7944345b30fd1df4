package main

import (
	"math"
	"strings"
	"testing"
)

const sampleMetrics = `# HELP ikegw_raft_proposed_bytes_total x
# TYPE ikegw_raft_proposed_bytes_total counter
ikegw_raft_proposed_bytes_total 123456
ikegw_raft_proposed_entries_total 42
ikegw_raft_commit_seconds_bucket{le="0.001"} 10
ikegw_raft_commit_seconds_bucket{le="0.002"} 50
ikegw_raft_commit_seconds_bucket{le="0.005"} 90
ikegw_raft_commit_seconds_bucket{le="0.01"} 100
ikegw_raft_commit_seconds_bucket{le="+Inf"} 100
ikegw_raft_commit_seconds_sum 0.25
ikegw_raft_commit_seconds_count 100
`

func TestParseMetricsAndQuantiles(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	if m.entries != 42 || m.bytes != 123456 || m.hist.count != 100 || len(m.hist.le) != 5 {
		t.Fatalf("parsed %+v", m)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.5, 0.002},   // exactly at a bound
		{0.3, 0.0015},  // halfway into (0.001, 0.002]
		{0.99, 0.0095}, // 90% into (0.005, 0.01]
		{0.05, 0.0005}, // inside the first bucket, from 0
	} {
		if got := m.hist.quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%.2f = %g, want %g", c.q, got, c.want)
		}
	}
	zero := m.hist.minus(m.hist)
	if !math.IsNaN(zero.quantile(0.5)) {
		t.Error("quantile of an empty histogram is not NaN")
	}
	if _, err := parseMetrics(strings.NewReader("ikegw_up 1\n")); err == nil {
		t.Error("metrics without the Raft series accepted")
	}
}
