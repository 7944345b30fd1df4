package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"ikegw/ike/pki"
)

// ISAKMP identification types (RFC 2407 §4.6.2.1) that a connection may be
// configured with.
const (
	IDIPv4      uint8 = 1  // ID_IPV4_ADDR
	IDFQDN      uint8 = 2  // ID_FQDN
	IDUserFQDN  uint8 = 3  // ID_USER_FQDN
	IDIPv6      uint8 = 5  // ID_IPV6_ADDR
	IDDERASN1DN uint8 = 9  // ID_DER_ASN1_DN (configured as text, stored as DER)
	IDKeyID     uint8 = 11 // ID_KEY_ID

	// IDAny is not a wire type: an Identity with this type and no data
	// accepts any peer identity ("%any"). Only valid as a remote identity.
	IDAny uint8 = 0xff
)

// maxIDLen bounds an identity's data (an ID payload body is limited by the
// 16-bit payload length; real identities are far shorter).
const maxIDLen = 1024

// ErrBadIdentity is wrapped by every identity parse error.
var ErrBadIdentity = errors.New("bad identity")

// Identity is a configured ISAKMP identity: the ID type and its data as on
// the wire (4 or 16 address bytes, FQDN or user FQDN text, key ID bytes,
// the DER RDNSequence of a distinguished name).
// The zero Identity means "not configured": the engine then uses the IKE
// SA's address. Type IDAny with no data means any identity.
type Identity struct {
	Type uint8
	Data []byte
}

// IsAny reports whether the identity accepts any peer identity.
func (id Identity) IsAny() bool { return id.Type == IDAny && len(id.Data) == 0 }

// IsZero reports whether the identity is not configured.
func (id Identity) IsZero() bool { return id.Type == 0 && len(id.Data) == 0 }

// Equal reports whether two identities have the same type and data.
func (id Identity) Equal(o Identity) bool { return id.Type == o.Type && bytes.Equal(id.Data, o.Data) }

// AddrIdentity returns the IPV4_ADDR or IPV6_ADDR identity of an address
// (an IPv4-mapped IPv6 address gives an IPv4 identity).
func AddrIdentity(a netip.Addr) Identity {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return Identity{Type: IDIPv4, Data: b[:]}
	}
	b := a.As16()
	return Identity{Type: IDIPv6, Data: b[:]}
}

// ParseIdentity parses an identity in strongSwan's spelling:
//
//	192.0.2.1, 2001:db8::1        IPV4_ADDR, IPV6_ADDR
//	@vpn.example.com              FQDN (the "@" is dropped)
//	vpn.example.com               FQDN (anything without "@" or "=")
//	user@example.com, @@user      USER_FQDN
//	keyid:text, keyid:#0a0b0c     KEY_ID (text, or hex bytes after "#")
//	@#0a0b0c                      KEY_ID (hex bytes)
//	C=CH, O=Example, CN=gw        DER_ASN1_DN (stored as DER, see pki.ParseDN)
//	/C=CH/O=Example/CN=gw         DER_ASN1_DN (OpenSSL's form)
//	asn1dn:#3012...               DER_ASN1_DN given as hex DER
//	%any                          any identity (IDAny)
//
// Explicit prefixes are accepted too: ipv4:, ipv6:, fqdn:, email:,
// userfqdn:, keyid:, asn1dn:.
func ParseIdentity(s string) (Identity, error) {
	if s == "" {
		return Identity{}, errf(ErrBadIdentity, "empty identity")
	}
	if len(s) > maxIDLen {
		return Identity{}, errf(ErrBadIdentity, "%d bytes long, at most %d allowed", len(s), maxIDLen)
	}
	if !utf8.ValidString(s) {
		return Identity{}, errf(ErrBadIdentity, "%q: not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return Identity{}, errf(ErrBadIdentity, "%q: contains a control character", s)
		}
	}
	if s == "%any" || s == "%any4" || s == "%any6" {
		return Identity{Type: IDAny}, nil
	}
	if strings.HasPrefix(s, "%") {
		return Identity{}, errf(ErrBadIdentity, "%q: unknown keyword (only %%any)", s)
	}
	if i := strings.IndexByte(s, ':'); i > 0 {
		prefix, rest := strings.ToLower(s[:i]), s[i+1:]
		switch prefix {
		case "ipv4", "ipv6":
			a, err := netip.ParseAddr(rest)
			if err != nil || a.Zone() != "" || (prefix == "ipv4") != a.Is4() {
				return Identity{}, errf(ErrBadIdentity, "%q: not an %s address", s, strings.ToUpper(prefix[:2])+prefix[2:])
			}
			return AddrIdentity(a), nil
		case "fqdn":
			return textID(IDFQDN, s, rest)
		case "email", "userfqdn", "rfc822":
			return textID(IDUserFQDN, s, rest)
		case "keyid":
			if h, ok := strings.CutPrefix(rest, "#"); ok {
				return hexID(IDKeyID, s, h)
			}
			return textID(IDKeyID, s, rest)
		case "asn1dn":
			if h, ok := strings.CutPrefix(rest, "#"); ok {
				id, err := hexID(IDDERASN1DN, s, h)
				if err != nil {
					return Identity{}, err
				}
				if err := pki.CheckDN(id.Data); err != nil {
					return Identity{}, errf(ErrBadIdentity, "%q: %v", s, strings.TrimPrefix(err.Error(), "pki: "))
				}
				return id, nil
			}
			return dnID(s, rest)
		}
		// Otherwise fall through: an IPv6 address or a DN may contain ':'.
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return Identity{}, errf(ErrBadIdentity, "%q: an address identity cannot have a zone", s)
		}
		return AddrIdentity(a), nil
	}
	switch {
	case strings.HasPrefix(s, "/") && strings.Contains(s, "="):
		return dnID(s, s)
	case strings.HasPrefix(s, "@#"):
		return hexID(IDKeyID, s, s[2:])
	case strings.HasPrefix(s, "@@"):
		return textID(IDUserFQDN, s, s[2:])
	case strings.HasPrefix(s, "@"):
		return textID(IDFQDN, s, s[1:])
	case strings.Contains(s, "="):
		return dnID(s, s)
	case strings.Contains(s, "@"):
		return textID(IDUserFQDN, s, s)
	}
	return textID(IDFQDN, s, s)
}

