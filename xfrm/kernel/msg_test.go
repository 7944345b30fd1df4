package kernel

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"ikegw/ike/sa"
	"ikegw/xfrm"
)

func TestAeventIDLayout(t *testing.T) {
	id := saID{dst: netip.MustParseAddr("192.0.2.1"), spi: 0xc0010203}
	b := id.aeventID(netip.MustParseAddr("192.0.2.2"), aeRVal|aeLVal, 0x11223344)
	if len(b) != sizeofAeventID {
		t.Fatalf("xfrm_aevent_id is %d bytes, want 48", len(b))
	}
	checks := []struct {
		name string
		off  int
		want []byte
	}{
		{"daddr", 0, []byte{192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"spi (big endian)", 16, []byte{0xc0, 0x01, 0x02, 0x03}},
		{"family", 20, native.AppendUint16(nil, unix.AF_INET)},
		{"proto", 22, []byte{50}},
		{"saddr", 24, []byte{192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"flags", 40, native.AppendUint32(nil, 6)},
		{"reqid", 44, native.AppendUint32(nil, 0x11223344)},
	}
	for _, c := range checks {
		if got := b[c.off : c.off+len(c.want)]; !bytes.Equal(got, c.want) {
			t.Errorf("%s at %d: % x, want % x", c.name, c.off, got, c.want)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := &stateSpec{src: netip.MustParseAddr("2001:db8::1"), dst: netip.MustParseAddr("2001:db8::2"), spi: 0x1234, reqid: 77,
		mode: modeTunnel, window: 32, encr: sa.EncrAESCBC, encrKey: bytes.Repeat([]byte{1}, 32), integ: sa.IntegSHA384,
		integKey: bytes.Repeat([]byte{2}, 48), truncBits: 192, encapSport: 4500, encapDport: 1234}
	s.replay = nl.XfrmReplayState{OSeq: 9, Seq: 8, BitMap: 7}
	s.ltime = nl.XfrmLifetimeCur{Bytes: 100, Packets: 2, AddTime: 1700000000}
	s.lft.HardByteLimit = 5000
	st, err := parseState(s.newSA())
	if err != nil {
		t.Fatal(err)
	}
	if st.id != (saID{s.dst, s.spi}) || st.src != s.src || st.reqid != 77 || st.window != 32 || st.mode != modeTunnel {
		t.Errorf("header: %+v", st)
	}
	if st.encr != s.encr || !bytes.Equal(st.key, s.encrKey) || st.integ != s.integ || st.trunc != 192 {
		t.Errorf("algorithms: %q %q trunc %d", st.encr, st.integ, st.trunc)
	}
	if st.replay == nil || *st.replay != s.replay {
		t.Errorf("replay %+v, want %+v", st.replay, s.replay)
	}
	if st.encap == nil || nl.Swap16(st.encap.EncapSport) != 4500 || nl.Swap16(st.encap.EncapDport) != 1234 || st.encap.EncapType != encapESPInUDP {
		t.Errorf("encap %+v", st.encap)
	}
	if st.lft.HardByteLimit != 5000 {
		t.Errorf("lifetime %+v", st.lft)
	}
	// GCM goes as an AEAD with its ICV length.
	g := &stateSpec{src: s.src, dst: s.dst, spi: 1, encr: sa.EncrAESGCM, encrKey: make([]byte, 36), truncBits: 128, aead: true}
	if st, err := parseState(g.newSA()); err != nil || st.encr != sa.EncrAESGCM || len(st.key) != 36 || st.trunc != 128 || st.integ != "" {
		t.Errorf("gcm: %+v, %v", st, err)
	}
}

func TestPolicyRoundTrip(t *testing.T) {
	p := policySpec{sel: selector(netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/16"), 6, 0, 443),
		dir: policyOut, priority: 100,
		tmpl: tmplSpec{src: netip.MustParseAddr("192.0.2.1"), dst: netip.MustParseAddr("192.0.2.2"), family: unix.AF_INET, reqid: 42, mode: modeTunnel}}
	pi, err := parsePolicy(p.encode())
	if err != nil {
		t.Fatal(err)
	}
	if pi.key != p.key() || len(pi.reqids) != 1 || pi.reqids[0] != 42 || pi.mark != nil {
		t.Errorf("parsed %+v", pi)
	}
	if got := p.key().String(); got != "policy 10.1.0.0/24->10.2.0.0/16 proto 6 dir out" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseAck(t *testing.T) {
	// An extended ack: error, the capped request header, a message TLV.
	code := -int32(unix.EPROTONOSUPPORT)
	b := native.AppendUint32(nil, uint32(code))
	b = append(b, make([]byte, unix.NLMSG_HDRLEN)...)
	b = attrs(b).add(unix.NLMSGERR_ATTR_MSG, []byte("Requested type not found\x00"))
	errno, msg := parseAck(unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS, b)
	if errno != unix.EPROTONOSUPPORT || msg != "Requested type not found" {
		t.Errorf("parseAck = %v, %q", errno, msg)
	}
	if errno, msg := parseAck(0, native.AppendUint32(nil, 0)); errno != 0 || msg != "" {
		t.Errorf("plain ack = %v, %q", errno, msg)
	}
	if errno, _ := parseAck(0, []byte{1}); errno != unix.EBADMSG {
		t.Errorf("short ack = %v, want EBADMSG", errno)
	}
	err := error(&KernelError{Op: "add SA", Errno: unix.EEXIST, Msg: "x"})
	if !errors.Is(err, syscall.EEXIST) || !strings.Contains(err.Error(), `add SA: file exists (kernel: "x")`) {
		t.Errorf("KernelError: %v", err)
	}
}

func TestBitmapLayout(t *testing.T) {
	if got := restoreBitmap(sa.Counters{InSeq: 100}); got != 0xffffffff {
		t.Errorf("no bitmap restores %#x, want every position received", got)
	}
	if got := restoreBitmap(sa.Counters{}); got != 0 {
		t.Errorf("nothing received restores %#x", got)
	}
	if got := restoreBitmap(sa.Counters{InSeq: 100, ReplayBitmap: []uint64{0xabcdef0012345678, 1}}); got != 0x12345678 {
		t.Errorf("restore keeps %#x, want the low 32 bits", got)
	}
	if got := exportBitmap(100, 0x5); len(got) != 1 || got[0] != 0xffffffff00000005 {
		t.Errorf("export = %#x", got)
	}
	if got := exportBitmap(0, 0); got != nil {
		t.Errorf("export of nothing received = %#x", got)
	}
}

func testPlane(t *testing.T) *DataPlane {
	d := &DataPlane{}
	if err := d.cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPrepare(t *testing.T) {
	d := testPlane(t)
	good, _ := mirrored(suites[0], 0x1000, 0x1001, addrA, addrB, tsA, tsB, 1)
	good.LocalTS = append(good.LocalTS, sa.TrafficSelector{Prefix: netip.MustParsePrefix("10.3.0.1/32")})
	p, err := d.prepare(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.policies) != 6 || p.reqid != DefaultReqidBase+1 {
		t.Errorf("%d policies, reqid %d; want 6 (2 local x 1 remote x in/out/fwd) and %d", len(p.policies), p.reqid, DefaultReqidBase+1)
	}
	// More specific selectors win (smaller priority number).
	if p.policies[3].priority >= p.policies[0].priority {
		t.Errorf("/32 policy priority %d not stronger than /24 policy %d", p.policies[3].priority, p.policies[0].priority)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *sa.ChildSA)
		want error
	}{
		{"reqid out of range", func(c *sa.ChildSA) { c.Reqid = DefaultReqidSpan }, xfrm.ErrUnsupported},
		{"sequence needs ESN", func(c *sa.ChildSA) { c.Counters.OutSeq = 1 << 32 }, xfrm.ErrUnsupported},
		{"protocols differ", func(c *sa.ChildSA) { c.LocalTS[0].Protocol, c.RemoteTS[0].Protocol = 6, 17 }, xfrm.ErrUnsupported},
		{"families never meet", func(c *sa.ChildSA) {
			c.LocalTS = []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("2001:db8::/64")}}
		}, xfrm.ErrUnsupported},
		{"invalid", func(c *sa.ChildSA) { c.In.EncrKey = c.In.EncrKey[:3] }, xfrm.ErrInvalidChild},
	} {
		c := cloneChild(good)
		tc.mod(c)
		if _, err := d.prepare(c); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), string(c.In.EncrKey)) && len(c.In.EncrKey) > 0 {
			t.Errorf("%s: error carries key material", tc.name)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ReqidBase: 0, ReqidSpan: 5}, "ReqidBase 0"},
		{Config{ReqidBase: 0xffffff00, ReqidSpan: 0x1000}, "overflows"},
		{Config{ReplayWindow: 64}, "ReplayWindow 64"},
		{Config{PolicyPriority: 10}, "PolicyPriority 10"},
		{Config{Window: -1}, "Window -1"},
	} {
		err := tc.cfg.setDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error about %q", tc.cfg, err, tc.want)
		}
	}
}

func FuzzDecoders(f *testing.F) {
	s := &stateSpec{src: addrA, dst: addrB, spi: 0x1234, encr: sa.EncrAESCBC, encrKey: make([]byte, 16), integ: sa.IntegSHA1, integKey: make([]byte, 20), encapSport: 1, encapDport: 2}
	f.Add(s.newSA())
	p := policySpec{sel: selector(tsA, tsB, 0, 0, 0), tmpl: tmplSpec{reqid: 1}}
	f.Add(p.encode())
	ae := saID{addrA, 1}.aeventID(addrB, 0, 0)
	ae = attrs(ae).add(nl.XFRMA_REPLAY_VAL, make([]byte, 12)).add(nl.XFRMA_LTIME_VAL, make([]byte, 32))
	f.Add(ae)
	f.Add(make([]byte, sizeofUserExpire))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseState(b)
		_, _ = parsePolicy(b)
		_, _ = parseAevent(b)
		_, _ = parseExpire(b)
		if len(b) > 0 {
			_, _ = parseAck(uint16(b[0])<<8, b)
		}
		_, _, _, _ = parseAlgo(b, len(b)%2 == 0)
	})
}
