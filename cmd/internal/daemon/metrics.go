package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"ikegw/cluster"
	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
	"ikegw/xfrm/userspace"
)

// EnvMetricsListen names the environment variable that places the
// Prometheus listener (host:port) until the configuration file has a
// metrics section. Empty: no listener (the metrics are still served on the
// admin API under api.PathMetrics).
const EnvMetricsListen = "IKEGW_METRICS_LISTEN"

// metricsCollector reads the node's state at scrape time. Values are
// counts, indexes, durations and names (node, role, data plane kind, SA
// state): never an SPI, cookie, identity, key or PSK.
type metricsCollector struct {
	n *Node
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("ikegw_"+name, help, labels, nil)
}

var (
	mInfo          = desc("info", "Node identity: always 1.", "node", "version", "role", "dataplane")
	mRole          = desc("role", "1 for the role this node has now.", "role")
	mIKESAs        = desc("ike_sas", "ISAKMP SAs by state (the engine's on an active node, the replicated store's on a standby).", "state")
	mChildSAs      = desc("child_sas", "IPsec SA pairs by state.", "state")
	mIKEPackets    = desc("ike_packets_total", "IKE packets by direction.", "direction")
	mIKEDropped    = desc("ike_packets_dropped_total", "IKE packets not processed, by reason.", "reason")
	mIKERetrans    = desc("ike_retransmits_total", "IKE requests resent.")
	mIKECacheAns   = desc("ike_answered_from_cache_total", "Retransmitted requests answered with the cached reply.")
	mHandshakes    = desc("ike_handshakes_total", "Completed and failed exchanges by phase (1: Main Mode, 2: Quick Mode).", "phase", "result")
	mDPD           = desc("dpd_total", "Dead peer detection events.", "event")
	mDeletes       = desc("ike_deletes_total", "Delete notifications processed or sent.")
	mRekeyTotal    = desc("rekeys_total", "Completed rekeys: IPsec SA pairs replaced by a Quick Mode rekey (kind child), ISAKMP SAs replaced by a reauthentication (kind ike).", "kind")
	mRekeys        = desc("child_sas_rekeyed", "IPsec SA pairs superseded by a rekey and not yet deleted.")
	mRuntime       = desc("runtime_events_total", "IKE runtime events.", "event")
	mRaftState     = desc("raft_state", "1 for this node's Raft state.", "state")
	mRaftTerm      = desc("raft_term", "Current Raft term.")
	mRaftCommit    = desc("raft_commit_index", "Raft commit index.")
	mRaftApplied   = desc("raft_applied_index", "Raft index applied to the SA database.")
	mRaftLast      = desc("raft_last_index", "Last Raft log index stored on this node.")
	mRaftLag       = desc("raft_replication_lag", "Log entries stored or committed but not yet applied on this node (last or commit index minus applied index).")
	mRaftContact   = desc("raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).")
	mRaftLeader    = desc("raft_leader_ready", "1 when this node leads and its leadership is established.")
	mMembers       = desc("cluster_members", "Cluster members by gossip status.", "status")
	mTakeovers     = desc("takeover_last_timestamp_seconds", "Unix time this node last started a takeover (activation).")
	mTakeoverPhase = desc("takeover_last_phase_seconds", "Split of this node's last takeover by phase.", "phase")
	mTakeoverSAs   = desc("takeover_last_sas", "SAs restored by this node's last takeover.", "kind")
	mDPBytes       = desc("dataplane_bytes", "Inner bytes carried by the installed IPsec SA pairs (sum; drops when pairs are removed).", "direction")
	mDPPackets     = desc("dataplane_packets", "Packets carried by the installed IPsec SA pairs (sum; drops when pairs are removed).", "direction")
	mDPInstalled   = desc("dataplane_pairs", "IPsec SA pairs installed in the data plane.")
	mDPErrors      = desc("dataplane_errors", "Userspace data plane drops and errors of the installed pairs (sum), by reason.", "reason")
	mDPEngine      = desc("dataplane_engine_drops_total", "Userspace data plane drops before an SA was found, by reason.", "reason")
	mHSFailures    = desc("ike_handshake_failures_total", "Failed exchanges by phase (1: Main/Aggressive Mode, 2: Quick Mode) and reason (a closed set: timeout, no_response, no_proposal, auth, peer_refused, key_exchange, selectors, protocol, internal).", "phase", "reason")
	mTakeoverCount = desc("takeovers_total", "Takeovers (activations) this node ran since it started, by result (ok, failed).", "result")
	mTakeoverDur   = desc("takeover_duration_seconds", "Duration of this node's successful takeovers, by phase (load, commit, install, engine; total is the whole activation).", "phase")
	mFailoverReq   = desc("failover_requests_total", "Planned failovers (ikegwctl failover) this node accepted as the active node.")
	mRaftProposed  = desc("raft_proposed_bytes_total", "Bytes of the sealed Raft log entries this node proposed as leader (each goes to the log and to every follower).")
	mRaftProposedN = desc("raft_proposed_entries_total", "Raft log entries (batches of commits) this node proposed as leader.")
	mRaftCommitLat = desc("raft_commit_seconds", "Latency of this node's successful Raft commits: from Commit to the entry applied locally after a quorum stored it (leader only).")
	mConfigVersion = desc("config_version", "Version of the cluster-wide configuration (connections) this node runs; 0: its own file's.")
	mScrapeErr     = desc("scrape_errors", "Parts of this scrape that could not be read (see the log).", "part")
)

