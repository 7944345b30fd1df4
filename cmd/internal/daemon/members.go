package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"ikegw/cluster"
	"ikegw/cmd/api"
)

// notLeader answers a request only the Raft leader serves: 409 naming the
// leader, so that the admin asks it (a follower does not forward).
func (h *adminHandler) notLeader(w http.ResponseWriter, what string) {
	st := h.n.cnode.Stats()
	if st.LeaderID == "" {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%s: node %s is not the Raft leader and knows no leader (no quorum?)", what, h.n.cfg.Node.Name))
		return
	}
	writeErr(w, http.StatusConflict, fmt.Errorf("%s: node %s is not the Raft leader: ask the leader %s (Raft address %s)", what,
		h.n.cfg.Node.Name, st.LeaderID, st.LeaderAddr))
}

func (h *adminHandler) memberViews() ([]api.Member, error) {
	m, err := h.memberList()
	return m.Members, err
}

// membersRemove takes a member out of the cluster (leader only). The
// active gateway is refused: fail over first.
func (h *adminHandler) membersRemove(w http.ResponseWriter, r *http.Request) {
	if h.n.cnode == nil {
		writeErr(w, http.StatusConflict, errors.New("members remove: this node is not a cluster member"))
		return
	}
	id := r.URL.Query().Get("node")
	if id == "" {
		writeErr(w, http.StatusBadRequest, errors.New("members remove: node=NAME is required"))
		return
	}
	if a, ok, err := cluster.ReadActive(h.n.cnode.Store()); err == nil && ok && a.Node == id {
		writeErr(w, http.StatusConflict, fmt.Errorf("members remove: %s is the active gateway: move the active role first (ikegwctl failover --to ANOTHER_GATEWAY), then remove it", id))
		return
	}
	if h.n.cnode.Stats().State != "Leader" {
		h.notLeader(w, "members remove")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	h.log.Info("member removal requested", "member", id)
	err := h.n.cnode.RemoveMember(ctx, id)
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		h.notLeader(w, "members remove")
		return
	case errors.Is(err, cluster.ErrUnknownNode):
		writeErr(w, http.StatusNotFound, fmt.Errorf("members remove: %w", err))
		return
	case errors.Is(err, cluster.ErrQuorum), errors.Is(err, cluster.ErrTwoNodes), errors.Is(err, cluster.ErrRemoveSelf):
		writeErr(w, http.StatusConflict, fmt.Errorf("members remove: %w", err))
		return
	case err != nil:
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("members remove: %w", err))
		return
	}
	ms, err := h.memberViews()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, api.MemberChange{Action: "remove", Node: id, Members: ms})
}

// membersJoin contacts a node at its gossip address; the leader makes it a
// voter. Any member serves it.
func (h *adminHandler) membersJoin(w http.ResponseWriter, r *http.Request) {
	if h.n.cnode == nil {
		writeErr(w, http.StatusConflict, errors.New("members join: this node is not a cluster member"))
		return
	}
	addr := r.URL.Query().Get("addr")
	if addr == "" {
		writeErr(w, http.StatusBadRequest, errors.New("members join: addr=HOST:PORT (the new node's gossip address) is required"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	h.log.Info("member join requested", "addr", addr)
	name, err := h.n.cnode.AddMember(ctx, addr)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		writeErr(w, code, fmt.Errorf("members join: %w", err))
		return
	}
	ms, err := h.memberViews()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, api.MemberChange{Action: "join", Node: name, Members: ms})
}
