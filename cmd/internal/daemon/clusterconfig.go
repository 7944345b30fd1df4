package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"ikegw/cluster"
	"ikegw/cmd/api"
	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/xfrm"
)

// Cluster-wide configuration.
//
// Only the connections section is cluster-wide: `ikegwctl config apply`
// commits it through Raft (cluster.ConfigApply, sealed in the log and the
// store) and every node runs it. Everything else in a node's file is
// node-local and never replicated: node (name, state_dir, cluster key),
// ike (listen addresses, ports), dataplane, log, admin, metrics, cluster
// (addresses, keys, certificates, timings) and failover (VIPs, interfaces).
// psk_file paths inside connections are resolved on each node, relative to
// that node's configuration file: the PSK files must exist on every
// gateway. Until the first apply, each node runs its own file's
// connections (version 0); after it, the replicated version wins over the
// file (SIGHUP refuses to change connections then).

// configPollInterval is how often a node looks for a newer replicated
// configuration.
const configPollInterval = 250 * time.Millisecond

// configSync loads the replicated connections on a cluster node.
type configSync struct {
	n   *Node
	log *slog.Logger

	mu  sync.Mutex
	cur api.ConfigApplied
	// failed is the version that failed to load here (not retried until a
	// newer one arrives).
	failed uint64
	// rtSeen is the runtime last reconfigured with cur (a takeover builds
	// a new one).
	rtSeen *runtime.Runtime
	rtVer  uint64

	stop chan struct{}
	done chan struct{}
}

func newConfigSync(n *Node) *configSync {
	s := &configSync{n: n, log: n.log.With("component", "config"), stop: make(chan struct{}), done: make(chan struct{})}
	s.cur.Connections = connNames(n.cfg.Connections)
	return s
}

