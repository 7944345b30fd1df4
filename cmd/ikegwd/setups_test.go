package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/ike/config"
	"ikegw/ike/ikev1"
	"ikegw/ike/runtime"
	"ikegw/ike/sa"
)

// memPersister and recDataplane stand in for the peers' side of the test:
// the initiators are ikegw's own engine, playing 50 remote gateways.
type memPersister struct{}

func (memPersister) Persist(context.Context, ikev1.Persist) error { return nil }

type recDataplane struct {
	mu  sync.Mutex
	kid map[uint32]*sa.ChildSA
}

func (d *recDataplane) InstallChild(_ context.Context, c *sa.ChildSA) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.kid[c.In.SPI] = c
	return nil
}

func (d *recDataplane) DeleteChild(_ context.Context, c *sa.ChildSA) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.kid, c.In.SPI)
	return nil
}

func (d *recDataplane) Counters(context.Context) (map[uint32]sa.Counters, error) { return nil, nil }

// TestClusterKillDuringSetups: the active dies while 50 peers run Main Mode
// + Quick Mode at once. Afterwards every SA a peer holds (IKE SA and pair)
// is known to the cluster with the same cookies and SPIs (DESIGN.md
// invariant 1: commit before send). Exchanges the peers had not completed
// may be lost; that is allowed.
func TestClusterKillDuringSetups(t *testing.T) {
	t.Parallel()
	cb := newClusterBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	act := cb.waitActive(ctx, nil)
	const peers = 50
	load, err := cb.lab.NewNS(ctx, "load")
	must(t, err)
	_, err = cb.out.Attach(ctx, load, "eth0")
	must(t, err)
	ike, err := config.ParseIKEProposal("aes128-sha256-ecp256", false)
	must(t, err)
	esp, err := config.ParseESPProposal("aes128-sha256", false)
	must(t, err)
	var conns []*config.Connection
	var addrs []netip.Addr
	for i := range peers {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(150 + i)})
		must(t, load.AddAddr(ctx, "eth0", netip.PrefixFrom(a, 24)))
		addrs = append(addrs, a)
		conns = append(conns, &config.Connection{
			Name: fmt.Sprintf("p%d", i), Local: a, Remote: vipOut.Addr(), LocalPort: 500, RemotePort: 500,
			Auth: "psk", PSK: config.Secret(interopPSK), Proposals: ike, IKELifetime: time.Hour,
			Retransmit: config.RetransmitConfig{Timeout: 500 * time.Millisecond, Tries: 4, Base: 1.5},
			ForceEncap: true,
			Children: []*config.Child{{Name: "net", Mode: sa.Tunnel, ESPProposals: esp, RekeyTime: time.Hour, LifeTime: 2 * time.Hour,
				LocalTS:  []sa.TrafficSelector{{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, 0, byte(i + 1)}), 32)}},
				RemoteTS: []sa.TrafficSelector{{Prefix: gwNet}}}},
		})
	}
	eng, err := ikev1.New(ikev1.Config{Connections: conns})
	must(t, err)
	dp := &recDataplane{kid: map[uint32]*sa.ChildSA{}}
	var rt *runtime.Runtime
	must(t, load.Do(func() error {
		var err error
		rt, err = runtime.New(runtime.Config{Engine: eng, Listen: addrs, Persister: memPersister{}, DataPlane: dp, CounterSync: -1})
		return err
	}))
	go rt.Run(ctx)
	defer rt.Close()
	// All 50 start at once; the active dies while they run.
	for i := range peers {
		go rt.Initiate(ctx, fmt.Sprintf("p%d", i))
	}
	time.Sleep(time.Duration(30+rand.IntN(60)) * time.Millisecond)
	before, _, _ := rt.Snapshot(ctx)
	must(t, killChild(act.proc.Pid()))
	up := 0
	for _, r := range before {
		if r.State == sa.IKEEstablished {
			up++
		}
	}
	t.Logf("at the kill: %d phase 1 established, %d in progress, %d not started", up, len(before)-up, peers-len(before))
	next := cb.waitActive(ctx, act)
	// Let every exchange finish or give up (4 tries, 0.5 s base).
	time.Sleep(8 * time.Second)
	ikes, kids, err := rt.Snapshot(ctx)
	must(t, err)
	var held api.SAs
	must(t, next.client.get(api.PathSAs, &held))
	known := map[string]bool{}
	for _, i := range held.IKE {
		known[i.ICookie+i.RCookie] = true
	}
	knownSPI := map[string]bool{}
	for _, c := range held.Children {
		knownSPI[c.SPIIn+"/"+c.SPIOut] = true
	}
	established, installed := 0, 0
	for _, r := range ikes {
		if r.State != sa.IKEEstablished {
			continue
		}
		established++
		v := api.IKEView(&r)
		if !known[v.ICookie+v.RCookie] {
			cb.dump()
			t.Fatalf("a peer holds IKE SA %s that the cluster does not", r.Cookies)
		}
	}
	for _, c := range kids {
		if c.State != sa.ChildInstalled {
			continue
		}
		installed++
		// The cluster's view is the mirror image: its inbound SPI is the
		// peer's outbound one.
		if !knownSPI[fmt.Sprintf("%08x/%08x", c.Out.SPI, c.In.SPI)] {
			cb.dump()
			t.Fatalf("a peer holds IPsec SA pair %08x/%08x that the cluster does not", c.In.SPI, c.Out.SPI)
		}
	}
	t.Logf("killed %s during %d setups: peers hold %d IKE SAs and %d pairs, all known to %s (which holds %d and %d)",
		act.name, peers, established, installed, next.name, len(held.IKE), len(held.Children))
	if established == 0 {
		t.Fatal("no setup completed at all: the test proved nothing")
	}
}
