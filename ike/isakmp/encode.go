package isakmp

import (
	"encoding/binary"
	"math"
	"reflect"
)

// AppendPayloads appends the payloads in ps to dst, chained in order (each
// generic header's Next Payload names the following payload, the last one
// NONE), and returns the type of the first payload (for the header's or the
// previous payload's Next Payload) and the extended slice. Payloads may be
// given as pointers or values. Reserved bytes are written as zero.
//
// An invalid payload (nil, a length that does not fit its field, a Delete
// with SPIs of different sizes, more than MaxPayloads elements, ...) is an
// *Error whose Offset is the payload's offset from len(dst); dst is then
// returned unchanged.
func AppendPayloads(dst []byte, ps []Payload) (first PayloadType, out []byte, err error) {
	return appendPayloads(dst, ps, 0)
}

func appendPayloads(dst []byte, ps []Payload, base int) (PayloadType, []byte, error) {
	start := len(dst)
	if len(ps) > MaxPayloads {
		return PayloadNone, dst, errf(PayloadNone, base, ErrTooMany, "%d payloads, at most %d", len(ps), MaxPayloads)
	}
	for i, p := range ps {
		if _, ok := p.(bodyEncoder); !ok || isNilPointer(p) {
			return PayloadNone, dst, errf(PayloadNone, base, ErrBadPayload, "payload %d is nil or of unsupported Go type %T", i, p)
		}
	}
	out := dst
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type()
		}
		off := len(out)
		at := base + off - start
		out = append(out, byte(next), 0, 0, 0)
		var err error
		out, err = p.(bodyEncoder).appendBody(out, at)
		if err != nil {
			return PayloadNone, dst[:start], err
		}
		n := len(out) - off
		if n > math.MaxUint16 {
			return PayloadNone, dst[:start], errf(p.Type(), at, ErrBadLength, "payload length %d > %d", n, math.MaxUint16)
		}
		binary.BigEndian.PutUint16(out[off+2:], uint16(n))
	}
	if len(ps) == 0 {
		return PayloadNone, out, nil
	}
	return ps[0].Type(), out, nil
}

// bodyEncoder is implemented (with value receivers, so by values and
// pointers alike) by every payload type of this package.
type bodyEncoder interface {
	Payload
	// appendBody appends the payload body (without the generic header);
	// at is the payload's offset for errors.
	appendBody(b []byte, at int) ([]byte, error)
}