var allDescs = []*prometheus.Desc{mInfo, mRole, mIKESAs, mChildSAs, mIKEPackets, mIKEDropped, mIKERetrans,
	mIKECacheAns, mHandshakes, mDPD, mDeletes, mRekeys, mRekeyTotal, mRuntime, mRaftState, mRaftTerm, mRaftCommit,
	mRaftApplied, mRaftLast, mRaftLag, mRaftContact, mRaftLeader, mMembers, mTakeovers, mTakeoverPhase,
	mTakeoverSAs, mDPBytes, mDPPackets, mDPInstalled, mDPErrors, mDPEngine, mScrapeErr,
	mHSFailures, mTakeoverCount, mTakeoverDur, mFailoverReq, mRaftCommitLat, mRaftProposed, mRaftProposedN, mConfigVersion}

func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := c.n
	role := n.role()
	kind := "none"
	if n.dp != nil {
		kind = n.dp.Kind()
	}
	gauge(ch, mInfo, 1, n.cfg.Node.Name, Version, role, kind)
	for _, r := range []string{"standalone", "active", "standby", "witness"} {
		gauge(ch, mRole, b2f(r == role), r)
	}
	scrapeErr := map[string]float64{"sas": 0, "engine": 0, "dataplane": 0, "members": 0}
	defer func() {
		for p, v := range scrapeErr {
			gauge(ch, mScrapeErr, v, p)
		}
	}()

	h := &adminHandler{n: n, log: n.log}
	if n.mem != nil || n.cnode == nil {
		if ikes, kids, err := h.records(ctx); err != nil {
			scrapeErr["sas"] = 1
			n.log.Debug("metrics: SAs", "err", err)
		} else {
			ikeBy := map[string]float64{sa.IKEEstablished.String(): 0, sa.IKEDeleted.String(): 0}
			for i := range ikes {
				ikeBy[ikes[i].State.String()]++
			}
			kidBy := map[string]float64{sa.ChildInstalled.String(): 0, sa.ChildRekeyed.String(): 0, sa.ChildDeleted.String(): 0}
			for i := range kids {
				kidBy[kids[i].State.String()]++
			}
			for s, v := range ikeBy {
				gauge(ch, mIKESAs, v, s)
			}
			for s, v := range kidBy {
				gauge(ch, mChildSAs, v, s)
			}
			gauge(ch, mRekeys, kidBy[sa.ChildRekeyed.String()])
		}
	}

	if rt := n.runtime(); rt != nil {
		var es ikev1.Stats
		err := rt.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { es = e.Stats(); return nil, nil })
		if err != nil {
			scrapeErr["engine"] = 1
			n.log.Debug("metrics: engine", "err", err)
		} else {
			engineMetrics(ch, es)
		}
		rs := rt.Stats()
		counter(ch, mRuntime, rs.PersistCalls, "persist")
		counter(ch, mRuntime, rs.PersistErrors, "persist_error")
		counter(ch, mRuntime, rs.SendErrors, "send_error")
		counter(ch, mRuntime, rs.GateDrops, "gate_closed")
		counter(ch, mRuntime, rs.UnsavedDrops, "unsaved_drop")
		if err == nil {
			counter(ch, mRuntime, es.Resaved, "reply_recommitted")
		}
		counter(ch, mRuntime, rs.InstallErrors, "install_error")
		counter(ch, mRuntime, rs.ESPPackets, "esp_on_ike_socket")
		counter(ch, mRuntime, rs.Keepalives, "natt_keepalive")
	}

	if n.cnode != nil {
		cs := n.cnode.Stats()
		for _, s := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
			gauge(ch, mRaftState, b2f(cs.State == s), s)
		}
		gauge(ch, mRaftTerm, float64(cs.Term))
		gauge(ch, mRaftCommit, float64(cs.CommitIndex))
		gauge(ch, mRaftApplied, float64(cs.AppliedIndex))
		gauge(ch, mRaftLast, float64(cs.LastIndex))
		top := max(cs.LastIndex, cs.CommitIndex)
		lag := 0.0
		if top > cs.AppliedIndex {
			lag = float64(top - cs.AppliedIndex)
		}
		gauge(ch, mRaftLag, lag)
		contact := 0.0
		if !cs.LastContact.IsZero() && cs.State != "Leader" {
			contact = time.Since(cs.LastContact).Seconds()
		}
		gauge(ch, mRaftContact, contact)
		gauge(ch, mRaftLeader, b2f(cs.LeaderReady))
		histogram(ch, mRaftCommitLat, n.cnode.CommitLatency())
		pe, pb := n.cnode.Proposed()
		counter(ch, mRaftProposed, pb)
		counter(ch, mRaftProposedN, pe)
		gauge(ch, mConfigVersion, float64(n.sync.applied().Version))
		if ms, err := n.cnode.Members(); err != nil {
			scrapeErr["members"] = 1
		} else {
			by := map[string]float64{}
			for _, m := range ms {
				by[m.Status]++
			}
			for s, v := range by {
				gauge(ch, mMembers, v, s)
			}
		}
		if n.mem != nil {
			takeoverMetrics(ch, &n.mem.stats)
			counter(ch, mFailoverReq, n.failovers.Load())
			if t := n.mem.takeover(); !t.Started.IsZero() {
				gauge(ch, mTakeovers, float64(t.Started.UnixNano())/1e9)
				gauge(ch, mTakeoverPhase, t.Load.Seconds(), "load")
				gauge(ch, mTakeoverPhase, t.Commit.Seconds(), "commit")
				gauge(ch, mTakeoverPhase, t.Install.Seconds(), "install")
				gauge(ch, mTakeoverPhase, t.Engine.Seconds(), "engine")
				gauge(ch, mTakeoverSAs, float64(t.IKESAs), "ike")
				gauge(ch, mTakeoverSAs, float64(t.ChildSAs), "child")
			}
		}
	}

	if n.dp != nil {
		cnt, err := n.dp.Counters(ctx)
		if err != nil {
			scrapeErr["dataplane"] = 1
			n.log.Debug("metrics: data plane counters", "err", err)
		} else {
			var t sa.Counters
			for _, c := range cnt {
				t.InBytes += c.InBytes
				t.OutBytes += c.OutBytes
				t.InPackets += c.InPackets
				t.OutPackets += c.OutPackets
			}
			gauge(ch, mDPInstalled, float64(len(cnt)))
			gauge(ch, mDPBytes, float64(t.InBytes), "in")
			gauge(ch, mDPBytes, float64(t.OutBytes), "out")
			gauge(ch, mDPPackets, float64(t.InPackets), "in")
			gauge(ch, mDPPackets, float64(t.OutPackets), "out")
		}
		if ue, ok := n.dp.(*userspace.Engine); ok {
			var s userspace.Stats
			for _, st := range ue.AllStats() {
				s.ReplayDrops += st.ReplayDrops
				s.AuthFailures += st.AuthFailures
				s.PolicyDrops += st.PolicyDrops
				s.SendErrors += st.SendErrors
			}
			gauge(ch, mDPErrors, float64(s.ReplayDrops), "replay")
			gauge(ch, mDPErrors, float64(s.AuthFailures), "auth")
			gauge(ch, mDPErrors, float64(s.PolicyDrops), "policy")
			gauge(ch, mDPErrors, float64(s.SendErrors), "send")
			es := ue.EngineStats()
			counter(ch, mDPEngine, es.NoSA, "no_sa")
			counter(ch, mDPEngine, es.NoPolicy, "no_policy")
			counter(ch, mDPEngine, es.Malformed, "malformed")
			counter(ch, mDPEngine, es.DeviceErrors, "device")
			counter(ch, mDPEngine, es.GateDrops, "gate_closed")
		}
	}
}

