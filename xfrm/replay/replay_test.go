package replay

import (
	"math/rand/v2"
	"testing"
)

func TestInOrder(t *testing.T) {
	var f Filter
	for s := uint64(1); s <= 5000; s++ {
		if r := f.Accept(s); r != OK {
			t.Fatalf("seq %d: %v", s, r)
		}
		if r := f.Accept(s); r != Duplicate {
			t.Fatalf("seq %d again: %v, want duplicate", s, r)
		}
	}
	if f.Last() != 5000 {
		t.Fatalf("last %d", f.Last())
	}
}

func TestZero(t *testing.T) {
	var f Filter
	if r := f.Accept(0); r != Zero {
		t.Fatalf("seq 0: %v", r)
	}
}

func TestOutOfOrderWithinWindow(t *testing.T) {
	var f Filter
	if r := f.Accept(3000); r != OK {
		t.Fatal(r)
	}
	// Everything from 3000-WindowSize+1 up is acceptable once, in any order.
	lo := uint64(3000 - WindowSize + 1)
	perm := rand.New(rand.NewPCG(1, 2)).Perm(3000 - int(lo))
	for _, p := range perm {
		s := lo + uint64(p)
		if r := f.Accept(s); r != OK {
			t.Fatalf("seq %d: %v", s, r)
		}
	}
	for s := lo; s <= 3000; s++ {
		if r := f.Check(s); r != Duplicate {
			t.Fatalf("seq %d replayed: %v", s, r)
		}
	}
	if r := f.Check(lo - 1); r != TooOld {
		t.Fatalf("seq %d: %v, want too old", lo-1, r)
	}
}

func TestTooOldAfterJump(t *testing.T) {
	var f Filter
	f.Accept(10)
	f.Accept(10 + WindowSize)
	if r := f.Check(10); r != TooOld {
		t.Fatalf("got %v", r)
	}
	if r := f.Check(11); r != OK {
		t.Fatalf("seq 11 inside window: %v", r)
	}
	// A jump far beyond the ring clears every stale block.
	f.Accept(1 << 40)
	if r := f.Check(1<<40 - 5); r != OK {
		t.Fatalf("stale bit survived a large jump: %v", r)
	}
}

// TestAgainstModel compares the ring with a plain set-based reference.
func TestAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var f Filter
	seen := map[uint64]bool{}
	var last uint64
	for i := 0; i < 200000; i++ {
		var s uint64
		switch rng.IntN(4) {
		case 0:
			s = last + 1 + uint64(rng.IntN(200))
		case 1:
			s = last + uint64(rng.IntN(5000))
		default:
			if last > 0 {
				s = last - uint64(rng.Int64N(int64(min(last, 2*WindowSize))))
			}
		}
		want := OK
		switch {
		case s == 0:
			want = Zero
		case s <= last && last-s >= WindowSize:
			want = TooOld
		case seen[s]:
			want = Duplicate
		}
		if got := f.Accept(s); got != want {
			t.Fatalf("step %d seq %d last %d: got %v want %v", i, s, last, got, want)
		}
		if want == OK {
			seen[s] = true
			last = max(last, s)
		}
	}
}

func TestExportRestore(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a Filter
	for i := 0; i < 3000; i++ {
		a.Accept(uint64(rng.IntN(6000)) + 1)
	}
	last, bm := a.Export()
	if len(bm) != ExportWords {
		t.Fatalf("%d words", len(bm))
	}
	if bm[0]&1 == 0 {
		t.Fatal("bit 0 (last itself) clear")
	}
	var b Filter
	b.Restore(last, bm)
	for s := uint64(0); s < last+100; s++ {
		if a.Check(s) != b.Check(s) {
			t.Fatalf("seq %d: original %v restored %v", s, a.Check(s), b.Check(s))
		}
	}
	last2, bm2 := b.Export()
	if last2 != last || len(bm2) != len(bm) {
		t.Fatal("re-export differs")
	}
	for i := range bm {
		if bm[i] != bm2[i] {
			t.Fatalf("word %d differs", i)
		}
	}
}

func TestRestoreShortBitmapIsConservative(t *testing.T) {
	var f Filter
	// One-word map: last=1000, only 1000 and 990 accepted.
	f.Restore(1000, []uint64{1 | 1<<10})
	cases := map[uint64]Result{
		1000: Duplicate, 990: Duplicate, 999: OK, 968: OK, 937: OK,
		936:  Duplicate, // not covered by the 64-bit map: treated as seen
		1001: OK,
	}
	for s, want := range cases {
		if got := f.Check(s); got != want {
			t.Errorf("seq %d: %v, want %v", s, got, want)
		}
	}
	f.Restore(5000, []uint64{^uint64(0)})
	if got := f.Check(5000 - WindowSize); got != TooOld {
		t.Errorf("seq %d: %v, want too old", 5000-WindowSize, got)
	}
	f.Restore(0, []uint64{^uint64(0)})
	if f.Check(1) != OK || f.Last() != 0 {
		t.Fatal("restore of last=0 is not a fresh window")
	}
	// Fewer than WindowSize numbers exist below last: no underflow.
	f.Restore(3, nil)
	for s := uint64(1); s <= 3; s++ {
		if f.Check(s) != Duplicate {
			t.Fatalf("seq %d accepted after a restore without bitmap", s)
		}
	}
}

func BenchmarkAcceptInOrder(b *testing.B) {
	var f Filter
	for i := 0; i < b.N; i++ {
		f.Accept(uint64(i) + 1)
	}
}
