package isakmp

import (
	"encoding/binary"
	"net/netip"
)

// genericLen is the size of the generic payload header (RFC 2408 §3.2).
const genericLen = 4

// decoder walks one buffer. base is the offset of buf[0] within the message,
// so that errors name message offsets. If rsv is non-nil, the message
// offsets of every reserved byte are appended to it (tests use this to check
// exact round trips modulo reserved bytes).
type decoder struct {
	buf  []byte
	base int
	rsv  *[]int
}

func (d *decoder) reserved(off, n int) {
	if d.rsv != nil {
		for i := 0; i < n; i++ {
			*d.rsv = append(*d.rsv, d.base+off+i)
		}
	}
}

// DecodePayloads decodes the payload chain in b, starting with a payload of
// type first and following each Next Payload field until one is zero.
// Offsets in errors are relative to b. Payloads of types this package does
// not model are returned as *Unknown. Trailing bytes after the last payload
// are not examined: Decoded.Len says how many bytes the chain used.
//
// The returned payloads and Raw slices share one copy of b; b itself is not
// retained.
func DecodePayloads(first PayloadType, b []byte) (Decoded, error) {
	return decodePayloads(first, b, 0, nil)
}

func decodePayloads(first PayloadType, b []byte, base int, rsv *[]int) (Decoded, error) {
	d := decoder{buf: append([]byte(nil), b...), base: base, rsv: rsv}
	var out Decoded
	if first != PayloadNone {
		out.Payloads = make([]Payload, 0, 8)
		out.Raw = make([][]byte, 0, 8)
	}
	cur := first
	off := 0
	for cur != PayloadNone {
		if len(out.Payloads) == MaxPayloads {
			return Decoded{}, errf(cur, base+off, ErrTooMany, "more than %d payloads", MaxPayloads)
		}
		rest := d.buf[off:]
		if len(rest) < genericLen {
			return Decoded{}, errf(cur, base+off, ErrShort, "%d bytes left, generic header needs %d", len(rest), genericLen)
		}
		plen := int(binary.BigEndian.Uint16(rest[2:4]))
		if plen < genericLen {
			return Decoded{}, errf(cur, base+off, ErrBadLength, "payload length %d < %d", plen, genericLen)
		}
		if plen > len(rest) {
			return Decoded{}, errf(cur, base+off, ErrShort, "payload length %d > %d bytes left", plen, len(rest))
		}
		d.reserved(off+1, 1)
		raw := rest[:plen:plen]
		p, err := d.payload(cur, raw[genericLen:], off+genericLen)
		if err != nil {
			return Decoded{}, err
		}
		out.Payloads = append(out.Payloads, p)
		out.Raw = append(out.Raw, raw)
		cur = PayloadType(rest[0])
		off += plen
	}
	out.Len = off
	return out, nil
}

