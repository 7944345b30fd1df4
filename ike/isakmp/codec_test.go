package isakmp

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// Each payload alone, with its exact wire bytes written out by hand from
// the RFC layouts (generic header: next payload 0, reserved 0, length).
func TestPayloadWire(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
		wire string
	}{
		{"KE", &KE{Data: []byte{1, 2, 3}}, "00000007 010203"},
		{"KE empty", &KE{Data: []byte{}}, "00000004"},
		{"ID fqdn", &ID{IDType: IDFQDN, Data: []byte("gw")}, "0000000a 02000000 6777"},
		{"ID subnet proto port", &ID{IDType: IDIPv4Subnet, Protocol: 17, Port: 500, Data: []byte{10, 0, 0, 0, 255, 255, 0, 0}},
			"00000010 041101f4 0a000000 ffff0000"},
		{"Cert", &Cert{Encoding: 4, Data: []byte{0x30, 0x00}}, "00000007 04 3000"},
		{"CR", &CertRequest{Encoding: 4, Authority: []byte{}}, "00000005 04"},
		{"Hash", &Hash{Data: []byte{0xaa, 0xbb}}, "00000006 aabb"},
		{"Sig", &Signature{Data: []byte{0xcc}}, "00000005 cc"},
		{"Nonce", &Nonce{Data: []byte{1, 2, 3, 4}}, "00000008 01020304"},
		{"Notify initial contact", &Notify{DOI: 1, Protocol: ProtoISAKMP, NotifyType: NotifyInitialContact,
			SPI: bytes.Repeat([]byte{7}, 16), Data: []byte{}},
			"0000001c 00000001 01 10 6002 07070707070707070707070707070707"},
		{"Notify DPD", &Notify{DOI: 1, Protocol: ProtoISAKMP, NotifyType: NotifyRUThere,
			SPI: bytes.Repeat([]byte{1}, 16), Data: []byte{0, 0, 0x12, 0x34}},
			"00000020 00000001 01 10 8d28 01010101010101010101010101010101 00001234"},
		{"Delete ESP", &Delete{DOI: 1, Protocol: ProtoESP, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}},
			"00000014 00000001 03 04 0002 01020304 05060708"},
		{"VID", &VendorID{Data: vidDPD}, "00000014 afcad71368a1f1c96b8696fc77570100"},
		{"NAT-D", &NATD{Hash: []byte{9, 9}}, "00000006 0909"},
		{"NAT-D draft", &NATD{Hash: []byte{9}, Draft: true}, "00000005 09"},
		{"NAT-OA v4", &NATOA{IDType: IDIPv4Addr, Addr: netip.MustParseAddr("192.0.2.7")}, "0000000c 01000000 c0000207"},
		{"NAT-OA v6 draft", &NATOA{IDType: IDIPv6Addr, Addr: netip.MustParseAddr("2001:db8::1"), Draft: true},
			"00000018 05000000 20010db8000000000000000000000001"},
		{"Unknown", &Unknown{PayloadType: 14, Data: []byte{0xde, 0xad}}, "00000006 dead"},
		{"SA two proposals", &SA{DOI: 1, Situation: 1, Proposals: []Proposal{
			{Number: 1, Protocol: ProtoESP, SPI: []byte{0xa, 0xb, 0xc, 0xd}, Transforms: []Transform{
				{Number: 1, ID: ESPAESCBC, Attributes: []Attribute{BasicAttr(AttrSAKeyLength, 256), VarAttr(AttrSALifeDuration, []byte{0, 1, 0x51, 0x80})}},
				{Number: 2, ID: ESP3DES, Attributes: nil},
			}},
			{Number: 2, Protocol: ProtoAH, SPI: []byte{}, Transforms: []Transform{{Number: 1, ID: 3, Attributes: nil}}},
		}},
			"00000044 00000001 00000001" +
				"02000028 01 03 04 02 0a0b0c0d" +
				"03000014 01 0c 0000 80060100 00020004 00015180" +
				"00000008 02 03 0000" +
				"00000010 02 02 00 01" +
				"00000008 01 03 0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire := mustHex(strings.ReplaceAll(tt.wire, " ", ""))
			first, b, err := AppendPayloads([]byte{0xee}, []Payload{tt.p})
			if err != nil {
				t.Fatal(err)
			}
			if first != tt.p.Type() || b[0] != 0xee || !bytes.Equal(b[1:], wire) {
				t.Fatalf("encoded %s %x, want %s %x", first, b[1:], tt.p.Type(), wire)
			}
			d, err := DecodePayloads(tt.p.Type(), append(wire, 0xff, 0xff)) // padding after it is ignored
			if err != nil {
				t.Fatal(err)
			}
			if d.Len != len(wire) || len(d.Payloads) != 1 || !bytes.Equal(d.Raw[0], wire) {
				t.Fatalf("decoded Len %d, %d payloads, raw %x", d.Len, len(d.Payloads), d.Raw)
			}
			if !reflect.DeepEqual(d.Payloads[0], tt.p) {
				t.Errorf("decoded\n%#v\nwant\n%#v", d.Payloads[0], tt.p)
			}
		})
	}
}

