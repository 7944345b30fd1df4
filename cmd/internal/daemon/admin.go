package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"ikegw/cluster"
	"ikegw/cluster/certs"
	"ikegw/cmd/api"
	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
)

// adminServer serves the admin API on a unix socket that only root (the
// socket's owner) may use.
type adminServer struct {
	srv     *http.Server
	ln      net.Listener
	path    string
	tcp     *http.Server // the mutual-TLS listener, nil without one
	metrics *metricsServer
}

func startAdmin(path string, n *Node, log *slog.Logger) (*adminServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A socket left by a dead daemon; refuse if one still answers.
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another ikegwd is running", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := adminMux(n, log)
	s := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, path: path}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "err", err)
		}
	}()
	addr := n.cfg.Admin.Listen
	if env := os.Getenv(EnvAdminListen); env != "" {
		addr = env
	}
	if addr != "" {
		tcp, _, err := startAdminTLS(addr, n, mux, log)
		if err != nil {
			s.close()
			return nil, err
		}
		s.tcp = tcp
	}
	maddr := n.cfg.Metrics.Listen
	if env := metricsListenFromEnv(); env != "" {
		maddr = env
	}
	if s.metrics, err = startMetrics(maddr, n, log); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	if s.tcp != nil {
		s.tcp.Shutdown(ctx)
	}
	s.metrics.close()
	os.Remove(s.path)
}

// adminMux routes the v1 API. Handlers of state-changing requests are
// marked with needAdmin: on the TLS listener only an admin client
// certificate may call them (the unix socket is root's only).
func adminMux(n *Node, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	h := &adminHandler{n: n, log: log}
	mux.HandleFunc("GET "+api.PathStatus, h.status)
	mux.HandleFunc("GET "+api.PathSAs, h.sas)
	mux.HandleFunc("GET "+api.PathMembers, h.members)
	mux.HandleFunc("GET "+api.PathConfig, h.config)
	mux.HandleFunc("POST "+api.PathValidate, needAdmin(h.validate))
	mux.Handle("GET "+api.PathMetrics, metricsHandler(n))
	mux.HandleFunc("GET "+api.PathSnapshot, needAdmin(h.snapshot))
	mux.HandleFunc("POST "+api.PathInitiate, needAdmin(h.initiate))
	mux.HandleFunc("POST "+api.PathTerminate, needAdmin(h.terminate))
	mux.HandleFunc("POST "+api.PathRekey, needAdmin(h.rekey))
	mux.HandleFunc("POST "+api.PathDPD, needAdmin(h.dpd))
	mux.HandleFunc("POST "+api.PathFailover, needAdmin(h.failover))
	mux.HandleFunc("POST "+api.PathMembersJoin, needAdmin(h.membersJoin))
	mux.HandleFunc("POST "+api.PathMembersRemove, needAdmin(h.membersRemove))
	mux.HandleFunc("POST "+api.PathConfigApply, needAdmin(h.configApply))
	mux.HandleFunc("GET "+api.PathConfigApplied, h.configApplied)
	return mux
}

type adminHandler struct {
	n   *Node
	log *slog.Logger
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, api.Error{Error: err.Error()})
}

// records returns the SAs: the running engine's view on an active or
// standalone node, the replicated store's on a standby.
func (h *adminHandler) records(ctx context.Context) ([]sa.IKESA, []sa.ChildSA, error) {
	if rt := h.n.runtime(); rt != nil {
		return rt.Snapshot(ctx)
	}
	db := h.n.store()
	if db == nil {
		return nil, nil, errors.New("this node holds no SA database")
	}
	ikes, kids, err := loadAll(db)
	if err != nil {
		return nil, nil, err
	}
	out1 := make([]sa.IKESA, len(ikes))
	for i, r := range ikes {
		out1[i] = *r
	}
	out2 := make([]sa.ChildSA, len(kids))
	for i, c := range kids {
		out2[i] = *c
	}
	return out1, out2, nil
}

// counts returns how many SAs records would list, without reading them:
// the engine's map sizes, or the store's bucket sizes (a status at 10,000
// tunnels used to open every sealed record to count them).
func (h *adminHandler) counts(ctx context.Context) (ike, child int, err error) {
	if rt := h.n.runtime(); rt != nil {
		return rt.Counts(ctx)
	}
	db := h.n.store()
	if db == nil {
		return 0, 0, errors.New("this node holds no SA database")
	}
	return db.Counts()
}

