package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/gwlab"
	"ikegw/deploy/lab"
)

// The chaos peers' addressing: peer k (1-based) is 192.0.2.(120+k) on the
// outside segment and protects 10.(20+k).0.0/24 (10.(20+k).0.1 on its lo);
// its tunnel i (1-based) is 10.(20+k).0.0/24 === 10.1.0.(100+i)/32 (an
// address on the inside segment).
func peerOutside(k int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(120 + k)}), 24)
}

func peerNet(k int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(20 + k), 0, 0}), 24)
}

func insideHost(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 0, byte(100 + i)}) }

func childName(i int) string { return fmt.Sprintf("t%02d", i) }

// gwConn is the gateways' connection name for chaos peer k.
func gwConn(k int) string { return fmt.Sprintf("chaos-p%d", k) }

// peerConn is the connection name on every peer (gwlab's and ours).
const peerConn = "gw"

// pinnedChild is the tunnel the churn never touches; the protected host
// pings through it.
const pinnedChild = 1

// peer is one strongSwan peer and what the run expects of it.
type peer struct {
	name     string // gwlab's "peer" or "cpK"
	swan     *lab.Swan
	children []string // child names
	pinned   string   // the child the pinger goes through
	pinger   *lab.Pinger
	ownPing  bool       // a chaos peer (churned, its pinger ours to stop)
	dst      netip.Addr // the pinger's destination
	base     Phase1
	seqSeen  int // SeqFailure lines already reported

	mu   sync.Mutex
	want map[string]childWant
}

type childWant uint8

const (
	wantUnknown childWant = iota // an operation failed: no expectation
	wantUp
	wantDown
)

// setWant records what the last successful operation left.
func (p *peer) setWant(child string, w childWant) {
	p.mu.Lock()
	p.want[child] = w
	p.mu.Unlock()
}

func (p *peer) wants() map[string]childWant {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]childWant, len(p.want))
	for k, v := range p.want {
		out[k] = v
	}
	return out
}

// gatewayConfig is the cluster-wide connections file: gwlab's own peer
// connection as gwlab writes it, and one connection per chaos peer with
// one child that accepts each of its tunnels (narrowed selectors).
func gatewayConfig(dir string, peers int, dpd time.Duration) []byte {
	var b strings.Builder
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	psk := q(filepath.Join(dir, "psk"))
	fmt.Fprintf(&b, "connections:\n")
	conn := func(name string, remote netip.Addr, remoteTS netip.Prefix, child string) {
		fmt.Fprintf(&b, `  - name: %s
    local_addrs: %s
    remote_addrs: %s
    psk_file: %s
    proposals: [%s]
    dpd_delay: %s
    children:
      - {name: %s, local_ts: [%s], remote_ts: [%s], esp_proposals: [%s]}
`, name, gwlab.OutsideVIP.Addr(), remote, psk, gwlab.IKEProposal, dpd, child, gwlab.InsideNet, remoteTS, gwlab.ESPProposal)
	}
	conn("peer", gwlab.PeerOutside.Addr(), gwlab.PeerNet, "net")
	for k := 1; k <= peers; k++ {
		conn(gwConn(k), peerOutside(k).Addr(), peerNet(k), "tun")
	}
	return []byte(b.String())
}

