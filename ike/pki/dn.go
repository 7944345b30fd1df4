package pki

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrBadDN is wrapped by every distinguished name parse error.
var ErrBadDN = errors.New("pki: bad distinguished name")

// dnAttr is a DN attribute strongSwan (and OpenSSL) know by a short name.
type dnAttr struct {
	names []string // accepted spellings, the first is printed
	oid   asn1.ObjectIdentifier
	ia5   bool // encoded as IA5String (emailAddress, domainComponent)
}

var dnAttrs = []dnAttr{
	{[]string{"C"}, asn1.ObjectIdentifier{2, 5, 4, 6}, false},
	{[]string{"ST", "S"}, asn1.ObjectIdentifier{2, 5, 4, 8}, false},
	{[]string{"L"}, asn1.ObjectIdentifier{2, 5, 4, 7}, false},
	{[]string{"O"}, asn1.ObjectIdentifier{2, 5, 4, 10}, false},
	{[]string{"OU"}, asn1.ObjectIdentifier{2, 5, 4, 11}, false},
	{[]string{"CN"}, asn1.ObjectIdentifier{2, 5, 4, 3}, false},
	{[]string{"SN", "surname"}, asn1.ObjectIdentifier{2, 5, 4, 4}, false},
	{[]string{"serialNumber"}, asn1.ObjectIdentifier{2, 5, 4, 5}, false},
	{[]string{"street"}, asn1.ObjectIdentifier{2, 5, 4, 9}, false},
	{[]string{"T", "title"}, asn1.ObjectIdentifier{2, 5, 4, 12}, false},
	{[]string{"postalCode"}, asn1.ObjectIdentifier{2, 5, 4, 17}, false},
	{[]string{"G", "GN", "givenName"}, asn1.ObjectIdentifier{2, 5, 4, 42}, false},
	{[]string{"E", "emailAddress", "Email"}, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, true},
	{[]string{"DC"}, asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, true},
	{[]string{"UID"}, asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, false},
}

func attrByName(k string) (dnAttr, bool) {
	for _, a := range dnAttrs {
		for _, n := range a.names {
			if strings.EqualFold(n, k) {
				return a, true
			}
		}
	}
	return dnAttr{}, false
}

func attrByOID(oid asn1.ObjectIdentifier) (dnAttr, bool) {
	for _, a := range dnAttrs {
		if a.oid.Equal(oid) {
			return a, true
		}
	}
	return dnAttr{}, false
}

// parseOID reads a dotted object identifier such as 2.5.4.3.
func parseOID(s string) (asn1.ObjectIdentifier, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, false
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		// Each arc must fit the 31 bits encoding/asn1 decodes (so that
		// what ParseDN writes reads back), and X.660 allows only 0-2 as
		// the first arc and 0-39 as the second under 0 and 1.
		if err != nil || n < 0 || n > math.MaxInt32 || p == "" || (len(p) > 1 && p[0] == '0') {
			return nil, false
		}
		oid[i] = n
	}
	if oid[0] > 2 || (oid[0] < 2 && oid[1] > 39) || oid[0]*40+oid[1] > math.MaxInt32 {
		return nil, false
	}
	return oid, true
}

// splitDN splits a textual DN into its attribute=value parts: separated by
// commas (or by slashes when the text starts with one, OpenSSL's form), a
// backslash escaping the next character.
func splitDN(s string) ([]string, error) {
	sep := byte(',')
	if strings.HasPrefix(s, "/") {
		sep, s = '/', s[1:]
	}
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("%w: %q ends with a lone backslash", ErrBadDN, s)
			}
			i++
			cur.WriteByte('\\')
			cur.WriteByte(s[i])
		case c == sep:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String()), nil
}

