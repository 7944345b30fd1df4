package ikecrypto

import (
	"crypto/rand"
	"math/big"
	"testing"
)

// MODP private exponents are short (twice the security strength) but never
// degenerate, and two parties still agree.
func TestMODPShortExponents(t *testing.T) {
	for _, id := range []uint16{GroupMODP1024, GroupMODP1536, GroupMODP2048, GroupMODP3072, GroupMODP4096} {
		g, err := GroupByID(id)
		if err != nil {
			t.Fatal(err)
		}
		mg := g.(*modpGroup)
		want := map[uint16]int{GroupMODP1024: 256, GroupMODP1536: 256, GroupMODP2048: 256, GroupMODP3072: 320, GroupMODP4096: 384}[id]
		if mg.expBits != want {
			t.Fatalf("%s: exponent bits %d, want %d", g, mg.expBits, want)
		}
		maxBits := 0
		for range 8 {
			a, pa, err := g.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			b, pb, _ := g.GenerateKey(rand.Reader)
			if len(a) != mg.size || len(pa) != mg.size {
				t.Fatalf("%s: key lengths %d/%d", g, len(a), len(pa))
			}
			x := new(big.Int).SetBytes(a)
			if x.BitLen() > mg.expBits || x.Cmp(bigOne) <= 0 {
				t.Fatalf("%s: exponent of %d bits", g, x.BitLen())
			}
			maxBits = max(maxBits, x.BitLen())
			s1, err1 := g.Shared(a, pb)
			s2, err2 := g.Shared(b, pa)
			if err1 != nil || err2 != nil || string(s1) != string(s2) {
				t.Fatalf("%s: parties disagree (%v, %v)", g, err1, err2)
			}
		}
		if maxBits < mg.expBits-16 {
			t.Fatalf("%s: exponents suspiciously short (max %d bits of %d)", g, maxBits, mg.expBits)
		}
	}
}