// payload decodes one payload body of type t located at off within d.buf.
func (d *decoder) payload(t PayloadType, body []byte, off int) (Payload, error) {
	at := d.base + off - genericLen // errors name the payload's start
	switch t {
	case PayloadSA:
		return d.sa(body, off)
	case PayloadProposal, PayloadTransform:
		return nil, errf(t, at, ErrBadPayload, "%s payload outside an SA payload", t)
	case PayloadKE:
		return &KE{Data: body}, nil
	case PayloadID:
		if len(body) < 4 {
			return nil, errf(t, at, ErrShort, "body %d bytes, ID needs at least 4", len(body))
		}
		return &ID{
			IDType:   IDType(body[0]),
			Protocol: body[1],
			Port:     binary.BigEndian.Uint16(body[2:4]),
			Data:     body[4:],
		}, nil
	case PayloadCert:
		if len(body) < 1 {
			return nil, errf(t, at, ErrShort, "no certificate encoding byte")
		}
		return &Cert{Encoding: body[0], Data: body[1:]}, nil
	case PayloadCR:
		if len(body) < 1 {
			return nil, errf(t, at, ErrShort, "no certificate encoding byte")
		}
		return &CertRequest{Encoding: body[0], Authority: body[1:]}, nil
	case PayloadHash:
		return &Hash{Data: body}, nil
	case PayloadSig:
		return &Signature{Data: body}, nil
	case PayloadNonce:
		return &Nonce{Data: body}, nil
	case PayloadNotify:
		if len(body) < 8 {
			return nil, errf(t, at, ErrShort, "body %d bytes, notify needs at least 8", len(body))
		}
		spiSize := int(body[5])
		if 8+spiSize > len(body) {
			return nil, errf(t, at, ErrShort, "SPI size %d exceeds the %d bytes left", spiSize, len(body)-8)
		}
		return &Notify{
			DOI:        binary.BigEndian.Uint32(body[0:4]),
			Protocol:   ProtocolID(body[4]),
			NotifyType: NotifyType(binary.BigEndian.Uint16(body[6:8])),
			SPI:        body[8 : 8+spiSize : 8+spiSize],
			Data:       body[8+spiSize:],
		}, nil
	case PayloadDelete:
		if len(body) < 8 {
			return nil, errf(t, at, ErrShort, "body %d bytes, delete needs at least 8", len(body))
		}
		spiSize := int(body[5])
		n := int(binary.BigEndian.Uint16(body[6:8]))
		if n == 0 {
			return nil, errf(t, at, ErrBadPayload, "delete names no SPI")
		}
		if len(body)-8 != n*spiSize {
			return nil, errf(t, at, ErrBadLength, "%d SPIs of %d bytes need %d bytes, body has %d", n, spiSize, n*spiSize, len(body)-8)
		}
		del := &Delete{
			DOI:      binary.BigEndian.Uint32(body[0:4]),
			Protocol: ProtocolID(body[4]),
			SPIs:     make([][]byte, n),
		}
		for i := range del.SPIs {
			s := 8 + i*spiSize
			del.SPIs[i] = body[s : s+spiSize : s+spiSize]
		}
		return del, nil
	case PayloadVendorID:
		return &VendorID{Data: body}, nil
	case PayloadNATD, PayloadNATDDraft:
		return &NATD{Hash: body, Draft: t == PayloadNATDDraft}, nil
	case PayloadNATOA, PayloadNATOADraft:
		if len(body) < 4 {
			return nil, errf(t, at, ErrShort, "body %d bytes, NAT-OA needs at least 4", len(body))
		}
		oa := &NATOA{IDType: IDType(body[0]), Draft: t == PayloadNATOADraft}
		addr := body[4:]
		switch {
		case oa.IDType == IDIPv4Addr && len(addr) == 4:
			oa.Addr = netip.AddrFrom4([4]byte(addr))
		case oa.IDType == IDIPv6Addr && len(addr) == 16:
			oa.Addr = netip.AddrFrom16([16]byte(addr))
		default:
			return nil, errf(t, at, ErrBadPayload, "ID type %s with %d address bytes", oa.IDType, len(addr))
		}
		d.reserved(off+1, 3)
		return oa, nil
	}
	return &Unknown{PayloadType: t, Data: body}, nil
}

// sa decodes an SA payload body located at off within d.buf.
func (d *decoder) sa(body []byte, off int) (*SA, error) {
	at := d.base + off - genericLen
	if len(body) < 8 {
		return nil, errf(PayloadSA, at, ErrShort, "body %d bytes, SA needs at least 8", len(body))
	}
	sa := &SA{
		DOI:       binary.BigEndian.Uint32(body[0:4]),
		Situation: binary.BigEndian.Uint32(body[4:8]),
	}
	p := 8
	if p == len(body) {
		return nil, errf(PayloadSA, at, ErrBadPayload, "SA payload has no proposal")
	}
	for p < len(body) {
		pat := d.base + off + p
		if len(sa.Proposals) == MaxPayloads {
			return nil, errf(PayloadProposal, pat, ErrTooMany, "more than %d proposals", MaxPayloads)
		}
		rest := body[p:]
		if len(rest) < 8 {
			return nil, errf(PayloadProposal, pat, ErrShort, "%d bytes left, proposal needs at least 8", len(rest))
		}
		plen := int(binary.BigEndian.Uint16(rest[2:4]))
		if plen < 8 || plen > len(rest) {
			return nil, errf(PayloadProposal, pat, ErrBadLength, "proposal length %d, %d bytes left", plen, len(rest))
		}
		last := p+plen == len(body)
		switch next := PayloadType(rest[0]); {
		case last && next != PayloadNone:
			return nil, errf(PayloadProposal, pat, ErrBadPayload, "last proposal has next payload %s, want NONE", next)
		case !last && next != PayloadProposal:
			return nil, errf(PayloadProposal, pat, ErrBadPayload, "proposal followed by %d more bytes has next payload %s, want PROPOSAL", len(body)-p-plen, next)
		}
		d.reserved(off+p+1, 1)
		prop, err := d.proposal(rest[:plen], off+p)
		if err != nil {
			return nil, err
		}
		sa.Proposals = append(sa.Proposals, prop)
		p += plen
	}
	return sa, nil
}

