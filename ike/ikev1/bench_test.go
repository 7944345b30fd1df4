package ikev1_test

// Handshake benchmarks (issue 2 "Benchmark", issue 7 item 1): the
// in-process cost of one Main Mode + Quick Mode between two engines, the
// responder's share of it on its own, and a split of the responder's cost
// into Diffie-Hellman, PRF derivations, CBC and codec.
//
//	go test -run '^$' -bench . -benchmem ./ike/ikev1/
//
// Every benchmark uses fresh engines per exchange (built with the timer
// stopped), so the maps of the engines never grow across iterations.

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ikegw/ike/config"
	"ikegw/ike/ikecrypto"
	"ikegw/ike/ikev1"
	"ikegw/ike/isakmp"
	"ikegw/ike/sa"
)

var (
	benchInitAddr = netip.MustParseAddr("192.0.2.1")
	benchRespAddr = netip.MustParseAddr("198.51.100.2")
	benchNow      = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
)

// benchSuites are the suites of issue 7 item 1, in strongSwan's spelling.
var benchSuites = []struct{ name, ike, esp string }{
	{"ecp256", "aes128-sha256-ecp256", "aes128-sha256"},
	{"modp2048", "aes128-sha256-modp2048", "aes128-sha256"},
}

func benchConn(tb testing.TB, local, remote netip.Addr, ike, esp, lts, rts string) *config.Connection {
	tb.Helper()
	ikeP, err := config.ParseIKEProposal(ike, false)
	if err != nil {
		tb.Fatal(err)
	}
	espP, err := config.ParseESPProposal(esp, false)
	if err != nil {
		tb.Fatal(err)
	}
	return &config.Connection{
		Name: "bench", Local: local, Remote: remote, LocalPort: 500, RemotePort: 500,
		Auth: config.AuthPSK, PSK: config.Secret("bench-psk-0123456789"), Proposals: ikeP,
		IKELifetime: 8 * time.Hour, DPDAction: config.DPDClear,
		Retransmit: config.RetransmitConfig{Timeout: 4 * time.Second, Tries: 5, Base: 1.8},
		Children: []*config.Child{{
			Name: "net", Mode: sa.Tunnel, ESPProposals: espP,
			LocalTS:   []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(lts)}},
			RemoteTS:  []sa.TrafficSelector{{Prefix: netip.MustParsePrefix(rts)}},
			RekeyTime: time.Hour, LifeTime: 66 * time.Minute,
		}},
	}
}

func benchEngines(tb testing.TB, ike, esp string) (ini, resp *ikev1.Engine) {
	tb.Helper()
	ci := benchConn(tb, benchInitAddr, benchRespAddr, ike, esp, "10.1.0.0/24", "10.2.0.0/24")
	cr := benchConn(tb, benchRespAddr, benchInitAddr, ike, esp, "10.2.0.0/24", "10.1.0.0/24")
	var err error
	if ini, err = ikev1.New(ikev1.Config{Connections: []*config.Connection{ci}}); err != nil {
		tb.Fatal(err)
	}
	if resp, err = ikev1.New(ikev1.Config{Connections: []*config.Connection{cr}}); err != nil {
		tb.Fatal(err)
	}
	return ini, resp
}

// exchangeLog is what one Main Mode + Quick Mode put on the wire, in order,
// and the responder's last persisted ISAKMP SA record.
type exchangeLog struct {
	toResp   [][]byte // MM1, MM3, MM5, QM1, QM3
	fromResp [][]byte // MM2, MM4, MM6, QM2
	respIKE  *sa.IKESA
}

