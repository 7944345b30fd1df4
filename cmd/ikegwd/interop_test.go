package main

// Interoperability tests: an ikegwd process against strongSwan 5.9.8 in
// network namespaces (TESTBED.md). They run as root (CI does) and skip
// otherwise.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/deploy/lab"
)

var ikegwdBin string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "ikegwd-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ikegwdBin = filepath.Join(dir, "ikegwd")
		out, err := exec.Command("go", "build", "-o", ikegwdBin, ".").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building ikegwd: %v\n%s", err, out)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

const interopPSK = "interop-test-psk-4f1c9a7e"

var (
	gwPub   = netip.MustParsePrefix("192.0.2.1/24")
	peerPub = netip.MustParsePrefix("192.0.2.2/24")
	gwNet   = netip.MustParsePrefix("10.1.0.0/24")
	peerNet = netip.MustParsePrefix("10.2.0.0/24")
)

// bed is one ikegwd and one strongSwan peer in two namespaces.
type bed struct {
	t        *testing.T
	lab      *lab.Lab
	gwNS     *lab.NS
	peerNS   *lab.NS
	gwProt   netip.Addr
	peerProt netip.Addr
	dir      string
	cfgPath  string
	sock     string
	gw       *lab.Proc
	swan     *lab.Swan
}

type bedOpts struct {
	ike, esp     string // ikegw proposals
	swanIKE      string
	swanESP      string
	aggressive   bool // both sides
	gwAggressive bool // ikegw accepts aggressive mode
	swanPSK      string
	dpd          time.Duration
	swanDPD      time.Duration // default: dpd
	gwInitiates  bool
	rekey        time.Duration // child rekey time on both sides
	// gwRekey and gwLife, when set, are ikegw's child rekey_time and
	// life_time (instead of rekey); swanLife is strongSwan's child
	// life_time (default: its rekey time + 10%).
	gwRekey, gwLife, swanLife time.Duration
	v6                        bool // IKE and ESP over IPv6
}

