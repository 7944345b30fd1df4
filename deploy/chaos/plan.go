package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// ErrOptions wraps every error about Options or a fault list.
var ErrOptions = errors.New("chaos: bad options")

// Kind is one sort of fault.
type Kind string

// The faults a round can inflict.
const (
	// KillDaemon: SIGKILL of one gateway's ikegwd (its supervisor cleans
	// up), restarted once the cluster has an active again.
	KillDaemon Kind = "kill-daemon"
	// KillNode: the whole node dies (cables cut, every process killed)
	// for Hold, then reboots and restarts with its disk (state dir).
	KillNode Kind = "kill-node"
	// Partition: every packet between one member's cluster address and
	// the other members' is dropped (nftables) for Hold.
	Partition Kind = "partition"
	// Loss: 10% of the packets between every pair of members on the
	// cluster segment are dropped (nftables numgen on the bridge) for Hold.
	Loss Kind = "loss"
	// Stop: SIGSTOP of the active's ikegwd for Hold, then SIGCONT.
	Stop Kind = "stop"
)

// AllKinds is every fault kind, in the order they are described.
var AllKinds = []Kind{KillDaemon, KillNode, Partition, Loss, Stop}

// ParseKinds parses a comma-separated list of fault kinds ("all" for every
// kind).
func ParseKinds(s string) ([]Kind, error) {
	if strings.TrimSpace(s) == "all" {
		return slices.Clone(AllKinds), nil
	}
	var out []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("%w: fault kind %q: want all or a list of %s", ErrOptions, f, kindList())
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty fault list", ErrOptions)
	}
	return out, nil
}

func kindList() string {
	var s []string
	for _, k := range AllKinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// Target is the role a fault hits; the node holding it is chosen when the
// fault is injected.
type Target string

// Targets.
const (
	TargetActive  Target = "active"
	TargetStandby Target = "standby" // a gateway that is not active
	TargetWitness Target = "witness"
	TargetCluster Target = "cluster" // the whole cluster segment (Loss)
)

// Fault is one planned fault.
type Fault struct {
	Kind   Kind
	Target Target
	// Pick chooses among several nodes holding Target (sorted by name):
	// the node at Pick modulo their number.
	Pick int
	// Lead is how long the round runs (tunnel churn only) before the fault.
	Lead time.Duration
	// Hold is how long the fault lasts (a dead node stays down, a
	// partition or loss stays, a stopped daemon stays stopped); zero for
	// KillDaemon (the daemon is restarted once another gateway is active).
	Hold time.Duration
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s %s", f.Kind, f.Target)
	if f.Hold > 0 {
		s += fmt.Sprintf(" %.1fs", f.Hold.Seconds())
	}
	return s
}

// Plan returns the faults of rounds rounds drawn from kinds with the seed:
// a pure function of its arguments. witness says whether the cluster has a
// witness (a target for node death and partitions).
func Plan(seed int64, rounds int, kinds []Kind, witness bool) []Fault {
	r := rand.New(rand.NewPCG(uint64(seed), 0x6368616f73)) // "chaos"
	dur := func(lo, hi time.Duration) time.Duration {
		// 100 ms steps keep the printed plan readable.
		steps := int64((hi - lo) / (100 * time.Millisecond))
		return lo + time.Duration(r.Int64N(steps+1))*100*time.Millisecond
	}
	member := func() Target {
		ts := []Target{TargetActive, TargetStandby}
		if witness {
			ts = append(ts, TargetWitness)
		}
		return ts[r.IntN(len(ts))]
	}
	out := make([]Fault, 0, rounds)
	for range rounds {
		f := Fault{Kind: kinds[r.IntN(len(kinds))], Pick: r.IntN(8), Lead: dur(500*time.Millisecond, 2*time.Second)}
		switch f.Kind {
		case KillDaemon:
			f.Target = []Target{TargetActive, TargetStandby}[r.IntN(2)]
		case KillNode:
			f.Target = member()
			f.Hold = dur(time.Second, 5*time.Second)
		case Partition:
			f.Target = member()
			f.Hold = dur(time.Second, 10*time.Second)
		case Loss:
			f.Target = TargetCluster
			f.Hold = dur(5*time.Second, 15*time.Second)
		case Stop:
			f.Target = TargetActive
			f.Hold = dur(time.Second, 3*time.Second)
		}
		out = append(out, f)
	}
	return out
}
