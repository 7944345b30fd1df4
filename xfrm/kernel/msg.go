package kernel

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Kernel constants not named by the nl package.
const (
	xfrmInf = ^uint64(0)

	modeTransport = 0
	modeTunnel    = 1

	stateAFUnspec = 32 // XFRM_STATE_AF_UNSPEC: the inner family may differ

	policyIn  = 0
	policyOut = 1
	policyFwd = 2

	aeRVal = 2 // XFRM_AE_RVAL
	aeLVal = 4 // XFRM_AE_LVAL

	encapESPInUDP = 2 // UDP_ENCAP_ESPINUDP

	sizeofAeventID    = 48  // struct xfrm_aevent_id
	sizeofUserExpire  = 232 // struct xfrm_user_expire
	sizeofReplayState = nl.SizeofXfrmReplayState
	sizeofLifetimeCur = nl.SizeofXfrmLifetimeCur
)

// attrs accumulates netlink attributes (struct nlattr, 4-byte aligned).
type attrs []byte

func (a attrs) add(typ uint16, v []byte) attrs {
	n := 4 + len(v)
	a = native.AppendUint16(a, uint16(n))
	a = native.AppendUint16(a, typ)
	a = append(a, v...)
	for i := n; i < nlmsgAlign(n); i++ {
		a = append(a, 0)
	}
	return a
}

