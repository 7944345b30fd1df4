package daemon

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/cluster"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
	"ikegw/store"
	"ikegw/xfrm"
)

// oneNodeCluster is a single-voter cluster on in-memory Raft, leader once
// it returns.
func oneNodeCluster(t *testing.T) *cluster.Node {
	t.Helper()
	sealer, err := store.NewSealer(bytes.Repeat([]byte{7}, store.ClusterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "sa.db"), sealer)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("n1")
	ls := raft.NewInmemStore()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := cluster.New(cluster.Config{NodeID: "n1", Role: cluster.RoleGateway, Peers: []cluster.Peer{{ID: "n1", Address: "n1", Role: cluster.RoleGateway}}, Log: log},
		cluster.Deps{DB: db, Sealer: sealer, Transport: trans, Logs: ls, Stable: ls, Snapshots: raft.NewInmemSnapshotStore(), Close: db.Close})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeaderReady() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

// A fence that kept the runtime while a handover this node announced was
// pending: the re-activation in the same term cancels the announcement
// (its target must never trust what it staged from before this node's
// next SA changes) and opens the commit gate the announcement closed, as
// a full takeover does.
func TestKeptReactivationEndsTheAnnouncement(t *testing.T) {
	n := oneNodeCluster(t)
	eng, err := ikev1.New(ikev1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ike, natt := freeUDPPort(t), freeUDPPort(t)
	rt, err := runtime.New(runtime.Config{Engine: eng, Listen: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Port: ike, NATTPort: natt,
		Persister: clusterPersister{node: n}, DataPlane: nopDataPlane{}, CounterSync: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := &member{cfg: &Config{}, log: log, node: n, rt: rt}
	m.cfg.Node.Name = "n1"
	term := n.Raft().CurrentTerm()
	m.announced, m.announcedTerm = 42, term
	m.gate.close()
	m.keptTerm = term // what fence leaves behind
	if err := m.activate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.rt != rt {
		t.Fatal("the kept runtime was replaced")
	}
	if m.announced != 0 || m.keptTerm != 0 {
		t.Fatalf("announced %d, kept term %d after the re-activation", m.announced, m.keptTerm)
	}
	m.gate.mu.RLock()
	closed := m.gate.closed
	m.gate.mu.RUnlock()
	if closed {
		t.Fatal("the commit gate stays closed after the re-activation")
	}
	h, ok, err := cluster.ReadHandover(n.Store())
	if err != nil || !ok || h.To != "" || h.From != "n1" || h.Term != term {
		t.Fatalf("last handover %+v (%v, %v): want this node's cancel in term %d", h, ok, err, term)
	}
}

// nopDataPlane is a runtime.DataPlane holding nothing.
type nopDataPlane struct{}

func (nopDataPlane) InstallChild(context.Context, *sa.ChildSA) error { return nil }
func (nopDataPlane) DeleteChild(context.Context, *sa.ChildSA) error  { return nil }
func (nopDataPlane) Counters(context.Context) (map[uint32]sa.Counters, error) {
	return nil, nil
}

// freeUDPPort is a loopback UDP port nobody holds now.
func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// TestFenceKeepsOnlyGatedSends: a fence keeps the runtime and the pairs
// only where both stop sending with the lease (the userspace data plane
// and the runtime's send gate); the kernel data plane's states, or a
// runtime without the gate, would send on, so they are flushed.
func TestFenceKeepsOnlyGatedSends(t *testing.T) {
	n := oneNodeCluster(t)
	for _, tc := range []struct {
		name   string
		kernel bool
		gate   bool
		kept   bool
	}{
		{"userspace with the gate", false, true, true},
		{"kernel", true, true, false},
		{"userspace without the gate", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, _, log := stageEngine(t)
			var dp xfrm.DataPlane = e
			if tc.kernel {
				dp = kernelKind{e}
			}
			eng, err := ikev1.New(ikev1.Config{})
			if err != nil {
				t.Fatal(err)
			}
			rt, err := runtime.New(runtime.Config{Engine: eng, Listen: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
				Port: freeUDPPort(t), NATTPort: freeUDPPort(t), Persister: clusterPersister{node: n}, DataPlane: nopDataPlane{}, CounterSync: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Close() })
			m := &member{cfg: &Config{}, log: log, node: n, dp: dp, rt: rt, sender: &lateSender{}}
			if tc.gate {
				m.sendGate = &(&fence{}).gate
			}
			m.install(context.Background(), []*sa.ChildSA{stageTestChild(1)})
			kept := m.fence()
			t.Cleanup(m.deactivate)
			ids, _ := e.Installed(context.Background())
			if kept != tc.kept || (m.rt != nil) != tc.kept || (len(ids) == 1) != tc.kept {
				t.Fatalf("fence kept %v (runtime kept %v, %d pairs left), want %v", kept, m.rt != nil, len(ids), tc.kept)
			}
		})
	}
}
