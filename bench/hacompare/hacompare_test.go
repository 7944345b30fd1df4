package hacompare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseXfrmStat(t *testing.T) {
	st, err := ParseXfrmStat("XfrmInError             \t0\nXfrmInStateSeqError     \t17\nXfrmOutNoStates\t3\n")
	if err != nil {
		t.Fatal(err)
	}
	if st.SeqErrors() != 17 || st["XfrmOutNoStates"] != 3 {
		t.Fatalf("got %v", st)
	}
	d := XfrmStat{"XfrmInStateSeqError": 20, "XfrmInError": 1}.Delta(st)
	if d.SeqErrors() != 3 || d["XfrmInError"] != 1 {
		t.Fatalf("delta %v", d)
	}
	for _, bad := range []string{"", "XfrmInError 1 2\n", "XfrmInError x\n"} {
		if _, err := ParseXfrmStat(bad); !errors.Is(err, ErrParse) {
			t.Errorf("ParseXfrmStat(%q) = %v, want ErrParse", bad, err)
		}
	}
}

// ipXfrm is `ip -s xfrm state` of iproute2 6.1 for one SA (keys cut).
const ipXfrm = `src 192.0.2.10 dst 192.0.2.100
	proto esp spi 0xc7a1b2c3(3349263043) reqid 1(0x00000001) mode tunnel
	replay-window 0 seq 0x00000000 flag af-unspec (0x00100000)
	auth-trunc hmac(sha256) 0x00 (256 bits) 128
	enc cbc(aes) 0x00 (256 bits)
	encap type espinudp sport 4500 dport 4500 addr 0.0.0.0
	anti-replay context: seq 0x0, oseq 0x7b, bitmap 0x00000000
	lifetime config:
	  limit: soft (INF)(bytes), hard (INF)(bytes)
	lifetime current:
	  10332(bytes), 123(packets)
	stats:
	  replay-window 0 replay 0 failed 0
src 192.0.2.100 dst 192.0.2.10
	proto esp spi 0x0000abcd(43981) reqid 1(0x00000001) mode tunnel
	replay-window 32 seq 0x00000000 flag af-unspec (0x00100000)
	anti-replay context: seq 0x78, oseq 0x0, bitmap 0xffffffff
	stats:
	  replay-window 81 replay 42 failed 1
`

func TestParseXfrmStates(t *testing.T) {
	ss, err := ParseXfrmStates(ipXfrm)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 {
		t.Fatalf("%d states, want 2: %+v", len(ss), ss)
	}
	want := []XfrmState{
		{Src: "192.0.2.10", Dst: "192.0.2.100", SPI: 0xc7a1b2c3, OSeq: 0x7b},
		{Src: "192.0.2.100", Dst: "192.0.2.10", SPI: 0xabcd, Seq: 0x78, OutsideWindow: 81, Replay: 42},
	}
	for i := range want {
		if ss[i] != want[i] {
			t.Errorf("state %d = %+v, want %+v", i, ss[i], want[i])
		}
	}
	if _, err := ParseXfrmStates("src 1.2.3.4\n"); !errors.Is(err, ErrParse) {
		t.Errorf("truncated src line: %v, want ErrParse", err)
	}
	if _, err := ParseXfrmStates("src a dst b\n\tproto esp spi 0xzz reqid 1 mode tunnel\n"); !errors.Is(err, ErrParse) {
		t.Errorf("bad spi: %v, want ErrParse", err)
	}
	if ss, err := ParseXfrmStates(""); err != nil || len(ss) != 0 {
		t.Errorf("empty: %v %v", ss, err)
	}
}

