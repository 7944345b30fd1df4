package store

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"ikegw/ike/sa"
)

// appendCounters writes what sa.Marshal writes and decodeCounters reads it
// back, for values at every CBOR length boundary, empty and present
// optional fields, negative SyncedAt and bitmaps of several lengths.
func TestCountersCodec(t *testing.T) {
	edges := []uint64{0, 1, 23, 24, 255, 256, math.MaxUint16, math.MaxUint16 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() uint64 {
		if rng.IntN(2) == 0 {
			return edges[rng.IntN(len(edges))]
		}
		return rng.Uint64() >> rng.IntN(64)
	}
	for i := range 5000 {
		c := sa.Counters{OutSeq: pick(), InSeq: pick(), InBytes: pick(), InPackets: pick(), OutBytes: pick(), OutPackets: pick(), SyncedAt: int64(pick())}
		if i%3 == 0 {
			c.SyncedAt = -c.SyncedAt
		}
		if i%7 == 0 {
			c.SyncedAt = math.MinInt64
		}
		if n := rng.IntN(5); n > 0 {
			c.ReplayBitmap = make([]uint64, n)
			for j := range c.ReplayBitmap {
				c.ReplayBitmap[j] = pick()
			}
		}
		want, err := sa.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got := appendCounters(nil, &c)
		if !bytes.Equal(got, want) {
			t.Fatalf("%+v:\nappendCounters %x\nsa.Marshal     %x", c, got, want)
		}
		back, ok := decodeCounters(got)
		if !ok || !reflect.DeepEqual(back, c) {
			t.Fatalf("decodeCounters(%x) = %+v, %v; want %+v", got, back, ok, c)
		}
	}
}

// decodeCounters refuses what it does not read as the typed decoder does,
// and reads non-shortest heads and any key order like it.
func TestDecodeCountersAgreesWithCBOR(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"keys out of order, long heads", "a3" + "02" + "1900ff" + "01" + "1b0000000000000005" + "08" + "3903e7", true},
		{"empty bitmap", "a3" + "0101" + "0202" + "0380", true},
		{"duplicate key", "a2" + "0101" + "0102", false},
		{"unknown key", "a3" + "0101" + "0202" + "0901", false},
		{"negative OutSeq", "a2" + "0120" + "0202", false},
		{"indefinite map", "bf" + "0101" + "0202" + "ff", false},
		{"null bitmap", "a3" + "0101" + "0202" + "03f6", false},
		{"text value", "a2" + "0161" + "61" + "0202", false},
		{"SyncedAt beyond int64", "a3" + "0101" + "0202" + "081bffffffffffffffff", false},
		{"trailing byte", "a2" + "0101" + "0202" + "00", false},
		{"short", "a2" + "0101" + "02", false},
	}
	for _, c := range cases {
		in := unhex(t, c.in)
		got, ok := decodeCounters(in)
		if ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.name, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		var want sa.Counters
		if err := rawDec.Unmarshal(in, &want); err != nil {
			t.Fatalf("%s: typed decoder refuses what decodeCounters reads: %v", c.name, err)
		}
		if len(want.ReplayBitmap) == 0 && len(got.ReplayBitmap) == 0 {
			want.ReplayBitmap, got.ReplayBitmap = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decodeCounters %+v, typed decoder %+v", c.name, got, want)
		}
	}
}

// The merge of one pair's counters into its stored record: the step every
// counters sync repeats for every pair on every node.
func BenchmarkSpliceCounters(b *testing.B) {
	rec, err := sa.Marshal(sampleChild(1))
	if err != nil {
		b.Fatal(err)
	}
	upd := sa.Counters{OutSeq: 1 << 20, InSeq: 1 << 20, ReplayBitmap: []uint64{^uint64(0)}, InBytes: 1 << 30, OutBytes: 1 << 30, SyncedAt: 1 << 60}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := spliceCounters(rec, upd); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