// unescape drops the backslashes of a DN value.
func unescape(v string) string {
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// ParseDN turns a distinguished name written as text, in strongSwan's order
// and spelling ("C=CH, O=ikegw, CN=gw", or "/C=CH/O=ikegw/CN=gw"), into the
// DER RDNSequence an ID_DER_ASN1_DN payload carries. Attributes are known
// short names (C, ST, L, O, OU, CN, SN, serialNumber, street, T,
// postalCode, G, E/emailAddress, DC, UID) or dotted OIDs; a backslash
// escapes a separator inside a value. Values are PrintableString when they
// can be, IA5String for E and DC, UTF8String otherwise (as Go's x509 and
// strongSwan encode them).
func ParseDN(s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("%w: %q is not valid UTF-8", ErrBadDN, s)
	}
	parts, err := splitDN(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	var seq pkix.RDNSequence
	for _, part := range parts {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%w: part %q of %q is not attribute=value", ErrBadDN, part, s)
		}
		if v = strings.TrimSpace(unescape(v)); v == "" {
			return nil, fmt.Errorf("%w: part %q of %q has an empty value", ErrBadDN, part, s)
		}
		a, known := attrByName(k)
		if !known {
			oid, isOID := parseOID(k)
			if !isOID {
				return nil, fmt.Errorf("%w: unknown attribute %q in %q (use C, ST, L, O, OU, CN, SN, serialNumber, street, T, postalCode, G, E, DC, UID or a dotted OID)", ErrBadDN, k, s)
			}
			a = dnAttr{oid: oid}
			if k2, ok := attrByOID(oid); ok {
				a = k2
			}
		}
		var val any = v
		switch {
		case a.ia5:
			for _, r := range v {
				if r > 0x7f {
					return nil, fmt.Errorf("%w: %s value %q must be ASCII", ErrBadDN, k, v)
				}
			}
			val = asn1.RawValue{Tag: asn1.TagIA5String, Class: asn1.ClassUniversal, Bytes: []byte(v)}
		case a.oid.Equal(asn1.ObjectIdentifier{2, 5, 4, 6}) && len(v) != 2:
			return nil, fmt.Errorf("%w: country C=%q must be a two-letter code", ErrBadDN, v)
		}
		seq = append(seq, pkix.RelativeDistinguishedNameSET{{Type: a.oid, Value: val}})
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadDN, s, err)
	}
	if _, err := decodeDN(der); err != nil {
		return nil, fmt.Errorf("%w: %q does not encode to a name that reads back", ErrBadDN, s)
	}
	return der, nil
}

// decodeDN parses a DER RDNSequence, refusing trailing bytes.
func decodeDN(der []byte) (pkix.RDNSequence, error) {
	var seq pkix.RDNSequence
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return nil, fmt.Errorf("%w: %d bytes starting %x are not a DER name", ErrBadDN, len(der), der[:min(len(der), 8)])
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the DER name", ErrBadDN, len(rest))
	}
	return seq, nil
}

// CheckDN reports whether der is one well-formed DER distinguished name.
func CheckDN(der []byte) error {
	_, err := decodeDN(der)
	return err
}

// DNString prints a DER distinguished name in strongSwan's order and
// spelling ("C=CH, O=ikegw, CN=gw"); ParseDN reads it back to a name that
// DNEqual accepts. A name that does not parse prints as hex.
func DNString(der []byte) string {
	seq, err := decodeDN(der)
	if err != nil {
		return fmt.Sprintf("#%x", der)
	}
	var parts []string
	for _, rdn := range seq {
		for _, atv := range rdn {
			k := atv.Type.String()
			if a, ok := attrByOID(atv.Type); ok {
				k = a.names[0]
			}
			var v string
			if s, ok := atv.Value.(string); ok {
				v = s
			} else {
				v = fmt.Sprint(atv.Value)
			}
			var b strings.Builder
			for _, r := range v {
				if r == ',' || r == '\\' {
					b.WriteByte('\\')
				}
				b.WriteRune(r)
			}
			parts = append(parts, k+"="+b.String())
		}
	}
	return strings.Join(parts, ", ")
}

// DNEqual reports whether two DER distinguished names name the same
// entity: the same attributes in the same order, string values equal
// ignoring case and the string type (PrintableString, UTF8String,
// IA5String), as strongSwan compares them.
func DNEqual(a, b []byte) bool {
	sa, err := decodeDN(a)
	if err != nil {
		return false
	}
	sb, err := decodeDN(b)
	if err != nil {
		return false
	}
	if len(sa) != len(sb) {
		return false
	}
	for i := range sa {
		if len(sa[i]) != len(sb[i]) {
			return false
		}
		for j := range sa[i] {
			x, y := sa[i][j], sb[i][j]
			if !x.Type.Equal(y.Type) {
				return false
			}
			xs, okx := x.Value.(string)
			ys, oky := y.Value.(string)
			switch {
			case okx && oky:
				if !strings.EqualFold(xs, ys) {
					return false
				}
			case !reflect.DeepEqual(x.Value, y.Value):
				return false
			}
		}
	}
	return true
}
