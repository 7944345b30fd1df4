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
	// childCountersKey and childVersionKey are the CBOR keys of
	// sa.ChildSA.Counters and sa.ChildSA.Version.
	childCountersKey, childVersionKey uint64
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
	if childVersionKey, ok = keys["Version"]; !ok {
		panic("store: sa.ChildSA has no Version field with an integer CBOR key")
	}
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

// mergeCountersRaw returns the encoded child record rec with its Counters
// merged with update (MergeCounters). Keys of the record and of its Counters
// that this build does not know are carried over unchanged, so a record
// written by a newer build loses nothing when an older build merges a
// counters sync into it. The result is in deterministic encoding, equal to
// sa.Marshal of the updated record when it has no unknown keys. A record
// whose Version is newer than this build's is refused (sa.ErrNewerRecord).
func mergeCountersRaw(rec []byte, update sa.Counters) ([]byte, error) {
	if out, ok, err := spliceCounters(rec, update); ok {
		return out, err
	}
	return mergeCountersMap(rec, update)
}

// mergeCountersMap is the general path of mergeCountersRaw: the record is
// decoded into a map of encoded values and encoded again.
func mergeCountersMap(rec []byte, update sa.Counters) ([]byte, error) {
	var top rawMap
	if err := rawDec.Unmarshal(rec, &top); err != nil {
		return nil, fmt.Errorf("decode record as a CBOR map: %w", err)
	}
	if top == nil { // CBOR null
		top = rawMap{}
	}
	if v, ok := top[childVersionKey]; ok {
		var ver uint16
		if err := rawDec.Unmarshal(v, &ver); err != nil {
			return nil, fmt.Errorf("decode record version (key %d): %w", childVersionKey, err)
		}
		if ver > sa.RecordVersion {
			return nil, fmt.Errorf("%w: version %d, this build reads up to %d", sa.ErrNewerRecord, ver, sa.RecordVersion)
		}
	}
	var (
		old     sa.Counters
		unknown bool
	)
	if raw, ok := top[childCountersKey]; ok {
		if err := rawDec.Unmarshal(raw, &old); err != nil {
			return nil, fmt.Errorf("decode counters (key %d): %w", childCountersKey, err)
		}
		unknown = hasUnknownKeys(raw)
	}
	merged := MergeCounters(old, update)
	cb, err := sa.Marshal(&merged)
	if err != nil {
		return nil, fmt.Errorf("encode counters: %w", err)
	}
	if unknown {
		if cb, err = overlayCounters(top[childCountersKey], cb); err != nil {
			return nil, err
		}
	}
	top[childCountersKey] = cb
	out, err := sa.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return out, nil
}

// hasUnknownKeys reports whether the encoded Counters map raw has keys this
// build does not know (a cheap scan: only the head of each key is decoded).
func hasUnknownKeys(raw []byte) bool {
	var m map[uint64]cbor.RawMessage
	if rawDec.Unmarshal(raw, &m) != nil {
		return false // decoding into sa.Counters succeeded, so this cannot fail
	}
	for k := range m {
		if !slices.Contains(countersKeys, k) {
			return true
		}
	}
	return false
}

// overlayCounters returns the encoded Counters map oldRaw with every key
// this build knows replaced by those of newRaw (absent ones removed).
func overlayCounters(oldRaw, newRaw []byte) ([]byte, error) {
	var cm, nm rawMap
	if err := rawDec.Unmarshal(oldRaw, &cm); err != nil {
		return nil, fmt.Errorf("decode counters as a CBOR map: %w", err)
	}
	if err := rawDec.Unmarshal(newRaw, &nm); err != nil {
		return nil, fmt.Errorf("re-decode counters: %w", err)
	}
	if cm == nil {
		cm = rawMap{}
	}
	for _, k := range countersKeys {
		delete(cm, k)
	}
	for k, v := range nm {
		cm[k] = v
	}
	b, err := sa.Marshal(cm)
	if err != nil {
		return nil, fmt.Errorf("encode counters: %w", err)
	}
	return b, nil
}
