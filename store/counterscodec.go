package store

import (
	"math"
	"reflect"

	"ikegw/ike/sa"
)

// A hand-written codec for sa.Counters, the value every counters merge
// decodes and encodes again (once a second for every IPsec SA pair, on
// every node): the reflection-based CBOR codec took as long as opening and
// sealing the record. decodeCounters reads only what the typed decoder
// reads the same way and says so; appendCounters writes exactly what
// sa.Marshal writes (core deterministic encoding). TestCountersCodec and
// FuzzMergeCounters hold them to that.

// Counters' integer CBOR keys (sa.Counters' struct tags).
const (
	ckOutSeq uint64 = iota + 1
	ckInSeq
	ckReplayBitmap
	ckInBytes
	ckInPackets
	ckOutBytes
	ckOutPackets
	ckSyncedAt
)

// maxBitmapWords is the typed decoder's MaxArrayElements (rawDec).
const maxBitmapWords = 1 << 16

// decodeCounters decodes the encoded Counters map b. ok is false for
// anything but a definite-length map of the known keys, each at most once,
// with unsigned values (SyncedAt: an integer in int64's range;
// ReplayBitmap: a definite-length array of unsigned integers): the caller
// then uses the general decoder.
func decodeCounters(b []byte) (c sa.Counters, ok bool) {
	major, ai, n, off, err := cborHead(b, 0)
	if err != nil || major != 5 || ai == 31 || n > 8 {
		return c, false
	}
	var seen uint16
	for range n {
		km, kai, key, next, err := cborHead(b, off)
		if err != nil || km != 0 || kai == 31 || key < ckOutSeq || key > ckSyncedAt || seen&(1<<key) != 0 {
			return c, false
		}
		seen |= 1 << key
		vm, vai, v, after, err := cborHead(b, next)
		if err != nil || vai == 31 {
			return c, false
		}
		switch key {
		case ckReplayBitmap:
			if vm != 4 || v > maxBitmapWords || v > uint64(len(b)-after) {
				return c, false
			}
			bm := make([]uint64, v)
			for i := range bm {
				em, eai, e, enext, err := cborHead(b, after)
				if err != nil || em != 0 || eai == 31 {
					return c, false
				}
				bm[i], after = e, enext
			}
			c.ReplayBitmap = bm
		case ckSyncedAt:
			switch {
			case vm == 0 && v <= math.MaxInt64:
				c.SyncedAt = int64(v)
			case vm == 1 && v <= math.MaxInt64:
				c.SyncedAt = -1 - int64(v)
			default:
				return c, false
			}
		default:
			if vm != 0 {
				return c, false
			}
			switch key {
			case ckOutSeq:
				c.OutSeq = v
			case ckInSeq:
				c.InSeq = v
			case ckInBytes:
				c.InBytes = v
			case ckInPackets:
				c.InPackets = v
			case ckOutBytes:
				c.OutBytes = v
			case ckOutPackets:
				c.OutPackets = v
			}
		}
		off = after
	}
	if off != len(b) {
		return c, false
	}
	return c, true
}

// appendHead appends a CBOR head in its shortest form.
func appendHead(dst []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(dst, m|byte(v))
	case v <= math.MaxUint8:
		return append(dst, m|24, byte(v))
	case v <= math.MaxUint16:
		return append(dst, m|25, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(dst, m|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(dst, m|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendCounters appends sa.Marshal(c): a map of OutSeq and InSeq and of
// the other fields that are not empty (omitempty), keys in order.
func appendCounters(dst []byte, c *sa.Counters) []byte {
	n := uint64(2)
	for _, present := range []bool{len(c.ReplayBitmap) > 0, c.InBytes != 0, c.InPackets != 0, c.OutBytes != 0, c.OutPackets != 0, c.SyncedAt != 0} {
		if present {
			n++
		}
	}
	dst = appendHead(dst, 5, n)
	dst = appendHead(appendHead(dst, 0, ckOutSeq), 0, c.OutSeq)
	dst = appendHead(appendHead(dst, 0, ckInSeq), 0, c.InSeq)
	if len(c.ReplayBitmap) > 0 {
		dst = appendHead(appendHead(dst, 0, ckReplayBitmap), 4, uint64(len(c.ReplayBitmap)))
		for _, w := range c.ReplayBitmap {
			dst = appendHead(dst, 0, w)
		}
	}
	for _, f := range []struct {
		k, v uint64
	}{{ckInBytes, c.InBytes}, {ckInPackets, c.InPackets}, {ckOutBytes, c.OutBytes}, {ckOutPackets, c.OutPackets}} {
		if f.v != 0 {
			dst = appendHead(appendHead(dst, 0, f.k), 0, f.v)
		}
	}
	if c.SyncedAt > 0 {
		dst = appendHead(appendHead(dst, 0, ckSyncedAt), 0, uint64(c.SyncedAt))
	} else if c.SyncedAt < 0 {
		dst = appendHead(appendHead(dst, 0, ckSyncedAt), 1, uint64(-1-c.SyncedAt))
	}
	return dst
}

func init() {
	// The codec knows sa.Counters field by field: a changed struct must
	// change it too (TestCountersCodec then shows what differs).
	want := map[string]uint64{"OutSeq": ckOutSeq, "InSeq": ckInSeq, "ReplayBitmap": ckReplayBitmap, "InBytes": ckInBytes,
		"InPackets": ckInPackets, "OutBytes": ckOutBytes, "OutPackets": ckOutPackets, "SyncedAt": ckSyncedAt}
	got := cborKeys(reflect.TypeFor[sa.Counters]())
	if len(got) != len(want) || reflect.TypeFor[sa.Counters]().NumField() != len(want) {
		panic("store: sa.Counters changed: update counterscodec.go")
	}
	for name, k := range want {
		if got[name] != k {
			panic("store: sa.Counters." + name + " changed its CBOR key: update counterscodec.go")
		}
	}
}
