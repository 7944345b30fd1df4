package daemon

import (
	"strings"
	"testing"
	"time"

	"ikegw/failover"
)

// The sequence-number jump bound comes from the dataplane section
// (failover.SeqBound): defaults, explicit values, refused skews.
func TestConfigSeqBound(t *testing.T) {
	c, err := ParseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := failover.SeqBound{MaxPPS: failover.DefaultMaxPPS, ClockSkew: failover.DefaultClockSkew, Min: DefaultSeqMargin}
	if got := c.seqBound(); got != want {
		t.Fatalf("default bound %+v, want %+v", got, want)
	}
	c, err = ParseConfig([]byte(minimal + "dataplane: {max_pps: 100000, max_clock_skew: 50ms, seq_margin: 64}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want = failover.SeqBound{MaxPPS: 100000, ClockSkew: 50 * time.Millisecond, Min: 64}
	if got := c.seqBound(); got != want {
		t.Fatalf("bound %+v, want %+v", got, want)
	}
	for _, skew := range []string{"-1s", "1s", "5s"} {
		_, err := ParseConfig([]byte(minimal + "dataplane: {max_clock_skew: " + skew + "}\n"))
		if err == nil || !strings.Contains(err.Error(), "dataplane.max_clock_skew") {
			t.Errorf("max_clock_skew %s: got %v, want an error naming dataplane.max_clock_skew", skew, err)
		}
	}
}
