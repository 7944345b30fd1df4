package lab

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrSwanConfig is wrapped by every error about a SwanConfig.
var ErrSwanConfig = errors.New("strongswan config")

// Secret is a pre-shared key. It prints as "<redacted>" (String, GoString,
// %v of a struct holding it); only the generated swanctl.conf holds it.
type Secret string

func (Secret) String() string   { return "<redacted>" }
func (Secret) GoString() string { return "<redacted>" }

// SwanConfig configures one charon instance: strongswan.conf settings and
// the swanctl.conf connections. Zero values mean strongSwan's defaults.
type SwanConfig struct {
	// Conns are the connections (swanctl.conf `connections`); at least one.
	Conns []SwanConn
	// LogLevels are filelog levels per subsystem ("default", "ike", "enc",
	// "cfg", "knl", "net", ...). Default: default=1 ike=2.
	LogLevels map[string]int
	// RetransmitTries, RetransmitTimeout, RetransmitBase: charon's
	// retransmit_tries / _timeout / _base (IKE retransmission schedule).
	RetransmitTries   int
	RetransmitTimeout time.Duration
	RetransmitBase    float64
	// AllowAggressivePSK lets this charon answer IKEv1 Aggressive Mode with
	// a PSK as responder (strongSwan refuses it unless this deliberately
	// named override, i_dont_care_about_security_and_use_aggressive_mode_psk,
	// is set).
	AllowAggressivePSK bool
	// Charon holds further charon.* settings, e.g. {"make_before_break":
	// "no"}; keys are dotted paths below charon (for example
	// "plugins.kernel-libipsec.allow_peer_ts").
	Charon map[string]string
	// Plugins overrides the plugin load list (charon.load); the default
	// loads what IKEv1/IKEv2 PSK needs with kernel-libipsec.
	Plugins []string
}

// SwanConn is one swanctl.conf connection.
type SwanConn struct {
	Name        string   // connection name, used for Initiate/Terminate
	Version     int      // IKE version: 1 (default) or 2
	LocalAddrs  []string // local_addrs
	RemoteAddrs []string // remote_addrs
	LocalPort   int      // local_port; 0 = default (500)
	RemotePort  int      // remote_port; 0 = default (500)
	LocalID     string   // local id; default the address
	RemoteID    string   // remote id; default any
	PSK         Secret   // pre-shared key (auth = psk on both sides)
	Proposals   []string // IKE proposals, e.g. aes256-sha256-modp2048
	Aggressive  bool     // IKEv1 Aggressive Mode
	Encap       bool     // force UDP encapsulation
	// DPDDelay enables dead peer detection; DPDTimeout is its IKEv1 timeout.
	DPDDelay   time.Duration
	DPDTimeout time.Duration
	// RekeyTime, ReauthTime, OverTime: IKE SA lifetimes; negative writes 0
	// (disabled), zero keeps strongSwan's default.
	RekeyTime  time.Duration
	ReauthTime time.Duration
	OverTime   time.Duration
	Children   []SwanChild
	// Extra holds further connection settings, written as they are
	// (e.g. {"mobike": "no", "unique": "replace"}).
	Extra map[string]string
}

// SwanChild is one child (phase 2) of a connection.
type SwanChild struct {
	Name         string   // child name, used for Initiate/Terminate/RekeyChild
	LocalTS      []string // local_ts
	RemoteTS     []string // remote_ts
	ESPProposals []string // esp_proposals, e.g. aes256-sha256
	Mode         string   // tunnel (default), transport, pass, drop
	StartAction  string   // none (default), trap, start
	DPDAction    string   // clear, trap, restart
	CloseAction  string   // none, trap, start
	// RekeyTime, LifeTime: negative writes 0, zero keeps the default.
	RekeyTime time.Duration
	LifeTime  time.Duration
	Extra     map[string]string
}

var defaultPlugins = []string{
	"random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "kdf",
	"drbg", "gmp", "curve25519", "pem", "pkcs1", "x509", "pubkey",
	"constraints", "revocation", "kernel-libipsec", "kernel-netlink",
	"socket-default", "vici", "updown",
}

func (c SwanConfig) validate() error {
	if len(c.Conns) == 0 {
		return fmt.Errorf("%w: no connections", ErrSwanConfig)
	}
	seen := map[string]bool{}
	for _, conn := range c.Conns {
		if err := conn.validate(); err != nil {
			return err
		}
		if seen[conn.Name] {
			return fmt.Errorf("%w: connection %q defined twice", ErrSwanConfig, conn.Name)
		}
		seen[conn.Name] = true
	}
	for k, v := range c.LogLevels {
		if !nameRE.MatchString(k) || v < -1 || v > 4 {
			return fmt.Errorf("%w: log level %q=%d: want a subsystem name and -1..4", ErrSwanConfig, k, v)
		}
	}
	if err := checkSettings("charon", c.Charon); err != nil {
		return err
	}
	for _, p := range c.Plugins {
		if !nameRE.MatchString(p) {
			return fmt.Errorf("%w: plugin %q: bad name", ErrSwanConfig, p)
		}
	}
	return nil
}

