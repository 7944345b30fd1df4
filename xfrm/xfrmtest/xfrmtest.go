// Package xfrmtest is the contract test of xfrm.DataPlane, shared by every
// implementation (as net/http/httptest serves net/http): a data plane that
// passes Run behaves as the DataPlane documentation says for install,
// idempotence, conflicts, counters, delete, flush and close.
//
// It checks what every data plane can observe without traffic; traffic
// (sequence numbers advancing, replay drops, lifetimes) is tested by each
// implementation with its own means.
package xfrmtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

// Child returns a valid tunnel-mode ESP pair with UDP encapsulation, number
// i: distinct SPIs, selectors and keys for each i (1 <= i < 200). It uses
// documentation addresses only (192.0.2.0/24, 198.51.100.0/24) and AES-GCM
// outbound, AES-CBC with HMAC-SHA2-256 inbound.
func Child(i int) *sa.ChildSA {
	key := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = seed + byte(j)*13 + byte(i)
		}
		return b
	}
	local, remote := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	return &sa.ChildSA{
		Version: sa.RecordVersion, Connection: "xfrmtest", Child: fmt.Sprintf("c%d", i), State: sa.ChildInstalled,
		Reqid: uint32(i), Mode: sa.Tunnel, Protocol: xfrm.ProtoESP,
		In: sa.SADir{SPI: 0xc7000000 + uint32(i)<<8, Src: remote, Dst: local, Encr: sa.EncrAESCBC, EncrKey: key(32, 1),
			Integ: sa.IntegSHA256, IntegKey: key(32, 2), TruncBits: 128},
		Out:            sa.SADir{SPI: 0xc8000000 + uint32(i)<<8, Src: local, Dst: remote, Encr: sa.EncrAESGCM, EncrKey: key(36, 3), TruncBits: 128},
		LocalTS:        []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", i))}},
		RemoteTS:       []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(fmt.Sprintf("203.0.113.%d/32", i))}},
		EncapLocalPort: 4500, EncapRemotePort: 4500,
		Lifetime: sa.Lifetime{SoftSeconds: 3000, HardSeconds: 3600},
	}
}

// Run runs the contract test against data planes made by newDP, one per
// subtest. newDP registers its own cleanup; Run closes each data plane
// itself too (Close must be idempotent).
func Run(t *testing.T, newDP func(t *testing.T) xfrm.DataPlane) {
	ctx := context.Background()
	t.Run("InstallCountersDelete", func(t *testing.T) {
		dp := newDP(t)
		defer dp.Close()
		if k := dp.Kind(); k != xfrm.KindKernel && k != xfrm.KindUserspace {
			t.Fatalf("Kind %q", k)
		}
		c := Child(1)
		c.Counters = sa.Counters{OutSeq: 5000, InSeq: 4000, ReplayBitmap: []uint64{0b1011},
			InBytes: 1 << 20, InPackets: 900, OutBytes: 2 << 20, OutPackets: 1000}
		if err := dp.InstallChild(ctx, c); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp, c.ID())
		got := counters(t, dp, c.ID())
		if got.OutSeq != 5000 || got.InSeq != 4000 {
			t.Fatalf("starting sequence numbers: out %d in %d, want 5000 4000", got.OutSeq, got.InSeq)
		}
		if len(got.ReplayBitmap) == 0 || got.ReplayBitmap[0]&0xffffffff != 0b1011 {
			t.Fatalf("restored replay bitmap %x, want low word 0b1011", got.ReplayBitmap)
		}
		if got.InBytes != c.Counters.InBytes || got.InPackets != c.Counters.InPackets ||
			got.OutBytes != c.Counters.OutBytes || got.OutPackets != c.Counters.OutPackets {
			t.Fatalf("starting traffic counters %+v, want those of the record %+v", got, c.Counters)
		}
		if err := dp.DeleteChild(ctx, c); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp)
		if err := dp.DeleteChild(ctx, c); err != nil {
			t.Fatalf("deleting an absent pair: %v", err)
		}
		m, err := dp.Counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m[c.ID()]; ok {
			t.Fatal("deleted pair still has counters")
		}
	})

	t.Run("IdempotentInstallRaisesOutSeq", func(t *testing.T) {
		dp := newDP(t)
		defer dp.Close()
		c := Child(2)
		c.Counters.OutSeq = 100
		if err := dp.InstallChild(ctx, c); err != nil {
			t.Fatal(err)
		}
		same := *c
		same.Counters.OutSeq = 10000 // takeover jump on a pre-installed pair
		same.Connection, same.State = "renamed", sa.ChildRekeyed
		if err := dp.InstallChild(ctx, &same); err != nil {
			t.Fatalf("identical pair again: %v", err)
		}
		if got := counters(t, dp, c.ID()).OutSeq; got != 10000 {
			t.Fatalf("OutSeq %d after re-install with 10000", got)
		}
		same.Counters.OutSeq = 50
		if err := dp.InstallChild(ctx, &same); err != nil {
			t.Fatal(err)
		}
		if got := counters(t, dp, c.ID()).OutSeq; got != 10000 {
			t.Fatalf("OutSeq went back to %d", got)
		}
		mustInstalled(t, dp, c.ID())
	})

	t.Run("Conflicts", func(t *testing.T) {
		dp := newDP(t)
		defer dp.Close()
		c := Child(3)
		if err := dp.InstallChild(ctx, c); err != nil {
			t.Fatal(err)
		}
		other := Child(4)
		other.In.SPI = c.In.SPI
		if err := dp.InstallChild(ctx, other); !errors.Is(err, xfrm.ErrConflict) {
			t.Fatalf("other pair under an installed inbound SPI: %v, want ErrConflict", err)
		}
		rekeyed := *c
		rekeyed.Out.EncrKey = slices.Clone(c.Out.EncrKey)
		rekeyed.Out.EncrKey[0] ^= 0xff
		if err := dp.InstallChild(ctx, &rekeyed); !errors.Is(err, xfrm.ErrConflict) {
			t.Fatalf("same SPIs, other key: %v, want ErrConflict", err)
		}
		bad := Child(5)
		bad.Out.IntegKey = []byte{1}
		if err := dp.InstallChild(ctx, bad); !errors.Is(err, xfrm.ErrInvalidChild) {
			t.Fatalf("malformed record: %v, want ErrInvalidChild", err)
		}
		mustInstalled(t, dp, c.ID())
		if got := counters(t, dp, c.ID()); got.OutSeq != 0 || got.InSeq != 0 {
			t.Fatalf("refused installs changed the pair: %+v", got)
		}
	})

	t.Run("FlushAndClose", func(t *testing.T) {
		dp := newDP(t)
		want := []uint32{}
		for i := 10; i < 13; i++ {
			c := Child(i)
			if err := dp.InstallChild(ctx, c); err != nil {
				t.Fatal(err)
			}
			want = append(want, c.ID())
		}
		mustInstalled(t, dp, want...)
		if err := dp.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp)
		if err := dp.Flush(ctx); err != nil {
			t.Fatalf("second Flush: %v", err)
		}
		exp := dp.Expiries()
		if err := dp.Close(); err != nil {
			t.Fatal(err)
		}
		if err := dp.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		for range exp {
		}
		c := Child(14)
		errs := map[string]error{"InstallChild": dp.InstallChild(ctx, c), "DeleteChild": dp.DeleteChild(ctx, c), "Flush": dp.Flush(ctx)}
		_, errs["Counters"] = dp.Counters(ctx)
		_, errs["Installed"] = dp.Installed(ctx)
		for name, err := range errs {
			if !errors.Is(err, xfrm.ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
		}
	})
}