// runExchange runs one Main Mode + Quick Mode between fresh engines until
// no packet is left. meter, if not nil, wraps each of the responder's
// HandlePacket calls (to time only those).
func runExchange(tb testing.TB, ini, resp *ikev1.Engine, meter func(func())) exchangeLog {
	type flight struct {
		toResp bool
		p      ikev1.Packet
	}
	var (
		log            exchangeLog
		queue          []flight
		installs       [2]int // initiator, responder
		unexpectedSend bool
	)
	collect := func(acts []ikev1.Action, fromResp bool) {
		for _, a := range acts {
			switch v := a.(type) {
			case ikev1.Send:
				if v.Keepalive {
					continue
				}
				queue = append(queue, flight{toResp: !fromResp, p: v.Packet})
			case ikev1.InstallChild:
				if fromResp {
					installs[1]++
				} else {
					installs[0]++
				}
			case ikev1.Persist:
				if fromResp {
					for _, r := range v.IKE {
						log.respIKE = r
					}
				}
			}
		}
	}
	acts, err := ini.Initiate(benchNow, "bench")
	if err != nil {
		tb.Fatal(err)
	}
	collect(acts, false)
	for steps := 0; len(queue) > 0; steps++ {
		if steps > 20 {
			unexpectedSend = true
			break
		}
		f := queue[0]
		queue = queue[1:]
		in := ikev1.Packet{Local: f.p.Remote, Remote: f.p.Local, Data: f.p.Data}
		if f.toResp {
			log.toResp = append(log.toResp, f.p.Data)
			var acts []ikev1.Action
			if meter != nil {
				meter(func() { acts = resp.HandlePacket(benchNow, in) })
			} else {
				acts = resp.HandlePacket(benchNow, in)
			}
			collect(acts, true)
		} else {
			log.fromResp = append(log.fromResp, f.p.Data)
			collect(ini.HandlePacket(benchNow, in), false)
		}
	}
	if unexpectedSend || installs != [2]int{1, 1} || len(log.toResp) != 5 || len(log.fromResp) != 4 {
		tb.Fatalf("exchange did not complete as MM+QM: installs (initiator, responder) %v, %d messages to and %d from the responder",
			installs, len(log.toResp), len(log.fromResp))
	}
	return log
}

// timerOn runs f with the benchmark timer on (it is off around it).
func timerOn(b *testing.B) func(func()) {
	return func(f func()) {
		b.StartTimer()
		f()
		b.StopTimer()
	}
}

// BenchmarkHandshake measures one complete Main Mode + Quick Mode (PSK,
// no PFS): "pair" is both engines' work, "responder" only the responder's
// five HandlePacket calls (MM1, MM3, MM5, QM1, QM3). -benchmem reports the
// allocations of the timed part, i.e. per exchange.
func BenchmarkHandshake(b *testing.B) {
	for _, s := range benchSuites {
		b.Run(s.name+"/pair", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ini, resp := benchEngines(b, s.ike, s.esp)
				b.StartTimer()
				runExchange(b, ini, resp, nil)
			}
		})
		b.Run(s.name+"/responder", func(b *testing.B) {
			b.ReportAllocs()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				ini, resp := benchEngines(b, s.ike, s.esp)
				runExchange(b, ini, resp, timerOn(b))
			}
		})
	}
}

// respWork is the input of the responder's cryptography in one exchange,
// taken from a real exchange's messages.
type respWork struct {
	group      ikecrypto.Group
	prf        *ikecrypto.Prf
	cipher     *ikecrypto.Cipher
	encKey     []byte
	gxi, gxr   []byte
	ni, nr     []byte // phase 1 nonces
	qni, qnr   []byte // Quick Mode nonces
	ckyI, ckyR []byte
	saiB, idB  []byte
	msgID      uint32
	// ciphertexts and their IVs: MM5, MM6, QM1, QM2, QM3 (the responder
	// decrypts 0, 2, 4 and encrypts 1, 3).
	ct, iv [5][]byte
	// the plaintext payload lists of all nine messages, for the codec
	// split: received (MM1, MM3, MM5, QM1, QM3) and sent (MM2, MM4, MM6, QM2).
	recvHdr  []isakmp.Header
	recvBody [][]byte
	sent     []*isakmp.Message
}

func headerAndBody(tb testing.TB, msg []byte) (isakmp.Header, []byte) {
	tb.Helper()
	h, err := isakmp.ParseHeader(msg)
	if err != nil {
		tb.Fatal(err)
	}
	return h, msg[isakmp.HeaderLen:h.Length]
}