func isNilPointer(p Payload) bool {
	v := reflect.ValueOf(p)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

func (v SA) appendBody(b []byte, at int) ([]byte, error) { return appendSA(b, &v, at) }
func (v KE) appendBody(b []byte, _ int) ([]byte, error)  { return append(b, v.Data...), nil }
func (v ID) appendBody(b []byte, _ int) ([]byte, error) {
	b = append(b, byte(v.IDType), v.Protocol)
	b = binary.BigEndian.AppendUint16(b, v.Port)
	return append(b, v.Data...), nil
}
func (v Cert) appendBody(b []byte, _ int) ([]byte, error) {
	return append(append(b, v.Encoding), v.Data...), nil
}
func (v CertRequest) appendBody(b []byte, _ int) ([]byte, error) {
	return append(append(b, v.Encoding), v.Authority...), nil
}
func (v Hash) appendBody(b []byte, _ int) ([]byte, error)      { return append(b, v.Data...), nil }
func (v Signature) appendBody(b []byte, _ int) ([]byte, error) { return append(b, v.Data...), nil }
func (v Nonce) appendBody(b []byte, _ int) ([]byte, error)     { return append(b, v.Data...), nil }
func (v VendorID) appendBody(b []byte, _ int) ([]byte, error)  { return append(b, v.Data...), nil }
func (v NATD) appendBody(b []byte, _ int) ([]byte, error)      { return append(b, v.Hash...), nil }

func (v Notify) appendBody(b []byte, at int) ([]byte, error) {
	if len(v.SPI) > math.MaxUint8 {
		return b, errf(PayloadNotify, at, ErrBadLength, "SPI of %d bytes, at most %d", len(v.SPI), math.MaxUint8)
	}
	b = binary.BigEndian.AppendUint32(b, v.DOI)
	b = append(b, byte(v.Protocol), byte(len(v.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(v.NotifyType))
	b = append(b, v.SPI...)
	return append(b, v.Data...), nil
}

func (v Delete) appendBody(b []byte, at int) ([]byte, error) {
	if len(v.SPIs) == 0 {
		return b, errf(PayloadDelete, at, ErrBadPayload, "delete names no SPI")
	}
	if len(v.SPIs) > math.MaxUint16 {
		return b, errf(PayloadDelete, at, ErrTooMany, "%d SPIs, at most %d", len(v.SPIs), math.MaxUint16)
	}
	size := len(v.SPIs[0])
	if size > math.MaxUint8 {
		return b, errf(PayloadDelete, at, ErrBadLength, "SPI of %d bytes, at most %d", size, math.MaxUint8)
	}
	b = binary.BigEndian.AppendUint32(b, v.DOI)
	b = append(b, byte(v.Protocol), byte(size))
	b = binary.BigEndian.AppendUint16(b, uint16(len(v.SPIs)))
	for i, s := range v.SPIs {
		if len(s) != size {
			return b, errf(PayloadDelete, at, ErrBadLength, "SPI %d has %d bytes, SPI 0 has %d", i, len(s), size)
		}
		b = append(b, s...)
	}
	return b, nil
}

func (v NATOA) appendBody(b []byte, at int) ([]byte, error) {
	t := v.IDType
	a := v.Addr
	if t == 0 {
		if a.Is4() {
			t = IDIPv4Addr
		} else {
			t = IDIPv6Addr
		}
	}
	switch {
	case t == IDIPv4Addr && (a.Is4() || a.Is4In6()):
		a4 := a.Unmap().As4()
		b = append(b, byte(t), 0, 0, 0)
		return append(b, a4[:]...), nil
	case t == IDIPv6Addr && a.Is6():
		a16 := a.As16()
		b = append(b, byte(t), 0, 0, 0)
		return append(b, a16[:]...), nil
	}
	return b, errf(v.Type(), at, ErrBadPayload, "ID type %s cannot carry address %v", t, a)
}

func (v Unknown) appendBody(b []byte, at int) ([]byte, error) {
	switch v.PayloadType {
	case PayloadNone, PayloadProposal, PayloadTransform:
		return b, errf(v.PayloadType, at, ErrBadPayload, "payload type %s cannot be sent as a top-level payload", v.PayloadType)
	}
	return append(b, v.Data...), nil
}

func appendSA(b []byte, sa *SA, at int) ([]byte, error) {
	if len(sa.Proposals) == 0 {
		return b, errf(PayloadSA, at, ErrBadPayload, "SA payload has no proposal")
	}
	if len(sa.Proposals) > MaxPayloads {
		return b, errf(PayloadSA, at, ErrTooMany, "%d proposals, at most %d", len(sa.Proposals), MaxPayloads)
	}
	start := len(b) - genericLen
	b = binary.BigEndian.AppendUint32(b, sa.DOI)
	b = binary.BigEndian.AppendUint32(b, sa.Situation)
	for i, prop := range sa.Proposals {
		poff := len(b)
		pat := at + poff - start
		next := PayloadProposal
		if i == len(sa.Proposals)-1 {
			next = PayloadNone
		}
		if len(prop.SPI) > math.MaxUint8 {
			return b, errf(PayloadProposal, pat, ErrBadLength, "proposal %d: SPI of %d bytes, at most %d", prop.Number, len(prop.SPI), math.MaxUint8)
		}
		if len(prop.Transforms) == 0 {
			return b, errf(PayloadProposal, pat, ErrBadPayload, "proposal %d has no transform", prop.Number)
		}
		if len(prop.Transforms) > MaxPayloads {
			return b, errf(PayloadProposal, pat, ErrTooMany, "proposal %d: %d transforms, at most %d", prop.Number, len(prop.Transforms), MaxPayloads)
		}
		b = append(b, byte(next), 0, 0, 0, prop.Number, byte(prop.Protocol), byte(len(prop.SPI)), byte(len(prop.Transforms)))
		b = append(b, prop.SPI...)
		for j, tr := range prop.Transforms {
			toff := len(b)
			tat := at + toff - start
			next := PayloadTransform
			if j == len(prop.Transforms)-1 {
				next = PayloadNone
			}
			if len(tr.Attributes) > MaxPayloads {
				return b, errf(PayloadTransform, tat, ErrTooMany, "transform %d: %d attributes, at most %d", tr.Number, len(tr.Attributes), MaxPayloads)
			}
			b = append(b, byte(next), 0, 0, 0, tr.Number, tr.ID, 0, 0)
			for _, a := range tr.Attributes {
				if a.Type > 0x7fff {
					return b, errf(PayloadTransform, tat, ErrBadPayload, "transform %d: attribute type %d does not fit 15 bits", tr.Number, a.Type)
				}
				if a.Basic {
					b = binary.BigEndian.AppendUint16(b, a.Type|0x8000)
					b = binary.BigEndian.AppendUint16(b, a.Value)
					continue
				}
				if len(a.Data) > math.MaxUint16 {
					return b, errf(PayloadTransform, tat, ErrBadLength, "transform %d: attribute type %d has %d bytes, at most %d", tr.Number, a.Type, len(a.Data), math.MaxUint16)
				}
				b = binary.BigEndian.AppendUint16(b, a.Type)
				b = binary.BigEndian.AppendUint16(b, uint16(len(a.Data)))
				b = append(b, a.Data...)
			}
			if n := len(b) - toff; n > math.MaxUint16 {
				return b, errf(PayloadTransform, tat, ErrBadLength, "transform %d: length %d > %d", tr.Number, n, math.MaxUint16)
			} else {
				binary.BigEndian.PutUint16(b[toff+2:], uint16(n))
			}
		}
		if n := len(b) - poff; n > math.MaxUint16 {
			return b, errf(PayloadProposal, pat, ErrBadLength, "proposal %d: length %d > %d", prop.Number, n, math.MaxUint16)
		} else {
			binary.BigEndian.PutUint16(b[poff+2:], uint16(n))
		}
	}
	return b, nil
}

// AppendAttributes appends attributes in their wire form (RFC 2408 §3.3):
// the body of a Notify that carries attributes, such as RFC 2407's
// RESPONDER-LIFETIME. Errors are *Error values naming the attribute.
func AppendAttributes(b []byte, attrs []Attribute) ([]byte, error) {
	for i, a := range attrs {
		if a.Type > 0x7fff {
			return b, errf(PayloadNotify, 0, ErrBadPayload, "attribute %d: type %d does not fit 15 bits", i, a.Type)
		}
		if a.Basic {
			b = binary.BigEndian.AppendUint16(b, a.Type|0x8000)
			b = binary.BigEndian.AppendUint16(b, a.Value)
			continue
		}
		if len(a.Data) > math.MaxUint16 {
			return b, errf(PayloadNotify, 0, ErrBadLength, "attribute %d (type %d): %d bytes, at most %d", i, a.Type, len(a.Data), math.MaxUint16)
		}
		b = binary.BigEndian.AppendUint16(b, a.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.Data)))
		b = append(b, a.Data...)
	}
	return b, nil
}

// Attr returns the first attribute of type t in the transform.
func (t *Transform) Attr(typ uint16) (Attribute, bool) {
	for _, a := range t.Attributes {
		if a.Type == typ {
			return a, true
		}
	}
	return Attribute{}, false
}

// BasicAttr returns a basic (TV) attribute.
func BasicAttr(typ, value uint16) Attribute {
	return Attribute{Type: typ, Basic: true, Value: value}
}

// VarAttr returns a variable (TLV) attribute.
func VarAttr(typ uint16, data []byte) Attribute {
	return Attribute{Type: typ, Data: data}
}

// UintAttr returns a basic attribute if v fits 16 bits, otherwise a
// variable attribute holding v in the fewest big-endian bytes (RFC 2408
// §3.3; used for life durations).
func UintAttr(typ uint16, v uint64) Attribute {
	if v <= math.MaxUint16 {
		return BasicAttr(typ, uint16(v))
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	i := 0
	for i < 7 && buf[i] == 0 {
		i++
	}
	return VarAttr(typ, append([]byte(nil), buf[i:]...))
}
