package cluster

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
	"ikegw/store"
)

func testSealer(t testing.TB) *store.Sealer {
	t.Helper()
	s, err := store.NewSealer(bytes.Repeat([]byte{7}, store.ClusterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testDB(t testing.TB, s *store.Sealer) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "sa.db"), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func testIKE(i byte) *sa.IKESA {
	return &sa.IKESA{
		Version: sa.RecordVersion,
		Cookies: sa.Cookies{I: [8]byte{i, 1}, R: [8]byte{i, 2}},
		Role:    sa.Responder, State: sa.IKEEstablished, Connection: "dc2",
		Local:  netip.MustParseAddrPort("192.0.2.1:500"),
		Remote: netip.MustParseAddrPort("198.51.100.7:500"),
		SKEYID: bytes.Repeat([]byte{0xAA}, 32), SKEYIDd: bytes.Repeat([]byte{0xBB}, 32),
		EncKey: bytes.Repeat([]byte{0xCC}, 32), IVBase: make([]byte, 16),
		Established: 1700000000000000000 + int64(i),
	}
}

func testChild(spi uint32) *sa.ChildSA {
	return &sa.ChildSA{
		Version: sa.RecordVersion, IKE: testIKE(1).Cookies, Connection: "dc2", Child: "net",
		State: sa.ChildInstalled, Reqid: 1, Mode: sa.Tunnel, Protocol: 50,
		In:  sa.SADir{SPI: spi, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("192.0.2.1"), Encr: sa.EncrAESCBC, EncrKey: make([]byte, 32), Integ: sa.IntegSHA256, IntegKey: make([]byte, 32), TruncBits: 128},
		Out: sa.SADir{SPI: spi + 1, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.7"), Encr: sa.EncrAESCBC, EncrKey: make([]byte, 32), Integ: sa.IntegSHA256, IntegKey: make([]byte, 32), TruncBits: 128},
	}
}

// batchEntry builds a Batch entry from groups of commands, as the committer
// does.
func batchEntry(t testing.TB, s Sealer, groups ...[]Command) []byte {
	t.Helper()
	var gs [][][]byte
	for _, g := range groups {
		var enc [][]byte
		for _, c := range g {
			b, err := encodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			enc = append(enc, b)
		}
		gs = append(gs, enc)
	}
	e, err := encodeBatch(s, gs)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func entry(t testing.TB, s Sealer, c Command) []byte {
	t.Helper()
	e, err := EncodeEntry(s, c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func applyErr(f *FSM, idx uint64, data []byte) error {
	r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
	if r == nil {
		return nil
	}
	if e, ok := r.(error); ok {
		return e
	}
	return errors.New("unexpected result type")
}

func TestFSMCommands(t *testing.T) {
	s := testSealer(t)
	db := testDB(t, s)
	f := NewFSM(DBBackend(db), s, quietLog())
	steps := []struct {
		name string
		cmd  Command
		want error
	}{
		{"upsert ike", UpsertIKE(testIKE(1)), nil},
		{"upsert ike 2", UpsertIKE(testIKE(2)), nil},
		{"delete ike 2", DeleteIKE(testIKE(2).Cookies), nil},
		{"delete missing ike", DeleteIKE(testIKE(9).Cookies), nil},
		{"upsert child", UpsertChild(testChild(0x1000)), nil},
		{"upsert child 2", UpsertChild(testChild(0x2000)), nil},
		{"delete child 2", DeleteChild(0x2000), nil},
		{"counters", CountersBatch(map[uint32]sa.Counters{0x1000: {OutSeq: 50, InSeq: 40}, 0x9999: {OutSeq: 1}}), nil},
		{"counters never go back", CountersBatch(map[uint32]sa.Counters{0x1000: {OutSeq: 10, InSeq: 45}}), nil},
		{"config v2", ConfigApply(2, []byte("psk=secret")), nil},
		{"config v1 stale", ConfigApply(1, []byte("old")), ErrStale},
		{"config v2 again", ConfigApply(2, []byte("psk=secret")), nil},
		{"active gw1", SetActive("gw1", 5), nil},
		{"active stale", SetActive("gw2", 4), ErrStale},
		{"active empty", SetActive("", 6), ErrMalformedEntry},
		{"unknown ignorable", Command{Type: 200, Flags: FlagIgnorable, Version: 1, Body: "x"}, nil},
		{"unknown", Command{Type: 200, Version: 1, Body: "x"}, ErrUnknownCommand},
		{"newer version", Command{Type: TypeUpsertIKE, Version: 9, Body: testIKE(3)}, ErrNewerCommand},
		{"newer version ignorable", Command{Type: TypeUpsertIKE, Flags: FlagIgnorable, Version: 9, Body: testIKE(3)}, nil},
		{"wrong body", Command{Type: TypeUpsertChild, Version: 1, Body: "not a child"}, ErrMalformedEntry},
	}
	for i, st := range steps {
		err := applyErr(f, uint64(i+1), entry(t, s, st.cmd))
		if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
			t.Errorf("%s: got %v, want %v", st.name, err, st.want)
		}
	}
	if a, ok, err := ReadActive(db); err != nil || !ok || a != (ActiveBody{Node: "gw1", Term: 5}) {
		t.Errorf("ReadActive: %+v %v %v", a, ok, err)
	}
	if v, d, err := ReadConfig(db); err != nil || v != 2 || string(d) != "psk=secret" {
		t.Errorf("ReadConfig: %d %q %v", v, d, err)
	}
	empty := testDB(t, s)
	if _, ok, err := ReadActive(empty); ok || err != nil {
		t.Errorf("ReadActive on empty db: %v %v", ok, err)
	}
	if v, d, err := ReadConfig(empty); v != 0 || d != nil || err != nil {
		t.Errorf("ReadConfig on empty db: %d %q %v", v, d, err)
	}
	err := db.View(func(tx *store.Tx) error {
		if _, err := tx.IKE(testIKE(1).Cookies); err != nil {
			t.Errorf("ike 1: %v", err)
		}
		for _, gone := range []sa.Cookies{testIKE(2).Cookies, testIKE(3).Cookies} {
			if _, err := tx.IKE(gone); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("ike %v: got %v, want not found", gone, err)
			}
		}
		c, err := tx.Child(0x1000)
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		if c.Counters.OutSeq != 50 || c.Counters.InSeq != 45 {
			t.Errorf("counters %+v, want OutSeq 50 InSeq 45", c.Counters)
		}
		if _, err := tx.Child(0x2000); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("child 2: got %v, want not found", err)
		}
		cfg, err := tx.SealedMeta(metaConfig)
		if err != nil || string(cfg) != "psk=secret" {
			t.Errorf("config %q, %v", cfg, err)
		}
		act, err := tx.Meta(metaActive)
		if err != nil {
			t.Fatal(err)
		}
		var a ActiveBody
		if err := decMode.Unmarshal(act, &a); err != nil || a.Node != "gw1" || a.Term != 5 {
			t.Errorf("active %+v, %v", a, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFSMMalformed(t *testing.T) {
	s := testSealer(t)
	f := NewFSM(DBBackend(testDB(t, s)), s, quietLog())
	good := entry(t, s, UpsertIKE(testIKE(1)))
	other, _ := store.NewSealer(bytes.Repeat([]byte{8}, store.ClusterKeySize))
	cases := map[string][]byte{
		"empty":         nil,
		"short":         {1, 0},
		"version 0":     {1, 0, 0, 1, 2, 3},
		"bad seal":      append(append([]byte{}, good[:headerLen]...), 1, 2, 3, 4),
		"flipped flag":  append([]byte{good[0], good[1] | 2, good[2]}, good[headerLen:]...),
		"other key":     entry(t, other, UpsertIKE(testIKE(1))),
		"batch garbage": sealEntry(s, []byte{byte(TypeBatch), 0, 1, 0xff, 0xff}),
		"nested batch": sealEntry(s, func() []byte {
			b, _ := encodeBatch(s, [][][]byte{{{byte(TypeBatch), 0, 1}}})
			return append([]byte{byte(TypeBatch), 0, 1}, mustMarshal(t, batchBody{Groups: [][][]byte{{b}}})...)
		}()),
	}
	for name, data := range cases {
		r := f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data})
		switch v := r.(type) {
		case error:
			if !errors.Is(v, ErrMalformedEntry) && !errors.Is(v, ErrNewerCommand) {
				t.Errorf("%s: error %v is neither malformed nor newer", name, v)
			}
		case *BatchResult:
			if len(v.Errs) != 1 || !errors.Is(v.Errs[0], ErrMalformedEntry) {
				t.Errorf("%s: batch result %v", name, v.Errs)
			}
		default:
			t.Errorf("%s: accepted (%v)", name, r)
		}
	}
	// Non-command log types are not ours.
	if r := f.Apply(&raft.Log{Type: raft.LogNoop}); r != nil {
		t.Errorf("noop: %v", r)
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	b, err := sa.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFSMBatchGroupsIndependent(t *testing.T) {
	s := testSealer(t)
	db := testDB(t, s)
	f := NewFSM(DBBackend(db), s, quietLog())
	r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: batchEntry(t, s,
		[]Command{UpsertIKE(testIKE(1)), UpsertChild(testChild(0x10))},
		[]Command{UpsertIKE(testIKE(2)), {Type: 201, Version: 1, Body: 1}}, // refused as a whole
		[]Command{{Type: 202, Flags: FlagIgnorable, Version: 1, Body: 1}, UpsertIKE(testIKE(3))},
		[]Command{ConfigApply(5, []byte("a"))},
		[]Command{UpsertIKE(testIKE(4)), ConfigApply(4, []byte("b"))}, // stale: fails in the store, rolls back
	)})
	br, ok := r.(*BatchResult)
	if !ok {
		t.Fatalf("result %T %v", r, r)
	}
	want := []error{nil, ErrUnknownCommand, nil, nil, ErrStale}
	for i, w := range want {
		if w == nil && br.Errs[i] != nil || w != nil && !errors.Is(br.Errs[i], w) {
			t.Errorf("group %d: got %v, want %v", i, br.Errs[i], w)
		}
	}
	_ = db.View(func(tx *store.Tx) error {
		for i, present := range map[byte]bool{1: true, 2: false, 3: true, 4: false} {
			_, err := tx.IKE(testIKE(i).Cookies)
			if present != (err == nil) {
				t.Errorf("ike %d present=%v, err %v", i, present, err)
			}
		}
		return nil
	})
}

func TestFSMSnapshotRestore(t *testing.T) {
	s := testSealer(t)
	src := NewFSM(DBBackend(testDB(t, s)), s, quietLog())
	for i := byte(1); i <= 20; i++ {
		if err := applyErr(src, uint64(i), entry(t, s, UpsertIKE(testIKE(i)))); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply after Snapshot must not leak into the snapshot (point in time).
	if err := applyErr(src, 21, entry(t, s, UpsertIKE(testIKE(21)))); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dstDB := testDB(t, s)
	dst := NewFSM(DBBackend(dstDB), s, quietLog())
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = dstDB.View(func(tx *store.Tx) error {
		return tx.ForEachIKE(func(*sa.IKESA) error { n++; return nil })
	})
	if n != 20 {
		t.Errorf("restored %d IKE SAs, want 20", n)
	}
	if err := dst.Restore(io.NopCloser(bytes.NewReader([]byte("garbage")))); err == nil {
		t.Error("garbage snapshot restored")
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

// memBackend is an in-memory Backend for the fuzz target only (fast); the
// other tests run on store.DB.
type memBackend struct{ meta map[string][]byte }

func (m *memBackend) Update(fn func(Writer) error) error     { return fn(m) }
func (m *memBackend) WriteSnapshot(io.Writer) error          { return errors.New("not supported") }
func (m *memBackend) Restore(io.Reader) error                { return errors.New("not supported") }
func (m *memBackend) PutIKE(s *sa.IKESA) error               { _, err := sa.Marshal(s); return err }
func (m *memBackend) DeleteIKE(sa.Cookies) error             { return nil }
func (m *memBackend) PutChild(c *sa.ChildSA) error           { _, err := sa.Marshal(c); return err }
func (m *memBackend) DeleteChild(uint32) error               { return nil }
func (m *memBackend) PutCounters(uint32, sa.Counters) error  { return nil }
func (m *memBackend) Meta(k string) ([]byte, error)          { return m.meta[k], nil }
func (m *memBackend) PutMeta(k string, v []byte) error       { m.meta[k] = v; return nil }
func (m *memBackend) SealedMeta(k string) ([]byte, error)    { return m.meta["s"+k], nil }
func (m *memBackend) PutSealedMeta(k string, v []byte) error { m.meta["s"+k] = v; return nil }

// FuzzFSMApply feeds arbitrary plain command bytes (sealed correctly, so the
// decoders are reached) and arbitrary raw entries: Apply must never panic.
func FuzzFSMApply(f *testing.F) {
	s := testSealer(f)
	for _, c := range []Command{UpsertIKE(testIKE(1)), UpsertChild(testChild(5)), DeleteIKE(testIKE(1).Cookies),
		DeleteChild(5), CountersBatch(map[uint32]sa.Counters{5: {OutSeq: 1}}), ConfigApply(1, []byte("x")), SetActive("a", 1)} {
		b, _ := encodeCommand(c)
		f.Add(b, false)
	}
	b, _ := sa.Marshal(batchBody{Groups: [][][]byte{{{1, 0, 1, 0xa0}}}})
	f.Add(append([]byte{byte(TypeBatch), 0, 1}, b...), false)
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		fsm := NewFSM(&memBackend{meta: map[string][]byte{}}, s, quietLog())
		if raw || len(data) < headerLen {
			fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: data})
			return
		}
		fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: sealEntry(s, data)})
	})
}
