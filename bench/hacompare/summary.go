package hacompare

import (
	"fmt"
	"strings"
	"time"
)

// Summary is the medians of one implementation's runs.
type Summary struct {
	Impl        string
	Runs        int // runs that resumed and count
	Failed      int // runs with an error
	Outage      time.Duration
	OutageMin   time.Duration
	OutageMax   time.Duration
	Lost        int
	ReplayDrops int
	Takeover    time.Duration
	SameIKESA   int // runs where the peer kept its IKE SA
	SameSPIs    int
}

// Summarize groups results by implementation (in order of first
// appearance) and takes medians over the runs without an error.
func Summarize(results []Result) []Summary {
	var order []string
	by := map[string][]Result{}
	for _, r := range results {
		if _, ok := by[r.Impl]; !ok {
			order = append(order, r.Impl)
		}
		by[r.Impl] = append(by[r.Impl], r)
	}
	var out []Summary
	for _, impl := range order {
		s := Summary{Impl: impl}
		var outages, takeovers []time.Duration
		var lost, drops []int
		for _, r := range by[impl] {
			if r.Err != "" {
				s.Failed++
				continue
			}
			s.Runs++
			outages = append(outages, r.Outage)
			takeovers = append(takeovers, r.Takeover)
			lost = append(lost, r.Lost)
			drops = append(drops, int(r.ReplayDrops()))
			if r.SameIKESA {
				s.SameIKESA++
			}
			if r.SameSPIs {
				s.SameSPIs++
			}
			if s.Runs == 1 || r.Outage < s.OutageMin {
				s.OutageMin = r.Outage
			}
			s.OutageMax = max(s.OutageMax, r.Outage)
		}
		s.Outage, s.Takeover = MedianDuration(outages), MedianDuration(takeovers)
		s.Lost, s.ReplayDrops = MedianInt(lost), MedianInt(drops)
		out = append(out, s)
	}
	return out
}

// Table renders summaries as a Markdown table.
func Table(sums []Summary) string {
	var b strings.Builder
	b.WriteString("| implementation | runs (failed) | outage median | outage min–max | lost pings median | peer replay drops median | takeover median | peer kept IKE SA / SPIs |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range sums {
		fmt.Fprintf(&b, "| %s | %d (%d) | %d ms | %d–%d ms | %d | %d | %d ms | %d/%d, %d/%d |\n",
			s.Impl, s.Runs, s.Failed, s.Outage.Milliseconds(), s.OutageMin.Milliseconds(), s.OutageMax.Milliseconds(),
			s.Lost, s.ReplayDrops, s.Takeover.Milliseconds(), s.SameIKESA, s.Runs, s.SameSPIs, s.Runs)
	}
	return b.String()
}
