package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"ikegw/ike/sa"

	"github.com/fxamacker/cbor/v2"
)

func TestCBORSkip(t *testing.T) {
	good := []string{
		"00", "17", "1818", "190100", "1a00010000", "1b0000000100000000", "20", "3bffffffffffffffff",
		"40", "4401020304", "5f42010243030405ff", "60", "6161", "7f6161ff",
		"80", "83010203", "9f0102ff", "9fff", "a0", "a201020304", "bf0102ff",
		"c074323031332d30332d32315432303a30343a30305a", "d82a4100",
		"f4", "f5", "f6", "f7", "f820", "f93c00", "fa47c35000", "fb3ff199999999999a",
		"8301820203820405", "a1018201a10203",
	}
	for _, h := range good {
		b, _ := hex.DecodeString(h)
		// Trailing bytes must not be consumed.
		end, err := cborSkip(append(b, 0x01), 0, 0)
		if err != nil || end != len(b) {
			t.Errorf("%s: end %d, %v; want %d", h, end, err, len(b))
		}
		if cbor.Wellformed(b) != nil {
			t.Errorf("%s: test vector is not well-formed CBOR", h)
		}
	}
	deep := strings.Repeat("81", scanMaxDepth+2) + "00"
	bad := []string{
		"", "18", "19ff", "1aff", "1bffffff", "1c", "1d", "1e", "1f", "3f",
		"41", "62ff", "5a00000010", "5f4101", "5f6161ff", "5f5f41ffff",
		"81", "8201", "9f01", "a1", "a101", "bf01ff", "bf0102", "ff", "c0", "df",
		"9b00000000000000ff00", deep,
	}
	for _, h := range bad {
		b, _ := hex.DecodeString(h)
		if end, err := cborSkip(b, 0, 0); err == nil {
			t.Errorf("%s: accepted (end %d)", h, end)
		}
	}
}

// Records with indefinite-length items and tags in fields this build does
// not know take the fast path and keep those bytes exactly.
func TestPutCountersKeepsUnknownIndefiniteItems(t *testing.T) {
	r := sampleChild(1)
	rb, err := sa.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	// Append key 99 -> [_ h'0102', {_ 1: 2}] tagged 42 (definite map count
	// +1).
	extra, _ := hex.DecodeString("1863d82a9f420102bf0102ffff")
	if rb[0] < 0xa0 || rb[0] >= 0xb7 {
		t.Fatalf("sample record head %#x is not a small map", rb[0])
	}
	rec := append([]byte{rb[0] + 1}, rb[1:]...)
	rec = append(rec, extra...)
	out, ok, err := spliceCounters(rec, sa.Counters{OutSeq: 9999})
	if !ok || err != nil {
		t.Fatalf("fast path not taken: ok=%v err=%v", ok, err)
	}
	if !bytes.HasSuffix(out, extra) {
		t.Fatal("unknown item changed")
	}
	var got sa.ChildSA
	if err := sa.Unmarshal(out, &got); err != nil || got.Counters.OutSeq != 9999 || got.In.SPI != r.In.SPI {
		t.Fatalf("after merge: %+v, %v", got.Counters, err)
	}
}

func TestPutCountersRefusesNewerRecord(t *testing.T) {
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	r := sampleChild(1)
	r.Version = sa.RecordVersion + 1
	b, _ := sa.Marshal(r)
	k := childKey(r.In.SPI)
	db.Update(func(tx *Tx) error { return tx.tx.Bucket(bucketChild).Put(k, s.Seal(b, recordAD(bucketChild, k))) })
	err := db.Update(func(tx *Tx) error { return tx.PutCounters(r.In.SPI, sa.Counters{OutSeq: 1}) })
	if !errors.Is(err, sa.ErrNewerRecord) || !strings.Contains(err.Error(), "c0000001") {
		t.Fatalf("PutCounters on a newer record: %v", err)
	}
	err = db.View(func(tx *Tx) error { _, err := tx.Child(r.In.SPI); return err })
	if !errors.Is(err, sa.ErrNewerRecord) {
		t.Fatalf("Child on a newer record: %v", err)
	}
}

// Damaged or misplaced records give errors naming the record, never a
// panic, and stop a walk.
func TestDamagedRecords(t *testing.T) {
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	c1, c2 := sampleChild(1), sampleChild(2)
	i1 := sampleIKE(1)
	db.Update(func(tx *Tx) error {
		tx.PutChild(c1)
		return tx.PutIKE(i1)
	})
	k2 := childKey(c2.In.SPI)
	kb := []byte{0xc0, 0, 0, 9}
	ik := ikeKey(sampleIKE(2).Cookies)
	db.Update(func(tx *Tx) error {
		b := tx.tx.Bucket(bucketChild)
		// c1's record copied under c2's key: the additional data differs.
		b.Put(k2, b.Get(childKey(c1.In.SPI)))
		// A correctly sealed record holding another SPI.
		cb, _ := sa.Marshal(c1)
		b.Put(kb, s.Seal(cb, recordAD(bucketChild, kb)))
		// Sealed garbage where an IKE record belongs.
		tx.tx.Bucket(bucketIKE).Put(ik, s.Seal([]byte{0xff, 0x00}, recordAD(bucketIKE, ik)))
		return nil
	})
	db.View(func(tx *Tx) error {
		if _, err := tx.Child(c2.In.SPI); !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), hex.EncodeToString(k2)) {
			t.Errorf("moved record: %v", err)
		}
		if _, err := tx.Child(0xc0000009); err == nil || !strings.Contains(err.Error(), "holds inbound SPI c0000001") {
			t.Errorf("record with another SPI: %v", err)
		}
		if _, err := tx.IKE(sampleIKE(2).Cookies); err == nil || !strings.Contains(err.Error(), hex.EncodeToString(ik)) {
			t.Errorf("garbage IKE record: %v", err)
		}
		if err := tx.ForEachChild(func(*sa.ChildSA) error { return nil }); err == nil {
			t.Error("ForEachChild over damaged records succeeded")
		}
		if err := tx.ForEachIKE(func(*sa.IKESA) error { return nil }); err == nil {
			t.Error("ForEachIKE over a damaged record succeeded")
		}
		return nil
	})
	if err := db.Update(func(tx *Tx) error { return tx.PutCounters(c2.In.SPI, sa.Counters{}) }); !errors.Is(err, ErrSealed) {
		t.Errorf("PutCounters on a moved record: %v", err)
	}
	// Sealed meta moved from another key does not open either.
	db.Update(func(tx *Tx) error {
		tx.PutSealedMeta("a", []byte("secret"))
		b := tx.tx.Bucket(bucketSMeta)
		return b.Put([]byte("b"), b.Get([]byte("a")))
	})
	db.View(func(tx *Tx) error {
		if _, err := tx.SealedMeta("b"); !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("moved sealed meta: %v", err)
		}
		return nil
	})
}

func TestOpenLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	_, err := Open(db.Path(), s)
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second open: %v", err)
	}
}
