package isakmp

import "math"

// Parse decodes a whole plaintext message: the header and its payload
// chain. It refuses an encrypted message (ErrEncrypted; use
// ParseEncrypted), a header Length different from len(b), and a payload
// chain that does not end exactly at Length (ErrBadLength). Error offsets
// are offsets within b.
func Parse(b []byte) (*Message, error) {
	return parse(b, nil)
}

func parse(b []byte, rsv *[]int) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.Flags&FlagEncryption != 0 {
		return nil, errf(PayloadNone, 19, ErrEncrypted, "flags %s", h.Flags)
	}
	if int(h.Length) != len(b) {
		return nil, errf(PayloadNone, 24, ErrBadLength, "length field %d, message has %d bytes", h.Length, len(b))
	}
	d, err := decodePayloads(h.NextPayload, b[HeaderLen:], HeaderLen, rsv)
	if err != nil {
		return nil, err
	}
	if HeaderLen+d.Len != len(b) {
		return nil, errf(PayloadNone, HeaderLen+d.Len, ErrBadLength, "%d bytes after the last payload", len(b)-HeaderLen-d.Len)
	}
	return &Message{Header: h, Payloads: d.Payloads, Raw: d.Raw}, nil
}

// Marshal encodes the message. It sets m.Header.NextPayload and
// m.Header.Length from the payloads; the rest of the header is written as
// given. It does not encrypt: with FlagEncryption set the caller should
// instead encrypt the output of AppendPayloads and write the header with
// Header.AppendTo. Error offsets are offsets within the message.
func (m *Message) Marshal() ([]byte, error) {
	out := make([]byte, HeaderLen, 256)
	first, out, err := appendPayloads(out, m.Payloads, HeaderLen)
	if err != nil {
		return nil, err
	}
	if uint64(len(out)) > math.MaxUint32 {
		return nil, errf(PayloadNone, 24, ErrBadLength, "message of %d bytes", len(out))
	}
	m.Header.NextPayload = first
	m.Header.Length = uint32(len(out))
	m.Header.AppendTo(out[:0])
	return out, nil
}

// ParseEncrypted returns the header of an encrypted message and its body
// (the ciphertext, b[HeaderLen:Length], not copied). It checks the header
// (see ParseHeader), that FlagEncryption is set (else ErrNotEncrypted) and
// that the body is not empty; block-size checks are left to the caller.
func ParseEncrypted(b []byte) (Header, []byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if h.Flags&FlagEncryption == 0 {
		return h, nil, errf(PayloadNone, 19, ErrNotEncrypted, "flags %s", h.Flags)
	}
	if h.Length == HeaderLen {
		return h, nil, errf(PayloadNone, 24, ErrBadLength, "encrypted message has an empty body")
	}
	return h, b[HeaderLen:h.Length], nil
}
