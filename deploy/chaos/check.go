package chaos

import (
	"fmt"
	"slices"
	"strings"

	"ikegw/cmd/api"
	"ikegw/deploy/lab"
)

// Violation is one broken invariant, with what shows it.
type Violation struct {
	Round    int
	Check    string // known, vip, phase1, lost, seq, outseq, settle, dark
	What     string
	Evidence string
}

func (v Violation) String() string {
	s := fmt.Sprintf("round %d: %s: %s", v.Round, v.Check, v.What)
	if v.Evidence != "" {
		s += "\n    evidence: " + strings.ReplaceAll(v.Evidence, "\n", "\n    ")
	}
	return s
}

// Tunnel is one child SA as a peer holds it.
type Tunnel struct {
	Peer, Conn, Child string
	// ICookie and RCookie are its IKE SA's cookies (hex).
	ICookie, RCookie string
	// SPIIn and SPIOut are the peer's inbound and outbound SPIs (hex):
	// the gateway's outbound and inbound ones.
	SPIIn, SPIOut string
}

func (t Tunnel) String() string {
	return fmt.Sprintf("%s %s/%s (IKE %s_i %s_r, peer in %s out %s)", t.Peer, t.Conn, t.Child, t.ICookie, t.RCookie, t.SPIIn, t.SPIOut)
}

// PeerTunnels lists the installed children of the peer's established IKE
// SAs of connection conn.
func PeerTunnels(peer, conn string, sas []lab.IKESA) []Tunnel {
	var out []Tunnel
	for _, s := range sas {
		if s.Name != conn || s.State != "ESTABLISHED" {
			continue
		}
		for _, c := range s.Children {
			if c.State != "INSTALLED" {
				continue
			}
			out = append(out, Tunnel{Peer: peer, Conn: conn, Child: c.Name, ICookie: s.InitiatorSPI, RCookie: s.ResponderSPI, SPIIn: c.SPIIn, SPIOut: c.SPIOut})
		}
	}
	return out
}

// Knows reports whether a gateway's SA view holds the tunnel: its IKE SA
// (both cookies) and a child of that IKE SA with the crossed SPIs.
func Knows(v api.SAs, t Tunnel) (ike, child bool) {
	for _, s := range v.IKE {
		if strings.EqualFold(s.ICookie, t.ICookie) && strings.EqualFold(s.RCookie, t.RCookie) {
			ike = true
			break
		}
	}
	for _, c := range v.Children {
		if strings.EqualFold(c.SPIIn, t.SPIOut) && strings.EqualFold(c.SPIOut, t.SPIIn) &&
			strings.EqualFold(c.ICookie, t.ICookie) && strings.EqualFold(c.RCookie, t.RCookie) {
			child = true
			break
		}
	}
	return ike, child
}

// Unknown returns, for every node's view, the tunnels it does not hold
// (as "node: tunnel: what is missing" lines), sorted.
func Unknown(views map[string]api.SAs, tunnels []Tunnel) []string {
	var out []string
	for node, v := range views {
		for _, t := range tunnels {
			ike, child := Knows(v, t)
			switch {
			case !ike && !child:
				out = append(out, fmt.Sprintf("%s: %s: neither the IKE SA nor the child", node, t))
			case !ike:
				out = append(out, fmt.Sprintf("%s: %s: no IKE SA with these cookies", node, t))
			case !child:
				out = append(out, fmt.Sprintf("%s: %s: no child with these SPIs", node, t))
			}
		}
	}
	slices.Sort(out)
	return out
}

// Stale counts the INSTALLED children of a gateway's view that no peer
// holds (the peer deleted them but the cluster never committed the
// DELETE): not a violation, but each is a DELETE the gateway sends later.
func Stale(v api.SAs, tunnels []Tunnel) int {
	held := map[[2]string]bool{}
	for _, t := range tunnels {
		held[[2]string{strings.ToLower(t.SPIOut), strings.ToLower(t.SPIIn)}] = true
	}
	n := 0
	for _, c := range v.Children {
		if strings.EqualFold(c.State, "INSTALLED") && !held[[2]string{strings.ToLower(c.SPIIn), strings.ToLower(c.SPIOut)}] {
			n++
		}
	}
	return n
}

// Phase1 is a peer's IKE SA identity: what must not change.
type Phase1 struct {
	UniqueID         uint32
	ICookie, RCookie string
}

func (p Phase1) String() string {
	return fmt.Sprintf("#%d %s_i %s_r", p.UniqueID, p.ICookie, p.RCookie)
}

