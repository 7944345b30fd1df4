package store

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"

	crand "crypto/rand"

	"ikegw/ike/sa"
)

// testKey returns a fresh random cluster key.
func testKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, ClusterKeySize)
	if _, err := crand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func testSealer(t testing.TB, key []byte, prev ...[]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(key, prev...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openTestDB opens a new database in a temporary directory.
func openTestDB(t testing.TB, s *Sealer) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "sa.db"), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// seededBytes returns n bytes determined by seed (distinct seeds give
// distinct, high-entropy bytes, so they are easy to search for in a file).
func seededBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sampleIKE(i uint64) *sa.IKESA {
	var c sa.Cookies
	binary.BigEndian.PutUint64(c.I[:], i+1)
	binary.BigEndian.PutUint64(c.R[:], ^i)
	return &sa.IKESA{
		Version:     sa.RecordVersion,
		Cookies:     c,
		Role:        sa.Responder,
		State:       sa.IKEEstablished,
		Connection:  "dc2",
		Local:       netip.MustParseAddrPort("192.0.2.1:4500"),
		Remote:      netip.MustParseAddrPort("[2001:db8::2]:4500"),
		NATT:        true,
		LocalID:     sa.Identity{Type: 1, Data: []byte{192, 0, 2, 1}},
		RemoteID:    sa.Identity{Type: 2, Data: []byte("peer.example")},
		Proposal:    sa.IKEProposal{Encr: 7, KeyLen: 256, Hash: 4, Group: 14, AuthMethod: 1, Lifetime: 28800},
		SKEYID:      seededBytes(i*8+1, 32),
		SKEYIDd:     seededBytes(i*8+2, 32),
		SKEYIDa:     seededBytes(i*8+3, 32),
		SKEYIDe:     seededBytes(i*8+4, 32),
		EncKey:      seededBytes(i*8+5, 32),
		IVBase:      seededBytes(i*8+6, 16),
		Exchanges:   []sa.Exchange{{MessageID: 7, Type: 32, IV: seededBytes(i*8+7, 16)}},
		DPDOurSeq:   42,
		DPD:         true,
		Established: 1700000000000000000 + int64(i),
		RekeyAt:     1700000000000000000 + 3600e9,
	}
}

func sampleChild(i uint64) *sa.ChildSA {
	spi := uint32(0xc0000000) | uint32(i)
	return &sa.ChildSA{
		Version: sa.RecordVersion, IKE: sampleIKE(i).Cookies, Connection: "dc2", Child: "net",
		State: sa.ChildInstalled, Reqid: uint32(i) + 1, Mode: sa.Tunnel, Protocol: 50,
		In: sa.SADir{SPI: spi, Src: netip.MustParseAddr("198.51.100.2"), Dst: netip.MustParseAddr("192.0.2.1"),
			Encr: sa.EncrAESCBC, EncrKey: seededBytes(1<<40+i*4, 32), Integ: sa.IntegSHA256, IntegKey: seededBytes(1<<40+i*4+1, 32), TruncBits: 128},
		Out: sa.SADir{SPI: spi ^ 0x00ff0000, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.2"),
			Encr: sa.EncrAESGCM, EncrKey: seededBytes(1<<40+i*4+2, 36), TruncBits: 128},
		LocalTS:        []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.1.0.0/16")}},
		RemoteTS:       []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Protocol: 17, Port: 53}},
		EncapLocalPort: 4500, EncapRemotePort: 4500,
		Lifetime:    sa.Lifetime{SoftSeconds: 3000, HardSeconds: 3600},
		Counters:    sa.Counters{OutSeq: 1000, InSeq: 990, ReplayBitmap: []uint64{^uint64(0)}},
		Established: 1700000000000000000,
	}
}

// keyBytesIKE lists the secrets of an IKE record.
func keyBytesIKE(r *sa.IKESA) [][]byte {
	return [][]byte{r.SKEYID, r.SKEYIDd, r.SKEYIDa, r.SKEYIDe, r.EncKey}
}

// keyBytesChild lists the secrets of a child record.
func keyBytesChild(r *sa.ChildSA) [][]byte {
	return [][]byte{r.In.EncrKey, r.In.IntegKey, r.Out.EncrKey}
}