func checkSettings(where string, m map[string]string) error {
	for k, v := range m {
		if !nameRE.MatchString(k) {
			return fmt.Errorf("%w: %s: setting %q: bad key", ErrSwanConfig, where, k)
		}
		if strings.ContainsAny(v, "\n\r{}\"#") {
			return fmt.Errorf("%w: %s: setting %q: value %q has one of \\n { } \" #", ErrSwanConfig, where, k, v)
		}
	}
	return nil
}

func checkWords(where, what string, vals []string) error {
	for _, v := range vals {
		if v == "" || strings.ContainsAny(v, " \t\n\r{}\"#,") {
			return fmt.Errorf("%w: %s: %s %q: empty or has a space, comma, brace, quote or #", ErrSwanConfig, where, what, v)
		}
	}
	return nil
}

func (c SwanConn) validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("%w: connection name %q: want [A-Za-z0-9_.-]+", ErrSwanConfig, c.Name)
	}
	where := fmt.Sprintf("connection %q", c.Name)
	if c.Version != 0 && c.Version != 1 && c.Version != 2 {
		return fmt.Errorf("%w: %s: version %d: want 1 or 2", ErrSwanConfig, where, c.Version)
	}
	if c.PSK == "" {
		return fmt.Errorf("%w: %s: no PSK", ErrSwanConfig, where)
	}
	if strings.ContainsAny(string(c.PSK), "\"\\\n\r") {
		return fmt.Errorf("%w: %s: PSK has a quote, backslash or newline", ErrSwanConfig, where)
	}
	if c.LocalPort < 0 || c.LocalPort > 65535 || c.RemotePort < 0 || c.RemotePort > 65535 {
		return fmt.Errorf("%w: %s: port out of range (local %d, remote %d)", ErrSwanConfig, where, c.LocalPort, c.RemotePort)
	}
	for _, w := range []struct {
		what string
		vals []string
	}{{"local_addrs", c.LocalAddrs}, {"remote_addrs", c.RemoteAddrs}, {"proposals", c.Proposals}} {
		if err := checkWords(where, w.what, w.vals); err != nil {
			return err
		}
	}
	for _, id := range []string{c.LocalID, c.RemoteID} {
		if strings.ContainsAny(id, "\"\n\r{}#") {
			return fmt.Errorf("%w: %s: identity %q has a quote, brace, # or newline", ErrSwanConfig, where, id)
		}
	}
	if err := checkSettings(where, c.Extra); err != nil {
		return err
	}
	if len(c.Children) == 0 {
		return fmt.Errorf("%w: %s: no children", ErrSwanConfig, where)
	}
	seen := map[string]bool{}
	for _, ch := range c.Children {
		cw := fmt.Sprintf("%s: child %q", where, ch.Name)
		if !nameRE.MatchString(ch.Name) {
			return fmt.Errorf("%w: %s: bad child name", ErrSwanConfig, cw)
		}
		if seen[ch.Name] {
			return fmt.Errorf("%w: %s: defined twice", ErrSwanConfig, cw)
		}
		seen[ch.Name] = true
		for _, w := range []struct {
			what string
			vals []string
		}{{"local_ts", ch.LocalTS}, {"remote_ts", ch.RemoteTS}, {"esp_proposals", ch.ESPProposals}} {
			if err := checkWords(cw, w.what, w.vals); err != nil {
				return err
			}
		}
		for _, w := range []struct{ what, val string }{{"mode", ch.Mode}, {"start_action", ch.StartAction}, {"dpd_action", ch.DPDAction}, {"close_action", ch.CloseAction}} {
			if w.val != "" && !nameRE.MatchString(w.val) {
				return fmt.Errorf("%w: %s: %s %q: bad value", ErrSwanConfig, cw, w.what, w.val)
			}
		}
		if err := checkSettings(cw, ch.Extra); err != nil {
			return err
		}
	}
	return nil
}

// swanDuration renders a duration for swanctl.conf: seconds, negative → 0.
func swanDuration(d time.Duration) string {
	if d < 0 {
		return "0"
	}
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

type confWriter struct {
	b     strings.Builder
	depth int
}

func (w *confWriter) open(name string) {
	w.line(name + " {")
	w.depth++
}

func (w *confWriter) close() {
	w.depth--
	w.line("}")
}

func (w *confWriter) line(s string) {
	w.b.WriteString(strings.Repeat("  ", w.depth))
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}

func (w *confWriter) kv(k, v string) {
	if v != "" {
		w.line(k + " = " + v)
	}
}

func (w *confWriter) dur(k string, d time.Duration) {
	if d != 0 {
		w.kv(k, swanDuration(d))
	}
}

func (w *confWriter) extra(m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w.kv(k, m[k])
	}
}

// nested writes dotted settings ("a.b.c" = v) as nested sections so that
// several keys below one section merge; keys are sorted.
func (w *confWriter) nested(m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			w.open(p)
		}
		w.kv(parts[len(parts)-1], m[k])
		for range parts[:len(parts)-1] {
			w.close()
		}
	}
}