func connNames(cs []*config.Connection) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// applied returns what this node runs.
func (s *configSync) applied() api.ConfigApplied {
	if s == nil {
		return api.ConfigApplied{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cur
	c.Connections = slices.Clone(c.Connections)
	return c
}

// run polls the store until stop.
func (s *configSync) run() {
	defer close(s.done)
	t := time.NewTicker(configPollInterval)
	defer t.Stop()
	for {
		s.load()
		s.reconfigure()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *configSync) close() {
	close(s.stop)
	<-s.done
}

// decodeClusterConns decodes the replicated document (`connections: [...]`)
// with psk_file paths relative to baseDir.
func decodeClusterConns(data []byte, baseDir string) ([]*config.Connection, error) {
	var doc struct {
		Connections yaml.Node `yaml:"connections"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if doc.Connections.Kind == 0 {
		return nil, errors.New("config: connections: missing")
	}
	cc, err := config.DecodeConnections(&doc.Connections, baseDir)
	if err != nil {
		return nil, err
	}
	return cc.Connections, nil
}

// load takes a newer replicated version into the node's configuration (not
// into a running engine: see reconfigure). It never calls into the
// runtime, so the takeover may call it through Config.connections.
func (s *configSync) load() {
	db := s.n.cnode.Store()
	if db == nil {
		return
	}
	ver, data, err := cluster.ReadConfig(db)
	if err != nil {
		s.log.Warn("reading the replicated configuration failed", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ver == 0 || ver <= s.cur.Version || ver == s.failed {
		return
	}
	conns, err := decodeClusterConns(data, s.n.cfg.baseDir)
	if err == nil {
		_, err = ikev1.New(ikev1.Config{Connections: conns, Log: slog.New(slog.DiscardHandler)})
	}
	if err != nil {
		// Only this node's view is wrong (a missing psk_file, typically):
		// keep running the previous connections and say so.
		s.failed = ver
		s.cur.Error = fmt.Sprintf("version %d: %v", ver, err)
		s.log.Error("the replicated configuration does not load on this node; keeping the previous connections", "version", ver, "err", err)
		return
	}
	s.n.forceEncap(conns)
	s.n.cfg.setConnectionsOnly(conns)
	s.n.updateForward()
	idx, ok := s.n.cnode.ConfigIndex(ver)
	if !ok {
		// Compacted: at or below the FSM's applied index (the store holds
		// the version; raft's own index may still be below it right after
		// a restart that kept the store).
		idx = s.n.cnode.FSMAppliedIndex()
	}
	s.cur = api.ConfigApplied{Version: ver, RaftIndex: idx, AppliedAt: time.Now().UTC(), Connections: connNames(conns)}
	s.log.Info("cluster-wide configuration loaded", "version", ver, "connections", len(conns), "raft_index", s.cur.RaftIndex)
}

// reconfigure hands the current connections to a running engine that has
// not got them yet (a new version, or a runtime a takeover just built).
func (s *configSync) reconfigure() {
	rt := s.n.runtime()
	s.mu.Lock()
	ver := s.cur.Version
	if rt == nil || ver == 0 || (rt == s.rtSeen && s.rtVer == ver) {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	conns := s.n.cfg.connectionsOnly()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := rt.Do(ctx, func(_ time.Time, e *ikev1.Engine) ([]ikev1.Action, error) { return nil, e.Reconfigure(conns) })
	if err != nil {
		s.log.Error("reconfiguring the engine with the replicated connections failed", "version", ver, "err", err)
		return
	}
	s.mu.Lock()
	s.rtSeen, s.rtVer = rt, ver
	s.mu.Unlock()
	s.log.Info("engine runs the cluster-wide configuration", "version", ver, "connections", len(conns))
}

// forceEncap makes every connection UDP-encapsulate on the userspace data
// plane (it carries ESP only inside UDP).
func (n *Node) forceEncap(conns []*config.Connection) {
	if n.dp != nil && n.dp.Kind() == xfrm.KindUserspace {
		for _, c := range conns {
			c.ForceEncap = true
		}
	}
}

// applyBody reads a posted configuration file and keeps its connections
// section: the document to replicate, the decoded connections (validated
// here: nothing is committed when this fails), and the node-local sections
// it ignores.
func (n *Node) applyBody(data []byte) (doc []byte, conns []*config.Connection, ignored []string, err error) {
	var top yaml.Node
	if err := yaml.Unmarshal(data, &top); err != nil {
		return nil, nil, nil, fmt.Errorf("config: %w", err)
	}
	if top.Kind != yaml.DocumentNode || len(top.Content) != 1 || top.Content[0].Kind != yaml.MappingNode {
		return nil, nil, nil, errors.New("config: want a YAML mapping with a connections section")
	}
	var list *yaml.Node
	m := top.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i].Value; k == "connections" {
			list = m.Content[i+1]
		} else {
			ignored = append(ignored, k)
		}
	}
	if list == nil {
		return nil, nil, nil, errors.New("config: connections: missing (only the connections section is cluster-wide)")
	}
	cc, err := config.DecodeConnections(list, n.cfg.baseDir)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := ikev1.New(ikev1.Config{Connections: cc.Connections, Log: slog.New(slog.DiscardHandler)}); err != nil {
		return nil, nil, nil, fmt.Errorf("config: connections: %w", err)
	}
	out, err := yaml.Marshal(map[string]*yaml.Node{"connections": list})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("config: %w", err)
	}
	return out, cc.Connections, ignored, nil
}

// configApply validates the posted file's connections and commits them
// through Raft (leader only); this node applies them at once, the others
// within configPollInterval (and a takeover always uses the latest).
func (h *adminHandler) configApply(w http.ResponseWriter, r *http.Request) {
	switch {
	case h.n.cnode == nil:
		writeErr(w, http.StatusConflict, errors.New("config apply: this node is not a cluster member (a standalone node reloads its file on SIGHUP)"))
		return
	case h.n.sync == nil:
		writeErr(w, http.StatusConflict, fmt.Errorf("config apply: %s is a witness (it runs no connections): ask the leading gateway", h.n.cfg.Node.Name))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, 4<<20+1))
	if err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("config apply: body: %w", err))
		return
	}
	if len(data) > 4<<20 {
		writeErr(w, http.StatusRequestEntityTooLarge, errors.New("config apply: file larger than 4 MiB"))
		return
	}
	doc, conns, ignored, err := h.n.applyBody(data)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, api.Validation{Error: err.Error()})
		return
	}
	if h.n.cnode.Stats().State != "Leader" {
		h.notLeader(w, "config apply")
		return
	}
	ver, _, err := cluster.ReadConfig(h.n.cnode.Store())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("config apply: reading the applied version: %w", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := h.n.cnode.Commit(ctx, cluster.ConfigApply(ver+1, doc)); err != nil {
		if errors.Is(err, cluster.ErrNotLeader) {
			h.notLeader(w, "config apply")
			return
		}
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("config apply: commit: %w", err))
		return
	}
	h.log.Info("cluster-wide configuration committed", "version", ver+1, "connections", len(conns))
	h.n.sync.load()
	h.n.sync.reconfigure()
	out := h.n.sync.applied()
	out.Ignored = ignored
	if out.Version != ver+1 && out.Error == "" {
		// A concurrent apply overtook this one: say what runs.
		out.Error = fmt.Sprintf("version %d committed, but this node now runs version %d", ver+1, out.Version)
	}
	writeJSON(w, http.StatusOK, out)
}

// configApplied shows the cluster-wide configuration this node runs.
func (h *adminHandler) configApplied(w http.ResponseWriter, r *http.Request) {
	out := h.n.sync.applied()
	if h.n.sync == nil {
		out.Connections = connNames(h.n.cfg.connectionsOnly())
	}
	writeJSON(w, http.StatusOK, out)
}

// runningYAML is the node's file with its connections section replaced by
// the replicated one when a version is applied (before redaction).
func (n *Node) runningYAML() ([]byte, error) {
	if n.sync == nil || n.sync.applied().Version == 0 || n.cnode.Store() == nil {
		return n.cfg.Raw, nil
	}
	_, data, err := cluster.ReadConfig(n.cnode.Store())
	if err != nil {
		return nil, err
	}
	var file, repl yaml.Node
	if err := yaml.Unmarshal(n.cfg.Raw, &file); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := yaml.Unmarshal(data, &repl); err != nil {
		return nil, fmt.Errorf("config: replicated: %w", err)
	}
	if len(file.Content) != 1 || len(repl.Content) != 1 || len(repl.Content[0].Content) != 2 {
		return n.cfg.Raw, nil
	}
	m, list := file.Content[0], repl.Content[0].Content[1]
	found := false
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "connections" {
			m.Content[i+1], found = list, true
		}
	}
	if !found {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "connections"}, list)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&file); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