func TestChainAndMessage(t *testing.T) {
	m := &Message{
		Header: Header{ICookie: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Version: Version1, Exchange: ExchangeInfo, Flags: FlagCommit, MessageID: 0xdeadbeef},
		Payloads: []Payload{
			Hash{Data: []byte{1}},
			&Delete{DOI: 1, Protocol: ProtoISAKMP, SPIs: [][]byte{make([]byte, 16)}},
			Notify{DOI: 1, Protocol: ProtoESP, NotifyType: NotifyResponderLifetime, SPI: []byte{1, 2, 3, 4}, Data: []byte{0x80, 0x01, 0x00, 0x01}},
		},
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.NextPayload != PayloadHash || int(m.Header.Length) != len(b) {
		t.Fatalf("header not updated: %+v", m.Header)
	}
	want := "0102030405060708 0000000000000000 08 10 05 02 deadbeef 00000051" +
		"0c000005 01" +
		"0b00001c 00000001 01 10 0001 00000000000000000000000000000000" +
		"00000014 00000001 03 04 6000 01020304 80010001"
	if w := mustHex(strings.ReplaceAll(want, " ", "")); !bytes.Equal(b, w) {
		t.Fatalf("message\n%x\nwant\n%x", b, w)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header != m.Header || len(got.Payloads) != 3 || len(got.Raw) != 3 {
		t.Fatalf("parsed %+v", got)
	}
	if n := got.Payloads[2].(*Notify); n.NotifyType != NotifyResponderLifetime || !bytes.Equal(n.SPI, []byte{1, 2, 3, 4}) {
		t.Errorf("notify %+v", n)
	}
	// Decoded values do not alias the input.
	b[HeaderLen+4] = 0x77
	if got.Payloads[0].(*Hash).Data[0] != 1 || got.Raw[0][4] != 1 {
		t.Error("decoded payload aliases the input buffer")
	}
	// No payloads at all.
	empty := &Message{Header: Header{Version: Version1, Exchange: ExchangeInfo}}
	eb, err := empty.Marshal()
	if err != nil || len(eb) != HeaderLen || empty.Header.NextPayload != PayloadNone {
		t.Fatalf("empty message %x %v", eb, err)
	}
	if em, err := Parse(eb); err != nil || len(em.Payloads) != 0 {
		t.Errorf("parse empty: %v", err)
	}
}

func TestParseHeader(t *testing.T) {
	good := readGolden(t, "mm-aes256-01-i.bin")
	h, err := ParseHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	if h.Length != 180 || h.NextPayload != PayloadSA || h.Exchange != ExchangeMain || h.RCookie != [8]byte{} {
		t.Errorf("header %+v", h)
	}
	var buf []byte
	if !bytes.Equal(h.AppendTo(buf), good[:HeaderLen]) {
		t.Error("AppendTo differs")
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		b    []byte
		err  error
		off  int
	}{
		{"empty", nil, ErrShort, 0},
		{"27 bytes", good[:27], ErrShort, 0},
		{"IKEv2", mod(func(b []byte) []byte { b[17] = 0x20; return b }), ErrVersion, 17},
		{"length 27", mod(func(b []byte) []byte { b[24], b[25], b[26], b[27] = 0, 0, 0, 27; return b }), ErrBadLength, 24},
		{"length beyond", good[:179], ErrShort, 24},
		{"length 4G", mod(func(b []byte) []byte { b[24], b[25], b[26], b[27] = 0xff, 0xff, 0xff, 0xff; return b }), ErrShort, 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseHeader(tt.b)
			checkErr(t, err, tt.err, PayloadNone, tt.off)
		})
	}
	// Minor version is ignored.
	if _, err := ParseHeader(mod(func(b []byte) []byte { b[17] = 0x11; return b })); err != nil {
		t.Errorf("minor version 1: %v", err)
	}
}

func checkErr(t *testing.T, err, want error, pt PayloadType, off int) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not *Error", err, err)
	}
	if !errors.Is(err, want) || e.Payload != pt || e.Offset != off {
		t.Errorf("error %q (payload %s offset %d), want cause %q, payload %s offset %d", err, e.Payload, e.Offset, want, pt, off)
	}
	if !strings.HasPrefix(err.Error(), "isakmp: ") {
		t.Errorf("error text %q", err)
	}
}