func textID(t uint8, s, data string) (Identity, error) {
	if strings.TrimSpace(data) == "" {
		return Identity{}, errf(ErrBadIdentity, "%q: no name after the prefix", s)
	}
	if t == IDFQDN && strings.ContainsAny(data, " \t@") {
		return Identity{}, errf(ErrBadIdentity, "%q: an FQDN cannot contain spaces or \"@\"", s)
	}
	return Identity{Type: t, Data: []byte(data)}, nil
}

func hexID(t uint8, s, h string) (Identity, error) {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) == 0 {
		return Identity{}, errf(ErrBadIdentity, "%q: expected an even number of hex digits after \"#\"", s)
	}
	return Identity{Type: t, Data: b}, nil
}

func dnID(s, dn string) (Identity, error) {
	der, err := pki.ParseDN(dn)
	if err != nil {
		return Identity{}, errf(ErrBadIdentity, "%q: %v", s, strings.TrimPrefix(err.Error(), "pki: "))
	}
	return Identity{Type: IDDERASN1DN, Data: der}, nil
}

// String prints the identity so that ParseIdentity reads it back to an equal
// Identity: addresses as text, FQDNs as "@name" (or "fqdn:name"), user FQDNs
// as "user@host", key IDs as "@#hex", DNs as text in strongSwan's order
// ("C=CH, O=Example, CN=gw"), any as "%any", and the
// unset identity as "" (meaning: the address).
func (id Identity) String() string {
	switch {
	case id.IsZero():
		return ""
	case id.IsAny():
		return "%any"
	}
	var cands []string
	switch id.Type {
	case IDIPv4:
		if len(id.Data) == 4 {
			return netip.AddrFrom4([4]byte(id.Data)).String()
		}
	case IDIPv6:
		if len(id.Data) == 16 {
			return netip.AddrFrom16([16]byte(id.Data)).String()
		}
	case IDFQDN:
		cands = []string{"@" + string(id.Data), "fqdn:" + string(id.Data)}
	case IDUserFQDN:
		cands = []string{string(id.Data), "@@" + string(id.Data), "email:" + string(id.Data)}
	case IDKeyID:
		cands = []string{"@#" + hex.EncodeToString(id.Data)}
	case IDDERASN1DN:
		if pki.CheckDN(id.Data) == nil {
			t := pki.DNString(id.Data)
			cands = []string{t, "asn1dn:" + t}
		}
		cands = append(cands, "asn1dn:#"+hex.EncodeToString(id.Data))
	}
	for _, c := range cands {
		if back, err := ParseIdentity(c); err == nil && back.matches(id.Type, id.Data) {
			return c
		}
	}
	return fmt.Sprintf("id(type %d, %x)", id.Type, id.Data)
}

// ErrIdentityMismatch is wrapped by Match's refusals.
var ErrIdentityMismatch = errors.New("identity mismatch")

var idTypeNames = map[uint8]string{
	IDIPv4: "IPV4_ADDR", IDFQDN: "FQDN", IDUserFQDN: "USER_FQDN", IDIPv6: "IPV6_ADDR",
	IDDERASN1DN: "DER_ASN1_DN", IDKeyID: "KEY_ID",
}

func idTypeName(t uint8) string {
	if n, ok := idTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}

// Match checks a peer's identity (ISAKMP ID type and wire data) against
// this configured one: %any accepts every identity (a certificate
// authenticated peer's identity is still checked against its certificate);
// distinguished names compare as names (attribute by attribute, ignoring
// case and the ASN.1 string type, as strongSwan does); FQDNs and user FQDNs
// ignore case; other types compare bytes. The zero Identity accepts
// nothing: the caller resolves it to an address first. The error says
// what was expected and what came.
func (id Identity) Match(peerType uint8, data []byte) error {
	if id.IsAny() {
		return nil
	}
	got := Identity{Type: peerType, Data: data}
	if id.Type != peerType {
		return fmt.Errorf("%w: peer identity %s (%s), configured %s (%s)", ErrIdentityMismatch,
			got.String(), idTypeName(peerType), id.String(), idTypeName(id.Type))
	}
	if !id.matches(peerType, data) {
		return fmt.Errorf("%w: peer identity %q, configured %q (%s)", ErrIdentityMismatch,
			got.String(), id.String(), idTypeName(id.Type))
	}
	return nil
}

func (id Identity) matches(peerType uint8, data []byte) bool {
	if id.IsAny() {
		return true
	}
	if id.Type != peerType {
		return false
	}
	switch id.Type {
	case IDDERASN1DN:
		return pki.DNEqual(id.Data, data)
	case IDFQDN, IDUserFQDN:
		return strings.EqualFold(string(id.Data), string(data))
	}
	return len(id.Data) > 0 && bytes.Equal(id.Data, data)
}
