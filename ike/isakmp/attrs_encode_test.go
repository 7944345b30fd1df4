package isakmp

import (
	"bytes"
	"errors"
	"testing"
)

func TestAppendAttributes(t *testing.T) {
	// RESPONDER-LIFETIME body: 1200 s and 10000 KB, then a variable
	// duration of 86400 s.
	got, err := AppendAttributes([]byte{0xaa}, []Attribute{
		BasicAttr(AttrSALifeType, LifeSeconds), UintAttr(AttrSALifeDuration, 1200),
		BasicAttr(AttrSALifeType, LifeKilobytes), UintAttr(AttrSALifeDuration, 10000),
		UintAttr(AttrSALifeDuration, 86400),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xaa, 0x80, 1, 0, 1, 0x80, 2, 0x04, 0xb0, 0x80, 1, 0, 2, 0x80, 2, 0x27, 0x10, 0, 2, 0, 3, 0x01, 0x51, 0x80}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
	if _, err := AppendAttributes(nil, []Attribute{BasicAttr(0x8001, 1)}); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("type above 15 bits: err %v, want ErrBadPayload", err)
	}
	if _, err := AppendAttributes(nil, []Attribute{VarAttr(2, make([]byte, 70000))}); !errors.Is(err, ErrBadLength) {
		t.Fatalf("oversized value: err %v, want ErrBadLength", err)
	}
}
