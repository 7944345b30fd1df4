package store

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"ikegw/ike/sa"
)

// fuzzKey is fixed so the fuzzer's corpus stays meaningful across runs.
var fuzzKey = bytes.Repeat([]byte{0x42}, ClusterKeySize)

// Open never panics on garbage, and what opens is what was sealed.
func FuzzSealerOpen(f *testing.F) {
	s, err := NewSealer(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{}, []byte{})
	f.Add(s.Seal([]byte("hello"), []byte("ad")), []byte("ad"))
	f.Add(s.Seal(nil, nil), []byte{})
	f.Add(bytes.Repeat([]byte{1}, SealOverhead), []byte("x"))
	f.Fuzz(func(t *testing.T, blob, ad []byte) {
		pt, err := s.Open(blob, ad)
		if err == nil {
			// Only a genuine seal opens; the fuzzer cannot forge one, so
			// this is a corpus entry: it must round trip.
			if again, err := s.Open(s.Seal(pt, ad), ad); err != nil || !bytes.Equal(again, pt) {
				t.Fatalf("reseal does not round trip: %v", err)
			}
			return
		}
		if pt != nil {
			t.Fatal("Open returned plaintext with an error")
		}
		if !errors.Is(err, ErrSealed) && !errors.Is(err, ErrMalformedSealed) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

// Decoding a stored record never panics, whatever the (authentic) plaintext
// holds; a child record that decodes survives a counters update with its
// other fields unchanged.
func FuzzDecodeRecord(f *testing.F) {
	s, err := NewSealer(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	ib, _ := sa.Marshal(sampleIKE(1))
	cb, _ := sa.Marshal(sampleChild(1))
	f.Add(ib)
	f.Add(cb)
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x10, 0xa1, 0x18, 0x28, 0x01})
	f.Fuzz(func(t *testing.T, pt []byte) {
		var ck [16]byte
		ck[0] = 1
		if r, err := decodeIKE(s, ck[:], s.Seal(pt, recordAD(bucketIKE, ck[:]))); err == nil && r == nil {
			t.Fatal("nil IKE record without error")
		}
		// The child key is taken from the record so the SPI check passes.
		var probe sa.ChildSA
		if sa.Unmarshal(pt, &probe) != nil {
			return
		}
		k := childKey(probe.In.SPI)
		r, raw, err := decodeChild(s, k, s.Seal(pt, recordAD(bucketChild, k)))
		if err != nil {
			t.Fatalf("decodeChild fails on a record sa.Unmarshal accepts: %v", err)
		}
		upd := sa.Counters{OutSeq: 77, InSeq: 5, InBytes: 1}
		merged := MergeCounters(r.Counters, upd)
		nb, err := mergeCountersRaw(raw, upd)
		if err != nil {
			return // e.g. duplicate map keys, refused with an error
		}
		var got sa.ChildSA
		if err := sa.Unmarshal(nb, &got); err != nil {
			t.Fatalf("record after counters update does not decode: %v", err)
		}
		if got.Counters.OutSeq != merged.OutSeq || got.Counters.InSeq != merged.InSeq {
			t.Fatalf("counters %+v, want %+v", got.Counters, merged)
		}
		got.Counters, r.Counters = sa.Counters{}, sa.Counters{}
		if !reflect.DeepEqual(&got, r) {
			t.Fatalf("counters update changed other fields:\n%+v\n%+v", &got, r)
		}
	})
}

// The in-place fast path of a counters merge and the general path agree on
// every input the fast path accepts.
func FuzzMergeCounters(f *testing.F) {
	cb, _ := sa.Marshal(sampleChild(1))
	f.Add(cb, uint64(5), uint64(3))
	newer := sampleChild(2)
	newer.Version = sa.RecordVersion + 1
	nb, _ := sa.Marshal(newer)
	f.Add(nb, uint64(1), uint64(1))
	f.Add([]byte{0xa2, 0x01, 0x01, 0x10, 0xa1, 0x01, 0x05}, uint64(9), uint64(0))
	f.Add([]byte{0xa1, 0x10, 0xa1, 0x18, 0x28, 0x01}, uint64(1), uint64(2))
	f.Add([]byte{0xa3, 0x02, 0x19, 0x00, 0xff, 0x01, 0x05, 0x08, 0x39, 0x03, 0xe7}, uint64(0), uint64(0)) // a Counters map
	f.Fuzz(func(t *testing.T, rec []byte, outSeq, inSeq uint64) {
		// The hand-written Counters decoder reads what it accepts as the
		// typed decoder does.
		if c, ok := decodeCounters(rec); ok {
			var want sa.Counters
			if err := rawDec.Unmarshal(rec, &want); err != nil {
				t.Fatalf("decodeCounters reads %x, the typed decoder refuses it: %v", rec, err)
			}
			if len(c.ReplayBitmap) == 0 && len(want.ReplayBitmap) == 0 {
				c.ReplayBitmap, want.ReplayBitmap = nil, nil
			}
			if !reflect.DeepEqual(c, want) {
				t.Fatalf("decodeCounters(%x) = %+v, typed decoder %+v", rec, c, want)
			}
		}
		upd := sa.Counters{OutSeq: outSeq, InSeq: inSeq, InBytes: 3}
		fast, ok, ferr := spliceCounters(rec, upd)
		slow, serr := mergeCountersMap(rec, upd)
		if !ok {
			return
		}
		if ferr != nil {
			if serr == nil {
				t.Fatalf("fast path refuses (%v), general path accepts", ferr)
			}
			return
		}
		// A record the typed decoder reads still reads the same after the
		// fast path, apart from its counters.
		var before, after sa.ChildSA
		if sa.Unmarshal(rec, &before) == nil {
			if err := sa.Unmarshal(fast, &after); err != nil {
				t.Fatalf("record no longer decodes after the fast path: %v", err)
			}
			if after.Counters.OutSeq < outSeq || after.Counters.InSeq < inSeq {
				t.Fatalf("merged counters went back: %+v", after.Counters)
			}
			before.Counters, after.Counters = sa.Counters{}, sa.Counters{}
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("fast path changed other fields:\n%+v\n%+v", before, after)
			}
		}
		if serr != nil {
			// The general path re-encodes every value and so is stricter
			// about content (e.g. tag validity); the fast path keeps the
			// bytes it does not touch.
			return
		}
		var a, b rawMap
		if err := rawDec.Unmarshal(fast, &a); err != nil {
			t.Fatalf("fast path output does not decode: %v", err)
		}
		if err := rawDec.Unmarshal(slow, &b); err != nil {
			t.Fatalf("general path output does not decode: %v", err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("paths differ:\nfast %x\nslow %x", fast, slow)
		}
	})
}