// engineMetrics exports the IKE engine's counters.
func engineMetrics(ch chan<- prometheus.Metric, es ikev1.Stats) {
	counter(ch, mIKEPackets, es.Received, "received")
	counter(ch, mIKEPackets, es.Sent, "sent")
	counter(ch, mIKEDropped, es.Malformed, "malformed")
	counter(ch, mIKEDropped, es.Dropped, "unwanted")
	counter(ch, mIKERetrans, es.Retransmits)
	counter(ch, mIKECacheAns, es.AnsweredFromCache)
	counter(ch, mHandshakes, es.Phase1Done, "1", "done")
	counter(ch, mHandshakes, es.Phase1Failed, "1", "failed")
	counter(ch, mHandshakes, es.Phase2Done, "2", "done")
	counter(ch, mHandshakes, es.Phase2Failed, "2", "failed")
	for r := ikev1.FailReason(0); r < ikev1.NumFailReasons; r++ {
		counter(ch, mHSFailures, es.Phase1FailedBy[r], "1", r.String())
		counter(ch, mHSFailures, es.Phase2FailedBy[r], "2", r.String())
	}
	counter(ch, mDPD, es.DPDSent, "sent")
	counter(ch, mDPD, es.DPDAcked, "acked")
	counter(ch, mDPD, es.DPDTimeouts, "timeout")
	counter(ch, mDeletes, es.Deletes)
	counter(ch, mRekeyTotal, es.ChildRekeys, "child")
	counter(ch, mRekeyTotal, es.IKEReauths, "ike")
}