func xaddr(a netip.Addr) nl.XfrmAddress {
	var x nl.XfrmAddress
	if a.Is4() {
		b := a.As4()
		copy(x[:], b[:])
	} else if a.IsValid() {
		b := a.As16()
		copy(x[:], b[:])
	}
	return x
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func addrFrom(x *nl.XfrmAddress, fam uint16) netip.Addr {
	if fam == unix.AF_INET {
		return netip.AddrFrom4([4]byte(x[:4]))
	}
	return netip.AddrFrom16(*x)
}

// stateSpec is everything one SA needs on the wire.
type stateSpec struct {
	src, dst  netip.Addr
	spi       uint32
	reqid     uint32
	mode      uint8
	window    uint8
	encr      string
	encrKey   []byte
	integ     string
	integKey  []byte
	truncBits uint32
	aead      bool

	encapSport, encapDport uint16 // zero: no UDP encapsulation

	lft    nl.XfrmLifetimeCfg
	replay nl.XfrmReplayState
	ltime  nl.XfrmLifetimeCur
}

// newSA encodes XFRM_MSG_NEWSA: xfrm_usersa_info and the algorithm, encap,
// replay (XFRMA_REPLAY_VAL) and lifetime counter (XFRMA_LTIME_VAL)
// attributes. No XFRMA_SA_PCPU and no mark is ever sent.
func (s *stateSpec) newSA() []byte {
	var info nl.XfrmUsersaInfo
	info.Id.Daddr = xaddr(s.dst)
	info.Id.Spi = nl.Swap32(s.spi)
	info.Id.Proto = unix.IPPROTO_ESP
	info.Saddr = xaddr(s.src)
	info.Family = family(s.dst)
	info.Mode = s.mode
	info.Reqid = s.reqid
	info.ReplayWindow = s.window
	info.Lft = s.lft
	if s.mode == modeTunnel {
		info.Flags = stateAFUnspec
	} else {
		info.Sel.Family = info.Family
	}
	b := append([]byte(nil), info.Serialize()...)
	var a attrs
	if s.aead {
		algo := nl.XfrmAlgoAEAD{AlgKeyLen: uint32(len(s.encrKey) * 8), AlgICVLen: s.truncBits, AlgKey: s.encrKey}
		copy(algo.AlgName[:], s.encr)
		a = a.add(nl.XFRMA_ALG_AEAD, algo.Serialize())
	} else {
		crypt := nl.XfrmAlgo{AlgKeyLen: uint32(len(s.encrKey) * 8), AlgKey: s.encrKey}
		copy(crypt.AlgName[:], s.encr)
		a = a.add(nl.XFRMA_ALG_CRYPT, crypt.Serialize())
		auth := nl.XfrmAlgoAuth{AlgKeyLen: uint32(len(s.integKey) * 8), AlgTruncLen: s.truncBits, AlgKey: s.integKey}
		copy(auth.AlgName[:], s.integ)
		a = a.add(nl.XFRMA_ALG_AUTH_TRUNC, auth.Serialize())
	}
	if s.encapSport != 0 {
		e := nl.XfrmEncapTmpl{EncapType: encapESPInUDP, EncapSport: nl.Swap16(s.encapSport), EncapDport: nl.Swap16(s.encapDport)}
		a = a.add(nl.XFRMA_ENCAP, e.Serialize())
	}
	a = a.add(nl.XFRMA_REPLAY_VAL, s.replay.Serialize())
	a = a.add(nl.XFRMA_LTIME_VAL, s.ltime.Serialize())
	return append(b, a...)
}

// saID identifies one SA as the kernel does: destination, SPI, family,
// protocol (always ESP here).
type saID struct {
	dst netip.Addr
	spi uint32
}

func (id saID) String() string { return fmt.Sprintf("spi=0x%08x dst=%s", id.spi, id.dst) }

// usersaID encodes struct xfrm_usersa_id, the body of GETSA and DELSA. It is
// built here rather than by the library so that no XFRMA_SA_PCPU attribute is
// ever sent (kernels >= 6.13 refuse it on these requests).
func (id saID) usersaID() []byte {
	m := nl.XfrmUsersaId{Daddr: xaddr(id.dst), Spi: nl.Swap32(id.spi), Family: family(id.dst), Proto: unix.IPPROTO_ESP}
	return append([]byte(nil), m.Serialize()...)
}

// aeventID encodes struct xfrm_aevent_id (48 bytes), the body of GETAE and
// NEWAE: xfrm_usersa_id, the source address, flags, reqid.
func (id saID) aeventID(src netip.Addr, flags, reqid uint32) []byte {
	b := id.usersaID()
	sa := xaddr(src)
	b = append(b, sa[:]...)
	b = native.AppendUint32(b, flags)
	b = native.AppendUint32(b, reqid)
	return b
}

// aevent is the decoded answer to GETAE: the replay state and the lifetime
// counters of one SA, and its reqid.
type aevent struct {
	reqid  uint32
	replay nl.XfrmReplayState
	ltime  nl.XfrmLifetimeCur
}

func parseAevent(b []byte) (aevent, error) {
	var ev aevent
	if len(b) < sizeofAeventID {
		return ev, fmt.Errorf("aevent of %d bytes, want at least %d", len(b), sizeofAeventID)
	}
	ev.reqid = native.Uint32(b[44:])
	seen := 0
	err := walkAttrs(b[sizeofAeventID:], func(t uint16, v []byte) error {
		switch t {
		case nl.XFRMA_REPLAY_VAL:
			if len(v) < sizeofReplayState {
				return fmt.Errorf("XFRMA_REPLAY_VAL of %d bytes", len(v))
			}
			ev.replay = *nl.DeserializeXfrmReplayState(v)
			seen |= 1
		case nl.XFRMA_LTIME_VAL:
			if len(v) < sizeofLifetimeCur {
				return fmt.Errorf("XFRMA_LTIME_VAL of %d bytes", len(v))
			}
			ev.ltime = *nl.DeserializeXfrmLifetimeCur(v)
			seen |= 2
		case nl.XFRMA_REPLAY_ESN_VAL:
			return fmt.Errorf("SA uses extended sequence numbers, which this data plane does not handle")
		}
		return nil
	})
	if err == nil && seen != 3 {
		err = fmt.Errorf("aevent without replay state or lifetime counters")
	}
	return ev, err
}

// newAEWith encodes XFRM_MSG_NEWAE setting the replay state and the
// lifetime counters of a live SA (lt whole: the kernel takes its add and
// use times too, so pass what GETAE read).
func (id saID) newAEWith(src netip.Addr, reqid uint32, r nl.XfrmReplayState, lt nl.XfrmLifetimeCur) []byte {
	b := id.aeventID(src, aeRVal|aeLVal, reqid)
	return attrs(b).add(nl.XFRMA_REPLAY_VAL, r.Serialize()).add(nl.XFRMA_LTIME_VAL, lt.Serialize())
}

// newAE encodes XFRM_MSG_NEWAE setting the replay state of a live SA.
func (id saID) newAE(src netip.Addr, reqid uint32, r nl.XfrmReplayState) []byte {
	b := id.aeventID(src, aeRVal, reqid)
	return attrs(b).add(nl.XFRMA_REPLAY_VAL, r.Serialize())
}

func walkAttrs(b []byte, f func(t uint16, v []byte) error) error {
	for len(b) >= 4 {
		l := int(native.Uint16(b))
		if l < 4 || l > len(b) {
			return fmt.Errorf("attribute length %d in %d bytes", l, len(b))
		}
		if err := f(native.Uint16(b[2:])&0x3fff, b[4:l]); err != nil {
			return err
		}
		if nlmsgAlign(l) >= len(b) {
			break
		}
		b = b[nlmsgAlign(l):]
	}
	return nil
}

// stateInfo is what a state dump or GETSA tells about one SA.
type stateInfo struct {
	id     saID
	src    netip.Addr
	reqid  uint32
	proto  uint8
	stats  nl.XfrmStats
	curlft nl.XfrmLifetimeCur
	lft    nl.XfrmLifetimeCfg
	replay *nl.XfrmReplayState
	mark   []byte // XFRMA_MARK as sent by the kernel, nil when none
	encr   string // algorithm names and keys, for tests
	key    []byte
	integ  string
	trunc  uint32
	encap  *nl.XfrmEncapTmpl
	window uint8
	mode   uint8
}

func parseState(b []byte) (*stateInfo, error) {
	if len(b) < nl.SizeofXfrmUsersaInfo {
		return nil, fmt.Errorf("xfrm_usersa_info of %d bytes, want %d", len(b), nl.SizeofXfrmUsersaInfo)
	}
	m := nl.DeserializeXfrmUsersaInfo(b)
	st := &stateInfo{
		id:     saID{dst: addrFrom(&m.Id.Daddr, m.Family), spi: nl.Swap32(m.Id.Spi)},
		src:    addrFrom(&m.Saddr, m.Family),
		reqid:  m.Reqid,
		proto:  m.Id.Proto,
		stats:  m.Stats,
		curlft: m.Curlft,
		lft:    m.Lft,
		window: m.ReplayWindow,
		mode:   m.Mode,
	}
	err := walkAttrs(b[nl.SizeofXfrmUsersaInfo:], func(t uint16, v []byte) error {
		switch t {
		case nl.XFRMA_REPLAY_VAL:
			if len(v) >= sizeofReplayState {
				r := *nl.DeserializeXfrmReplayState(v)
				st.replay = &r
			}
		case nl.XFRMA_MARK:
			st.mark = append([]byte(nil), v...)
		case nl.XFRMA_ALG_AEAD, nl.XFRMA_ALG_CRYPT, nl.XFRMA_ALG_AUTH_TRUNC:
			name, extra, key, err := parseAlgo(v, t != nl.XFRMA_ALG_CRYPT)
			if err != nil {
				return err
			}
			if t == nl.XFRMA_ALG_AUTH_TRUNC {
				st.integ, st.trunc = name, extra
			} else {
				st.encr, st.key = name, key
				if t == nl.XFRMA_ALG_AEAD {
					st.trunc = extra
				}
			}
		case nl.XFRMA_ENCAP:
			if len(v) >= nl.SizeofXfrmEncapTmpl {
				e := *nl.DeserializeXfrmEncapTmpl(v)
				st.encap = &e
			}
		}
		return nil
	})
	return st, err
}

// policySpec is one policy: selector, direction, priority and the single
// ESP template.
type policySpec struct {
	sel      nl.XfrmSelector
	dir      uint8
	priority uint32
	tmpl     tmplSpec
}

// tmplSpec is the part of a policy that points at SAs.
type tmplSpec struct {
	src, dst netip.Addr // tunnel endpoints (zero in transport mode)
	family   uint16
	reqid    uint32
	mode     uint8
}

// policyKey identifies a policy in the kernel: selector and direction (no
// mark, no interface id).
type policyKey struct {
	sel nl.XfrmSelector
	dir uint8
}

func (k policyKey) String() string {
	dirs := [...]string{"in", "out", "fwd"}
	d := fmt.Sprint(k.dir)
	if int(k.dir) < len(dirs) {
		d = dirs[k.dir]
	}
	s := addrFrom(&k.sel.Saddr, k.sel.Family)
	dst := addrFrom(&k.sel.Daddr, k.sel.Family)
	return fmt.Sprintf("policy %s/%d->%s/%d proto %d dir %s", s, k.sel.PrefixlenS, dst, k.sel.PrefixlenD, k.sel.Proto, d)
}

func (p *policySpec) key() policyKey { return policyKey{sel: p.sel, dir: p.dir} }

// encode builds the body of XFRM_MSG_NEWPOLICY / XFRM_MSG_UPDPOLICY.
func (p *policySpec) encode() []byte {
	info := nl.XfrmUserpolicyInfo{Sel: p.sel, Priority: p.priority, Dir: p.dir}
	info.Lft = nl.XfrmLifetimeCfg{SoftByteLimit: xfrmInf, HardByteLimit: xfrmInf, SoftPacketLimit: xfrmInf, HardPacketLimit: xfrmInf}
	b := append([]byte(nil), info.Serialize()...)
	t := nl.XfrmUserTmpl{Family: p.tmpl.family, Reqid: p.tmpl.reqid, Mode: p.tmpl.mode, Aalgos: ^uint32(0), Ealgos: ^uint32(0), Calgos: ^uint32(0)}
	t.XfrmId.Proto = unix.IPPROTO_ESP
	if p.tmpl.mode == modeTunnel {
		t.XfrmId.Daddr = xaddr(p.tmpl.dst)
		t.Saddr = xaddr(p.tmpl.src)
	}
	return attrs(b).add(nl.XFRMA_TMPL, t.Serialize())
}

// encodeID builds the body of XFRM_MSG_GETPOLICY / XFRM_MSG_DELPOLICY.
func (k policyKey) encodeID() []byte {
	id := nl.XfrmUserpolicyId{Sel: k.sel, Dir: k.dir}
	return append([]byte(nil), id.Serialize()...)
}

// policyInfo is what a policy dump or GETPOLICY tells: its key and the
// reqids of its templates.
type policyInfo struct {
	key    policyKey
	reqids []uint32
	mark   []byte
}

func parsePolicy(b []byte) (*policyInfo, error) {
	if len(b) < nl.SizeofXfrmUserpolicyInfo {
		return nil, fmt.Errorf("xfrm_userpolicy_info of %d bytes, want %d", len(b), nl.SizeofXfrmUserpolicyInfo)
	}
	m := nl.DeserializeXfrmUserpolicyInfo(b)
	p := &policyInfo{key: policyKey{sel: m.Sel, dir: m.Dir}}
	err := walkAttrs(b[nl.SizeofXfrmUserpolicyInfo:], func(t uint16, v []byte) error {
		switch t {
		case nl.XFRMA_TMPL:
			for len(v) >= nl.SizeofXfrmUserTmpl {
				p.reqids = append(p.reqids, nl.DeserializeXfrmUserTmpl(v).Reqid)
				v = v[nl.SizeofXfrmUserTmpl:]
			}
		case nl.XFRMA_MARK:
			p.mark = append([]byte(nil), v...)
		}
		return nil
	})
	return p, err
}

// userExpire is a decoded XFRM_MSG_EXPIRE.
type userExpire struct {
	id        saID
	hard      bool
	bytes     uint64
	softBytes uint64
	hardBytes uint64
	reqid     uint32
}

func parseExpire(b []byte) (userExpire, error) {
	if len(b) < sizeofUserExpire {
		return userExpire{}, fmt.Errorf("xfrm_user_expire of %d bytes, want %d", len(b), sizeofUserExpire)
	}
	m := nl.DeserializeXfrmUsersaInfo(b)
	return userExpire{
		id:        saID{dst: addrFrom(&m.Id.Daddr, m.Family), spi: nl.Swap32(m.Id.Spi)},
		hard:      b[nl.SizeofXfrmUsersaInfo] != 0,
		bytes:     m.Curlft.Bytes,
		softBytes: m.Lft.SoftByteLimit,
		hardBytes: m.Lft.HardByteLimit,
		reqid:     m.Reqid,
	}, nil
}

// selector builds the kernel selector for traffic from src to dst.
func selector(src, dst netip.Prefix, proto uint8, sport, dport uint16) nl.XfrmSelector {
	var s nl.XfrmSelector
	s.Family = family(src.Addr())
	s.Saddr = xaddr(src.Addr())
	s.Daddr = xaddr(dst.Addr())
	s.PrefixlenS = uint8(src.Bits())
	s.PrefixlenD = uint8(dst.Bits())
	s.Proto = proto
	if sport != 0 {
		s.Sport, s.SportMask = nl.Swap16(sport), 0xffff
	}
	if dport != 0 {
		s.Dport, s.DportMask = nl.Swap16(dport), 0xffff
	}
	return s
}

// parseAlgo decodes struct xfrm_algo (name, key length in bits, key) or,
// with extra, xfrm_algo_auth / xfrm_algo_aead (a truncation or ICV length
// in bits before the key). The key is copied.
func parseAlgo(v []byte, extra bool) (name string, x uint32, key []byte, err error) {
	hdr := 68
	if extra {
		hdr = 72
	}
	if len(v) < hdr {
		return "", 0, nil, fmt.Errorf("algorithm attribute of %d bytes, want at least %d", len(v), hdr)
	}
	bits := native.Uint32(v[64:])
	if extra {
		x = native.Uint32(v[68:])
	}
	n := int(bits / 8)
	if bits%8 != 0 || n > len(v)-hdr {
		return "", 0, nil, fmt.Errorf("algorithm key of %d bits in %d bytes", bits, len(v)-hdr)
	}
	return cstring(v[:64]), x, append([]byte(nil), v[hdr:hdr+n]...), nil
}

// cstring is the text before the first NUL (all of b when there is none).
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
