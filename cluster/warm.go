package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// WarmConnections opens pooled Raft connections from this node to every
// other voter (conns each, at most the transport's pool of 3), so that an
// election and the first heartbeats of a new leader do not wait for TCP and
// TLS handshakes. Each connection carries one AppendEntries of term 0,
// which every member refuses without a change of state (an older term).
// A planned handover's target calls it while it stages its takeover.
// Errors are ignored: a connection that cannot be opened now will be dialed
// when it is needed, as without warming.
func (n *Node) WarmConnections(conns int) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	conns = min(max(conns, 1), 3)
	local := n.trans.LocalAddr()
	var wg sync.WaitGroup
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || string(s.ID) == n.cfg.NodeID {
			continue
		}
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := &raft.AppendEntriesRequest{
					RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(n.cfg.NodeID), Addr: n.trans.EncodePeer(raft.ServerID(n.cfg.NodeID), local)},
				}
				var resp raft.AppendEntriesResponse
				_ = n.trans.AppendEntries(s.ID, s.Address, req, &resp)
			}()
		}
	}
	wg.Wait()
}
