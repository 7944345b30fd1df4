// Package replay is the ESP anti-replay window (RFC 4303 §3.4.3) kept as a
// ring of 64-bit blocks (RFC 6479), so advancing the window costs at most one
// block clear per 64 sequence numbers instead of a shift of the whole map.
//
// The window can be exported and restored in the layout of the xfrm package
// documentation ("Replay bitmap"), so a standby node continues a peer's
// inbound SA exactly where the active left it.
//
// A Filter is not safe for concurrent use; its owner serialises access.
package replay

import "math/bits"

const (
	blockBits  = 64
	ringBlocks = 32 // power of two
	// WindowSize is the number of sequence numbers the window covers: a
	// packet whose number is WindowSize or more below the highest accepted
	// one is refused as too old.
	WindowSize = (ringBlocks - 1) * blockBits // 1984
	// ExportWords is the number of bitmap words Export returns.
	ExportWords = WindowSize / blockBits
)

// Result is the verdict of Check.
type Result uint8

const (
	OK        Result = iota // new, inside or above the window
	Duplicate               // already accepted
	TooOld                  // below the window
	Zero                    // sequence number 0, never sent by ESP
)

func (r Result) String() string {
	switch r {
	case OK:
		return "ok"
	case Duplicate:
		return "duplicate"
	case TooOld:
		return "too old"
	case Zero:
		return "zero"
	}
	return "result(?)"
}

// Filter is one inbound SA's anti-replay window. The zero value is a fresh
// window: nothing received yet.
type Filter struct {
	last uint64 // highest accepted sequence number, 0 = none
	ring [ringBlocks]uint64
}

// Last returns the highest accepted sequence number (0 when none).
func (f *Filter) Last() uint64 { return f.last }

// Check tells whether seq would be accepted, without changing the window.
// ESP receivers call it before verifying the ICV (cheap rejection) and
// Accept after.
func (f *Filter) Check(seq uint64) Result {
	if seq == 0 {
		return Zero
	}
	if seq > f.last {
		return OK
	}
	if f.last-seq >= WindowSize {
		return TooOld
	}
	if f.ring[(seq/blockBits)%ringBlocks]&(1<<(seq%blockBits)) != 0 {
		return Duplicate
	}
	return OK
}

// Accept checks seq and, when it is acceptable, records it and slides the
// window. Call it only for packets whose ICV verified.
func (f *Filter) Accept(seq uint64) Result {
	if r := f.Check(seq); r != OK {
		return r
	}
	if seq > f.last {
		cur, next := f.last/blockBits, seq/blockBits
		n := next - cur
		if n > ringBlocks {
			n = ringBlocks
		}
		for i := uint64(1); i <= n; i++ {
			f.ring[(cur+i)%ringBlocks] = 0
		}
		f.last = seq
	}
	f.ring[(seq/blockBits)%ringBlocks] |= 1 << (seq % blockBits)
	return OK
}

// Reset empties the window.
func (f *Filter) Reset() { *f = Filter{} }

// Export returns the highest accepted sequence number and the window as
// ExportWords words: bit d of word d/64 (least significant first) is set
// when sequence number last-d was accepted. Positions below sequence number
// 1 are clear.
func (f *Filter) Export() (last uint64, bitmap []uint64) {
	bitmap = make([]uint64, ExportWords)
	if f.last == 0 {
		return 0, bitmap
	}
	for d := uint64(0); d < WindowSize && d < f.last; d++ {
		s := f.last - d
		if f.ring[(s/blockBits)%ringBlocks]&(1<<(s%blockBits)) != 0 {
			bitmap[d/blockBits] |= 1 << (d % blockBits)
		}
	}
	return f.last, bitmap
}

// Restore replaces the window with an exported one. Positions the bitmap
// does not cover (it is shorter than the window) are taken as already
// accepted, so a restored window never accepts a replay; bits beyond the
// window are ignored. last = 0 gives a fresh window.
func (f *Filter) Restore(last uint64, bitmap []uint64) {
	f.Reset()
	if last == 0 {
		return
	}
	f.last = last
	covered := uint64(len(bitmap)) * blockBits
	for d := uint64(0); d < WindowSize && d < last; d++ {
		if d < covered && bitmap[d/blockBits]&(1<<(d%blockBits)) == 0 {
			continue
		}
		s := last - d
		f.ring[(s/blockBits)%ringBlocks] |= 1 << (s % blockBits)
	}
}

// Received counts the accepted sequence numbers inside the window; for
// tests and diagnostics.
func (f *Filter) Received() int {
	_, bm := f.Export()
	n := 0
	for _, w := range bm {
		n += bits.OnesCount64(w)
	}
	return n
}
