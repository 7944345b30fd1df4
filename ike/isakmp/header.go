package isakmp

import "encoding/binary"

// ParseHeader decodes the ISAKMP header at the start of b. It checks that b
// holds a header, that the major version is 1, and that the Length field is
// at least HeaderLen and at most len(b).
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, errf(PayloadNone, 0, ErrShort, "%d bytes, header needs %d", len(b), HeaderLen)
	}
	copy(h.ICookie[:], b[0:8])
	copy(h.RCookie[:], b[8:16])
	h.NextPayload = PayloadType(b[16])
	h.Version = b[17]
	h.Exchange = ExchangeType(b[18])
	h.Flags = Flags(b[19])
	h.MessageID = binary.BigEndian.Uint32(b[20:24])
	h.Length = binary.BigEndian.Uint32(b[24:28])
	if h.Version>>4 != 1 {
		return h, errf(PayloadNone, 17, ErrVersion, "version %d.%d, want major 1", h.Version>>4, h.Version&0xf)
	}
	if h.Length < HeaderLen {
		return h, errf(PayloadNone, 24, ErrBadLength, "length field %d < header size %d", h.Length, HeaderLen)
	}
	if uint64(h.Length) > uint64(len(b)) {
		return h, errf(PayloadNone, 24, ErrShort, "length field %d > %d bytes received", h.Length, len(b))
	}
	return h, nil
}

// AppendTo appends the 28 header bytes as given (the caller sets Length and
// NextPayload) and returns the extended slice.
func (h *Header) AppendTo(dst []byte) []byte {
	dst = append(dst, h.ICookie[:]...)
	dst = append(dst, h.RCookie[:]...)
	dst = append(dst, byte(h.NextPayload), h.Version, byte(h.Exchange), byte(h.Flags))
	dst = binary.BigEndian.AppendUint32(dst, h.MessageID)
	dst = binary.BigEndian.AppendUint32(dst, h.Length)
	return dst
}
