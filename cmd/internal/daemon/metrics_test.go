package daemon

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"ikegw/cluster"
	"ikegw/ike/ikev1"
)

// collectorFunc adapts a function to prometheus.Collector (unchecked).
type collectorFunc func(chan<- prometheus.Metric)

func (collectorFunc) Describe(chan<- *prometheus.Desc)      {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

func scrape(t *testing.T, f func(chan<- prometheus.Metric)) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectorFunc(f))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestHandshakeFailureReasons(t *testing.T) {
	var es ikev1.Stats
	es.Phase1Failed, es.Phase2Failed = 3, 1
	es.Phase1FailedBy[ikev1.FailAuth] = 2
	es.Phase1FailedBy[ikev1.FailTimeout] = 1
	es.Phase2FailedBy[ikev1.FailNoProposal] = 1
	s := scrape(t, func(ch chan<- prometheus.Metric) { engineMetrics(ch, es) })
	for _, want := range []string{
		`ikegw_ike_handshake_failures_total{phase="1",reason="auth"} 2`,
		`ikegw_ike_handshake_failures_total{phase="1",reason="timeout"} 1`,
		`ikegw_ike_handshake_failures_total{phase="2",reason="no_proposal"} 1`,
		`ikegw_ike_handshake_failures_total{phase="2",reason="internal"} 0`,
		`ikegw_ike_handshakes_total{phase="1",result="failed"} 3`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The label set is closed: exactly NumFailReasons reasons per phase.
	if got := strings.Count(s, `ikegw_ike_handshake_failures_total{phase="1"`); got != int(ikev1.NumFailReasons) {
		t.Errorf("%d phase 1 reasons, want %d", got, ikev1.NumFailReasons)
	}
}

func TestTakeoverMetrics(t *testing.T) {
	var st takeoverStats
	st.record(TakeoverTimes{Started: time.Now().Add(-30 * time.Millisecond), Load: time.Millisecond, Commit: 3 * time.Millisecond,
		Install: 700 * time.Microsecond, Engine: 4 * time.Millisecond}, nil)
	st.record(TakeoverTimes{Started: time.Now()}, errors.New("takeover: IKE sockets: address in use"))
	s := scrape(t, func(ch chan<- prometheus.Metric) { takeoverMetrics(ch, &st) })
	for _, want := range []string{
		`ikegw_takeovers_total{result="ok"} 1`,
		`ikegw_takeovers_total{result="failed"} 1`,
		`ikegw_takeover_duration_seconds_bucket{phase="commit",le="0.002"} 0`,
		`ikegw_takeover_duration_seconds_bucket{phase="commit",le="0.005"} 1`,
		`ikegw_takeover_duration_seconds_bucket{phase="install",le="0.001"} 1`,
		`ikegw_takeover_duration_seconds_count{phase="total"} 1`,
		`ikegw_takeover_duration_seconds_bucket{phase="total",le="0.02"} 0`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	var l cluster.Latency
	l.Observe(3 * time.Millisecond)
	s = scrape(t, func(ch chan<- prometheus.Metric) { histogram(ch, mRaftCommitLat, l.Snapshot()) })
	if !strings.Contains(s, `ikegw_raft_commit_seconds_bucket{le="0.005"} 1`) || !strings.Contains(s, `ikegw_raft_commit_seconds_sum 0.003`) {
		t.Errorf("commit latency histogram:\n%s", s)
	}
}

// TestDashboardMetricsExported checks every metric the Grafana dashboard
// queries against the descriptors ikegwd exports (histograms by their
// _bucket/_sum/_count series).
func TestDashboardMetricsExported(t *testing.T) {
	b, err := os.ReadFile("../../../deploy/grafana/ikegw.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("deploy/grafana/ikegw.json: %v", err)
	}
	names := map[string]bool{}
	re := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for _, ds := range allDescs {
		m := re.FindStringSubmatch(ds.String())
		if m == nil {
			t.Fatalf("descriptor without a name: %s", ds)
		}
		names[m[1]] = true
	}
	use := regexp.MustCompile(`ikegw_[a-z_]+`)
	hist := regexp.MustCompile(`_(bucket|sum|count)$`)
	seen := map[string]bool{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range use.FindAllString(tg.Expr, -1) {
				seen[m] = true
				if !names[m] && !names[hist.ReplaceAllString(m, "")] {
					t.Errorf("panel %q queries %s, which ikegwd does not export", p.Title, m)
				}
			}
		}
	}
	for _, must := range []string{"ikegw_ike_handshake_failures_total", "ikegw_takeovers_total", "ikegw_takeover_duration_seconds_bucket", "ikegw_raft_commit_seconds_bucket"} {
		if !seen[must] {
			t.Errorf("the dashboard has no panel for %s", must)
		}
	}
}