func (h *adminHandler) status(w http.ResponseWriter, r *http.Request) {
	ikes, kids, err := h.counts(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	st := api.Status{
		Node: h.n.cfg.Node.Name, Version: Version, Role: h.n.role(),
		IKESAs: ikes, ChildSAs: kids, StartedAt: h.n.started.UTC(),
	}
	if h.n.dp != nil {
		st.Dataplane = h.n.dp.Kind()
	}
	if rt := h.n.runtime(); rt != nil {
		var es ikev1.Stats
		rt.Do(r.Context(), func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { es = e.Stats(); return nil, nil })
		rs := rt.Stats()
		st.Engine = map[string]uint64{"received": es.Received, "sent": es.Sent, "malformed": es.Malformed, "dropped": es.Dropped,
			"retransmits": es.Retransmits, "answered_from_cache": es.AnsweredFromCache, "phase1_done": es.Phase1Done,
			"phase1_failed": es.Phase1Failed, "phase2_done": es.Phase2Done, "phase2_failed": es.Phase2Failed,
			"dpd_sent": es.DPDSent, "dpd_acked": es.DPDAcked, "dpd_timeouts": es.DPDTimeouts, "deletes": es.Deletes,
			"dropped_half_open_limit": es.DroppedHalfOpenLimit, "dropped_source_limit": es.DroppedSourceLimit,
			"evicted_half_open": es.EvictedHalfOpen, "log_suppressed": es.LogSuppressed, "resaved": es.Resaved}
		st.Runtime = map[string]uint64{"persist_calls": rs.PersistCalls, "persist_errors": rs.PersistErrors, "send_errors": rs.SendErrors,
			"install_errors": rs.InstallErrors, "esp_packets": rs.ESPPackets, "keepalives": rs.Keepalives,
			"dropped_source_rate": rs.DroppedSourceRate, "dropped_global_rate": rs.DroppedGlobalRate, "gate_closed": rs.GateDrops, "unsaved_drops": rs.UnsavedDrops}
	}
	if h.n.cnode != nil {
		cs := h.n.cnode.Stats()
		st.Cluster = &api.ClusterStatus{State: cs.State, Term: cs.Term, CommitIndex: cs.CommitIndex, AppliedIndex: cs.AppliedIndex,
			StoreAppliedIndex: h.n.cnode.FSMAppliedIndex(), RestartSkipped: h.n.cnode.RestartSkipped(),
			LastIndex: cs.LastIndex, Leader: cs.LeaderID, LeaderReady: cs.LeaderReady,
			Removed: h.n.cnode.Removed(), ConfigVersion: h.n.sync.applied().Version}
		if h.n.mem != nil {
			t := h.n.mem.takeover()
			if !t.Started.IsZero() {
				st.Cluster.LastTakeover = &api.Takeover{Started: t.Started.UTC(), LoadMS: ms(t.Load), CommitMS: ms(t.Commit),
					InstallMS: ms(t.Install), EngineMS: ms(t.Engine), IKESAs: t.IKESAs, ChildSAs: t.ChildSAs,
					Staged: t.Staged, StagedLate: t.StagedLate, Unstaged: t.Unstaged}
			}
		}
	}
	for _, c := range h.n.cfg.connectionsOnly() {
		st.Connection = append(st.Connection, c.Name)
	}
	writeJSON(w, http.StatusOK, st)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (h *adminHandler) sas(w http.ResponseWriter, r *http.Request) {
	ikes, kids, err := h.records(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	out := api.SAs{IKE: []api.IKESA{}, Children: []api.ChildSA{}}
	for i := range ikes {
		out.IKE = append(out.IKE, api.IKEView(&ikes[i]))
	}
	for i := range kids {
		out.Children = append(out.Children, api.ChildView(&kids[i]))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *adminHandler) do(w http.ResponseWriter, r *http.Request, fn func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error)) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	rt := h.n.runtime()
	if rt == nil {
		writeErr(w, http.StatusConflict, errNotActive)
		return
	}
	if err := rt.Do(ctx, fn); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ikev1.ErrUnknownConnection) || errors.Is(err, ikev1.ErrNoSA) {
			code = http.StatusNotFound
		}
		writeErr(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (h *adminHandler) initiate(w http.ResponseWriter, r *http.Request) {
	conn := r.URL.Query().Get("conn")
	h.do(w, r, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { return e.Initiate(now, conn) })
}

func (h *adminHandler) terminate(w http.ResponseWriter, r *http.Request) {
	conn := r.URL.Query().Get("conn")
	h.do(w, r, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { return e.Terminate(now, conn) })
}

func (h *adminHandler) rekey(w http.ResponseWriter, r *http.Request) {
	spi, err := strconv.ParseUint(r.URL.Query().Get("spi"), 16, 32)
	if err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("spi: want the inbound SPI in hex: %w", err))
		return
	}
	h.do(w, r, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { return e.RekeyChildSA(now, uint32(spi)) })
}

func (h *adminHandler) dpd(w http.ResponseWriter, r *http.Request) {
	c, err := parseCookies(r.URL.Query().Get("ike"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	h.do(w, r, func(now time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { return e.SendDPD(now, c) })
}

// parseCookies reads "ICOOKIE_RCOOKIE" (16 hex digits each).
func parseCookies(s string) (sa.Cookies, error) {
	var c sa.Cookies
	if len(s) != 33 || s[16] != '_' {
		return c, fmt.Errorf("ike: want ICOOKIE_RCOOKIE, 16 hex digits each")
	}
	i, err1 := hex.DecodeString(s[:16])
	r, err2 := hex.DecodeString(s[17:])
	if err1 != nil || err2 != nil {
		return c, fmt.Errorf("ike: cookies are not hex")
	}
	copy(c.I[:], i)
	copy(c.R[:], r)
	return c, nil
}

// EnvAdminListen names the environment variable that opens the admin API
// on TCP (host:port) with the cluster's mutual TLS (cluster.tls files)
// until the configuration file has a field for it.
const EnvAdminListen = "IKEGW_ADMIN_LISTEN"

// RoleAdminURI is the URI SAN that makes a client certificate an admin
// one; the OU "ikegw-admin" does the same. Any other certificate of the
// cluster CA is read-only.
const (
	RoleAdminURI = "ikegw:role=admin"
	RoleAdminOU  = "ikegw-admin"
)

type ctxKey int

const ctxReadOnly ctxKey = 1

// certIsAdmin reports whether the verified client certificate carries the
// admin role.
func certIsAdmin(c *x509.Certificate) bool {
	for _, u := range c.URIs {
		if u.String() == RoleAdminURI {
			return true
		}
	}
	return slices.Contains(c.Subject.OrganizationalUnit, RoleAdminOU)
}

func startAdminTLS(addr string, n *Node, mux http.Handler, log *slog.Logger) (*http.Server, net.Addr, error) {
	if n.cfg.Cluster == nil || n.cfg.Cluster.TLS.CA == "" || n.cfg.Cluster.TLS.Cert == "" || n.cfg.Cluster.TLS.Key == "" {
		return nil, nil, fmt.Errorf("admin TCP listener (%s=%q): needs cluster.tls ca, cert and key", EnvAdminListen, addr)
	}
	t := n.cfg.Cluster.TLS
	cert, pool, err := certs.TLSFiles{CA: t.CA, Cert: t.Cert, Key: t.Key}.Load()
	if err != nil {
		return nil, nil, fmt.Errorf("admin TCP listener: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("admin TCP listener (%s=%q): %w", EnvAdminListen, addr, err)
	}
	// The listener serves the node certificate from its files and reads
	// them again when they change, like the Raft transport: a renewed
	// certificate is used from the next connection on.
	reload, err := certs.NewReloader(t.Cert, t.Key, cert, "admin API: node certificate", log)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("admin TCP listener: %w", err)
	}
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return reload.Get() },
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, TLSConfig: cfg,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				writeErr(w, http.StatusUnauthorized, errors.New("admin API: a client certificate of the cluster CA is required"))
				return
			}
			ro := !certIsAdmin(r.TLS.VerifiedChains[0][0])
			mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxReadOnly, ro)))
		})}
	go func() {
		if err := srv.Serve(tls.NewListener(ln, cfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin TLS listener stopped", "err", err)
		}
	}()
	log.Info("admin API on TCP with mutual TLS", "addr", ln.Addr().String())
	return srv, ln.Addr(), nil
}

