package main

import (
	"errors"
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

func TestRetryRecordsDisturbedAttempts(t *testing.T) {
	dist := func(i int) *disturbance {
		return &disturbance{Before: "gw1", After: "gw2", Losses: []string{"09:00:37.040 gw1 -> fencing (no quorum confirmation for 102ms)"}, Load1: 12.5}
	}
	var calls []int
	res, err := retry(3, func(i int) (result, *disturbance, error) {
		calls = append(calls, i)
		if i < 3 {
			return nil, dist(i), nil
		}
		return result{"tunnels_per_s": 400.0}, nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ds, _ := res["disturbed"].([]*disturbance)
	if res["attempts"] != 3 || len(ds) != 2 || ds[0].Attempt != 1 || ds[1].Attempt != 2 || res["tunnels_per_s"] != 400.0 || len(calls) != 3 {
		t.Fatalf("result %v (calls %v), want 3 attempts, 2 disturbed (1, 2), the third's figures", res, calls)
	}

	res, err = retry(1, func(int) (result, *disturbance, error) { return result{}, nil, nil })
	if err != nil || res["attempts"] != 1 {
		t.Fatalf("undisturbed: %v, %v", res, err)
	}
	if ds, _ := res["disturbed"].([]*disturbance); ds == nil || len(ds) != 0 {
		t.Fatalf("undisturbed run: disturbed = %#v, want an empty list (JSON [])", res["disturbed"])
	}

	_, err = retry(2, func(i int) (result, *disturbance, error) { return nil, dist(i), nil })
	if err == nil || !strings.Contains(err.Error(), "every one of 2 attempts was disturbed") || !strings.Contains(err.Error(), "attempt 2: the active lost its role during the run (gw1 -> gw2, load 12.5)") {
		t.Fatalf("all disturbed: err = %v", err)
	}

	calls = nil
	_, err = retry(3, func(i int) (result, *disturbance, error) {
		calls = append(calls, i)
		return nil, nil, errors.New("ikeload: boom")
	})
	if err == nil || !strings.Contains(err.Error(), "attempt 1: ikeload: boom") || len(calls) != 1 {
		t.Fatalf("failure: err = %v after calls %v, want the first attempt's error at once", err, calls)
	}
}
