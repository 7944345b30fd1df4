package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"ikegw/ike/sa"
)

// Config is a parsed, validated set of connections.
type Config struct {
	Connections []*Connection
}

// Connection returns the connection with the given name, or nil.
func (c *Config) Connection(name string) *Connection {
	for _, conn := range c.Connections {
		if conn.Name == name {
			return conn
		}
	}
	return nil
}

// MatchRemote returns the connections a peer at addr may use: those whose
// remote address equals addr, then those whose remote address is any
// (%any), each group in configuration order. IPv4-mapped IPv6 addresses
// match their IPv4 form.
func (c *Config) MatchRemote(addr netip.Addr) []*Connection {
	addr = addr.Unmap()
	var exact, wild []*Connection
	for _, conn := range c.Connections {
		switch {
		case conn.RemoteIsAny():
			wild = append(wild, conn)
		case conn.Remote.Unmap() == addr:
			exact = append(exact, conn)
		}
	}
	return append(exact, wild...)
}

// DPDAction is what to do with a connection's SAs when its peer is found
// dead (RFC 3706).
type DPDAction uint8

const (
	DPDNone    DPDAction = iota // keep the SAs
	DPDClear                    // delete the SAs
	DPDHold                     // delete the SAs, keep the policies (trap)
	DPDRestart                  // delete the SAs and initiate again
)

var dpdActionNames = [...]string{DPDNone: "none", DPDClear: "clear", DPDHold: "hold", DPDRestart: "restart"}

func (a DPDAction) String() string {
	if int(a) < len(dpdActionNames) {
		return dpdActionNames[a]
	}
	return fmt.Sprintf("dpd_action(%d)", uint8(a))
}

// MarshalText returns the action's name.
func (a DPDAction) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// ParseDPDAction parses "none", "clear", "hold" or "restart".
func ParseDPDAction(s string) (DPDAction, error) {
	for i, n := range dpdActionNames {
		if s == n {
			return DPDAction(i), nil
		}
	}
	return 0, fmt.Errorf("unknown value %q (want none, clear, hold or restart)", s)
}

// Auth methods.
const (
	AuthPSK    = "psk"
	AuthPubkey = "pubkey" // X.509 certificates, RSA or ECDSA signatures
)

// Defaults (strongSwan's where it has one).
const (
	DefaultPort              = 500
	DefaultIKELifetime       = 8 * time.Hour
	DefaultDPDDelay          = 30 * time.Second
	DefaultDPDTimeout        = 150 * time.Second
	DefaultKeyingtries       = 3
	DefaultRekeyTime         = time.Hour
	DefaultRetransmitTimeout = 4 * time.Second
	DefaultRetransmitTries   = 5
	DefaultRetransmitBase    = 1.8
)

// Default proposal strings.
var (
	DefaultIKEProposals = []string{"aes256-sha256-modp2048", "aes128-sha1-modp2048"}
	DefaultESPProposals = []string{"aes256-sha256", "aes128-sha1"}
)

// Connection is one IKE peer configuration: an ISAKMP SA and the IPsec SAs
// (children) negotiated under it. Parse fills every default; a Connection
// built in code should pass Validate.
type Connection struct {
	Name        string
	Local       netip.Addr    // local_addrs; zero = any
	Remote      netip.Addr    // remote_addrs; zero ("%any") = any (responder only)
	LocalPort   uint16        // local_port, default 500
	RemotePort  uint16        // remote_port, default 500
	LocalID     Identity      // local_id; default: the local address (zero Identity when Local is any: the engine uses the SA's address); auth pubkey: the certificate's subject DN
	RemoteID    Identity      // remote_id; default: the remote address (zero when Remote is any), auth pubkey: %any; "%any" = IDAny
	Auth        string        // auth: "psk" (default) or "pubkey"
	PSK         Secret        // psk_file (mode 0600 or stricter) or psk_env
	Pubkey      *PubkeyAuth   // auth pubkey: cert, key, cacerts, crls, send_cert
	Aggressive  bool          // aggressive: initiator uses Aggressive Mode; responder accepts it only when true
	Proposals   []IKEProposal // proposals, default aes256-sha256-modp2048, aes128-sha1-modp2048
	Legacy      bool          // legacy_algorithms: allow 3des, modp1024, modp1536
	IKELifetime time.Duration // ike_lifetime, default 8h
	ReauthTime  time.Duration // reauth_time, default 0 (= ike_lifetime minus a margin chosen by the engine)
	DPDDelay    time.Duration // dpd_delay, default 30s, 0 = off
	DPDTimeout  time.Duration // dpd_timeout, default 150s
	DPDAction   DPDAction     // dpd_action, default clear
	ForceEncap  bool          // encap: force UDP encapsulation of ESP
	Initiate    bool          // start_action: start (initiate at startup) | none (default)
	Keyingtries int           // keyingtries, default 3, 0 = forever
	Retransmit  RetransmitConfig
	Children    []*Child
}