// takeoverMetrics exports the takeover counters and histograms.
func takeoverMetrics(ch chan<- prometheus.Metric, s *takeoverStats) {
	counter(ch, mTakeoverCount, s.ok.Load(), "ok")
	counter(ch, mTakeoverCount, s.failed.Load(), "failed")
	for phase, l := range s.phases() {
		histogram(ch, mTakeoverDur, l.Snapshot(), phase)
	}
}

// histogram exports a cluster.Latency snapshot (seconds).
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, s cluster.LatencySnapshot, labels ...string) {
	b := make(map[float64]uint64, len(cluster.LatencyBounds))
	for i, ub := range cluster.LatencyBounds {
		b[ub.Seconds()] = s.Cumulative[i]
	}
	ch <- prometheus.MustNewConstHistogram(d, s.Count, s.Sum.Seconds(), b, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves the node's metrics and the Go runtime's.
func metricsHandler(n *Node) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&metricsCollector{n: n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPromLogger{n.log}})
}

type slogPromLogger struct{ log *slog.Logger }

func (l slogPromLogger) Println(v ...any) { l.log.Warn("metrics", "err", fmt.Sprint(v...)) }

// metricsServer is the Prometheus listener (plain HTTP: metrics carry no
// secrets; bind it to a management address).
type metricsServer struct {
	srv *http.Server
}

// startMetrics listens on addr ("" = no listener).
func startMetrics(addr string, n *Node, log *slog.Logger) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener (%s=%q): %w", EnvMetricsListen, addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(n))
	s := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return s, nil
}

func (s *metricsServer) close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

func metricsListenFromEnv() string { return os.Getenv(EnvMetricsListen) }