func decodeAt(tb testing.TB, h isakmp.Header, body []byte) isakmp.Decoded {
	tb.Helper()
	d, err := isakmp.DecodePayloads(h.NextPayload, body)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func firstOf[T isakmp.Payload](tb testing.TB, d isakmp.Decoded, what string) (T, []byte) {
	tb.Helper()
	for i, p := range d.Payloads {
		if v, ok := p.(T); ok {
			return v, d.Raw[i]
		}
	}
	var zero T
	tb.Fatalf("no %s payload", what)
	return zero, nil
}

// prepareRespWork runs one exchange and decrypts its messages with the
// responder's keys, so that the split benchmarks work on real sizes.
func prepareRespWork(tb testing.TB, ike, esp string) *respWork {
	ini, resp := benchEngines(tb, ike, esp)
	log := runExchange(tb, ini, resp, nil)
	r := log.respIKE
	if r == nil || len(r.EncKey) == 0 {
		tb.Fatal("the responder persisted no keyed ISAKMP SA")
	}
	w := &respWork{encKey: r.EncKey, ckyI: r.Cookies.I[:], ckyR: r.Cookies.R[:]}
	var err error
	if w.group, err = ikecrypto.GroupByID(r.Proposal.Group); err != nil {
		tb.Fatal(err)
	}
	if w.prf, err = ikecrypto.NewPRF(ikecrypto.HashAlg(r.Proposal.Hash)); err != nil {
		tb.Fatal(err)
	}
	if w.cipher, err = ikecrypto.NewCipher(ikecrypto.EncrAlg(r.Proposal.Encr), int(r.Proposal.KeyLen)); err != nil {
		tb.Fatal(err)
	}
	bs := w.cipher.BlockSize()

	h1, b1 := headerAndBody(tb, log.toResp[0])
	_, saRaw := firstOf[*isakmp.SA](tb, decodeAt(tb, h1, b1), "SA in MM1")
	w.saiB = saRaw[4:]
	h3, b3 := headerAndBody(tb, log.toResp[1])
	d3 := decodeAt(tb, h3, b3)
	ke3, _ := firstOf[*isakmp.KE](tb, d3, "KE in MM3")
	n3, _ := firstOf[*isakmp.Nonce](tb, d3, "nonce in MM3")
	h4, b4 := headerAndBody(tb, log.fromResp[1])
	d4 := decodeAt(tb, h4, b4)
	ke4, _ := firstOf[*isakmp.KE](tb, d4, "KE in MM4")
	n4, _ := firstOf[*isakmp.Nonce](tb, d4, "nonce in MM4")
	w.gxi, w.gxr, w.ni, w.nr = ke3.Data, ke4.Data, n3.Data, n4.Data

	// The encrypted messages in wire order and their IVs (RFC 2409
	// Appendix B): MM5 starts from the phase 1 IV, MM6 from MM5's last
	// block, QM1 from hash(MM6's last block | message ID), and so on.
	enc := [][]byte{log.toResp[2], log.fromResp[2], log.toResp[3], log.fromResp[3], log.toResp[4]}
	iv := ikecrypto.Phase1IV(w.prf, w.gxi, w.gxr, bs)
	hdrs := make([]isakmp.Header, 5)
	plain := make([][]byte, 5)
	for i, m := range enc {
		h, body := headerAndBody(tb, m)
		if i == 2 {
			w.msgID = h.MessageID
			iv = ikecrypto.ExchangeIV(w.prf, iv, h.MessageID, bs)
		}
		w.ct[i], w.iv[i] = body, iv
		pt, err := w.cipher.Decrypt(w.encKey, iv, body)
		if err != nil {
			tb.Fatal(err)
		}
		hdrs[i], plain[i] = h, pt
		iv = body[len(body)-bs:]
	}
	mm5 := decodeAt(tb, hdrs[0], plain[0])
	_, idRaw := firstOf[*isakmp.ID](tb, mm5, "ID in MM5")
	w.idB = idRaw[4:]
	qm1 := decodeAt(tb, hdrs[2], plain[2])
	qn1, _ := firstOf[*isakmp.Nonce](tb, qm1, "nonce in QM1")
	qm2 := decodeAt(tb, hdrs[3], plain[3])
	qn2, _ := firstOf[*isakmp.Nonce](tb, qm2, "nonce in QM2")
	w.qni, w.qnr = qn1.Data, qn2.Data

	// Codec inputs: what the responder decodes (plain messages as they
	// arrive, encrypted ones after decryption) and the payload lists it
	// encodes.
	w.recvHdr = []isakmp.Header{h1, h3, hdrs[0], hdrs[2], hdrs[4]}
	w.recvBody = [][]byte{b1, b3, plain[0], plain[2], plain[4]}
	h2, b2 := headerAndBody(tb, log.fromResp[0])
	for _, m := range []struct {
		h isakmp.Header
		b []byte
	}{{h2, b2}, {h4, b4}, {hdrs[1], plain[1]}, {hdrs[3], plain[3]}} {
		d := decodeAt(tb, m.h, m.b)
		w.sent = append(w.sent, &isakmp.Message{Header: m.h, Payloads: d.Payloads})
	}
	return w
}

// dh is the responder's Diffie-Hellman: one key pair and the shared secret.
func (w *respWork) dh(tb testing.TB) {
	priv, _, err := w.group.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.group.Shared(priv, w.gxi); err != nil {
		tb.Fatal(err)
	}
}

// derive is every PRF computation of a responder in MM + QM without PFS:
// SKEYID, SKEYID_d/a/e, the key, the phase 1 IV, NAT-D (2 checked, 2 sent),
// HASH_I checked, HASH_R sent, the QM IV, HASH(1) checked, HASH(2) sent,
// HASH(3) checked and KEYMAT for both directions (AES-128 + SHA2-256: 48
// bytes each).
func (w *respWork) derive(gxy []byte) {
	p, bs := w.prf, w.cipher.BlockSize()
	skeyid := ikecrypto.SKEYIDPSK(p, []byte("bench-psk-0123456789"), w.ni, w.nr)
	d, a, e := ikecrypto.DeriveSKEYIDs(p, skeyid, gxy, w.ckyI, w.ckyR)
	ikecrypto.ExpandKey(p, e, w.cipher.KeyLen())
	ikecrypto.Phase1IV(p, w.gxi, w.gxr, bs)
	for _, ap := range []netip.AddrPort{netip.AddrPortFrom(benchInitAddr, 500), netip.AddrPortFrom(benchRespAddr, 500)} {
		ikecrypto.NATD(p, w.ckyI, w.ckyR, ap)
		ikecrypto.NATD(p, w.ckyI, w.ckyR, ap)
	}
	ikecrypto.HashI(p, skeyid, w.gxi, w.gxr, w.ckyI, w.ckyR, w.saiB, w.idB)
	ikecrypto.HashR(p, skeyid, w.gxr, w.gxi, w.ckyR, w.ckyI, w.saiB, w.idB)
	ikecrypto.ExchangeIV(p, w.iv[1], w.msgID, bs)
	rest := make([]byte, 200) // QM1 after HASH(1): SA, nonce, IDs
	ikecrypto.QMHash1(p, a, w.msgID, rest)
	ikecrypto.QMHash2(p, a, w.msgID, w.qni, rest)
	ikecrypto.QMHash3(p, a, w.msgID, w.qni, w.qnr)
	var spi [4]byte
	for i := range 2 {
		binary.BigEndian.PutUint32(spi[:], uint32(0xc0000000+i))
		ikecrypto.KEYMAT(p, d, nil, 3, spi[:], w.qni, w.qnr, 48)
	}
}

// cbc is the responder's CBC work: decrypt MM5, QM1, QM3; encrypt MM6, QM2.
func (w *respWork) cbc(tb testing.TB) {
	for i := range w.ct {
		var err error
		if i%2 == 0 {
			_, err = w.cipher.Decrypt(w.encKey, w.iv[i], w.ct[i])
		} else {
			_, err = w.cipher.Encrypt(w.encKey, w.iv[i], w.ct[i])
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// codec decodes the five received messages' payloads and encodes the four
// sent ones.
func (w *respWork) codec(tb testing.TB) {
	for i, h := range w.recvHdr {
		if _, err := isakmp.DecodePayloads(h.NextPayload, w.recvBody[i]); err != nil {
			tb.Fatal(err)
		}
	}
	for _, m := range w.sent {
		if _, err := m.Marshal(); err != nil {
			tb.Fatal(err)
		}
	}
}

// threadCPU is the calling thread's CPU time: unlike wall time it does not
// count the time other processes of a shared machine run instead of us.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// BenchmarkResponderSplit splits the responder's cost of one MM + QM
// exchange into its parts. Every iteration runs a whole exchange between
// fresh engines and then each part once, timing the responder's
// HandlePacket calls and each part in thread CPU time (the goroutine is
// locked to its thread), so the whole and its parts are measured side by
// side and a loaded machine skews them alike. Metrics per exchange:
// resp-cpu-ns (the responder's five HandlePacket calls), dh-cpu-ns (group
// GenerateKey + Shared), prf-cpu-ns (every PRF derivation), cbc-cpu-ns
// (five AES-CBC operations), codec-cpu-ns (decode of the five received,
// encode of the four sent messages) and rest-cpu-ns (resp minus the parts:
// the engine's own bookkeeping).
func BenchmarkResponderSplit(b *testing.B) {
	for _, s := range benchSuites {
		w := prepareRespWork(b, s.ike, s.esp)
		priv, _, err := w.group.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		gxy, err := w.group.Shared(priv, w.gxi)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var resp, dh, prf, cbc, codec time.Duration
			part := func(acc *time.Duration, f func()) {
				t0 := threadCPU()
				f()
				*acc += threadCPU() - t0
			}
			for i := 0; i < b.N; i++ {
				ini, r := benchEngines(b, s.ike, s.esp)
				runExchange(b, ini, r, func(f func()) { part(&resp, f) })
				part(&dh, func() { w.dh(b) })
				part(&prf, func() { w.derive(gxy) })
				part(&cbc, func() { w.cbc(b) })
				part(&codec, func() { w.codec(b) })
			}
			n := float64(b.N)
			b.ReportMetric(float64(resp)/n, "resp-cpu-ns/op")
			b.ReportMetric(float64(dh)/n, "dh-cpu-ns/op")
			b.ReportMetric(float64(prf)/n, "prf-cpu-ns/op")
			b.ReportMetric(float64(cbc)/n, "cbc-cpu-ns/op")
			b.ReportMetric(float64(codec)/n, "codec-cpu-ns/op")
			b.ReportMetric(float64(resp-dh-prf-cbc-codec)/n, "rest-cpu-ns/op")
		})
	}
}

// TestBenchExchange checks that the benchmark harness really runs a
// complete exchange and that the split's inputs decode, for every suite,
// so the benchmarks cannot silently measure a failed handshake.
func TestBenchExchange(t *testing.T) {
	for _, s := range benchSuites {
		t.Run(s.name, func(t *testing.T) {
			w := prepareRespWork(t, s.ike, s.esp)
			if got, want := len(w.gxi), w.group.PublicLen(); got != want {
				t.Errorf("KE in MM3: %d bytes, want %d", got, want)
			}
			if len(w.qni) == 0 || len(w.qnr) == 0 {
				t.Error("Quick Mode nonces missing")
			}
			if len(w.recvBody) != 5 || len(w.sent) != 4 {
				t.Errorf("codec inputs: %d received, %d sent; want 5 and 4", len(w.recvBody), len(w.sent))
			}
			if w.msgID == 0 {
				t.Error("Quick Mode message ID is zero")
			}
			w.codec(t)
			w.cbc(t)
		})
	}
}

// scaleResponder is a responder for any peer: each initiator brings its
// own /32 inside 172.16.0.0/12.
func scaleResponder(tb testing.TB, ike, esp string) *ikev1.Engine {
	tb.Helper()
	c := benchConn(tb, benchRespAddr, netip.Addr{}, ike, esp, "10.99.0.0/24", "172.16.0.0/12")
	c.RemoteID = config.Identity{Type: config.IDAny}
	resp, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{c}})
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}

