package cluster

import (
	"testing"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
)

// BenchmarkFollowerApply measures what a node's FSM does with the entries
// of a cluster handshake run (bench/clusterhs), on an SA database without
// fsync as cluster nodes open it (store.DB.SetNoSync):
//
//   - handshakes: a Batch entry of 10 tunnels, each one group of the
//     records a Main Mode + Quick Mode commits (the ISAKMP SA, the IPsec SA
//     pair, the ISAKMP SA again with the Quick Mode's state); ns/op per
//     entry, and per tunnel.
//   - counters-1000: the once-a-second counter sync of 1,000 established
//     pairs (one CountersBatch: every pair's record opened, merged, sealed
//     again).
func BenchmarkFollowerApply(b *testing.B) {
	s := testSealer(b)
	b.Run("handshakes", func(b *testing.B) {
		db := testDB(b, s)
		db.SetNoSync(true)
		f := NewFSM(DBBackend(db), s, quietLog())
		const tunnels = 10
		n := 0
		entry := func() []byte {
			var groups [][]Command
			for range tunnels {
				n++
				ike := ikeN(n)
				ch := testChild(uint32(n) << 8)
				ch.IKE = ike.Cookies
				groups = append(groups, []Command{UpsertIKE(ike), UpsertChild(ch), UpsertIKE(ike)})
			}
			return batchEntry(b, s, groups...)
		}
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			e := entry()
			b.StartTimer()
			if br, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Data: e}).(*BatchResult); !ok || br.Errs[0] != nil {
				b.Fatal("apply failed")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tunnels), "ns/tunnel")
	})
	b.Run("counters-1000", func(b *testing.B) {
		db := testDB(b, s)
		db.SetNoSync(true)
		f := NewFSM(DBBackend(db), s, quietLog())
		const pairs = 1000
		var groups [][]Command
		for i := range pairs {
			groups = append(groups, []Command{UpsertChild(testChild(uint32(i+1) << 8))})
		}
		if br, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Data: batchEntry(b, s, groups...)}).(*BatchResult); !ok || br.Errs[0] != nil {
			b.Fatal("loading the pairs failed")
		}
		seq := uint64(0)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			seq += 100
			m := make(map[uint32]sa.Counters, pairs)
			for i := range pairs {
				m[uint32(i+1)<<8] = sa.Counters{OutSeq: seq, InSeq: seq, ReplayBitmap: []uint64{^uint64(0)}, OutPackets: seq, SyncedAt: int64(seq)}
			}
			e := batchEntry(b, s, []Command{CountersBatch(m)})
			b.StartTimer()
			if br, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Data: e}).(*BatchResult); !ok || br.Errs[0] != nil {
				b.Fatalf("apply failed: %v", br)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pairs), "ns/pair")
	})
}
