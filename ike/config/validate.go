package config

import (
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"ikegw/ike/pki"
	"ikegw/ike/sa"
)

// Bounds a careful operator expects to be enforced.
const (
	maxNameLen         = 64
	minLifetime        = 10 * time.Second
	maxLifetime        = 7 * 24 * time.Hour
	minRetransmit      = 100 * time.Millisecond
	maxRetransmit      = time.Minute
	maxRetransmitTries = 30
	maxRetransmitBase  = 10.0
	// maxTransforms bounds the transforms of one proposal: IKEv1 numbers
	// them in one byte, and every one makes the first message larger.
	maxTransforms = 32
)

func validName(s string) error {
	if s == "" {
		return errf(ErrMissing, "empty name")
	}
	if len(s) > maxNameLen {
		return errf(ErrInvalid, "name longer than %d characters", maxNameLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return errf(ErrInvalid, "names may contain only letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

// Validate checks a whole configuration: at least one connection, unique
// names, and each connection's Validate. Parse always returns a Config that
// passes it; it is exported for configurations built or edited in code.
func (c *Config) Validate() error {
	if c == nil || len(c.Connections) == 0 {
		return &Error{Field: "connections", Err: errf(ErrMissing, "no connections")}
	}
	seen := map[string]bool{}
	for i, conn := range c.Connections {
		if conn == nil {
			return &Error{Connection: "connections[" + strconv.Itoa(i) + "]", Err: errf(ErrInvalid, "nil connection")}
		}
		if seen[conn.Name] {
			return &Error{Connection: conn.Name, Field: "name", Err: errf(ErrInvalid, "two connections are named %q", conn.Name)}
		}
		seen[conn.Name] = true
		if err := conn.Validate(); err != nil {
			return err
		}
	}
	// An IKEv1 Main Mode responder using PSKs must choose the key from the
	// peer's address alone (the identities come encrypted under it), so two
	// Main Mode connections that the same peer address reaches equally must
	// share the key. A connection with an exact remote address is preferred
	// over %any ones (MatchRemote), so only equal remotes conflict.
	for i, b := range c.Connections {
		if b.Aggressive || b.Auth != AuthPSK {
			continue
		}
		for _, a := range c.Connections[:i] {
			if a.Aggressive || a.Auth != AuthPSK || a.LocalPort != b.LocalPort || a.PSK.Equal(b.PSK) {
				continue
			}
			sameRemote := a.RemoteIsAny() && b.RemoteIsAny() || !a.RemoteIsAny() && !b.RemoteIsAny() && a.Remote == b.Remote
			localsMeet := !a.localKnown() || !b.localKnown() || a.Local == b.Local
			if sameRemote && localsMeet {
				return &Error{Connection: b.Name, Err: errf(ErrInvalid,
					"Main Mode from %s also matches connection %q, which has a different PSK; an IKEv1 Main Mode responder must pick the PSK by address before it sees the peer's identity (use one PSK for both, different local addresses, or aggressive: true)",
					addrOrAny(b.Remote), a.Name)}
			}
		}
	}
	return nil
}

// Validate checks one connection and its children. The error names the
// connection, the child and the field.
func (c *Connection) Validate() error {
	name := c.Name
	if validName(name) != nil {
		name = ""
	}
	fail := func(field string, err error) error {
		return &Error{Connection: name, Field: field, Err: err}
	}
	if err := validName(c.Name); err != nil {
		return fail("name", err)
	}
	if c.Local.Zone() != "" || c.Remote.Zone() != "" {
		return fail("local_addrs", errf(ErrNotSupported, "zoned addresses are not supported"))
	}
	if c.Local.IsMulticast() {
		return fail("local_addrs", errf(ErrInvalid, "multicast address %s cannot be an IKE endpoint", c.Local))
	}
	if c.Remote.IsMulticast() {
		return fail("remote_addrs", errf(ErrInvalid, "multicast address %s cannot be an IKE endpoint", c.Remote))
	}
	if c.Local.Is4In6() || c.Remote.Is4In6() {
		return fail("remote_addrs", errf(ErrInvalid, "write IPv4 addresses in IPv4 form, not IPv4-mapped IPv6"))
	}
	if c.localKnown() && c.remoteKnown() && c.Local.Is4() != c.Remote.Is4() {
		return fail("remote_addrs", errf(ErrInvalid, "local address %s and remote address %s are of different address families", c.Local, c.Remote))
	}
	if c.LocalPort == 0 {
		return fail("local_port", errf(ErrInvalid, "port 0 is out of range 1..65535"))
	}
	if c.RemotePort == 0 {
		return fail("remote_port", errf(ErrInvalid, "port 0 is out of range 1..65535"))
	}
	if c.LocalID.IsAny() {
		return fail("local_id", errf(ErrInvalid, "%%any is only meaningful for remote_id"))
	}
	if err := validIdentity(c.LocalID); err != nil {
		return fail("local_id", err)
	}
	if err := validIdentity(c.RemoteID); err != nil {
		return fail("remote_id", err)
	}
	switch c.Auth {
	case AuthPSK:
		if len(c.PSK) == 0 {
			return fail("psk_file", errf(ErrMissing, "auth psk needs a pre-shared key: set psk_file or psk_env"))
		}
	case AuthPubkey:
		if c.Pubkey == nil || len(c.Pubkey.Certs) == 0 || c.Pubkey.Key.Signer == nil || c.Pubkey.Trust == nil {
			return fail("cert", errf(ErrMissing, "auth pubkey needs cert, key and cacerts"))
		}
	default:
		return fail("auth", errf(ErrInvalid, "unknown auth method %q (want psk)", clip(c.Auth)))
	}
	if c.Initiate && !c.remoteKnown() {
		return fail("start_action", errf(ErrMissing, "start needs a remote address to initiate to; set remote_addrs"))
	}
	if len(c.Proposals) == 0 {
		return fail("proposals", errf(ErrMissing, "no IKE proposals"))
	}
	if len(c.Proposals) > maxTransforms {
		return fail("proposals", errf(ErrInvalid, "%d transforms after expanding the proposals, at most %d", len(c.Proposals), maxTransforms))
	}
	for i, p := range c.Proposals {
		if err := validIKEProposal(p, c.Legacy); err != nil {
			return fail("proposals["+strconv.Itoa(i)+"]", err)
		}
	}
	if err := lifetime(c.IKELifetime); err != nil {
		return fail("ike_lifetime", err)
	}
	if c.ReauthTime < 0 || (c.ReauthTime > 0 && c.ReauthTime < minLifetime) {
		return fail("reauth_time", errf(ErrInvalid, "%s is neither 0 (engine default) nor at least %s", c.ReauthTime, minLifetime))
	}
	if c.ReauthTime >= c.IKELifetime {
		return fail("reauth_time", errf(ErrInvalid, "%s must be shorter than ike_lifetime %s", c.ReauthTime, c.IKELifetime))
	}
	if c.DPDDelay < 0 || (c.DPDDelay > 0 && c.DPDDelay < time.Second) || c.DPDDelay > time.Hour {
		return fail("dpd_delay", errf(ErrInvalid, "%s is neither 0 (off) nor between 1s and 1h", c.DPDDelay))
	}
	if c.DPDDelay > 0 && (c.DPDTimeout < c.DPDDelay || c.DPDTimeout > 24*time.Hour) {
		return fail("dpd_timeout", errf(ErrInvalid, "%s must be at least dpd_delay %s and at most 24h", c.DPDTimeout, c.DPDDelay))
	}
	if c.DPDAction > DPDRestart {
		return fail("dpd_action", errf(ErrInvalid, "unknown action %d", c.DPDAction))
	}
	if c.DPDAction == DPDRestart && !c.remoteKnown() {
		return fail("dpd_action", errf(ErrMissing, "restart needs a remote address to initiate to; set remote_addrs or use clear"))
	}
	if c.Keyingtries < 0 {
		return fail("keyingtries", errf(ErrInvalid, "%d is negative (0 means forever)", c.Keyingtries))
	}
	if rt := c.Retransmit; rt.Timeout < minRetransmit || rt.Timeout > maxRetransmit {
		return fail("retransmit.timeout", errf(ErrInvalid, "%s is out of range %s..%s", rt.Timeout, minRetransmit, maxRetransmit))
	}
	if rt := c.Retransmit; rt.Tries < 1 || rt.Tries > maxRetransmitTries {
		return fail("retransmit.tries", errf(ErrInvalid, "%d is out of range 1..%d", rt.Tries, maxRetransmitTries))
	}
	if b := c.Retransmit.Base; math.IsNaN(b) || b < 1 || b > maxRetransmitBase {
		return fail("retransmit.base", errf(ErrInvalid, "%v is out of range 1..%v", b, maxRetransmitBase))
	}
	if len(c.Children) == 0 {
		return fail("children", errf(ErrMissing, "a connection needs at least one child (its IPsec SAs)"))
	}
	seen := map[string]bool{}
	for i, ch := range c.Children {
		if ch == nil {
			return fail("children["+strconv.Itoa(i)+"]", errf(ErrInvalid, "nil child"))
		}
		if seen[ch.Name] {
			return &Error{Connection: name, Child: ch.Name, Field: "name", Err: errf(ErrInvalid, "two children are named %q", ch.Name)}
		}
		seen[ch.Name] = true
		if err := c.validateChild(i, ch); err != nil {
			return err
		}
	}
	return nil
}

func (c *Connection) localKnown() bool  { return c.Local.IsValid() && !c.Local.IsUnspecified() }
func (c *Connection) remoteKnown() bool { return !c.RemoteIsAny() }

func (c *Connection) validateChild(i int, ch *Child) error {
	childName := ch.Name
	if validName(childName) != nil {
		childName = "children[" + strconv.Itoa(i) + "]"
	}
	fail := func(field string, err error) error {
		return &Error{Connection: c.Name, Child: childName, Field: field, Err: err}
	}
	if err := validName(ch.Name); err != nil {
		return fail("name", err)
	}
	if ch.Mode != sa.Tunnel && ch.Mode != sa.Transport {
		return fail("mode", errf(ErrInvalid, "%s is neither tunnel nor transport", ch.Mode))
	}
	// Address families: one Quick Mode negotiates one pair of selectors,
	// and the kernel cannot carry IPv4 inside an IPv6 selector pair. All
	// selectors of a child, including the dynamic ones (the SA's own
	// addresses), must be of one family.
	family := 0 // 4 or 6, 0 unknown
	var famFrom string
	check := func(field string, is4 bool, what string) error {
		f := 6
		if is4 {
			f = 4
		}
		if family == 0 {
			family, famFrom = f, field+" "+what
			return nil
		}
		if f != family {
			return fail(field, errf(ErrInvalid, "%s is IPv%d but %s is IPv%d; all selectors of a child must be of one address family", what, f, famFrom, family))
		}
		return nil
	}
	for _, side := range []struct {
		field string
		ts    []sa.TrafficSelector
		addr  netip.Addr
		known bool
	}{{"local_ts", ch.LocalTS, c.Local, c.localKnown()}, {"remote_ts", ch.RemoteTS, c.Remote, c.remoteKnown()}} {
		if len(side.ts) == 0 {
			// Dynamic: the SA's own address on that side, of the family
			// of the configured address, or else of the other side's.
			switch {
			case side.known:
				if err := check(side.field, side.addr.Is4(), "(dynamic) "+side.addr.String()); err != nil {
					return err
				}
			case c.localKnown() || c.remoteKnown():
				other := c.Local
				if !c.localKnown() {
					other = c.Remote
				}
				if err := check(side.field, other.Is4(), "(dynamic, same family as "+other.String()+")"); err != nil {
					return err
				}
			}
			continue
		}
		for k, ts := range side.ts {
			f := side.field + "[" + strconv.Itoa(k) + "]"
			if err := validTS(ts); err != nil {
				return fail(f, err)
			}
			if err := check(f, ts.Prefix.Addr().Is4(), FormatTS(ts)); err != nil {
				return err
			}
			if ch.Mode == sa.Transport {
				if !ts.Prefix.IsSingleIP() {
					return fail(f, errf(ErrInvalid, "transport mode protects only the two gateways' own traffic; %s is not a single address", FormatTS(ts)))
				}
				if side.known && ts.Prefix.Addr() != side.addr {
					return fail(f, errf(ErrInvalid, "transport mode selector %s is not the %s address %s", FormatTS(ts), side.field[:len(side.field)-3], side.addr))
				}
			}
		}
	}
	if ch.Mode == sa.Transport && (len(ch.LocalTS) > 1 || len(ch.RemoteTS) > 1) {
		return fail("mode", errf(ErrInvalid, "transport mode takes one selector per side"))
	}
	if len(ch.ESPProposals) == 0 {
		return fail("esp_proposals", errf(ErrMissing, "no ESP proposals"))
	}
	if len(ch.ESPProposals) > maxTransforms {
		return fail("esp_proposals", errf(ErrInvalid, "%d transforms after expanding the proposals, at most %d", len(ch.ESPProposals), maxTransforms))
	}
	for k, p := range ch.ESPProposals {
		if err := validESPProposal(p, c.Legacy); err != nil {
			return fail("esp_proposals["+strconv.Itoa(k)+"]", err)
		}
		// IKEv1 Quick Mode carries one KE payload: one PFS group for all.
		if first := ch.ESPProposals[0]; p.PFSGroup != first.PFSGroup {
			return fail("esp_proposals", errf(ErrInvalid, "%s and %s differ in PFS group; a Quick Mode carries one key exchange, so all proposals of a child must use the same group (or none)", first, p))
		}
	}
	if err := lifetime(ch.RekeyTime); err != nil {
		return fail("rekey_time", err)
	}
	if err := lifetime(ch.LifeTime); err != nil {
		return fail("life_time", err)
	}
	if ch.RekeyTime >= ch.LifeTime {
		return fail("rekey_time", errf(ErrInvalid, "%s must be shorter than life_time %s", ch.RekeyTime, ch.LifeTime))
	}
	if ch.RekeyBytes != 0 && ch.LifeBytes != 0 && ch.RekeyBytes >= ch.LifeBytes {
		return fail("rekey_bytes", errf(ErrInvalid, "%d must be smaller than life_bytes %d", ch.RekeyBytes, ch.LifeBytes))
	}
	switch ch.StartAction {
	case "none":
	case "start":
		if !c.remoteKnown() {
			return fail("start_action", errf(ErrMissing, "start needs a remote address to initiate to; set remote_addrs on the connection"))
		}
	default:
		return fail("start_action", errf(ErrInvalid, "unknown value %q (want none or start)", clip(ch.StartAction)))
	}
	return nil
}

func lifetime(d time.Duration) error {
	if d < minLifetime || d > maxLifetime {
		return errf(ErrInvalid, "%s is out of range %s..%s", d, minLifetime, maxLifetime)
	}
	return nil
}

func validTS(ts sa.TrafficSelector) error {
	p := ts.Prefix
	switch {
	case !p.IsValid():
		return errf(ErrInvalid, "no prefix")
	case p.Addr().Zone() != "" || p.Addr().Is4In6():
		return errf(ErrInvalid, "%s: zoned or IPv4-mapped prefixes are not supported", p)
	case p.Masked() != p:
		return errf(ErrInvalid, "%s has host bits set", p)
	case ts.Port != 0 && !portProtos[ts.Protocol]:
		return errf(ErrInvalid, "%s: a port needs protocol tcp, udp or sctp", FormatTS(ts))
	}
	return nil
}

func validIdentity(id Identity) error {
	if id.IsZero() || id.IsAny() {
		return nil
	}
	switch id.Type {
	case IDIPv4:
		if len(id.Data) != 4 {
			return errf(ErrInvalid, "IPv4 identity with %d bytes", len(id.Data))
		}
	case IDIPv6:
		if len(id.Data) != 16 {
			return errf(ErrInvalid, "IPv6 identity with %d bytes", len(id.Data))
		}
	case IDFQDN, IDUserFQDN, IDKeyID, IDDERASN1DN:
		if len(id.Data) == 0 || len(id.Data) > maxIDLen {
			return errf(ErrInvalid, "identity of type %d with %d bytes", id.Type, len(id.Data))
		}
		if id.Type == IDDERASN1DN {
			if err := pki.CheckDN(id.Data); err != nil {
				return errf(ErrInvalid, "DER_ASN1_DN identity: %v", strings.TrimPrefix(err.Error(), "pki: "))
			}
		}
	default:
		return errf(ErrNotSupported, "identity type %d", id.Type)
	}
	return nil
}

func validIKEProposal(p IKEProposal, legacy bool) error {
	switch {
	case p.Encr == IKEEncrAESCBC && (p.KeyLen == 128 || p.KeyLen == 192 || p.KeyLen == 256):
	case p.Encr == IKEEncr3DES && p.KeyLen == 0:
		if !legacy {
			return errf(ErrLegacyAlgorithm, "cipher \"3des\" is weak; set legacy_algorithms: true to allow it")
		}
	default:
		return errf(ErrUnknownAlgorithm, "cipher %d with key length %d", p.Encr, p.KeyLen)
	}
	switch p.Hash {
	case IKEHashSHA1, IKEHashSHA256, IKEHashSHA384, IKEHashSHA512:
	default:
		return errf(ErrUnknownAlgorithm, "hash %d", p.Hash)
	}
	return validGroup(p.Group, legacy, false)
}

func validGroup(g uint16, legacy, noneOK bool) error {
	switch g {
	case 0:
		if !noneOK {
			return errf(ErrBadProposal, "no DH group")
		}
	case GroupMODP1024, GroupMODP1536:
		if !legacy {
			return errf(ErrLegacyAlgorithm, "DH group %q is weak; set legacy_algorithms: true to allow it", groupName(g))
		}
	case GroupMODP2048, GroupMODP3072, GroupMODP4096, GroupECP256, GroupECP384, GroupECP521, GroupCurve25519:
	default:
		return errf(ErrUnknownAlgorithm, "DH group %d", g)
	}
	return nil
}

func validESPProposal(p ESPProposal, legacy bool) error {
	var integ string
	var trunc uint16
	switch p.AuthAlg {
	case 0:
	case AuthHMACSHA1:
		integ, trunc = sa.IntegSHA1, 96
	case AuthHMACSHA2256:
		integ, trunc = sa.IntegSHA256, 128
	case AuthHMACSHA2384:
		integ, trunc = sa.IntegSHA384, 192
	case AuthHMACSHA2512:
		integ, trunc = sa.IntegSHA512, 256
	default:
		return errf(ErrUnknownAlgorithm, "ESP authentication algorithm %d", p.AuthAlg)
	}
	aesLen := p.KeyLen == 128 || p.KeyLen == 192 || p.KeyLen == 256
	switch {
	case p.TransformID == ESPAESGCM16 && aesLen:
		if p.AuthAlg != 0 || p.Encr != sa.EncrAESGCM || p.Integ != "" || p.TruncBits != 128 {
			return errf(ErrBadProposal, "AES-GCM-16 must have no integrity algorithm, kernel name %q and 128 ICV bits", sa.EncrAESGCM)
		}
	case p.TransformID == ESPAESCBC && aesLen, p.TransformID == ESP3DES && p.KeyLen == 0:
		want := sa.EncrAESCBC
		if p.TransformID == ESP3DES {
			if !legacy {
				return errf(ErrLegacyAlgorithm, "cipher \"3des\" is weak; set legacy_algorithms: true to allow it")
			}
			want = sa.Encr3DES
		}
		if p.AuthAlg == 0 {
			return errf(ErrBadProposal, "a CBC cipher needs an integrity algorithm")
		}
		if p.Encr != want || p.Integ != integ || p.TruncBits != trunc {
			return errf(ErrBadProposal, "kernel names %q/%q/%d do not match transform %d, auth %d", p.Encr, p.Integ, p.TruncBits, p.TransformID, p.AuthAlg)
		}
	default:
		return errf(ErrUnknownAlgorithm, "ESP transform %d with key length %d", p.TransformID, p.KeyLen)
	}
	return validGroup(p.PFSGroup, legacy, true)
}