// StrongswanConf renders strongswan.conf for an instance whose charon log
// goes to logPath.
func (c SwanConfig) StrongswanConf(logPath string) (string, error) {
	if err := c.validate(); err != nil {
		return "", err
	}
	w := &confWriter{}
	w.open("charon")
	w.kv("load_modular", "no")
	plugins := c.Plugins
	if len(plugins) == 0 {
		plugins = defaultPlugins
	}
	w.kv("load", strings.Join(plugins, " "))
	if c.RetransmitTries != 0 {
		w.kv("retransmit_tries", strconv.Itoa(c.RetransmitTries))
	}
	if c.RetransmitTimeout != 0 {
		w.kv("retransmit_timeout", strconv.FormatFloat(c.RetransmitTimeout.Seconds(), 'f', -1, 64))
	}
	if c.RetransmitBase != 0 {
		w.kv("retransmit_base", strconv.FormatFloat(c.RetransmitBase, 'f', -1, 64))
	}
	if c.AllowAggressivePSK {
		w.kv("i_dont_care_about_security_and_use_aggressive_mode_psk", "yes")
	}
	w.open("filelog")
	w.open("lab")
	w.kv("path", logPath)
	w.kv("time_format", "%T")
	w.kv("ike_name", "yes")
	w.kv("flush_line", "yes")
	w.kv("append", "yes")
	levels := c.LogLevels
	if len(levels) == 0 {
		levels = map[string]int{"default": 1, "ike": 2}
	}
	lk := make([]string, 0, len(levels))
	for k := range levels {
		lk = append(lk, k)
	}
	slices.Sort(lk)
	for _, k := range lk {
		w.kv(k, strconv.Itoa(levels[k]))
	}
	w.close()
	w.close()
	w.open("syslog")
	w.kv("identifier", "charon-lab")
	w.open("daemon")
	w.kv("default", "-1")
	w.close()
	w.close()
	w.nested(c.Charon)
	w.close()
	return w.b.String(), nil
}

// SwanctlConf renders swanctl.conf: the connections and their PSKs. The
// result holds secrets: write it with mode 0600 and never log it.
func (c SwanConfig) SwanctlConf() (string, error) {
	if err := c.validate(); err != nil {
		return "", err
	}
	w := &confWriter{}
	w.open("connections")
	for _, conn := range c.Conns {
		w.open(conn.Name)
		v := conn.Version
		if v == 0 {
			v = 1
		}
		w.kv("version", strconv.Itoa(v))
		w.kv("local_addrs", strings.Join(conn.LocalAddrs, ","))
		w.kv("remote_addrs", strings.Join(conn.RemoteAddrs, ","))
		if conn.LocalPort != 0 {
			w.kv("local_port", strconv.Itoa(conn.LocalPort))
		}
		if conn.RemotePort != 0 {
			w.kv("remote_port", strconv.Itoa(conn.RemotePort))
		}
		w.kv("proposals", strings.Join(conn.Proposals, ","))
		w.kv("aggressive", yesNo(conn.Aggressive))
		if conn.Encap {
			w.kv("encap", "yes")
		}
		w.dur("dpd_delay", conn.DPDDelay)
		w.dur("dpd_timeout", conn.DPDTimeout)
		w.dur("rekey_time", conn.RekeyTime)
		w.dur("reauth_time", conn.ReauthTime)
		w.dur("over_time", conn.OverTime)
		w.extra(conn.Extra)
		w.open("local")
		w.kv("auth", "psk")
		w.kv("id", quoteID(conn.LocalID))
		w.close()
		w.open("remote")
		w.kv("auth", "psk")
		w.kv("id", quoteID(conn.RemoteID))
		w.close()
		w.open("children")
		for _, ch := range conn.Children {
			w.open(ch.Name)
			w.kv("local_ts", strings.Join(ch.LocalTS, ","))
			w.kv("remote_ts", strings.Join(ch.RemoteTS, ","))
			w.kv("esp_proposals", strings.Join(ch.ESPProposals, ","))
			w.kv("mode", ch.Mode)
			w.kv("start_action", ch.StartAction)
			w.kv("dpd_action", ch.DPDAction)
			w.kv("close_action", ch.CloseAction)
			w.dur("rekey_time", ch.RekeyTime)
			w.dur("life_time", ch.LifeTime)
			w.extra(ch.Extra)
			w.close()
		}
		w.close()
		w.close()
	}
	w.close()
	w.open("secrets")
	for _, conn := range c.Conns {
		w.open("ike-" + conn.Name)
		// Without ids the secret matches any pair; with ids, only them.
		if conn.LocalID != "" {
			w.kv("id-local", quoteID(conn.LocalID))
		}
		if conn.RemoteID != "" {
			w.kv("id-remote", quoteID(conn.RemoteID))
		}
		w.kv("secret", `"`+string(conn.PSK)+`"`)
		w.close()
	}
	w.close()
	return w.b.String(), nil
}

func quoteID(id string) string {
	if id == "" {
		return ""
	}
	return `"` + id + `"`
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
