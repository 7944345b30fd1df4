package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"ikegw/cmd/internal/api"
	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
)

// adminServer serves the admin API on a unix socket that only root (the
// socket's owner) may use.
type adminServer struct {
	srv  *http.Server
	ln   net.Listener
	path string
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
	mux := http.NewServeMux()
	h := &adminHandler{n: n, log: log}
	mux.HandleFunc("GET "+api.PathStatus, h.status)
	mux.HandleFunc("GET "+api.PathSAs, h.sas)
	mux.HandleFunc("POST "+api.PathInitiate, h.initiate)
	mux.HandleFunc("POST "+api.PathTerminate, h.terminate)
	mux.HandleFunc("POST "+api.PathRekey, h.rekey)
	mux.HandleFunc("POST "+api.PathDPD, h.dpd)
	s := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, path: path}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "err", err)
		}
	}()
	return s, nil
}

func (s *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	os.Remove(s.path)
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

func (h *adminHandler) status(w http.ResponseWriter, r *http.Request) {
	ikes, kids, err := h.records(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	st := api.Status{
		Node: h.n.cfg.Node.Name, Version: Version, Role: h.n.role(),
		IKESAs: len(ikes), ChildSAs: len(kids), StartedAt: h.n.started.UTC(),
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
			"dpd_sent": es.DPDSent, "dpd_acked": es.DPDAcked, "dpd_timeouts": es.DPDTimeouts, "deletes": es.Deletes}
		st.Runtime = map[string]uint64{"persist_calls": rs.PersistCalls, "persist_errors": rs.PersistErrors, "send_errors": rs.SendErrors,
			"install_errors": rs.InstallErrors, "esp_packets": rs.ESPPackets, "keepalives": rs.Keepalives}
	}
	if h.n.cnode != nil {
		cs := h.n.cnode.Stats()
		st.Cluster = &api.ClusterStatus{State: cs.State, Term: cs.Term, CommitIndex: cs.CommitIndex, AppliedIndex: cs.AppliedIndex,
			LastIndex: cs.LastIndex, Leader: cs.LeaderID, LeaderReady: cs.LeaderReady}
		if h.n.mem != nil {
			t := h.n.mem.takeover()
			if !t.Started.IsZero() {
				st.Cluster.LastTakeover = &api.Takeover{Started: t.Started.UTC(), LoadMS: ms(t.Load), CommitMS: ms(t.Commit),
					InstallMS: ms(t.Install), EngineMS: ms(t.Engine), IKESAs: t.IKESAs, ChildSAs: t.ChildSAs}
			}
		}
	}
	for _, c := range h.n.cfg.Connections {
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