func newBed(t *testing.T, o bedOpts) *bed {
	lab.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := lab.NewT(t)
	b := &bed{t: t, lab: l, dir: t.TempDir()}
	var err error
	if b.gwNS, err = l.NewNS(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	if b.peerNS, err = l.NewNS(ctx, "peer"); err != nil {
		t.Fatal(err)
	}
	must(t, l.Veth(ctx, b.gwNS, "eth0", b.peerNS, "eth0"))
	gwPub, peerPub := gwPub, peerPub
	if o.v6 {
		gwPub, peerPub = netip.MustParsePrefix("2001:db8::1/64"), netip.MustParsePrefix("2001:db8::2/64")
	}
	must(t, b.gwNS.AddAddr(ctx, "eth0", gwPub))
	must(t, b.peerNS.AddAddr(ctx, "eth0", peerPub))
	if b.gwProt, err = b.gwNS.AddLoopbackAddr(ctx, gwNet); err != nil {
		t.Fatal(err)
	}
	if b.peerProt, err = b.peerNS.AddLoopbackAddr(ctx, peerNet); err != nil {
		t.Fatal(err)
	}
	if o.dpd == 0 {
		o.dpd = 30 * time.Second
	}
	if o.swanDPD == 0 {
		o.swanDPD = o.dpd
	}
	if o.rekey == 0 {
		o.rekey = time.Hour
	}
	if o.swanIKE == "" {
		o.swanIKE = o.ike
	}
	if o.swanESP == "" {
		o.swanESP = o.esp
	}
	gwRekey := o.rekey
	if o.gwRekey != 0 {
		gwRekey = o.gwRekey
	}
	gwLife := ""
	if o.gwLife != 0 {
		gwLife = fmt.Sprintf("        life_time: %s\n", o.gwLife)
	}
	psk := filepath.Join(b.dir, "psk")
	must(t, os.WriteFile(psk, []byte(interopPSK), 0o600))
	key := filepath.Join(b.dir, "cluster.key")
	if out, err := exec.Command(ikegwdBin, "keygen", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v: %s", err, out)
	}
	b.sock = filepath.Join(b.dir, "admin.sock")
	start := "none"
	if o.gwInitiates {
		start = "none" // initiated explicitly through the admin API
	}
	cfg := fmt.Sprintf(`node:
  name: gw1
  state_dir: %s
  cluster_key_file: %s
ike:
  listen: [%s]
dataplane:
  kind: userspace
  tun: ikegw%%d
log:
  level: debug
admin:
  socket: %s
connections:
  - name: peer
    local_addrs: %s
    remote_addrs: %s
    psk_file: %s
    proposals: [%s]
    aggressive: %t
    dpd_delay: %s
    start_action: %s
    retransmit:
      timeout: 1s
      tries: 3
      base: 1.5
    children:
      - name: net
        local_ts: [%s]
        remote_ts: [%s]
        esp_proposals: [%s]
        rekey_time: %s
%s`, filepath.Join(b.dir, "state"), key, gwPub.Addr(), b.sock, gwPub.Addr(), peerPub.Addr(), psk, o.ike,
		o.gwAggressive || o.aggressive, o.dpd, start, gwNet, peerNet, o.esp, gwRekey, gwLife)
	b.cfgPath = filepath.Join(b.dir, "ikegwd.yaml")
	must(t, os.WriteFile(b.cfgPath, []byte(cfg), 0o600))
	if out, err := exec.Command(ikegwdBin, "check-config", b.cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v: %s", err, out)
	}
	swanPSK := o.swanPSK
	if swanPSK == "" {
		swanPSK = interopPSK
	}
	b.swan = lab.StartStrongSwan(t, b.peerNS, lab.SwanConfig{
		RetransmitTries: 3, RetransmitTimeout: time.Second,
		AllowAggressivePSK: o.aggressive,
		Conns: []lab.SwanConn{{
			Name: "gw", Version: 1,
			LocalAddrs: []string{peerPub.Addr().String()}, RemoteAddrs: []string{gwPub.Addr().String()},
			PSK: lab.Secret(swanPSK), Proposals: []string{o.swanIKE}, Aggressive: o.aggressive,
			DPDDelay: o.swanDPD, RekeyTime: 4 * time.Hour,
			Children: []lab.SwanChild{{Name: "net", LocalTS: []string{peerNet.String()}, RemoteTS: []string{gwNet.String()},
				ESPProposals: []string{o.swanESP}, RekeyTime: o.rekey, LifeTime: o.swanLife}},
		}},
	})
	b.startGW()
	return b
}

func (b *bed) startGW() {
	t := b.t
	p, err := b.gwNS.Start("ikegwd", ikegwdBin, "run", "-c", b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	b.gw = p
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		var st api.Status
		if err := b.get(api.PathStatus, &st); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ikegwd did not come up; its output:\n%s", p.Output())
		case <-p.Done():
			t.Fatalf("ikegwd exited; its output:\n%s", p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *bed) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", b.sock)
		}}}
}

