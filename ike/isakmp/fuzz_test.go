package isakmp

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// goldenSeeds returns every captured message in testdata.
func goldenSeeds(f *testing.F) [][]byte {
	files, err := filepath.Glob("testdata/*.bin")
	if err != nil || len(files) == 0 {
		f.Fatalf("no golden messages: %v", err)
	}
	var out [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// zeroed returns a copy of b with the bytes at the given offsets zeroed.
func zeroed(b []byte, offs []int) []byte {
	out := append([]byte(nil), b...)
	for _, o := range offs {
		out[o] = 0
	}
	return out
}

// checkReencode checks that decoded payloads re-encode to exactly the bytes
// they came from (reserved bytes zeroed), that Raw covers them, and that
// decoding the output again gives equal values.
func checkReencode(t *testing.T, first PayloadType, wire []byte, d Decoded, rsv []int) {
	t.Helper()
	var cat []byte
	for _, r := range d.Raw {
		cat = append(cat, r...)
	}
	if !bytes.Equal(cat, wire) {
		t.Fatalf("Raw covers %x, want %x", cat, wire)
	}
	gotFirst, out, err := AppendPayloads(nil, d.Payloads)
	if err != nil {
		t.Fatalf("decoded payloads do not encode: %v", err)
	}
	if len(d.Payloads) > 0 && gotFirst != first {
		t.Fatalf("first payload %s, decoded from %s", gotFirst, first)
	}
	if want := zeroed(wire, rsv); !bytes.Equal(out, want) {
		t.Fatalf("re-encoded\n%x\nwant\n%x", out, want)
	}
	d2, err := DecodePayloads(gotFirst, out)
	if err != nil {
		t.Fatalf("re-encoded payloads do not decode: %v", err)
	}
	if !reflect.DeepEqual(d2.Payloads, d.Payloads) {
		t.Fatalf("second decode differs:\n%#v\n%#v", d2.Payloads, d.Payloads)
	}
}

func FuzzDecodePayloads(f *testing.F) {
	for _, b := range goldenSeeds(f) {
		if h, err := ParseHeader(b); err == nil && h.Flags&FlagEncryption == 0 {
			f.Add(uint8(h.NextPayload), b[HeaderLen:])
		}
	}
	// Decrypted bodies (with their CBC padding) of encrypted golden messages.
	dec, _ := filepath.Glob("testdata/decrypted/*.bin")
	for _, name := range dec {
		plain, err1 := os.ReadFile(name)
		orig, err2 := os.ReadFile(filepath.Join("testdata", filepath.Base(name)))
		if err1 != nil || err2 != nil || len(orig) < HeaderLen {
			f.Fatalf("%s: %v %v", name, err1, err2)
		}
		f.Add(orig[16], plain)
	}
	f.Add(uint8(PayloadNATOADraft), []byte{0, 0, 0, 8, 1, 0, 0, 0})
	f.Add(uint8(PayloadDelete), []byte{0, 0, 0, 16, 0, 0, 0, 1, 3, 4, 0, 1, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, first uint8, b []byte) {
		var rsv []int
		d, err := decodePayloads(PayloadType(first), b, 0, &rsv)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		if d.Len > len(b) {
			t.Fatalf("Len %d > %d", d.Len, len(b))
		}
		checkReencode(t, PayloadType(first), b[:d.Len], d, rsv)
	})
}

func FuzzParse(f *testing.F) {
	for _, b := range goldenSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var rsv []int
		m, err := parse(b, &rsv)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v", err, err)
			}
			// The public entry point gives the same answer.
			if _, err2 := Parse(b); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Parse: %v, parse: %v", err2, err)
			}
			return
		}
		h := m.Header
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("parsed message does not marshal: %v", err)
		}
		if want := zeroed(b, rsv); !bytes.Equal(out, want) {
			t.Fatalf("re-marshaled\n%x\nwant\n%x", out, want)
		}
		if m.Header != h {
			t.Fatalf("Marshal changed the header: %+v -> %+v", h, m.Header)
		}
		for _, o := range rsv {
			if o < HeaderLen || o >= len(b) {
				t.Fatalf("reserved offset %d outside the body", o)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	msg := readGolden(b, "mm-aes256-03-i.bin")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	msg := readGolden(b, "mm-aes256-03-i.bin")
	m, err := Parse(msg)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		out := m.Header.AppendTo(buf[:0])
		if _, out, err = AppendPayloads(out, m.Payloads); err != nil || len(out) != len(msg) {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	msg := readGolden(b, "mm-aes256-03-i.bin")
	m, err := Parse(msg)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}
