package hacompare

import (
	"bufio"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrParse is wrapped by every error about text read from the kernel or
// from `ip` that does not have the expected shape.
var ErrParse = errors.New("hacompare: unexpected format")

// XfrmStat is /proc/net/xfrm_stat of one network namespace: counter name
// (XfrmInStateSeqError, ...) to value.
type XfrmStat map[string]uint64

// ParseXfrmStat parses /proc/net/xfrm_stat ("Name <spaces> value" lines).
func ParseXfrmStat(text string) (XfrmStat, error) {
	st := XfrmStat{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%w: xfrm_stat line %d %q: want a name and a value", ErrParse, n, line)
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: xfrm_stat line %d %q: value: %v", ErrParse, n, line, err)
		}
		st[f[0]] = v
	}
	if len(st) == 0 {
		return nil, fmt.Errorf("%w: xfrm_stat is empty", ErrParse)
	}
	return st, nil
}

// SeqErrors is the number of inbound ESP packets the kernel dropped for
// their sequence number (replayed, or too old for the window).
func (s XfrmStat) SeqErrors() uint64 { return s["XfrmInStateSeqError"] }

// Delta returns the counters of s minus those of before (0 for a counter
// that went down or is missing).
func (s XfrmStat) Delta(before XfrmStat) XfrmStat {
	d := XfrmStat{}
	for k, v := range s {
		if b := before[k]; v >= b {
			d[k] = v - b
		}
	}
	return d
}

// XfrmState is the part of one SA in `ip -s xfrm state` this package reads.
type XfrmState struct {
	Src, Dst string
	SPI      uint32
	// Seq and OSeq are the anti-replay context: the highest inbound
	// sequence number seen, and the last outbound one sent.
	Seq, OSeq uint32
	// OutsideWindow and Replay are the packets dropped by the replay
	// check: too old for the window, and replayed inside it ("stats:
	// replay-window W replay N failed F"; W and N).
	OutsideWindow, Replay uint64
}

// ParseXfrmStates parses `ip -s xfrm state` output (iproute2 6.x layout).
func ParseXfrmStates(text string) ([]XfrmState, error) {
	var out []XfrmState
	cur := -1
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(raw, "src "):
			if len(f) < 4 || f[2] != "dst" {
				return nil, fmt.Errorf("%w: ip xfrm state line %d %q: want \"src A dst B\"", ErrParse, n, line)
			}
			out = append(out, XfrmState{Src: f[1], Dst: f[3]})
			cur = len(out) - 1
		case cur < 0:
			continue
		case len(f) >= 4 && f[0] == "proto" && f[2] == "spi":
			spi, _, _ := strings.Cut(f[3], "(") // -s adds "(decimal)"
			v, err := strconv.ParseUint(strings.TrimPrefix(spi, "0x"), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: ip xfrm state line %d %q: spi: %v", ErrParse, n, line, err)
			}
			out[cur].SPI = uint32(v)
		case strings.HasPrefix(line, "anti-replay context:"):
			for _, kv := range strings.Split(strings.TrimPrefix(line, "anti-replay context:"), ",") {
				kf := strings.Fields(kv)
				if len(kf) != 2 || (kf[0] != "seq" && kf[0] != "oseq") {
					continue
				}
				v, err := strconv.ParseUint(strings.TrimPrefix(kf[1], "0x"), 16, 32)
				if err != nil {
					return nil, fmt.Errorf("%w: ip xfrm state line %d %q: %s: %v", ErrParse, n, line, kf[0], err)
				}
				if kf[0] == "seq" {
					out[cur].Seq = uint32(v)
				} else {
					out[cur].OSeq = uint32(v)
				}
			}
		case len(f) >= 5 && f[0] == "replay-window" && f[2] == "replay":
			w, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: ip xfrm state line %d %q: replay-window: %v", ErrParse, n, line, err)
			}
			v, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: ip xfrm state line %d %q: replay: %v", ErrParse, n, line, err)
			}
			out[cur].OutsideWindow, out[cur].Replay = w, v
		}
	}
	return out, nil
}

// ParseSegments parses a /proc/net/ipt_CLUSTERIP/<VIP> file: the active
// segments ("local nodes") as a comma-separated list, e.g. "1,2"; empty
// when none is active.
func ParseSegments(text string) ([]int, error) {
	var segs []int
	for _, f := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("%w: CLUSTERIP segment list %q: %q is not a segment number", ErrParse, strings.TrimSpace(text), f)
		}
		segs = append(segs, n)
	}
	slices.Sort(segs)
	return segs, nil
}

// MedianDuration is the median of ds (the mean of the middle two for an
// even count); 0 for none.
func MedianDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// MedianInt is the median of vs (the mean of the middle two, rounded down,
// for an even count); 0 for none.
func MedianInt(vs []int) int {
	ds := make([]time.Duration, len(vs))
	for i, v := range vs {
		ds[i] = time.Duration(v)
	}
	return int(MedianDuration(ds))
}