// needAdmin refuses the request from a read-only client certificate.
func needAdmin(fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ro, _ := r.Context().Value(ctxReadOnly).(bool); ro {
			writeErr(w, http.StatusForbidden, fmt.Errorf("%s %s: needs the admin role (a client certificate with URI SAN %q or OU %q)",
				r.Method, r.URL.Path, RoleAdminURI, RoleAdminOU))
			return
		}
		fn(w, r)
	}
}

func (h *adminHandler) members(w http.ResponseWriter, r *http.Request) {
	out, err := h.memberList()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// memberList is the view of PathMembers.
func (h *adminHandler) memberList() (api.Members, error) {
	out := api.Members{Members: []api.Member{}}
	if h.n.cnode == nil {
		out.Members = append(out.Members, api.Member{ID: h.n.cfg.Node.Name, Role: api.RoleStandalone,
			Version: Version, MaxCommand: uint8(cluster.MaxCommandType), Status: "alive", Leader: true, Active: true})
		out.Active = h.n.cfg.Node.Name
		out.EffectiveMaxCommand = uint8(cluster.MaxCommandType)
		return out, nil
	}
	ms, err := h.n.cnode.Members()
	if err != nil {
		return out, err
	}
	if a, ok, err := cluster.ReadActive(h.n.cnode.Store()); err == nil && ok {
		out.Active = a.Node
	}
	for _, m := range ms {
		out.Members = append(out.Members, api.Member{ID: m.ID, Role: string(m.Role), RaftAddr: m.RaftAddr,
			GossipAddr: m.GossipAddr, Version: m.Version, MaxCommand: uint8(m.MaxCommand), Status: m.Status, Voter: m.Voter, Leader: m.Leader,
			InRaft: m.InRaft, Active: m.ID == out.Active})
	}
	out.EffectiveMaxCommand = uint8(h.n.cnode.ClusterMaxCommand())
	return out, nil
}

// failover hands the active role over (planned failover). ?to=NODE moves
// Raft leadership to that gateway first, so it is the one that takes over.
func (h *adminHandler) failover(w http.ResponseWriter, r *http.Request) {
	if h.n.cnode == nil || h.n.mem == nil {
		writeErr(w, http.StatusConflict, errors.New("failover: this node is not a cluster gateway"))
		return
	}
	to := r.URL.Query().Get("to")
	if to == h.n.cfg.Node.Name {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("failover: to=%q is this node", to))
		return
	}
	if h.n.role() != api.RoleActive {
		writeErr(w, http.StatusConflict, fmt.Errorf("failover: node %s is %s, not active: ask the active node", h.n.cfg.Node.Name, h.n.role()))
		return
	}
	if to != "" {
		ms, err := h.n.cnode.Members()
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
		i := slices.IndexFunc(ms, func(m cluster.Member) bool { return m.ID == to })
		if i < 0 || !ms[i].Voter || ms[i].Role != cluster.RoleGateway {
			writeErr(w, http.StatusNotFound, fmt.Errorf("failover: to=%q is not a voting gateway of this cluster", to))
			return
		}
	}
	h.log.Info("planned failover requested", "to", to)
	h.n.failovers.Add(1)
	// The VIPs go first, then leadership moves (to the named node when
	// given): never two VIP owners.
	if err := h.n.HandoverTo(to); err != nil {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("failover: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, api.Failover{From: h.n.cfg.Node.Name, To: to, Leader: h.n.cnode.Stats().LeaderID})
}

// secretKeys are configuration keys whose values are redacted. File and
// environment variable names (psk_file, psk_env, key_file) are kept.
var secretKeys = map[string]bool{"psk": true, "secret": true, "password": true, "key": true, "private_key": true}

// redactYAML replaces the values of secret keys anywhere in the document.
func redactYAML(raw []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var walk func(*yaml.Node)
	walk = func(nd *yaml.Node) {
		if nd.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(nd.Content); i += 2 {
				k, v := nd.Content[i], nd.Content[i+1]
				if secretKeys[strings.ToLower(k.Value)] && v.Kind == yaml.ScalarNode {
					v.Value, v.Tag, v.Style = "<redacted>", "!!str", 0
					continue
				}
				walk(v)
			}
			return
		}
		for _, c := range nd.Content {
			walk(c)
		}
	}
	walk(&doc)
	return yaml.Marshal(&doc)
}

func (h *adminHandler) config(w http.ResponseWriter, r *http.Request) {
	raw, err := h.n.runningYAML()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	out, err := redactYAML(raw)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(out)
}

// validate parses the posted configuration file as ikegwd would (relative
// psk_file paths are relative to the daemon's working directory).
func (h *adminHandler) validate(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 4<<20+1))
	if err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("config validate: body: %w", err))
		return
	}
	if len(data) > 4<<20 {
		writeErr(w, http.StatusRequestEntityTooLarge, errors.New("config validate: file larger than 4 MiB"))
		return
	}
	c, err := ParseConfig(data)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, api.Validation{Error: err.Error()})
		return
	}
	v := api.Validation{Valid: true, Node: c.Node.Name}
	for _, cc := range c.Connections {
		v.Connections = append(v.Connections, cc.Name)
	}
	writeJSON(w, http.StatusOK, v)
}

// snapshot streams the SA database (values sealed with the cluster key).
func (h *adminHandler) snapshot(w http.ResponseWriter, r *http.Request) {
	db := h.n.store()
	if db == nil {
		writeErr(w, http.StatusServiceUnavailable, errors.New("snapshot: this node holds no SA database"))
		return
	}
	// Buffered, so that a failure is an error status and not a truncated
	// file the client would take for a good one.
	var buf bytes.Buffer
	if err := db.WriteSnapshot(&buf); err != nil {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("snapshot: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Header().Set("Content-Disposition", `attachment; filename="ikegw-`+h.n.cfg.Node.Name+`.snap"`)
	buf.WriteTo(w)
}