// applyConfig commits the connections through the active's admin API and
// waits until every gateway runs them.
func (r *runner) applyConfig(ctx context.Context) error {
	body := gatewayConfig(r.lab.Dir(), r.o.Peers, r.o.DPDDelay)
	active, err := r.lab.Active(ctx)
	if err != nil {
		return fmt.Errorf("chaos: config apply: %w", err)
	}
	n, err := r.lab.Node(active)
	if err != nil {
		return err
	}
	var applied api.ConfigApplied
	if err := adminDo(ctx, n.Socket, http.MethodPost, api.PathConfigApply, body, &applied); err != nil {
		return err
	}
	if applied.Error != "" {
		return fmt.Errorf("chaos: config apply on %s: %s", active, applied.Error)
	}
	for _, g := range r.lab.Nodes() {
		if g.Witness {
			continue
		}
		for {
			var a api.ConfigApplied
			err := adminDo(ctx, g.Socket, http.MethodGet, api.PathConfigApplied, nil, &a)
			if err == nil && a.Version >= applied.Version && a.Error == "" {
				break
			}
			if err == nil && a.Error != "" {
				return fmt.Errorf("chaos: %s could not load the applied connections: %s", g.Name, a.Error)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("chaos: %s did not load configuration version %d: %w (last: %+v, %v)", g.Name, applied.Version, ctx.Err(), a, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	r.log.Info("chaos: connections applied", "version", applied.Version, "connections", len(applied.Connections))
	return nil
}

// startPeers creates the chaos peers on the outside segment, starts their
// strongSwan and the protected host's pingers through their pinned tunnel.
func (r *runner) startPeers(ctx context.Context) error {
	outside, _, _, err := r.lab.Bridges()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(r.lab.Dir(), "psk"))
	if err != nil {
		return fmt.Errorf("chaos: reading the lab's PSK file: %w", err)
	}
	psk := lab.Secret(strings.TrimSpace(string(b)))
	// The protected host's address for the pinned tunnels.
	if err := r.lab.Host.AddAddr(ctx, "eth0", netip.PrefixFrom(insideHost(pinnedChild), gwlab.HostInside.Bits())); err != nil {
		return err
	}
	for k := 1; k <= r.o.Peers; k++ {
		ns, err := r.lab.Base().NewNS(ctx, fmt.Sprintf("cp%d", k))
		if err != nil {
			return err
		}
		if _, err := outside.Attach(ctx, ns, "eth0"); err != nil {
			return err
		}
		if err := ns.AddAddr(ctx, "eth0", peerOutside(k)); err != nil {
			return err
		}
		lo, err := ns.AddLoopbackAddr(ctx, peerNet(k))
		if err != nil {
			return err
		}
		p := &peer{name: ns.Name()[len(r.lab.Tag()):], pinned: childName(pinnedChild), want: map[string]childWant{}, ownPing: true}
		sc := peerSwanConfig(k, r.o.Tunnels, psk, r.o.DPDDelay, r.o.PeerExchanges)
		for _, ch := range sc.Conns[0].Children {
			p.children = append(p.children, ch.Name)
		}
		p.swan, err = ns.StartStrongSwan(ctx, sc)
		if err != nil {
			return err
		}
		p.dst = lo
		r.peers = append(r.peers, p)
	}
	return nil
}

// peerSwanConfig is chaos peer k's strongSwan configuration: one IKEv1
// connection to the outside VIP with tunnels children.
func peerSwanConfig(k, tunnels int, psk lab.Secret, dpd time.Duration, exchanges int) lab.SwanConfig {
	c := lab.SwanConn{Name: peerConn, Version: 1,
		LocalAddrs: []string{peerOutside(k).Addr().String()}, RemoteAddrs: []string{gwlab.OutsideVIP.Addr().String()},
		PSK: psk, Proposals: []string{gwlab.IKEProposal}, DPDDelay: dpd, RekeyTime: 4 * time.Hour}
	for i := 1; i <= tunnels; i++ {
		c.Children = append(c.Children, lab.SwanChild{Name: childName(i), LocalTS: []string{peerNet(k).String()},
			RemoteTS: []string{netip.PrefixFrom(insideHost(i), 32).String()}, ESPProposals: []string{gwlab.ESPProposal}, RekeyTime: time.Hour})
	}
	sc := lab.SwanConfig{RetransmitTries: 5, RetransmitTimeout: time.Second, Conns: []lab.SwanConn{c}}
	if exchanges > 0 {
		sc.Charon = map[string]string{"max_ikev1_exchanges": strconv.Itoa(exchanges)}
	}
	return sc
}

// establish brings every chaos peer's IKE SA and tunnels up (peers in
// parallel, tunnels one after the other) and starts the pingers.
func (r *runner) establish(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(r.peers))
	for i, p := range r.peers {
		if !p.ownPing {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.swan.Initiate(ctx, peerConn); err != nil {
				errs[i] = fmt.Errorf("chaos: %s: phase 1: %w", p.name, err)
				return
			}
			for _, c := range p.children {
				if err := p.swan.Initiate(ctx, c); err != nil {
					errs[i] = fmt.Errorf("chaos: %s: tunnel %s: %w", p.name, c, err)
					return
				}
				p.setWant(c, wantUp)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for _, p := range r.peers {
		if !p.ownPing {
			continue
		}
		pg, err := r.lab.Host.StartPinger(insideHost(pinnedChild), p.dst, r.o.PingInterval)
		if err != nil {
			return err
		}
		p.pinger = pg
	}
	return nil
}