func TestParseErrors(t *testing.T) {
	mm1 := readGolden(t, "mm-aes256-01-i.bin")
	mm3 := readGolden(t, "mm-aes256-03-i.bin")
	enc := readGolden(t, "mm-aes256-05-i.bin")
	mod := func(src []byte, f func(b []byte)) []byte { b := append([]byte(nil), src...); f(b); return b }
	put16 := func(b []byte, off int, v uint16) { b[off], b[off+1] = byte(v>>8), byte(v) }
	tests := []struct {
		name string
		b    []byte
		err  error
		pt   PayloadType
		off  int
	}{
		{"encrypted", enc, ErrEncrypted, PayloadNone, 19},
		{"datagram longer than Length", append(append([]byte(nil), mm1...), 0), ErrBadLength, PayloadNone, 24},
		{"bytes after last payload", mod(mm1, func(b []byte) { b[HeaderLen+0x38+0x0c+0x14+0x18] = 0 }), ErrBadLength, PayloadNone, 160},
		{"payload length < 4", mod(mm1, func(b []byte) { put16(b, 30, 3) }), ErrBadLength, PayloadSA, 28},
		{"payload beyond message", mod(mm1, func(b []byte) { put16(b, 30, 200) }), ErrShort, PayloadSA, 28},
		{"SA too short", mod(mm1, func(b []byte) { put16(b, 30, 8); b[28] = 0; b[24+3] = 36 })[:36], ErrShort, PayloadSA, 28},
		{"proposal length beyond SA", mod(mm1, func(b []byte) { put16(b, 28+12+2, 0x2d) }), ErrBadLength, PayloadProposal, 40},
		{"proposal next payload", mod(mm1, func(b []byte) { b[40] = 2 }), ErrBadPayload, PayloadProposal, 40},
		{"proposal without transforms", mod(mm1, func(b []byte) { b[40+7] = 0 }), ErrBadPayload, PayloadProposal, 40},
		{"proposal with more transforms than bytes", mod(mm1, func(b []byte) { b[40+7] = 2 }), ErrBadPayload, PayloadTransform, 48},
		{"proposal 65 transforms", mod(mm1, func(b []byte) { b[40+7] = 65 }), ErrTooMany, PayloadProposal, 40},
		{"SPI size beyond proposal", mod(mm1, func(b []byte) { b[40+6] = 0x30 }), ErrShort, PayloadProposal, 40},
		{"transform next payload", mod(mm1, func(b []byte) { b[48] = 3 }), ErrBadPayload, PayloadTransform, 48},
		{"transform length", mod(mm1, func(b []byte) { put16(b, 50, 7) }), ErrBadLength, PayloadTransform, 48},
		{"transform shorter than proposal", mod(mm1, func(b []byte) { put16(b, 50, 0x20) }), ErrBadLength, PayloadProposal, 40},
		{"transform longer than proposal", mod(mm1, func(b []byte) { put16(b, 50, 0x28) }), ErrBadLength, PayloadTransform, 48},
		{"TLV attribute beyond transform", mod(mm1, func(b []byte) { b[56+24] = 0; put16(b, 56+26, 9) }), ErrShort, PayloadTransform, 80},
		{"ID payload of 3 bytes", mod(mm1, func(b []byte) { b[16] = byte(PayloadID); put16(b, 30, 7) }), ErrShort, PayloadID, 28},
		{"proposal at top level", mod(mm1, func(b []byte) { b[16] = byte(PayloadProposal) }), ErrBadPayload, PayloadProposal, 28},
		{"notify SPI beyond", mod(mm3, func(b []byte) { b[16] = byte(PayloadNotify); b[28+4+5] = 255 }), ErrShort, PayloadNotify, 28},
		{"delete sizes", mod(mm3, func(b []byte) { b[16] = byte(PayloadDelete); b[28+4+5] = 16; put16(b, 28+4+6, 1) }), ErrBadLength, PayloadDelete, 28},
		{"delete no SPI", mod(mm3, func(b []byte) { b[16] = byte(PayloadDelete); put16(b, 28+4+6, 0) }), ErrBadPayload, PayloadDelete, 28},
		{"NAT-OA v4 with 252 bytes", mod(mm3, func(b []byte) { b[16] = byte(PayloadNATOA); b[28+4] = 1 }), ErrBadPayload, PayloadNATOA, 28},
		{"NAT-D truncated chain", mm3[:len(mm3)-1], ErrShort, PayloadNone, 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.b)
			checkErr(t, err, tt.err, tt.pt, tt.off)
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	// 64 empty VIDs decode, 65 do not.
	vid := []byte{13, 0, 0, 4}
	b := bytes.Repeat(vid, 65)
	b[64*4] = 0
	_, err := DecodePayloads(PayloadVendorID, b)
	checkErr(t, err, ErrTooMany, PayloadVendorID, 256)
	b[63*4] = 0
	d, err := DecodePayloads(PayloadVendorID, b)
	if err != nil || len(d.Payloads) != 64 || d.Len != 256 {
		t.Fatalf("64 payloads: %v, %d, Len %d", err, len(d.Payloads), d.Len)
	}
	// Truncated chain: the next payload is announced but absent.
	_, err = DecodePayloads(PayloadVendorID, vid)
	checkErr(t, err, ErrShort, PayloadVendorID, 4)
	// 65 attributes in one transform.
	attrs := make([]Attribute, 65)
	for i := range attrs {
		attrs[i] = BasicAttr(1, 1)
	}
	sa := &SA{DOI: 1, Situation: 1, Proposals: []Proposal{{Number: 1, Protocol: ProtoISAKMP, Transforms: []Transform{{Number: 1, ID: 1, Attributes: attrs[:64]}}}}}
	_, enc, err := AppendPayloads(nil, []Payload{sa})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodePayloads(PayloadSA, enc); err != nil {
		t.Fatal(err)
	}
	enc = append(enc, 0x80, 1, 0, 1)
	enc[3] += 4
	enc[4+8+3] += 4
	enc[4+8+8+3] += 4
	_, err = DecodePayloads(PayloadSA, enc)
	checkErr(t, err, ErrTooMany, PayloadTransform, 20)
	// 65 proposals.
	props := make([]Proposal, 65)
	for i := range props {
		props[i] = Proposal{Number: uint8(i + 1), Protocol: ProtoESP, Transforms: []Transform{{Number: 1, ID: 12}}}
	}
	sa = &SA{DOI: 1, Situation: 1, Proposals: props[:64]}
	_, enc, err = AppendPayloads(nil, []Payload{sa})
	if err != nil {
		t.Fatal(err)
	}
	enc[len(enc)-16] = 2 // last proposal now announces one more
	enc = append(enc, 0, 0, 0, 16, 65, 3, 0, 1, 0, 0, 0, 8, 1, 12, 0, 0)
	enc[2], enc[3] = byte(len(enc)>>8), byte(len(enc))
	_, err = DecodePayloads(PayloadSA, enc)
	checkErr(t, err, ErrTooMany, PayloadProposal, len(enc)-16)
}

func TestEncodeErrors(t *testing.T) {
	var nilSA *SA
	big := make([]byte, 65536)
	okSA := SA{DOI: 1, Situation: 1, Proposals: []Proposal{{Number: 1, Protocol: 1, Transforms: []Transform{{Number: 1, ID: 1}}}}}
	many := make([]Payload, 65)
	for i := range many {
		many[i] = VendorID{}
	}
	tests := []struct {
		name string
		ps   []Payload
		err  error
		pt   PayloadType
		off  int
	}{
		{"nil interface", []Payload{nil}, ErrBadPayload, PayloadNone, 0},
		{"nil pointer", []Payload{KE{}, nilSA}, ErrBadPayload, PayloadNone, 0},
		{"65 payloads", many, ErrTooMany, PayloadNone, 0},
		{"KE too long", []Payload{KE{Data: []byte{1}}, KE{Data: big}}, ErrBadLength, PayloadKE, 5},
		{"notify SPI 256", []Payload{Notify{SPI: big[:256]}}, ErrBadLength, PayloadNotify, 0},
		{"delete empty", []Payload{Delete{}}, ErrBadPayload, PayloadDelete, 0},
		{"delete unequal", []Payload{Delete{SPIs: [][]byte{{1, 2, 3, 4}, {1, 2, 3}}}}, ErrBadLength, PayloadDelete, 0},
		{"NAT-OA v4 type, v6 addr", []Payload{NATOA{IDType: IDIPv4Addr, Addr: netip.MustParseAddr("::1")}}, ErrBadPayload, PayloadNATOA, 0},
		{"NAT-OA no addr", []Payload{NATOA{}}, ErrBadPayload, PayloadNATOA, 0},
		{"unknown type 0", []Payload{Unknown{}}, ErrBadPayload, PayloadNone, 0},
		{"SA no proposal", []Payload{SA{}}, ErrBadPayload, PayloadSA, 0},
		{"proposal no transform", []Payload{SA{Proposals: []Proposal{{Number: 1}}}}, ErrBadPayload, PayloadProposal, 12},
		{"proposal SPI 256", []Payload{SA{Proposals: []Proposal{{Number: 1, SPI: big[:256], Transforms: okSA.Proposals[0].Transforms}}}}, ErrBadLength, PayloadProposal, 12},
		{"attribute type 0x8000", []Payload{SA{Proposals: []Proposal{{Number: 1, Transforms: []Transform{{Attributes: []Attribute{BasicAttr(0x8001, 1)}}}}}}}, ErrBadPayload, PayloadTransform, 20},
		{"attribute too long", []Payload{SA{Proposals: []Proposal{{Number: 1, Transforms: []Transform{{Attributes: []Attribute{VarAttr(1, big)}}}}}}}, ErrBadLength, PayloadTransform, 20},
		{"transform too long", []Payload{SA{Proposals: []Proposal{{Number: 1, Transforms: []Transform{{Attributes: []Attribute{VarAttr(1, big[:65530])}}}}}}}, ErrBadLength, PayloadTransform, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte{1, 2, 3}
			first, out, err := AppendPayloads(dst, tt.ps)
			checkErr(t, err, tt.err, tt.pt, tt.off)
			if first != PayloadNone || !bytes.Equal(out, []byte{1, 2, 3}) {
				t.Errorf("on error: first %s, out %x", first, out)
			}
			m := &Message{Payloads: tt.ps}
			_, err = m.Marshal()
			checkErr(t, err, tt.err, tt.pt, tt.off+HeaderLen)
		})
	}
}