// RetransmitConfig is the retransmission schedule of our IKE requests: the
// n-th retransmission (n from 0) waits Timeout * Base^n, Tries times.
type RetransmitConfig struct {
	Timeout time.Duration // retransmit.timeout, default 4s
	Tries   int           // retransmit.tries, default 5
	Base    float64       // retransmit.base, default 1.8
}

// Child is one IPsec SA configuration (a Quick Mode's policy).
type Child struct {
	Name string
	// LocalTS and RemoteTS are the traffic selectors. Default: the
	// connection's local (remote) address as a /32 or /128; when that
	// address is any, the list is empty, meaning "the IKE SA's address"
	// (strongSwan's %dynamic).
	LocalTS      []sa.TrafficSelector
	RemoteTS     []sa.TrafficSelector
	ESPProposals []ESPProposal // esp_proposals, default aes256-sha256, aes128-sha1
	Mode         sa.Mode       // mode: tunnel (default) | transport
	RekeyTime    time.Duration // rekey_time, default 1h
	LifeTime     time.Duration // life_time, default rekey_time * 1.1
	RekeyBytes   uint64        // rekey_bytes, 0 = none
	LifeBytes    uint64        // life_bytes, default rekey_bytes * 1.1, 0 = none
	StartAction  string        // start_action: "none" | "start"; default: the connection's start_action
}

// RemoteIsAny reports whether the connection accepts any remote address.
func (c *Connection) RemoteIsAny() bool { return !c.Remote.IsValid() || c.Remote.IsUnspecified() }

// Child returns the child with the given name, or nil.
func (c *Connection) Child(name string) *Child {
	for _, ch := range c.Children {
		if ch.Name == name {
			return ch
		}
	}
	return nil
}

// Redacted returns a one-line summary of the connection for logs and CLI
// output. It never contains the PSK.
func (c *Connection) Redacted() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s[%s]:%d <-> %s[%s]:%d auth=%s", c.Name,
		addrOrAny(c.Local), idOrAddr(c.LocalID), c.LocalPort,
		addrOrAny(c.Remote), idOrAddr(c.RemoteID), c.RemotePort, c.Auth)
	if c.Auth == AuthPSK {
		if len(c.PSK) > 0 {
			b.WriteString(" psk=" + redacted)
		} else {
			b.WriteString(" psk=(none)")
		}
	}
	if c.Aggressive {
		b.WriteString(" aggressive")
	}
	b.WriteString(" ike=")
	for i, p := range c.Proposals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.String())
	}
	for _, ch := range c.Children {
		fmt.Fprintf(&b, " child %s: %s === %s %s esp=", ch.Name, tsList(ch.LocalTS), tsList(ch.RemoteTS), ch.Mode)
		for i, p := range ch.ESPProposals {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(p.String())
		}
	}
	return b.String()
}

// String is Redacted, so %v and %s of a *Connection never show the PSK.
func (c *Connection) String() string { return c.Redacted() }

func addrOrAny(a netip.Addr) string {
	if !a.IsValid() || a.IsUnspecified() {
		return "%any"
	}
	return a.String()
}

func idOrAddr(id Identity) string {
	if id.IsZero() {
		return "%addr"
	}
	return id.String()
}

func tsList(ts []sa.TrafficSelector) string {
	if len(ts) == 0 {
		return "dynamic"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = FormatTS(t)
	}
	return strings.Join(parts, ",")
}
