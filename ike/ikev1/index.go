package ikev1

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"

	"ikegw/ike/sa"
)

// The engine's SAs are reached through indexes so that the work of one
// exchange does not grow with the number of established tunnels (a linear
// scan per message made each exchange cost 0.14 ms with no tunnels and
// 0.78 ms with 4,000: BenchmarkResponderScale).
type index struct {
	halfByI    map[[8]byte]*ikeSA                    // responder SAs by initiator cookie
	ikesByPeer map[netip.Addr]map[[16]byte]*ikeSA    // by remote address
	kidsByPeer map[netip.Addr]map[uint32]*sa.ChildSA // by outbound destination
	kidsBySel  map[string]map[uint32]*sa.ChildSA     // by connection, child and selectors (reqidKey)
	reqidOf    map[string]uint32                     // by connection, child and selectors
	reqidRefs  map[uint32]int
	freeReqids []uint32
	nextReqid  uint32
}

func newIndex() index {
	return index{
		halfByI:    map[[8]byte]*ikeSA{},
		ikesByPeer: map[netip.Addr]map[[16]byte]*ikeSA{},
		kidsByPeer: map[netip.Addr]map[uint32]*sa.ChildSA{},
		kidsBySel:  map[string]map[uint32]*sa.ChildSA{},
		reqidOf:    map[string]uint32{},
		reqidRefs:  map[uint32]int{},
		nextReqid:  1,
	}
}

func peerAddr(ap netip.AddrPort) netip.Addr { return ap.Addr().Unmap() }

// putIKE adds (or re-adds under its current cookies and address) an SA.
func (e *Engine) putIKE(s *ikeSA) {
	e.ikes[s.key()] = s
	a := peerAddr(s.rec.Remote)
	s.idxAddr = a
	m := e.idx.ikesByPeer[a]
	if m == nil {
		m = map[[16]byte]*ikeSA{}
		e.idx.ikesByPeer[a] = m
	}
	m[s.key()] = s
	if s.rec.Role == sa.Responder {
		e.idx.halfByI[s.rec.Cookies.I] = s
	}
}

// dropIKE removes an SA from the map and the indexes.
func (e *Engine) dropIKE(s *ikeSA) {
	k := s.key()
	if e.ikes[k] == s {
		delete(e.ikes, k)
	}
	if m := e.idx.ikesByPeer[s.idxAddr]; m != nil && m[k] == s {
		delete(m, k)
		if len(m) == 0 {
			delete(e.idx.ikesByPeer, s.idxAddr)
		}
	}
	if e.idx.halfByI[s.rec.Cookies.I] == s {
		delete(e.idx.halfByI, s.rec.Cookies.I)
	}
}

// peerIKEs returns the SAs with a peer (do not modify the map).
func (e *Engine) peerIKEs(a netip.Addr) map[[16]byte]*ikeSA { return e.idx.ikesByPeer[a.Unmap()] }

func nameKey(conn, child string) string { return conn + "\x00" + child }

func reqidKey(conn, child string, l, r sa.TrafficSelector) string {
	return nameKey(conn, child) + "\x00" + prefixString(l) + "\x00" + prefixString(r)
}

func childReqidKey(c *sa.ChildSA) string {
	var l, r sa.TrafficSelector
	if len(c.LocalTS) > 0 {
		l = c.LocalTS[0]
	}
	if len(c.RemoteTS) > 0 {
		r = c.RemoteTS[0]
	}
	return reqidKey(c.Connection, c.Child, l, r)
}

// putChild adds a pair to the map and the indexes.
func (e *Engine) putChild(c *sa.ChildSA) {
	if old := e.children[c.In.SPI]; old != nil {
		e.dropChild(old)
	}
	e.children[c.In.SPI] = c
	a := c.Out.Dst.Unmap()
	m := e.idx.kidsByPeer[a]
	if m == nil {
		m = map[uint32]*sa.ChildSA{}
		e.idx.kidsByPeer[a] = m
	}
	m[c.In.SPI] = c
	nk := childReqidKey(c)
	n := e.idx.kidsBySel[nk]
	if n == nil {
		n = map[uint32]*sa.ChildSA{}
		e.idx.kidsBySel[nk] = n
	}
	n[c.In.SPI] = c
	e.idx.reqidRefs[c.Reqid]++
	e.idx.reqidOf[childReqidKey(c)] = c.Reqid
	if c.Reqid >= e.idx.nextReqid {
		e.idx.nextReqid = c.Reqid + 1
	}
}

// dropChild removes a pair from the map and the indexes; its reqid is
// reused once no pair holds it.
func (e *Engine) dropChild(c *sa.ChildSA) {
	if e.children[c.In.SPI] != c {
		return
	}
	delete(e.children, c.In.SPI)
	a := c.Out.Dst.Unmap()
	if m := e.idx.kidsByPeer[a]; m != nil {
		delete(m, c.In.SPI)
		if len(m) == 0 {
			delete(e.idx.kidsByPeer, a)
		}
	}
	nk := childReqidKey(c)
	if n := e.idx.kidsBySel[nk]; n != nil {
		delete(n, c.In.SPI)
		if len(n) == 0 {
			delete(e.idx.kidsBySel, nk)
		}
	}
	e.idx.reqidRefs[c.Reqid]--
	if e.idx.reqidRefs[c.Reqid] <= 0 {
		delete(e.idx.reqidRefs, c.Reqid)
		if rk := childReqidKey(c); e.idx.reqidOf[rk] == c.Reqid {
			delete(e.idx.reqidOf, rk)
		}
		e.idx.freeReqids = append(e.idx.freeReqids, c.Reqid)
	}
}

// reqidFor returns the reqid of a child's policies: the one its existing
// pairs use, else a free one (reused after its last pair is gone, so the
// reqids stay in a small range: the kernel data plane owns a fixed span).
func (e *Engine) reqidFor(conn, child string, l, r sa.TrafficSelector) uint32 {
	if id, ok := e.idx.reqidOf[reqidKey(conn, child, l, r)]; ok {
		return id
	}
	for len(e.idx.freeReqids) > 0 {
		id := e.idx.freeReqids[len(e.idx.freeReqids)-1]
		e.idx.freeReqids = e.idx.freeReqids[:len(e.idx.freeReqids)-1]
		if e.idx.reqidRefs[id] == 0 {
			return id
		}
	}
	id := e.idx.nextReqid
	e.idx.nextReqid++
	return id
}

// peerChildren returns a snapshot of the pairs with a peer, in SPI order
// (callers may delete while iterating).
func (e *Engine) peerChildren(a netip.Addr) []*sa.ChildSA {
	m := e.idx.kidsByPeer[a.Unmap()]
	out := make([]*sa.ChildSA, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y *sa.ChildSA) int { return cmp.Compare(x.In.SPI, y.In.SPI) })
	return out
}

// peerIKEList returns a snapshot of the SAs with a peer, in cookie order.
func (e *Engine) peerIKEList(a netip.Addr) []*ikeSA {
	m := e.idx.ikesByPeer[a.Unmap()]
	out := make([]*ikeSA, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y *ikeSA) int {
		kx, ky := x.key(), y.key()
		return bytes.Compare(kx[:], ky[:])
	})
	return out
}