func TestAttribute(t *testing.T) {
	tests := []struct {
		a  Attribute
		v  uint64
		ok bool
	}{
		{BasicAttr(1, 7), 7, true},
		{VarAttr(12, []byte{0x01, 0x51, 0x80}), 86400, true},
		{VarAttr(12, []byte{1, 2, 3, 4, 5, 6, 7, 8}), 0x0102030405060708, true},
		{VarAttr(12, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}), 0, false},
		{VarAttr(12, nil), 0, false},
	}
	for _, tt := range tests {
		if v, ok := tt.a.Uint(); v != tt.v || ok != tt.ok {
			t.Errorf("%+v.Uint() = %d, %v; want %d, %v", tt.a, v, ok, tt.v, tt.ok)
		}
	}
	for _, v := range []uint64{0, 1, 65535, 65536, 86400, 1 << 32, 1<<64 - 1} {
		a := UintAttr(AttrLifeDuration, v)
		if got, ok := a.Uint(); !ok || got != v || a.Basic != (v <= 65535) {
			t.Errorf("UintAttr(%d) = %+v", v, a)
		}
	}
	if a := UintAttr(AttrLifeDuration, 86400); len(a.Data) != 3 {
		t.Errorf("86400 encoded in %d bytes, want 3", len(a.Data))
	}
	tr := Transform{Attributes: []Attribute{BasicAttr(1, 7), BasicAttr(14, 256)}}
	if a, ok := tr.Attr(14); !ok || a.Value != 256 {
		t.Errorf("Attr(14) = %+v %v", a, ok)
	}
	if _, ok := tr.Attr(2); ok {
		t.Error("Attr(2) found")
	}
}