// proposal decodes a proposal payload (generic header included) located at
// off within d.buf.
func (d *decoder) proposal(b []byte, off int) (Proposal, error) {
	at := d.base + off
	prop := Proposal{Number: b[4], Protocol: ProtocolID(b[5])}
	spiSize := int(b[6])
	count := int(b[7])
	if 8+spiSize > len(b) {
		return prop, errf(PayloadProposal, at, ErrShort, "SPI size %d exceeds the %d bytes left", spiSize, len(b)-8)
	}
	prop.SPI = b[8 : 8+spiSize : 8+spiSize]
	if count == 0 {
		return prop, errf(PayloadProposal, at, ErrBadPayload, "proposal %d has no transform", prop.Number)
	}
	if count > MaxPayloads {
		return prop, errf(PayloadProposal, at, ErrTooMany, "%d transforms, at most %d", count, MaxPayloads)
	}
	prop.Transforms = make([]Transform, 0, count)
	p := 8 + spiSize
	for i := 0; i < count; i++ {
		tat := at + p
		rest := b[p:]
		if len(rest) < 8 {
			return prop, errf(PayloadTransform, tat, ErrShort, "transform %d of %d: %d bytes left, needs at least 8", i+1, count, len(rest))
		}
		tlen := int(binary.BigEndian.Uint16(rest[2:4]))
		if tlen < 8 || tlen > len(rest) {
			return prop, errf(PayloadTransform, tat, ErrBadLength, "transform length %d, %d bytes left", tlen, len(rest))
		}
		want := PayloadTransform
		if i == count-1 {
			want = PayloadNone
		}
		if next := PayloadType(rest[0]); next != want {
			return prop, errf(PayloadTransform, tat, ErrBadPayload, "transform %d of %d has next payload %s, want %s", i+1, count, next, want)
		}
		d.reserved(off+p+1, 1)
		d.reserved(off+p+6, 2)
		tr, err := d.transform(rest[:tlen], off+p)
		if err != nil {
			return prop, err
		}
		prop.Transforms = append(prop.Transforms, tr)
		p += tlen
	}
	if p != len(b) {
		return prop, errf(PayloadProposal, at, ErrBadLength, "%d bytes after the %d transforms the proposal announces", len(b)-p, count)
	}
	return prop, nil
}

// transform decodes a transform payload (generic header included) located
// at off within d.buf.
func (d *decoder) transform(b []byte, off int) (Transform, error) {
	at := d.base + off
	tr := Transform{Number: b[4], ID: b[5]}
	p := 8
	for p < len(b) {
		if len(tr.Attributes) == MaxPayloads {
			return tr, errf(PayloadTransform, at, ErrTooMany, "more than %d attributes", MaxPayloads)
		}
		rest := b[p:]
		if len(rest) < 4 {
			return tr, errf(PayloadTransform, at+p, ErrShort, "attribute: %d bytes left, needs at least 4", len(rest))
		}
		typ := binary.BigEndian.Uint16(rest[0:2])
		v := binary.BigEndian.Uint16(rest[2:4])
		a := Attribute{Type: typ & 0x7fff, Basic: typ&0x8000 != 0}
		if a.Basic {
			a.Value = v
			p += 4
		} else {
			n := int(v)
			if 4+n > len(rest) {
				return tr, errf(PayloadTransform, at+p, ErrShort, "attribute type %d: length %d, %d bytes left", a.Type, n, len(rest)-4)
			}
			a.Data = rest[4 : 4+n : 4+n]
			p += 4 + n
		}
		tr.Attributes = append(tr.Attributes, a)
	}
	return tr, nil
}

// Uint returns the value of a basic attribute, or of a variable attribute
// of 1 to 8 bytes read as a big-endian number. ok is false otherwise.
func (a Attribute) Uint() (v uint64, ok bool) {
	if a.Basic {
		return uint64(a.Value), true
	}
	if len(a.Data) < 1 || len(a.Data) > 8 {
		return 0, false
	}
	for _, c := range a.Data {
		v = v<<8 | uint64(c)
	}
	return v, true
}
