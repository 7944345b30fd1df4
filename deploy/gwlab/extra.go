package gwlab

import (
	"errors"

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