func TestStrings(t *testing.T) {
	tests := []struct{ got, want string }{
		{PayloadSA.String(), "SA"},
		{PayloadNATDDraft.String(), "NAT-D(draft)"},
		{PayloadType(99).String(), "PAYLOAD(99)"},
		{ExchangeMain.String(), "Main"},
		{ExchangeType(77).String(), "EXCHANGE(77)"},
		{NotifyInvalidPayloadType.String(), "INVALID-PAYLOAD-TYPE"},
		{NotifyUnequalPayloadLengths.String(), "UNEQUAL-PAYLOAD-LENGTHS"},
		{NotifyRUThereAck.String(), "R-U-THERE-ACK"},
		{NotifyType(40000).String(), "NOTIFY(40000)"},
		{(FlagEncryption | FlagCommit | 0x40).String(), "E|C|0x40"},
		{Flags(0).String(), "0"},
		{ProtoESP.String(), "ESP"},
		{IDKeyID.String(), "KEY_ID"},
		{(&Error{Payload: PayloadNotify, Offset: 60, Err: ErrShort}).Error(), "isakmp: NOTIFY at offset 60: truncated"},
		{(&Error{Offset: 24, Err: ErrBadLength}).Error(), "isakmp: header at offset 24: bad length"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for n := NotifyType(1); n <= 30; n++ {
		if strings.HasPrefix(n.String(), "NOTIFY(") || !n.IsError() {
			t.Errorf("notify %d unnamed or not an error", n)
		}
	}
	if NotifyInitialContact.IsError() {
		t.Error("INITIAL-CONTACT is an error type")
	}
}

func TestParseEncryptedErrors(t *testing.T) {
	enc := readGolden(t, "mm-aes256-05-i.bin")
	_, _, err := ParseEncrypted(enc[:20])
	checkErr(t, err, ErrShort, PayloadNone, 0)
	hdr := append([]byte(nil), enc[:HeaderLen]...)
	hdr[27] = HeaderLen
	hdr[26] = 0
	_, _, err = ParseEncrypted(hdr)
	checkErr(t, err, ErrBadLength, PayloadNone, 24)
	// Trailing bytes after Length are not part of the body.
	h, body, err := ParseEncrypted(append(append([]byte(nil), enc...), 1, 2, 3))
	if err != nil || int(h.Length) != len(enc) || len(body) != len(enc)-HeaderLen {
		t.Errorf("trailing bytes: %v, body %d", err, len(body))
	}
}
