package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"ikegw/ike/sa"
)

// A minimal CBOR (RFC 8949) scanner for the PutCounters fast path: it walks
// an encoded record without allocating, so the Counters value can be
// replaced in place. Anything it does not like sends the caller to the
// general path (decode into a map, re-encode), which reports errors.

var errScan = errors.New("cbor scan")

// scanMaxDepth bounds nesting, as the decoders do.
const scanMaxDepth = 16

// cborHead reads the head of the item at b[off]: major type, additional
// information and argument, and the offset after the head.
func cborHead(b []byte, off int) (major, ai byte, arg uint64, next int, err error) {
	if off >= len(b) {
		return 0, 0, 0, 0, errScan
	}
	major, ai = b[off]>>5, b[off]&0x1f
	off++
	switch {
	case ai < 24:
		return major, ai, uint64(ai), off, nil
	case ai == 24:
		if len(b)-off < 1 {
			return 0, 0, 0, 0, errScan
		}
		return major, ai, uint64(b[off]), off + 1, nil
	case ai == 25:
		if len(b)-off < 2 {
			return 0, 0, 0, 0, errScan
		}
		return major, ai, uint64(binary.BigEndian.Uint16(b[off:])), off + 2, nil
	case ai == 26:
		if len(b)-off < 4 {
			return 0, 0, 0, 0, errScan
		}
		return major, ai, uint64(binary.BigEndian.Uint32(b[off:])), off + 4, nil
	case ai == 27:
		if len(b)-off < 8 {
			return 0, 0, 0, 0, errScan
		}
		return major, ai, binary.BigEndian.Uint64(b[off:]), off + 8, nil
	case ai == 31:
		return major, ai, 0, off, nil
	}
	return 0, 0, 0, 0, errScan // 28..30 are reserved
}

// cborSkip returns the offset just past the well-formed item at b[off].
func cborSkip(b []byte, off, depth int) (int, error) {
	if depth > scanMaxDepth {
		return 0, errScan
	}
	major, ai, arg, off, err := cborHead(b, off)
	if err != nil {
		return 0, err
	}
	indef := ai == 31
	switch major {
	case 0, 1:
		if indef {
			return 0, errScan
		}
		return off, nil
	case 2, 3:
		if !indef {
			if arg > uint64(len(b)-off) {
				return 0, errScan
			}
			return off + int(arg), nil
		}
		for { // chunks of the same major type, then "break"
			if off >= len(b) {
				return 0, errScan
			}
			if b[off] == 0xff {
				return off + 1, nil
			}
			cm, cai, carg, next, err := cborHead(b, off)
			if err != nil || cm != major || cai == 31 || carg > uint64(len(b)-next) {
				return 0, errScan
			}
			off = next + int(carg)
		}
	case 4, 5:
		per := 1
		if major == 5 {
			per = 2
		}
		if !indef {
			// Every item takes at least one byte.
			if arg > uint64(len(b)-off) {
				return 0, errScan
			}
			for i := uint64(0); i < arg*uint64(per); i++ {
				if off, err = cborSkip(b, off, depth+1); err != nil {
					return 0, err
				}
			}
			return off, nil
		}
		for n := 0; ; n++ {
			if off >= len(b) {
				return 0, errScan
			}
			if b[off] == 0xff {
				if n%per != 0 {
					return 0, errScan
				}
				return off + 1, nil
			}
			if off, err = cborSkip(b, off, depth+1); err != nil {
				return 0, err
			}
		}
	case 6:
		if indef {
			return 0, errScan
		}
		return cborSkip(b, off, depth+1)
	default: // 7: simple values and floats; a lone "break" is not an item
		if indef {
			return 0, errScan
		}
		return off, nil
	}
}

// spliceCounters is the fast path of mergeCountersRaw: for a record that is
// a definite-length map with unsigned keys, no duplicates, and a Counters
// value whose keys this build all knows, it replaces the Counters bytes in
// place. ok is false when the record needs the general path.
func spliceCounters(rec []byte, update sa.Counters) (out []byte, ok bool, err error) {
	major, ai, n, off, err := cborHead(rec, 0)
	if err != nil || major != 5 || ai == 31 || n > uint64(len(rec)) {
		return nil, false, nil
	}
	var seen [32]uint64
	cs, ce := -1, -1
	for i := uint64(0); i < n; i++ {
		km, kai, key, next, err := cborHead(rec, off)
		if err != nil || km != 0 || kai == 31 {
			return nil, false, nil
		}
		if i >= uint64(len(seen)) || slices.Contains(seen[:i], key) {
			return nil, false, nil
		}
		seen[i] = key
		end, err := cborSkip(rec, next, 1)
		if err != nil {
			return nil, false, nil
		}
		switch key {
		case childVersionKey:
			vm, vai, ver, _, err := cborHead(rec, next)
			if err != nil || vm != 0 || vai == 31 || ver > 0xffff {
				return nil, false, nil
			}
			if ver > sa.RecordVersion {
				return nil, true, fmt.Errorf("%w: version %d, this build reads up to %d", sa.ErrNewerRecord, ver, sa.RecordVersion)
			}
		case childCountersKey:
			cs, ce = next, end
		}
		off = end
	}
	if off != len(rec) || cs < 0 {
		return nil, false, nil
	}
	cnt := rec[cs:ce]
	// Only known keys inside Counters, or the general path keeps the others.
	cm, cai, cn, coff, err := cborHead(cnt, 0)
	if err != nil || cm != 5 || cai == 31 {
		return nil, false, nil
	}
	for range cn {
		km, kai, key, next, err := cborHead(cnt, coff)
		if err != nil || km != 0 || kai == 31 || !slices.Contains(countersKeys, key) {
			return nil, false, nil
		}
		if coff, err = cborSkip(cnt, next, 2); err != nil {
			return nil, false, nil
		}
	}
	old, ok := decodeCounters(cnt)
	if !ok {
		if err := rawDec.Unmarshal(cnt, &old); err != nil {
			return nil, false, nil
		}
	}
	merged := MergeCounters(old, update)
	var buf [96]byte // the encoded Counters of a 64-packet replay window fit
	cb := appendCounters(buf[:0], &merged)
	out = make([]byte, 0, len(rec)-len(cnt)+len(cb))
	out = append(out, rec[:cs]...)
	out = append(out, cb...)
	out = append(out, rec[ce:]...)
	return out, true, nil
}
