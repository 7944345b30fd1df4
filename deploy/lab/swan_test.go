package lab

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// swanPair builds two namespaces on a veth link, each with a protected
// address on lo, and the matching IKEv1 PSK Main Mode strongSwan configs.
func swanPair(t *testing.T) (l *Lab, a, b *NS, cfgA, cfgB SwanConfig, protA, protB netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l = NewT(t)
	var err error
	if a, err = l.NewNS(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if b, err = l.NewNS(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := l.Veth(ctx, a, "eth0", b, "eth0"); err != nil {
		t.Fatal(err)
	}
	pubA, pubB := netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24")
	must(t, a.AddAddr(ctx, "eth0", pubA))
	must(t, b.AddAddr(ctx, "eth0", pubB))
	tsA, tsB := netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/24")
	if protA, err = a.AddLoopbackAddr(ctx, tsA); err != nil {
		t.Fatal(err)
	}
	if protB, err = b.AddLoopbackAddr(ctx, tsB); err != nil {
		t.Fatal(err)
	}
	conn := func(me, peer netip.Prefix, lts, rts netip.Prefix) SwanConfig {
		return SwanConfig{
			RetransmitTries:   3,
			RetransmitTimeout: time.Second,
			Conns: []SwanConn{{
				Name:        "gw",
				Version:     1,
				LocalAddrs:  []string{me.Addr().String()},
				RemoteAddrs: []string{peer.Addr().String()},
				PSK:         "lab-test-psk-0123456789",
				Proposals:   []string{"aes256-sha256-modp2048"},
				DPDDelay:    10 * time.Second,
				Children: []SwanChild{{
					Name:         "net",
					LocalTS:      []string{lts.String()},
					RemoteTS:     []string{rts.String()},
					ESPProposals: []string{"aes256-sha256"},
				}},
			}},
		}
	}
	return l, a, b, conn(pubA, pubB, tsA, tsB), conn(pubB, pubA, tsB, tsA), protA, protB
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func established(sas []IKESA) bool {
	for _, s := range sas {
		if s.State == "ESTABLISHED" {
			if _, ok := s.Child("net", "INSTALLED"); ok {
				return true
			}
		}
	}
	return false
}

// TestStrongSwanPair is the package's proof: two strongSwan peers in two
// namespaces establish IKEv1 Main Mode and a child, agree on cookies and
// crossed SPIs, carry a ping through the tunnel, and the lab leaves nothing
// behind.
func TestStrongSwanPair(t *testing.T) {
	var tag string
	t.Run("tunnel", func(t *testing.T) {
		l, a, b, cfgA, cfgB, protA, protB := swanPair(t)
		tag = l.Tag()
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		swA := StartStrongSwan(t, a, cfgA)
		swB := StartStrongSwan(t, b, cfgB)

		if err := swA.Initiate(ctx, "net"); err != nil {
			t.Fatal(err)
		}
		sasA, err := swA.WaitFor(ctx, established)
		if err != nil {
			t.Fatal(err)
		}
		sasB, err := swB.WaitFor(ctx, established)
		if err != nil {
			t.Fatal(err)
		}
		if len(sasA) != 1 || len(sasB) != 1 {
			t.Fatalf("want one IKE SA each side, got %d and %d", len(sasA), len(sasB))
		}
		ia, ib := sasA[0], sasB[0]
		if ia.Version != 1 || ib.Version != 1 {
			t.Errorf("IKE versions %d/%d, want 1", ia.Version, ib.Version)
		}
		if !ia.Initiator || ib.Initiator {
			t.Errorf("initiator flags a=%v b=%v, want a only", ia.Initiator, ib.Initiator)
		}
		ca, err := ia.Cookies()
		if err != nil {
			t.Fatal(err)
		}
		cb, err := ib.Cookies()
		if err != nil {
			t.Fatal(err)
		}
		if ca != cb || ca.I == [8]byte{} || ca.R == [8]byte{} {
			t.Errorf("cookies differ or are zero: a %v, b %v", ca, cb)
		}
		if ia.EncrAlg != "AES_CBC" || ia.EncrKeysize != 256 || ia.IntegAlg != "HMAC_SHA2_256_128" || ia.DHGroup != "MODP_2048" {
			t.Errorf("IKE algorithms %s-%d/%s/%s, want AES_CBC-256/HMAC_SHA2_256_128/MODP_2048", ia.EncrAlg, ia.EncrKeysize, ia.IntegAlg, ia.DHGroup)
		}
		if ia.LocalHost != ib.RemoteHost || ia.RemoteHost != ib.LocalHost || ia.RemotePort != 4500 {
			t.Errorf("endpoints a %v:%d->%v:%d, b %v:%d->%v:%d (want crossed, NAT-T port 4500)",
				ia.LocalHost, ia.LocalPort, ia.RemoteHost, ia.RemotePort, ib.LocalHost, ib.LocalPort, ib.RemoteHost, ib.RemotePort)
		}
		kA, _ := ia.Child("net", "INSTALLED")
		kB, _ := ib.Child("net", "INSTALLED")
		if kA.SPIIn == "" || kA.SPIIn != kB.SPIOut || kA.SPIOut != kB.SPIIn {
			t.Errorf("child SPIs not crossed: a in %s out %s, b in %s out %s", kA.SPIIn, kA.SPIOut, kB.SPIIn, kB.SPIOut)
		}
		if kA.Mode != "TUNNEL" || kA.Protocol != "ESP" || !kA.Encap {
			t.Errorf("child a: mode %s protocol %s encap %v, want TUNNEL ESP UDP-encapsulated", kA.Mode, kA.Protocol, kA.Encap)
		}

		rec, err := a.PingFrom(ctx, protA, protB, 3, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Received() != 3 {
			t.Errorf("ping through the tunnel: %d of 3 replies (lost %v)", rec.Received(), rec.Lost())
		}
		// The replies really went through the tunnel: the SA counters grew.
		sasA, err = swA.ListSAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := sasA[0].Child("net", "INSTALLED"); !ok || k.PacketsOut < 3 || k.PacketsIn < 3 {
			t.Errorf("child SA counters after 3 pings: %+v", k)
		}
		if got := swA.Log(); len(got) == 0 {
			t.Errorf("charon log %s is empty", swA.LogPath())
		}

		// Terminate sends a DELETE: the responder loses its SA too.
		if err := swA.Terminate(ctx, "gw"); err != nil {
			t.Fatal(err)
		}
		if _, err := swB.WaitFor(ctx, func(s []IKESA) bool { return len(s) == 0 }); err != nil {
			t.Fatal(err)
		}
	})
	// After the subtest's cleanups: no namespace of its lab is left.
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if m, _ := filepath.Match(tag+"*", e.Name()); m && tag != "" {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}
