package sa

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func sampleIKE() *IKESA {
	return &IKESA{
		Version:     RecordVersion,
		Cookies:     Cookies{I: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, R: [8]byte{9, 10, 11, 12, 13, 14, 15, 16}},
		Role:        Responder,
		State:       IKEEstablished,
		Connection:  "dc2",
		Local:       netip.MustParseAddrPort("192.0.2.1:4500"),
		Remote:      netip.MustParseAddrPort("[2001:db8::2]:4500"),
		NATT:        true,
		LocalID:     Identity{Type: 1, Data: []byte{192, 0, 2, 1}},
		Proposal:    IKEProposal{Encr: 7, KeyLen: 256, Hash: 4, Group: 14, AuthMethod: 1, Lifetime: 28800},
		SKEYID:      []byte{1, 2, 3},
		IVBase:      make([]byte, 16),
		Exchanges:   []Exchange{{MessageID: 7, Type: 32, IV: []byte{4}}},
		DPDOurSeq:   42,
		Established: 1700000000000000000,
	}
}

func TestIKESARoundTrip(t *testing.T) {
	in := sampleIKE()
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out IKESA
	if err := Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip differs:\n in %+v\nout %+v", in, &out)
	}
	b2, _ := Marshal(&out)
	if string(b) != string(b2) {
		t.Fatal("encoding is not deterministic")
	}
}

func TestChildSARoundTrip(t *testing.T) {
	in := &ChildSA{
		Version: RecordVersion, IKE: sampleIKE().Cookies, Connection: "dc2", Child: "net",
		State: ChildInstalled, Reqid: 5, Mode: Tunnel, Protocol: 50,
		In:             SADir{SPI: 0xc1234567, Src: netip.MustParseAddr("198.51.100.2"), Dst: netip.MustParseAddr("192.0.2.1"), Encr: EncrAESCBC, EncrKey: make([]byte, 32), Integ: IntegSHA256, IntegKey: make([]byte, 32), TruncBits: 128},
		Out:            SADir{SPI: 0xc7654321, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.2"), Encr: EncrAESGCM, EncrKey: make([]byte, 20), TruncBits: 128},
		LocalTS:        []TrafficSelector{{Prefix: netip.MustParsePrefix("10.1.0.0/16")}},
		RemoteTS:       []TrafficSelector{{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Protocol: 17, Port: 53}},
		EncapLocalPort: 4500, EncapRemotePort: 4500,
		Counters: Counters{OutSeq: 1000, InSeq: 990, ReplayBitmap: []uint64{^uint64(0)}},
	}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ChildSA
	if err := Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, &out) {
		t.Fatalf("round trip differs:\n in %+v\nout %+v", in, &out)
	}
}

// A newer build may add keys; an older reader skips them.
func TestUnknownKeysSkipped(t *testing.T) {
	type future struct {
		IKESA
		Extra string `cbor:"99,keyasint"`
	}
	b, err := Marshal(map[int]any{1: 1, 5: "dc2", 99: "from the future"})
	if err != nil {
		t.Fatal(err)
	}
	var out IKESA
	if err := Unmarshal(b, &out); err != nil {
		t.Fatalf("unknown key refused: %v", err)
	}
	if out.Connection != "dc2" {
		t.Fatalf("connection = %q", out.Connection)
	}
	_ = future{}
}

func TestNewerVersionRefused(t *testing.T) {
	b, _ := Marshal(map[int]any{1: RecordVersion + 1})
	var out ChildSA
	if err := Unmarshal(b, &out); !errors.Is(err, ErrNewerRecord) {
		t.Fatalf("err = %v, want ErrNewerRecord", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	b, _ := Marshal(sampleIKE())
	f.Add(b)
	f.Add([]byte{0xa1, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s IKESA
		if Unmarshal(data, &s) == nil {
			if _, err := Marshal(&s); err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
		}
		var c ChildSA
		_ = Unmarshal(data, &c)
	})
}