// RunStager runs the contract of xfrm.Stager against data planes made by
// newDP (which must implement it). What a staged pair must not do (send)
// is checked by each implementation with its own means.
func RunStager(t *testing.T, newDP func(t *testing.T) xfrm.DataPlane) {
	ctx := context.Background()
	stager := func(t *testing.T) (xfrm.DataPlane, xfrm.Stager) {
		dp := newDP(t)
		st, ok := dp.(xfrm.Stager)
		if !ok {
			t.Fatalf("%T does not implement xfrm.Stager", dp)
		}
		return dp, st
	}
	t.Run("StageThenActivateMovesForward", func(t *testing.T) {
		dp, st := stager(t)
		defer dp.Close()
		c := Child(20)
		c.Counters = sa.Counters{OutSeq: 100, InSeq: 50, ReplayBitmap: []uint64{0b11}, InBytes: 1000, InPackets: 10, OutBytes: 2000, OutPackets: 20}
		if err := st.StageChildren(ctx, []*sa.ChildSA{c}); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp, c.ID())
		if got := counters(t, dp, c.ID()); got.OutSeq != 100 || got.InSeq != 50 || got.InBytes != 1000 || got.OutPackets != 20 {
			t.Fatalf("staged counters %+v, want the record's %+v", got, c.Counters)
		}
		again := *c
		again.Counters = sa.Counters{OutSeq: 7}
		if err := st.StageChildren(ctx, []*sa.ChildSA{&again}); err != nil {
			t.Fatalf("staging a staged pair again: %v", err)
		}
		if got := counters(t, dp, c.ID()); got.OutSeq != 100 || got.InSeq != 50 {
			t.Fatalf("staging again changed the counters: %+v", got)
		}
		jumped := *c
		jumped.Counters = sa.Counters{OutSeq: 1 << 24, InSeq: 60, ReplayBitmap: []uint64{0b101}, InBytes: 3000, InPackets: 30, OutBytes: 500, OutPackets: 5}
		if err := st.ActivateChildren(ctx, []*sa.ChildSA{&jumped}); err != nil {
			t.Fatal(err)
		}
		got := counters(t, dp, c.ID())
		if got.OutSeq != 1<<24 || got.InSeq != 60 || len(got.ReplayBitmap) == 0 || got.ReplayBitmap[0]&0xffffffff != 0b101 {
			t.Fatalf("activated: out %d in %d bitmap %x, want %d 60 0b101", got.OutSeq, got.InSeq, got.ReplayBitmap, 1<<24)
		}
		if got.InBytes != 3000 || got.InPackets != 30 || got.OutBytes != 2000 || got.OutPackets != 20 {
			t.Fatalf("activated traffic counters %+v: want each the higher of staged and record", got)
		}
		back := *c
		back.Counters = sa.Counters{OutSeq: 10, InSeq: 5}
		if err := st.ActivateChildren(ctx, []*sa.ChildSA{&back}); err != nil {
			t.Fatalf("activating an active pair: %v", err)
		}
		if got := counters(t, dp, c.ID()); got.OutSeq != 1<<24 || got.InSeq != 60 {
			t.Fatalf("counters went back: out %d in %d", got.OutSeq, got.InSeq)
		}
		if err := st.StageChildren(ctx, []*sa.ChildSA{c}); err != nil {
			t.Fatalf("staging an active pair: %v", err)
		}
		if got := counters(t, dp, c.ID()); got.OutSeq != 1<<24 {
			t.Fatalf("staging an active pair changed it: out %d", got.OutSeq)
		}
		if err := dp.DeleteChild(ctx, c); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp)
	})
	t.Run("InstallChildActivatesStaged", func(t *testing.T) {
		dp, st := stager(t)
		defer dp.Close()
		c := Child(21)
		if err := st.StageChildren(ctx, []*sa.ChildSA{c}); err != nil {
			t.Fatal(err)
		}
		jumped := *c
		jumped.Counters.OutSeq = 5000
		if err := dp.InstallChild(ctx, &jumped); err != nil {
			t.Fatal(err)
		}
		if got := counters(t, dp, c.ID()); got.OutSeq != 5000 {
			t.Fatalf("OutSeq %d after InstallChild of a staged pair, want 5000", got.OutSeq)
		}
		fresh := Child(22)
		fresh.Counters.OutSeq = 77
		if err := st.ActivateChildren(ctx, []*sa.ChildSA{fresh}); err != nil {
			t.Fatalf("activating a pair that was not staged: %v", err)
		}
		mustInstalled(t, dp, c.ID(), fresh.ID())
		if got := counters(t, dp, fresh.ID()); got.OutSeq != 77 {
			t.Fatalf("OutSeq %d of a pair installed by ActivateChildren, want 77", got.OutSeq)
		}
	})
	t.Run("StageErrorsPerPair", func(t *testing.T) {
		dp, st := stager(t)
		defer dp.Close()
		good, installed := Child(23), Child(24)
		if err := dp.InstallChild(ctx, installed); err != nil {
			t.Fatal(err)
		}
		clash := Child(25)
		clash.In.SPI = installed.In.SPI
		bad := Child(26)
		bad.Out.IntegKey = []byte{1}
		err := st.StageChildren(ctx, []*sa.ChildSA{clash, good, bad})
		if !errors.Is(err, xfrm.ErrConflict) || !errors.Is(err, xfrm.ErrInvalidChild) {
			t.Fatalf("StageChildren with a conflicting and a malformed pair: %v, want both ErrConflict and ErrInvalidChild", err)
		}
		mustInstalled(t, dp, good.ID(), installed.ID())
		err = st.ActivateChildren(ctx, []*sa.ChildSA{clash, good})
		if !errors.Is(err, xfrm.ErrConflict) {
			t.Fatalf("ActivateChildren with a conflicting pair: %v, want ErrConflict", err)
		}
		exhausted := *installed
		exhausted.Counters.OutSeq = 1 << 32
		if err := st.ActivateChildren(ctx, []*sa.ChildSA{&exhausted}); err == nil {
			t.Fatal("ActivateChildren accepted an outbound sequence number of 2^32 (no ESN)")
		}
		if got := counters(t, dp, installed.ID()); got.OutSeq != 0 {
			t.Fatalf("a refused activation moved the outbound sequence number to %d", got.OutSeq)
		}
		if err := dp.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp)
		if err := st.StageChildren(ctx, []*sa.ChildSA{good}); err != nil {
			t.Fatalf("staging again after Flush: %v", err)
		}
		if err := dp.DeleteChild(ctx, good); err != nil {
			t.Fatal(err)
		}
		mustInstalled(t, dp)
	})
}

func mustInstalled(t *testing.T, dp xfrm.DataPlane, want ...uint32) {
	t.Helper()
	got, err := dp.Installed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("Installed %x, want %x (ascending)", got, want)
	}
}

func counters(t *testing.T, dp xfrm.DataPlane, spi uint32) sa.Counters {
	t.Helper()
	m, err := dp.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, ok := m[spi]
	if !ok {
		t.Fatalf("no counters for installed pair 0x%08x", spi)
	}
	return c
}