func TestParseSegments(t *testing.T) {
	for in, want := range map[string][]int{"": nil, "\n": nil, "2,1\n": {1, 2}, "1": {1}} {
		got, err := ParseSegments(in)
		if err != nil || !equalInts(got, want) {
			t.Errorf("ParseSegments(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "0", "1,,y", "-1"} {
		if _, err := ParseSegments(bad); !errors.Is(err, ErrParse) {
			t.Errorf("ParseSegments(%q) = %v, want ErrParse", bad, err)
		}
	}
}

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	rs := []Result{
		{Impl: ImplStrongSwanHA, Outage: 9000 * ms, Lost: 150, SeqFailures: 90, SameIKESA: true, SameSPIs: true},
		{Impl: ImplIkegw, Outage: 3000 * ms, Lost: 50, SameIKESA: true, SameSPIs: true},
		{Impl: ImplStrongSwanHA, Outage: 11000 * ms, Lost: 190, XfrmSeqErrors: 110},
		{Impl: ImplStrongSwanHA, Outage: 10000 * ms, Lost: 170, XfrmReplay: 100},
		{Impl: ImplIkegw, Err: "boom", Outage: time.Hour},
	}
	sums := Summarize(rs)
	if len(sums) != 2 || sums[0].Impl != ImplStrongSwanHA || sums[1].Impl != ImplIkegw {
		t.Fatalf("%+v", sums)
	}
	ha, ik := sums[0], sums[1]
	if ha.Runs != 3 || ha.Outage != 10000*ms || ha.OutageMin != 9000*ms || ha.OutageMax != 11000*ms || ha.Lost != 170 || ha.ReplayDrops != 100 || ha.SameIKESA != 1 {
		t.Errorf("ha %+v", ha)
	}
	if ik.Runs != 1 || ik.Failed != 1 || ik.Outage != 3000*ms || ik.ReplayDrops != 0 {
		t.Errorf("ikegw %+v", ik)
	}
	tab := Table(sums)
	if !strings.Contains(tab, "| strongswan-ha | 3 (0) | 10000 ms | 9000–11000 ms | 170 | 100 |") {
		t.Errorf("table:\n%s", tab)
	}
	if MedianDuration(nil) != 0 || MedianInt([]int{4, 1}) != 2 {
		t.Error("medians of empty / even sets")
	}
}

// TestCompareVM runs the side-by-side failover: strongSwan's ha plugin and
// ikegw (kernel data plane), alternating, IKEGW_HACOMPARE_RUNS times each
// (default 1). Only inside the VM (kernel ESP and CLUSTERIP); bench/hacompare.sh
// runs it:
//
//	bench/hacompare.sh            # RUNS=5 by default
//
// IKEGW_HACOMPARE_IKEGWD is the ikegwd binary (ikegw runs are skipped
// without it), IKEGW_HACOMPARE_ONLY=ha|ikegw runs one side, and
// IKEGW_HACOMPARE_PEER=kernel gives the strongSwan ha run's peer kernel
// ESP instead of kernel-libipsec. Each result is printed as one
// "hacompare-result: {json}" line and the medians as a Markdown table.
func TestCompareVM(t *testing.T) {
	if os.Getenv("IKEGW_IN_VM") != "1" {
		t.Skip("needs kernel ESP and CLUSTERIP: runs inside the VM (bench/hacompare.sh, scripts/vm/run.sh)")
	}
	runs := 1
	if s := os.Getenv("IKEGW_HACOMPARE_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("IKEGW_HACOMPARE_RUNS=%q: want a positive number", s)
		}
		runs = n
	}
	only := os.Getenv("IKEGW_HACOMPARE_ONLY")
	bin := os.Getenv("IKEGW_HACOMPARE_IKEGWD")
	doHA, doIkegw := only != "ikegw", only != "ha"
	if doIkegw && bin == "" {
		t.Log("IKEGW_HACOMPARE_IKEGWD not set: ikegw runs skipped")
		doIkegw = false
	}
	const warm = 6 * time.Second
	var results []Result
	var out *os.File
	if d := os.Getenv("IKEGW_VM_OUT"); d != "" {
		f, err := os.Create(filepath.Join(d, "hacompare.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out = f
	}
	record := func(r Result, err error) {
		if err != nil {
			t.Errorf("%s run %d: %v", r.Impl, r.Run, err)
		}
		results = append(results, r)
		b, _ := json.Marshal(r)
		fmt.Printf("hacompare-result: %s\n", b)
		if out != nil {
			fmt.Fprintf(out, "%s\n", b)
		}
		t.Log(r.String())
	}
	for i := 1; i <= runs; i++ {
		if doHA {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			r, err := RunHA(ctx, HAOptions{PeerKernel: os.Getenv("IKEGW_HACOMPARE_PEER") == "kernel", Logger: testLogger(t)}, warm)
			cancel()
			r.Run = i
			record(r, err)
		}
		if doIkegw {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			r, err := RunIkegw(ctx, IkegwOptions{Bin: bin, Logger: testLogger(t)}, warm)
			cancel()
			r.Run = i
			record(r, err)
		}
	}
	tab := Table(Summarize(results))
	fmt.Printf("hacompare-table:\n%s", tab)
	t.Logf("medians:\n%s", tab)
}

// testLogger logs lab events through t.Log at info level and above.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
