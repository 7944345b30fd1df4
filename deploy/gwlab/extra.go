package gwlab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"ikegw/deploy/lab"
)

// Hooks for drivers built on the lab (deploy/chaos): more namespaces on
// its segments, and the pid of a node's daemon for signals other than
// SIGKILL. They add nothing to the lab itself.

// Base is the deploy/lab instance the lab's namespaces, bridges, processes
// and faults belong to: namespaces created through it are removed by Close.
func (l *Lab) Base() *lab.Lab { return l.base }

// Bridges returns the outside, cluster and inside segments (as the first
// gateway is attached to them).
func (l *Lab) Bridges() (outside, cluster, inside *lab.Bridge, err error) {
	for _, n := range l.nodes {
		if n.Witness || len(n.ports) != 3 {
			continue
		}
		// buildNetwork attaches the cluster link first, then outside, inside.
		return n.ports[1].br, n.ports[0].br, n.ports[2].br, nil
	}
	return nil, nil, nil, errors.New("gwlab: no gateway attached to the segments")
}

// DaemonPid returns the pid of the node's `ikegwd run` (the supervisor's
// child when supervised); 0 when none runs.
func (l *Lab) DaemonPid(name string) (int, error) {
	n, err := l.Node(name)
	if err != nil {
		return 0, err
	}
	return l.daemonPid(n)
}

// Options returns the options the lab was built with, defaults filled in.
func (l *Lab) Options() Options { return l.opts }

// ActiveLoss is one time a gateway stopped being active, as its role
// machine logged it ("role: state" from=active).
type ActiveLoss struct {
	Node   string
	At     time.Time
	To     string // fencing or standby
	Reason string
}

func (a ActiveLoss) String() string {
	return fmt.Sprintf("%s %s -> %s (%s)", a.At.UTC().Format("15:04:05.000"), a.Node, a.To, a.Reason)
}

// ActiveLosses returns every time a gateway left the active role at or
// after since (a fence, a lost leadership, a handover), oldest first, read
// from the daemons' logs in the lab directory. A benchmark that wants one
// undisturbed active during a measurement checks that this is empty for
// its window: a fence followed by a re-activation of the same node is a
// disturbance too (the data plane is flushed and re-installed), though
// the active's name does not change.
func (l *Lab) ActiveLosses(since time.Time) ([]ActiveLoss, error) {
	files, err := filepath.Glob(filepath.Join(l.dir, "logs", "*-ikegwd-*.log"))
	if err != nil {
		return nil, fmt.Errorf("gwlab: daemon logs: %w", err)
	}
	var out []ActiveLoss
	for _, f := range files {
		node, _, _ := strings.Cut(filepath.Base(f), "-")
		fl, err := scanActiveLosses(f, node, since)
		if err != nil {
			return nil, err
		}
		out = append(out, fl...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// scanActiveLosses reads one daemon log (slog text lines; other lines,
// e.g. GODEBUG output, are skipped).
func scanActiveLosses(path, node string, since time.Time) ([]ActiveLoss, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gwlab: daemon log: %w", err)
	}
	defer f.Close()
	var out []ActiveLoss
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if a, ok := parseActiveLoss(sc.Text(), node); ok && !a.At.Before(since) {
			out = append(out, a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("gwlab: reading %s: %w", path, err)
	}
	return out, nil
}

// parseActiveLoss parses a role machine's state line leaving active:
//
//	time=... level=INFO msg="role: state" component=role from=active to=fencing reason="..." term=2
func parseActiveLoss(line, node string) (ActiveLoss, bool) {
	if !strings.HasPrefix(line, "time=") || !strings.Contains(line, `msg="role: state"`) || !strings.Contains(line, " from=active ") {
		return ActiveLoss{}, false
	}
	ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ActiveLoss{}, false
	}
	a := ActiveLoss{Node: node, At: at}
	if _, rest, ok := strings.Cut(line, " to="); ok {
		a.To, _, _ = strings.Cut(rest, " ")
	}
	if _, rest, ok := strings.Cut(line, ` reason="`); ok {
		a.Reason, _, _ = strings.Cut(rest, `"`)
	}
	return a, true
}
