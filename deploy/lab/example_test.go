package lab_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"ikegw/deploy/lab"
)

// A test lab: a strongSwan responder and a daemon under test (any binary
// with a config file) on one link; a pinger measures the longest dark gap
// while the daemon is killed. (Compiled, not run.)
func Example() {
	var t testing.TB // the test's *testing.T
	ctx := context.Background()
	l := lab.NewT(t) // skips unless root; everything removed at t.Cleanup
	peer, _ := l.NewNS(ctx, "peer")
	gw, _ := l.NewNS(ctx, "gw")
	_ = l.Veth(ctx, peer, "eth0", gw, "eth0")
	_ = peer.AddAddr(ctx, "eth0", netip.MustParsePrefix("192.0.2.2/24"))
	_ = gw.AddAddr(ctx, "eth0", netip.MustParsePrefix("192.0.2.1/24"))
	src, _ := peer.AddLoopbackAddr(ctx, netip.MustParsePrefix("10.2.0.0/24"))

	sw := lab.StartStrongSwan(t, peer, lab.SwanConfig{Conns: []lab.SwanConn{{
		Name: "gw", LocalAddrs: []string{"192.0.2.2"}, RemoteAddrs: []string{"192.0.2.1"},
		PSK: "lab-psk", Proposals: []string{"aes256-sha256-modp2048"}, DPDDelay: 2 * time.Second,
		Children: []lab.SwanChild{{Name: "net", LocalTS: []string{"10.2.0.0/24"},
			RemoteTS: []string{"10.1.0.0/24"}, ESPProposals: []string{"aes256-sha256"}}},
	}}})

	conf, _ := l.WriteFile("ikegwd.yaml", []byte("listen: 192.0.2.1\n"))
	d, _ := gw.Start("ikegwd", "/path/to/ikegwd", "-config", conf)
	_ = d.WaitOutput(ctx, "ready")

	_ = sw.Initiate(ctx, "net")
	sas, _ := sw.WaitFor(ctx, func(s []lab.IKESA) bool { return len(s) == 1 && s[0].State == "ESTABLISHED" })
	cookies, _ := sas[0].Cookies()
	_ = cookies

	p, _ := peer.StartPinger(src, netip.MustParseAddr("10.1.0.1"), 50*time.Millisecond)
	_ = d.Kill()
	time.Sleep(time.Second)
	rec := p.Stop()
	t.Logf("longest gap %v, lost %d of %d", rec.MaxGap(), len(rec.Lost()), rec.Sent)

	cut, _ := peer.DropAll(ctx, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"))
	_ = cut.Remove()
}
