package store

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"ikegw/ike/sa"

	"github.com/fxamacker/cbor/v2"
)

// MergeCounters returns the Counters to store when update arrives for a child
// whose stored Counters are old. It is a pure function (the FSM applies it on
// every node):
//
//   - OutSeq is the larger of the two: outbound sequence numbers never go
//     back (DESIGN.md invariant 3), even if an older sync is applied late.
//   - InSeq is the larger of the two, and ReplayBitmap goes with the InSeq it
//     describes; when both InSeq are equal the bitmaps are ORed (a packet
//     seen by either is seen).
//   - The traffic counters and SyncedAt are taken from update.
func MergeCounters(old, update sa.Counters) sa.Counters {
	out := update
	out.OutSeq = max(old.OutSeq, update.OutSeq)
	switch {
	case update.InSeq > old.InSeq:
		out.ReplayBitmap = slices.Clone(update.ReplayBitmap)
	case update.InSeq < old.InSeq:
		out.InSeq = old.InSeq
		out.ReplayBitmap = slices.Clone(old.ReplayBitmap)
	default:
		n := max(len(old.ReplayBitmap), len(update.ReplayBitmap))
		if n == 0 {
			out.ReplayBitmap = nil
			break
		}
		bm := make([]uint64, n)
		for i := range bm {
			if i < len(old.ReplayBitmap) {
				bm[i] |= old.ReplayBitmap[i]
			}
			if i < len(update.ReplayBitmap) {
				bm[i] |= update.ReplayBitmap[i]
			}
		}
		out.ReplayBitmap = bm
	}
	return out
}

// rawMap is a CBOR map with integer keys whose values stay encoded: a record
// as written, including keys this build does not know.
type rawMap = map[uint64]cbor.RawMessage

var (
	rawDec cbor.DecMode
	// childCountersKey is the CBOR key of sa.ChildSA.Counters.
	childCountersKey uint64
	// countersKeys are the CBOR keys of sa.Counters this build knows.
	countersKeys []uint64
)

func init() {
	var err error
	rawDec, err = cbor.DecOptions{
		MaxArrayElements: 1 << 16,
		MaxMapPairs:      1 << 16,
		MaxNestedLevels:  16,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	keys := cborKeys(reflect.TypeFor[sa.ChildSA]())
	k, ok := keys["Counters"]
	if !ok {
		panic("store: sa.ChildSA has no Counters field with an integer CBOR key")
	}
	childCountersKey = k
	for _, v := range cborKeys(reflect.TypeFor[sa.Counters]()) {
		countersKeys = append(countersKeys, v)
	}
}

// cborKeys maps the field names of struct type t to their integer CBOR keys.
func cborKeys(t reflect.Type) map[string]uint64 {
	m := map[string]uint64{}
	for f := range t.Fields() {
		tag := f.Tag.Get("cbor")
		name, opts, _ := strings.Cut(tag, ",")
		if !strings.Contains(","+opts+",", ",keyasint,") {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil {
			m[f.Name] = n
		}
	}
	return m
}

// replaceCounters returns the CBOR child record rec with its Counters
// replaced by c. Keys of the record and of its Counters that this build does
// not know are carried over unchanged, so a record written by a newer build
// loses nothing when an older build updates its counters. The result is in
// deterministic encoding, equal to sa.Marshal of the record when it has no
// unknown keys.
func replaceCounters(rec []byte, c *sa.Counters) ([]byte, error) {
	var top rawMap
	if err := rawDec.Unmarshal(rec, &top); err != nil {
		return nil, fmt.Errorf("decode record as a CBOR map: %w", err)
	}
	var cm rawMap
	if old, ok := top[childCountersKey]; ok {
		if err := rawDec.Unmarshal(old, &cm); err != nil {
			return nil, fmt.Errorf("decode counters (key %d) as a CBOR map: %w", childCountersKey, err)
		}
	}
	if cm == nil {
		cm = rawMap{}
	}
	for _, k := range countersKeys {
		delete(cm, k)
	}
	nb, err := sa.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode counters: %w", err)
	}
	var nm rawMap
	if err := rawDec.Unmarshal(nb, &nm); err != nil {
		return nil, fmt.Errorf("re-decode counters: %w", err)
	}
	for k, v := range nm {
		cm[k] = v
	}
	cb, err := sa.Marshal(cm)
	if err != nil {
		return nil, fmt.Errorf("encode counters: %w", err)
	}
	top[childCountersKey] = cb
	out, err := sa.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return out, nil
}