func (b *bed) get(path string, out any) error {
	resp, err := b.client().Get("http://ikegwd" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (b *bed) post(path, q string) error {
	resp, err := b.client().Post("http://ikegwd"+path+"?"+q, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("POST %s?%s: %s: %s", path, q, resp.Status, e.Error)
	}
	return nil
}

func (b *bed) gwSAs() api.SAs {
	var s api.SAs
	if err := b.get(api.PathSAs, &s); err != nil {
		b.t.Fatalf("ikegwd SAs: %v", err)
	}
	return s
}

func (b *bed) fail(format string, args ...any) {
	b.t.Helper()
	b.t.Fatalf("%s\n--- ikegwd output (tail) ---\n%s\n--- charon log (tail) ---\n%s", fmt.Sprintf(format, args...),
		tailLines(b.gw.Output(), 60), tailLines(b.swan.Log(), 60))
}

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func swanUp(sas []lab.IKESA) bool {
	for _, s := range sas {
		if s.State == "ESTABLISHED" {
			if _, ok := s.Child("net", "INSTALLED"); ok {
				return true
			}
		}
	}
	return false
}

// agree waits until strongSwan and ikegwd report the same IKE SA (cookies)
// and the same, crossed child SPIs, and returns strongSwan's view.
func (b *bed) agree(ctx context.Context) (lab.IKESA, lab.ChildSA) {
	b.t.Helper()
	var last string
	for {
		sas, err := b.swan.ListSAs(ctx)
		if err == nil && swanUp(sas) && len(sas) == 1 {
			s := sas[0]
			k, _ := s.Child("net", "INSTALLED")
			g := b.gwSAs()
			okIKE, okChild := false, false
			for _, i := range g.IKE {
				if i.State == "ESTABLISHED" && i.ICookie == s.InitiatorSPI && i.RCookie == s.ResponderSPI {
					okIKE = true
				}
			}
			for _, c := range g.Children {
				if c.State == "INSTALLED" && c.SPIIn == k.SPIOut && c.SPIOut == k.SPIIn {
					okChild = true
				}
			}
			if okIKE && okChild {
				return s, k
			}
			last = fmt.Sprintf("strongSwan %s_i %s_r in %s out %s; ikegwd %+v", s.InitiatorSPI, s.ResponderSPI, k.SPIIn, k.SPIOut, g)
		} else if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			b.fail("strongSwan and ikegwd do not agree on the SAs: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *bed) ping(ctx context.Context, n int) {
	b.t.Helper()
	rec, err := b.gwNS.PingFrom(ctx, b.gwProt, b.peerProt, n, 20*time.Millisecond)
	if err != nil {
		b.fail("ping: %v", err)
	}
	if rec.Received() != n {
		b.fail("ping through the tunnel: %d of %d replies (lost %v)", rec.Received(), n, rec.Lost())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestInteropIPv6: IKE and ESP-in-UDP over IPv6, both directions.
func TestInteropIPv6(t *testing.T) {
	t.Parallel()
	for _, gwInit := range []bool{false, true} {
		t.Run(fmt.Sprintf("ikegw-initiates=%t", gwInit), func(t *testing.T) {
			b := newBed(t, bedOpts{ike: "aes256-sha256-ecp256", esp: "aes256gcm16", v6: true})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if gwInit {
				must(t, b.post(api.PathInitiate, "conn=peer"))
			} else {
				must(t, b.swan.Initiate(ctx, "net"))
			}
			s, _ := b.agree(ctx)
			if !s.RemoteHost.Is6() {
				t.Errorf("IKE SA over %v, want IPv6", s.RemoteHost)
			}
			b.ping(ctx, 5)
		})
	}
}

var suites = []struct{ ike, esp string }{
	{"aes128-sha1-modp2048", "aes128-sha1"},
	{"aes256-sha256-modp2048", "aes256-sha256"},
	{"aes256-sha384-ecp384", "aes256-sha384-ecp384"},
	{"aes128-sha256-curve25519", "aes128-sha256"},
	{"aes256-sha256-ecp256", "aes256gcm16-ecp256"},
}

// TestInteropEstablish: both directions, every suite; the peer and ikegwd
// agree on cookies and SPIs, and a ping crosses the tunnel.
func TestInteropEstablish(t *testing.T) {
	for _, s := range suites {
		for _, gwInit := range []bool{false, true} {
			name := s.ike + "/" + s.esp + "/peer-initiates"
			if gwInit {
				name = s.ike + "/" + s.esp + "/ikegw-initiates"
			}
			t.Run(name, func(t *testing.T) {
				b := newBed(t, bedOpts{ike: s.ike, esp: s.esp, gwInitiates: gwInit})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if gwInit {
					must(t, b.post(api.PathInitiate, "conn=peer"))
				} else {
					must(t, b.swan.Initiate(ctx, "net"))
				}
				s, k := b.agree(ctx)
				if s.Initiator == gwInit {
					t.Errorf("strongSwan initiator flag %v", s.Initiator)
				}
				if !k.Encap {
					t.Errorf("child not UDP-encapsulated (kernel-libipsec needs it)")
				}
				b.ping(ctx, 5)
			})
		}
	}
}

// TestInteropResume is the takeover in miniature: SIGKILL ikegwd, start a
// new process that loads only the persisted records: strongSwan keeps its
// IKE SA (uniqueid and cookies), and DPD, a Quick Mode rekey and traffic
// then work.
func TestInteropResume(t *testing.T) {
	b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256", dpd: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	s1, k1 := b.agree(ctx)
	b.ping(ctx, 5)
	must(t, b.gw.Signal(syscall.SIGKILL))
	<-b.gw.Done()
	b.startGW()
	s2, k2 := b.agree(ctx)
	if s2.UniqueID != s1.UniqueID || s2.InitiatorSPI != s1.InitiatorSPI || s2.ResponderSPI != s1.ResponderSPI {
		b.fail("strongSwan's IKE SA changed across the restart: %d %s_%s -> %d %s_%s", s1.UniqueID, s1.InitiatorSPI, s1.ResponderSPI, s2.UniqueID, s2.InitiatorSPI, s2.ResponderSPI)
	}
	if k2.SPIIn != k1.SPIIn || k2.SPIOut != k1.SPIOut {
		b.fail("child SPIs changed across the restart")
	}
	b.ping(ctx, 5)
	// DPD both ways keeps working against the restarted node.
	time.Sleep(5 * time.Second)
	var st api.Status
	must(t, b.get(api.PathStatus, &st))
	if st.Engine["dpd_acked"] == 0 {
		b.fail("no DPD acknowledged after the restart: %+v", st.Engine)
	}
	if strings.Contains(b.swan.Log(), "ESP sequence number verification failed") {
		b.fail("the peer saw replayed sequence numbers")
	}
	// A Quick Mode rekey started by strongSwan.
	must(t, b.swan.RekeyChild(ctx, "net"))
	deadline := time.Now().Add(15 * time.Second)
	for {
		s3, k3 := b.agree(ctx)
		if k3.SPIIn != k1.SPIIn {
			if s3.UniqueID != s1.UniqueID {
				b.fail("phase 1 renegotiated")
			}
			break
		}
		if time.Now().After(deadline) {
			b.fail("rekey did not replace the child")
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.ping(ctx, 5)
}

func (b *bed) gwStatus() api.Status {
	var st api.Status
	if err := b.get(api.PathStatus, &st); err != nil {
		b.t.Fatalf("ikegwd status: %v", err)
	}
	return st
}

// waitChildReplaced waits until both sides agree on a child whose inbound
// SPI (strongSwan's view) differs from old, under the same IKE SA.
func (b *bed) waitChildReplaced(ctx context.Context, ike lab.IKESA, old lab.ChildSA) lab.ChildSA {
	b.t.Helper()
	for {
		s, k := b.agree(ctx)
		if k.SPIIn != old.SPIIn {
			if s.UniqueID != ike.UniqueID || s.InitiatorSPI != ike.InitiatorSPI {
				b.fail("phase 1 was renegotiated during a Quick Mode rekey")
			}
			return k
		}
		select {
		case <-ctx.Done():
			b.fail("the child was not rekeyed")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestInteropRekeyAndDelete: a Quick Mode rekey started by strongSwan and
// one started by ikegw, traffic after each; then deletes both ways.
func TestInteropRekeyAndDelete(t *testing.T) {
	t.Parallel()
	b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes128-sha256-modp2048"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	s, k := b.agree(ctx)
	b.ping(ctx, 3)
	must(t, b.swan.RekeyChild(ctx, "net"))
	k2 := b.waitChildReplaced(ctx, s, k)
	b.ping(ctx, 3)
	// ikegw rekeys: its inbound SPI is strongSwan's outbound one.
	must(t, b.post(api.PathRekey, "spi="+k2.SPIOut))
	b.waitChildReplaced(ctx, s, k2)
	b.ping(ctx, 3)
	if strings.Contains(b.swan.Log(), "ESP sequence number verification failed") {
		b.fail("the peer saw replayed sequence numbers")
	}
	// strongSwan deletes: ikegw drops everything.
	must(t, b.swan.Terminate(ctx, "gw"))
	for len(b.gwSAs().IKE)+len(b.gwSAs().Children) != 0 {
		select {
		case <-ctx.Done():
			b.fail("ikegwd kept SAs after the peer deleted them: %+v", b.gwSAs())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// ikegw initiates, then deletes: strongSwan drops everything.
	must(t, b.post(api.PathInitiate, "conn=peer"))
	b.agree(ctx)
	must(t, b.post(api.PathTerminate, "conn=peer"))
	if _, err := b.swan.WaitFor(ctx, func(s []lab.IKESA) bool { return len(s) == 0 }); err != nil {
		b.fail("strongSwan kept its SA after ikegwd deleted it: %v", err)
	}
}

// TestInteropDPD: DPD both ways for 60 s: every R-U-THERE is answered on
// both sides, and the SA survives. strongSwan only sends R-U-THERE when it
// heard nothing for its delay, so its delay (3 s) is shorter than ours (5 s).
func TestInteropDPD(t *testing.T) {
	t.Parallel()
	b := newBed(t, bedOpts{ike: "aes128-sha256-ecp256", esp: "aes128-sha256", dpd: 5 * time.Second, swanDPD: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	s1, _ := b.agree(ctx)
	time.Sleep(60 * time.Second)
	s2, _ := b.agree(ctx)
	if s2.UniqueID != s1.UniqueID {
		b.fail("IKE SA replaced during DPD")
	}
	st := b.gwStatus()
	if st.Engine["dpd_sent"] < 10 || st.Engine["dpd_acked"] < st.Engine["dpd_sent"]-1 {
		b.fail("ikegwd's R-U-THEREs not answered: %+v", st.Engine)
	}
	log := b.swan.Log()
	sent := strings.Count(log, "sending DPD request")
	acks := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "parsed INFORMATIONAL_V1") && strings.Contains(l, "N(DPD_ACK)") {
			acks++
		}
	}
	if sent < 10 || acks < sent-1 {
		b.fail("strongSwan sent %d DPD requests in 60 s and got %d acks, want >= 10, all answered", sent, acks)
	}
	if strings.Contains(log, "DPD check timed out") {
		b.fail("strongSwan's DPD timed out")
	}
	b.ping(ctx, 3)
}

// TestInteropAggressive: Aggressive Mode works when enabled on ikegw and is
// refused (with a log line that says why) when it is not.
func TestInteropAggressive(t *testing.T) {
	t.Parallel()
	t.Run("enabled", func(t *testing.T) {
		b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256", aggressive: true})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		must(t, b.swan.Initiate(ctx, "net"))
		b.agree(ctx)
		if !strings.Contains(b.swan.Log(), "Aggressive Mode") {
			b.fail("strongSwan did not use Aggressive Mode")
		}
		b.ping(ctx, 3)
	})
	t.Run("ikegw-initiates", func(t *testing.T) {
		b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256", aggressive: true})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		must(t, b.post(api.PathInitiate, "conn=peer"))
		b.agree(ctx)
		b.ping(ctx, 3)
	})
	t.Run("refused", func(t *testing.T) {
		b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256", aggressive: true})
		// Rewrite ikegwd's config without aggressive and restart it.
		cfg, err := os.ReadFile(b.cfgPath)
		must(t, err)
		must(t, os.WriteFile(b.cfgPath, []byte(strings.Replace(string(cfg), "aggressive: true", "aggressive: false", 1)), 0o600))
		must(t, b.gw.Stop())
		b.startGW()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b.swan.Initiate(ctx, "net") // fails
		if len(b.gwSAs().IKE) != 0 {
			b.fail("aggressive mode accepted although not enabled")
		}
		if !strings.Contains(b.gw.Output(), "aggressive mode is not enabled") {
			b.fail("no log line says why aggressive mode was refused")
		}
	})
}

// TestInteropWrongPSK: a wrong PSK fails cleanly on both sides, with a
// clear log line and no state left in ikegwd.
func TestInteropWrongPSK(t *testing.T) {
	t.Parallel()
	b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256", swanPSK: "not-the-right-psk-at-all"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.swan.Initiate(ctx, "net"); err == nil {
		b.fail("strongSwan established with a wrong PSK")
	}
	out := b.gw.Output()
	if !strings.Contains(out, "phase 1 authentication failed") || !strings.Contains(out, "wrong pre-shared key?") {
		b.fail("ikegwd did not log why phase 1 failed")
	}
	if strings.Contains(out, interopPSK) || strings.Contains(out, "not-the-right-psk") {
		b.fail("a PSK appears in ikegwd's log")
	}
	if s := b.gwSAs(); len(s.IKE)+len(s.Children) != 0 {
		b.fail("ikegwd kept state after a failed phase 1: %+v", s)
	}
	// ikegw initiates with the wrong key: strongSwan refuses, ikegw gives up.
	must(t, b.post(api.PathInitiate, "conn=peer"))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(b.swan.Log(), "MAC mismatched") && !strings.Contains(b.swan.Log(), "decryption failed") &&
		!strings.Contains(b.swan.Log(), "integrity check failed") && !strings.Contains(b.swan.Log(), "invalid HASH_V1") {
		if time.Now().After(deadline) {
			b.fail("strongSwan did not notice the wrong key")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for len(b.gwSAs().IKE) != 0 {
		if time.Now().After(deadline) {
			b.fail("ikegwd did not give up the failed phase 1")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if sas, _ := b.swan.ListSAs(ctx); swanUp(sas) {
		b.fail("strongSwan established with a wrong PSK")
	}
}

// TestInteropDataplane: ikegwd's userspace data plane and strongSwan's
// kernel-libipsec carry 1,000 pings in each direction without loss, and
// both sides count the same packets and bytes.
func TestInteropDataplane(t *testing.T) {
	t.Parallel()
	b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	b.agree(ctx)
	for _, dir := range []struct {
		ns       *lab.NS
		src, dst netip.Addr
	}{{b.gwNS, b.gwProt, b.peerProt}, {b.peerNS, b.peerProt, b.gwProt}} {
		rec, err := dir.ns.PingFrom(ctx, dir.src, dir.dst, 1000, time.Millisecond)
		if err != nil {
			b.fail("ping %s -> %s: %v", dir.src, dir.dst, err)
		}
		if rec.Received() != 1000 {
			b.fail("ping %s -> %s: %d of 1000 replies (lost %d)", dir.src, dir.dst, rec.Received(), len(rec.Lost()))
		}
	}
	// ikegwd syncs its counters every second.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sas, err := b.swan.ListSAs(ctx)
		must(t, err)
		k, _ := sas[0].Child("net", "INSTALLED")
		g := b.gwSAs().Children[0]
		ok := g.PacketsOut == k.PacketsIn && g.PacketsIn == k.PacketsOut && g.BytesOut == k.BytesIn && g.BytesIn == k.BytesOut
		if ok && g.PacketsOut >= 2000 && g.PacketsIn >= 2000 {
			t.Logf("counters agree: ikegw out %d pkts/%d B, in %d pkts/%d B", g.PacketsOut, g.BytesOut, g.PacketsIn, g.BytesIn)
			break
		}
		if time.Now().After(deadline) {
			b.fail("counters disagree: ikegw out %d/%d in %d/%d; strongSwan in %d/%d out %d/%d (packets/bytes)",
				g.PacketsOut, g.BytesOut, g.PacketsIn, g.BytesIn, k.PacketsIn, k.BytesIn, k.PacketsOut, k.BytesOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestInteropResponderLifetime: strongSwan initiates with a child lifetime
// (66 min) longer than ikegw's (30 s); ikegw answers with its own in the
// echoed transform and a RESPONDER-LIFETIME notify inside Quick Mode
// message 2, and strongSwan reads both. strongSwan 5.9.8 only logs the
// lifetime it received ("received 30s lifetime, configured 3960s"): its
// child_sa takes its timers from its own child config (child_sa.c install),
// so its pair still shows 66 min. ikegw, the responder, therefore replaces
// the pair itself before its lifetime ends (at its rekey_time, the data
// plane's soft limit, and at the latest at 95% of life_time, as for any
// initiator that rekeys late): strongSwan moves to the new pair under the
// same IKE SA, and traffic flows.
func TestInteropResponderLifetime(t *testing.T) {
	t.Parallel()
	b := newBed(t, bedOpts{ike: "aes256-sha256-modp2048", esp: "aes256-sha256", rekey: time.Hour, swanLife: 66 * time.Minute,
		gwRekey: 20 * time.Second, gwLife: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	must(t, b.swan.Initiate(ctx, "net"))
	s, k := b.agree(ctx)
	log := b.swan.Log()
	if !regexp.MustCompile(`parsed QUICK_MODE response \d+ \[[^]]*N\(\(24576\)\)`).MatchString(log) {
		b.fail("strongSwan did not receive RESPONDER-LIFETIME (notify 24576) in Quick Mode message 2")
	}
	if !strings.Contains(log, "received 30s lifetime, configured 3960s") {
		b.fail("strongSwan did not read ikegw's 30 s lifetime from the echoed transform")
	}
	t.Logf("strongSwan's child: rekey in %v, expires in %v (its own config; it does not apply a received lifetime)", k.RekeyTime, k.LifeTime)
	b.ping(ctx, 3)
	// ikegw replaces the pair after 20 s; strongSwan follows.
	k2 := b.waitChildReplaced(ctx, s, k)
	b.ping(ctx, 3)
	if strings.Contains(b.swan.Log(), "error notify") {
		b.fail("strongSwan received an error notify")
	}
	t.Logf("replaced by ikegw: SPIs %s/%s -> %s/%s", k.SPIIn, k.SPIOut, k2.SPIIn, k2.SPIOut)
}