// Phase1Of returns the peer's IKE SAs of connection conn (every state).
func Phase1Of(conn string, sas []lab.IKESA) (est []Phase1, other []string) {
	for _, s := range sas {
		if s.Name != conn {
			continue
		}
		p := Phase1{UniqueID: s.UniqueID, ICookie: s.InitiatorSPI, RCookie: s.ResponderSPI}
		if s.State == "ESTABLISHED" {
			est = append(est, p)
		} else {
			other = append(other, fmt.Sprintf("%s %s", p, s.State))
		}
	}
	return est, other
}

// CheckPhase1 returns what is wrong when the peer's IKE SAs of its
// connection are not exactly the baseline: "" when they are.
func CheckPhase1(base Phase1, conn string, sas []lab.IKESA) string {
	est, other := Phase1Of(conn, sas)
	if len(est) == 1 && est[0] == base && len(other) == 0 {
		return ""
	}
	var s []string
	for _, p := range est {
		s = append(s, p.String()+" ESTABLISHED")
	}
	s = append(s, other...)
	if len(s) == 0 {
		s = []string{"none"}
	}
	return fmt.Sprintf("IKE SA at setup %s, now: %s", base, strings.Join(s, "; "))
}

// SeqMonitor tracks outbound ESP sequence numbers across rounds: the
// active's (live) and every other member's (replicated) per gateway
// outbound SPI. Neither may go below what was seen before: the active's
// not below any earlier value (a takeover installs last synced + margin),
// a replicated one not below an earlier replicated one.
type SeqMonitor struct {
	all  map[string]seqSeen // max of every view
	repl map[string]seqSeen // max of replicated views
}

type seqSeen struct {
	v     uint64
	node  string
	round int
}

// NewSeqMonitor returns an empty monitor.
func NewSeqMonitor() *SeqMonitor {
	return &SeqMonitor{all: map[string]seqSeen{}, repl: map[string]seqSeen{}}
}

// Observe checks one round's views (active names the node whose view is
// live) against earlier rounds, then records them. It returns one line
// per SA whose counter went back.
func (m *SeqMonitor) Observe(round int, active string, views map[string]api.SAs) []string {
	var bad []string
	type obs struct {
		spi  string
		v    uint64
		node string
		live bool
	}
	var seen []obs
	nodes := make([]string, 0, len(views))
	for n := range views {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		live := node == active
		for _, c := range views[node].Children {
			spi := strings.ToLower(c.SPIOut)
			if live {
				if p, ok := m.all[spi]; ok && c.OutSeq < p.v {
					bad = append(bad, fmt.Sprintf("%s (active): SA out %s: out_seq %d < %d seen on %s in round %d", node, spi, c.OutSeq, p.v, p.node, p.round))
				}
			} else if p, ok := m.repl[spi]; ok && c.OutSeq < p.v {
				bad = append(bad, fmt.Sprintf("%s (replicated): SA out %s: out_seq %d < %d replicated on %s in round %d", node, spi, c.OutSeq, p.v, p.node, p.round))
			}
			seen = append(seen, obs{spi, c.OutSeq, node, live})
		}
	}
	for _, o := range seen {
		if p, ok := m.all[o.spi]; !ok || o.v > p.v {
			m.all[o.spi] = seqSeen{o.v, o.node, round}
		}
		if !o.live {
			if p, ok := m.repl[o.spi]; !ok || o.v > p.v {
				m.repl[o.spi] = seqSeen{o.v, o.node, round}
			}
		}
	}
	return bad
}

// SeqFailureLines returns the lines of log that report an ESP sequence
// number (replay) failure, each with its detail line when charon wrote
// one (a continuation line without a time stamp).
func SeqFailureLines(log string) []string {
	var out []string
	lines := strings.Split(log, "\n")
	for i, l := range lines {
		if !strings.Contains(l, SeqFailure) {
			continue
		}
		e := strings.TrimSpace(l)
		if i+1 < len(lines) && !stamped(lines[i+1]) && strings.TrimSpace(lines[i+1]) != "" {
			e += " " + strings.TrimSpace(lines[i+1])
		}
		out = append(out, e)
	}
	return out
}

// stamped reports whether a charon log line starts with "hh:mm:ss".
func stamped(l string) bool {
	return len(l) >= 8 && l[2] == ':' && l[5] == ':' && strings.Trim(l[:2]+l[3:5]+l[6:8], "0123456789") == ""
}

// SeqFailure is what strongSwan's libipsec logs for an ESP packet whose
// sequence number fails replay checking.
const SeqFailure = "ESP sequence number verification failed"
