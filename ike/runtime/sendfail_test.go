package runtime

import (
	"net/netip"
	"testing"

	"ikegw/ike/ikev1"
)

// TestSendESPBatchFailureCountsNothing: when sendmmsg fails (here: the
// source address the runtime uses with this peer is not on the host, as
// after a fence removed the VIP), SendESPBatch reports 0 packets sent and
// the error, on the segmentation-offload path and packet by packet. x/net
// hands sendmmsg's -1 through, and a count of -1 made the userspace data
// plane index its batch at -1 and panic (found by TestChaosLoss).
func TestSendESPBatchFailureCountsNothing(t *testing.T) {
	eng, err := ikev1.New(ikev1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	port, natt := freeUDPPort(t, "127.0.0.1"), freeUDPPort(t, "127.0.0.1")
	r, err := New(Config{Engine: eng, Listen: []netip.Addr{netip.IPv4Unspecified()}, Port: port, NATTPort: natt,
		Persister: &flakyPersister{}, DataPlane: &testDP{}, CounterSync: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	r.srcFor.Store(dst.Addr(), netip.MustParseAddr("192.0.2.254")) // not on this host
	pkts := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 60)}
	dsts := []netip.AddrPort{dst, dst, dst}
	for _, gso := range []bool{true, false} {
		for _, s := range r.socks {
			s.gsoOff.Store(!gso)
		}
		n, err := r.SendESPBatch(pkts, dsts)
		if err == nil || n != 0 {
			t.Errorf("gso %v: SendESPBatch from an address not on the host: %d sent, err %v; want 0 and an error", gso, n, err)
		}
	}
}
