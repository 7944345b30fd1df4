package isakmp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Vendor IDs strongSwan 5.9.8 sends in Main/Aggressive Mode.
var (
	vidXAuth   = mustHex("09002689dfd6b712")
	vidDPD     = mustHex("afcad71368a1f1c96b8696fc77570100")
	vidFrag    = mustHex("4048b7d56ebce88525e7de7f00d6c2d380000000")
	vidRFC3947 = mustHex("4a131c81070358455c5728f20e95452f")
	vidDraft02 = mustHex("90cb80913ebb696e086381b5ec427b1f")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func types(ps []Payload) []PayloadType {
	var ts []PayloadType
	for _, p := range ps {
		ts = append(ts, p.Type())
	}
	return ts
}

// phase1Transform is the transform of every golden capture's proposal:
// KEY_IKE, AES-CBC, lifetime 15840 s (strongSwan's default 4h minus
// jitter margin, as it sends it), PSK, MODP2048.
func phase1Attrs(keyLen, hash uint16) []Attribute {
	return []Attribute{
		BasicAttr(AttrEncryptionAlgorithm, EncAESCBC),
		BasicAttr(AttrKeyLength, keyLen),
		BasicAttr(AttrHashAlgorithm, hash),
		BasicAttr(AttrGroupDescription, GroupModp2048),
		BasicAttr(AttrAuthMethod, AuthPSK),
		BasicAttr(AttrLifeType, LifeSeconds),
		BasicAttr(AttrLifeDuration, 0x3de0),
	}
}

func TestGoldenPlaintext(t *testing.T) {
	P := func(ts ...PayloadType) []PayloadType { return ts }
	mainVIDs := [][]byte{vidXAuth, vidDPD, vidFrag, vidRFC3947, vidDraft02}
	tests := []struct {
		file     string
		exchange ExchangeType
		types    []PayloadType
		attrs    []Attribute // phase 1 transform, if the message has an SA
		vids     [][]byte
		hashLen  int // NAT-D hash size, if any
	}{
		{"mm-aes256-01-i.bin", ExchangeMain, P(PayloadSA, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(256, HashSHA256), mainVIDs, 0},
		{"mm-aes256-02-r.bin", ExchangeMain, P(PayloadSA, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(256, HashSHA256), mainVIDs[:4], 0},
		{"mm-aes256-03-i.bin", ExchangeMain, P(PayloadKE, PayloadNonce, PayloadNATD, PayloadNATD), nil, nil, 32},
		{"mm-aes256-04-r.bin", ExchangeMain, P(PayloadKE, PayloadNonce, PayloadNATD, PayloadNATD), nil, nil, 32},
		{"mm-dpd-01-i.bin", ExchangeMain, P(PayloadSA, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(256, HashSHA256), mainVIDs, 0},
		{"mm-dpd-02-r.bin", ExchangeMain, P(PayloadSA, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(256, HashSHA256), mainVIDs[:4], 0},
		{"mm-dpd-03-i.bin", ExchangeMain, P(PayloadKE, PayloadNonce, PayloadNATD, PayloadNATD), nil, nil, 32},
		{"mm-dpd-04-r.bin", ExchangeMain, P(PayloadKE, PayloadNonce, PayloadNATD, PayloadNATD), nil, nil, 32},
		{"mm-aes128-01-i.bin", ExchangeMain, P(PayloadSA, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(128, HashSHA1), mainVIDs, 0},
		{"mm-aes128-02-r.bin", ExchangeMain, P(PayloadSA, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(128, HashSHA1), mainVIDs[:4], 0},
		{"mm-aes128-03-i.bin", ExchangeMain, P(PayloadKE, PayloadNonce, PayloadNATD, PayloadNATD), nil, nil, 20},
		{"mm-aes128-04-r.bin", ExchangeMain, P(PayloadKE, PayloadNonce, PayloadNATD, PayloadNATD), nil, nil, 20},
		{"am-aes256-01-i.bin", ExchangeAggressive, P(PayloadSA, PayloadKE, PayloadNonce, PayloadID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID),
			phase1Attrs(256, HashSHA256), mainVIDs, 0},
		{"am-aes256-02-r.bin", ExchangeAggressive, P(PayloadSA, PayloadKE, PayloadNonce, PayloadID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadVendorID, PayloadNATD, PayloadNATD, PayloadHash),
			phase1Attrs(256, HashSHA256), mainVIDs[:4], 32},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readGolden(t, tt.file)
			m, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			h := m.Header
			if h.Version != Version1 || h.Exchange != tt.exchange || h.Flags != 0 || h.MessageID != 0 || int(h.Length) != len(b) {
				t.Errorf("header %+v", h)
			}
			if got := types(m.Payloads); !reflect.DeepEqual(got, tt.types) {
				t.Fatalf("payloads %v, want %v", got, tt.types)
			}
			// Raw is the exact wire bytes, in order, covering the body.
			var cat []byte
			for _, r := range m.Raw {
				cat = append(cat, r...)
			}
			if !bytes.Equal(cat, b[HeaderLen:]) {
				t.Error("Raw does not cover the body exactly")
			}
			var vids [][]byte
			for i, p := range m.Payloads {
				switch p := p.(type) {
				case *SA:
					want := &SA{DOI: DOIIPsec, Situation: SitIdentityOnly, Proposals: []Proposal{{
						Number: 1, Protocol: ProtoISAKMP, SPI: []byte{},
						Transforms: []Transform{{Number: 1, ID: TransformKeyIKE, Attributes: tt.attrs}},
					}}}
					if !reflect.DeepEqual(p, want) {
						t.Errorf("SA\n got %+v\nwant %+v", p, want)
					}
				case *VendorID:
					vids = append(vids, p.Data)
				case *NATD:
					if len(p.Hash) != tt.hashLen || p.Draft {
						t.Errorf("NAT-D %x, want %d bytes, RFC 3947 number", p.Hash, tt.hashLen)
					}
				case *KE:
					if len(p.Data) != 256 {
						t.Errorf("KE of %d bytes, want 256 (MODP2048)", len(p.Data))
					}
				case *Nonce:
					if len(p.Data) != 32 {
						t.Errorf("nonce of %d bytes, want 32", len(p.Data))
					}
				case *ID:
					want := []string{"IPV4_ADDR 192.0.2.1", "IPV4_ADDR 192.0.2.2"}[tt.file[11]-'1']
					if p.String() != want {
						t.Errorf("ID %s, want %s", p, want)
					}
					if !bytes.Equal(m.Raw[i][4:], []byte{1, 0, 0, 0, 192, 0, 2, tt.file[11] - '0'}) {
						t.Errorf("ID raw %x", m.Raw[i])
					}
				case *Hash:
					if len(p.Data) != 32 {
						t.Errorf("HASH of %d bytes", len(p.Data))
					}
				default:
					t.Errorf("unexpected %T", p)
				}
			}
			if !reflect.DeepEqual(vids, tt.vids) {
				t.Errorf("vendor IDs %x, want %x", vids, tt.vids)
			}
			// Re-encoding gives the same bytes, from pointers and values.
			m.Header.Length, m.Header.NextPayload = 0, 0
			out, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, b) {
				t.Errorf("re-encoded\n%x\nwant\n%x", out, b)
			}
			vals := make([]Payload, len(m.Payloads))
			for i, p := range m.Payloads {
				vals[i] = reflect.ValueOf(p).Elem().Interface().(Payload)
			}
			m2 := &Message{Header: m.Header, Payloads: vals}
			if out2, err := m2.Marshal(); err != nil || !bytes.Equal(out2, b) {
				t.Errorf("re-encoded from values: %v", err)
			}
		})
	}
}

func TestGoldenEncrypted(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bin")
	if err != nil {
		t.Fatal(err)
	}
	plain := map[string]bool{}
	n := 0
	for _, f := range files {
		b := readGolden(t, filepath.Base(f))
		h, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if h.Flags&FlagEncryption == 0 {
			plain[filepath.Base(f)] = true
			if _, _, err := ParseEncrypted(b); !errors.Is(err, ErrNotEncrypted) {
				t.Errorf("%s: ParseEncrypted of plaintext: %v", f, err)
			}
			continue
		}
		n++
		h2, body, err := ParseEncrypted(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if h2 != h || len(body) != len(b)-HeaderLen || len(body)%16 != 0 || !bytes.Equal(body, b[HeaderLen:]) {
			t.Errorf("%s: header %+v, body %d bytes", f, h2, len(body))
		}
		switch h.Exchange {
		case ExchangeMain, ExchangeAggressive:
			if h.MessageID != 0 {
				t.Errorf("%s: phase 1 message ID %d", f, h.MessageID)
			}
		case ExchangeQuick, ExchangeInfo:
			if h.MessageID == 0 {
				t.Errorf("%s: %s with message ID 0", f, h.Exchange)
			}
		default:
			t.Errorf("%s: exchange %s", f, h.Exchange)
		}
		if h.NextPayload != PayloadID && h.NextPayload != PayloadHash {
			t.Errorf("%s: encrypted body starts with %s", f, h.NextPayload)
		}
		if _, err := Parse(b); !errors.Is(err, ErrEncrypted) {
			t.Errorf("%s: Parse of encrypted message: %v", f, err)
		}
		var out []byte
		out = h.AppendTo(out)
		if !bytes.Equal(out, b[:HeaderLen]) {
			t.Errorf("%s: header re-encoded %x", f, out)
		}
	}
	// 4 captures: 4 (MM) or 2 (AM) plaintext messages each, the rest
	// encrypted (capture.sh may yield one more DPD exchange when re-run).
	if n < 29 || len(plain) != 14 {
		t.Errorf("%d encrypted and %d plaintext golden messages, want >= 29 and 14", n, len(plain))
	}
}

// TestGoldenQuickModeSA builds the Quick Mode SA strongSwan would send for
// the mm-aes128 run and checks the NAT-T and PFS attributes round-trip.
func TestQuickModeSA(t *testing.T) {
	sa := &SA{DOI: DOIIPsec, Situation: SitIdentityOnly, Proposals: []Proposal{{
		Number: 1, Protocol: ProtoESP, SPI: []byte{0xc0, 0xc7, 0xc9, 0xcc},
		Transforms: []Transform{{Number: 1, ID: ESPAESCBC, Attributes: []Attribute{
			BasicAttr(AttrSALifeType, LifeSeconds),
			UintAttr(AttrSALifeDuration, 3600),
			BasicAttr(AttrEncapsulationMode, EncapUDPTunnel),
			BasicAttr(AttrAuthAlgorithm, AuthAlgHMACSHA1),
			BasicAttr(AttrSAKeyLength, 128),
			BasicAttr(AttrSAGroupDescription, GroupModp2048),
		}}},
	}}}
	ps := []Payload{&Hash{Data: make([]byte, 20)}, sa, &Nonce{Data: make([]byte, 32)},
		IDFromPrefix(netip.MustParsePrefix("10.1.0.1/32"), 0, 0), IDFromPrefix(netip.MustParsePrefix("10.2.0.0/16"), 0, 0)}
	first, b, err := AppendPayloads(nil, ps)
	if err != nil {
		t.Fatal(err)
	}
	if first != PayloadHash {
		t.Fatalf("first %s", first)
	}
	d, err := DecodePayloads(first, b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Len != len(b) || len(d.Payloads) != 5 {
		t.Fatalf("Len %d of %d, %d payloads", d.Len, len(b), len(d.Payloads))
	}
	if !reflect.DeepEqual(d.Payloads[1], sa) {
		t.Errorf("SA\n got %+v\nwant %+v", d.Payloads[1], sa)
	}
	p, err := d.Payloads[4].(*ID).Prefix()
	if err != nil || p != netip.MustParsePrefix("10.2.0.0/16") {
		t.Errorf("ID prefix %v %v", p, err)
	}
}