// scaleInitiator is peer i: source address 10.(i>>16).(i>>8).i+1 and
// selector 172.16.0.0 + i.
func scaleInitiator(tb testing.TB, i int, ike, esp string) *ikev1.Engine {
	tb.Helper()
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i) + 1})
	ts := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
	c := benchConn(tb, src, benchRespAddr, ike, esp, netip.PrefixFrom(ts, 32).String(), "10.99.0.0/24")
	ini, err := ikev1.New(ikev1.Config{Connections: []*config.Connection{c}})
	if err != nil {
		tb.Fatal(err)
	}
	return ini
}

// terminate deletes the initiator's SAs and delivers its DELETEs to the
// responder.
func terminate(tb testing.TB, ini, resp *ikev1.Engine) {
	tb.Helper()
	acts, err := ini.Terminate(benchNow, "bench")
	if err != nil {
		tb.Fatal(err)
	}
	for _, a := range acts {
		if s, ok := a.(ikev1.Send); ok && !s.Keepalive {
			resp.HandlePacket(benchNow, ikev1.Packet{Local: s.Remote, Remote: s.Local, Data: s.Data})
		}
	}
}

// BenchmarkResponderScale is the responder's cost of one more MM + QM
// (ecp256) when it already holds N established tunnels from N distinct
// peers: the per-tunnel cost should not grow with N. Each new tunnel is
// deleted again (untimed) so the responder stays at N. resp-cpu-ns is the
// same in thread CPU time.
func BenchmarkResponderScale(b *testing.B) {
	s := benchSuites[0]
	for _, n := range []int{0, 1000, 4000} {
		b.Run(fmt.Sprintf("%s/established=%d", s.name, n), func(b *testing.B) {
			b.StopTimer()
			resp := scaleResponder(b, s.ike, s.esp)
			for i := range n {
				runExchange(b, scaleInitiator(b, i, s.ike, s.esp), resp, nil)
			}
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpu time.Duration
			meter := func(f func()) {
				b.StartTimer()
				t0 := threadCPU()
				f()
				cpu += threadCPU() - t0
				b.StopTimer()
			}
			for i := 0; i < b.N; i++ {
				ini := scaleInitiator(b, n+i, s.ike, s.esp)
				runExchange(b, ini, resp, meter)
				terminate(b, ini, resp)
			}
			b.ReportMetric(float64(cpu)/float64(b.N), "resp-cpu-ns/op")
			if got := len(resp.ChildSAs()); got != n {
				b.Fatalf("responder holds %d IPsec SA pairs after the run, want %d (the deletes did not work)", got, n)
			}
		})
	}
}
