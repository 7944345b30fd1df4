package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"ikegw/ike/sa"
)

// MaxFileSize bounds a config document.
const MaxFileSize = 1 << 20

// maxPSKFileSize bounds a psk_file.
const maxPSKFileSize = 4096

// rawDoc is the top level of a connections document.
type rawDoc struct {
	Connections *yaml.Node `yaml:"connections"`
}

// rawConn is a connection as written. Pointers tell "not given" from zero.
type rawConn struct {
	Name        *string    `yaml:"name"`
	LocalAddrs  *strList   `yaml:"local_addrs"`
	RemoteAddrs *strList   `yaml:"remote_addrs"`
	LocalPort   *int64     `yaml:"local_port"`
	RemotePort  *int64     `yaml:"remote_port"`
	LocalID     *string    `yaml:"local_id"`
	RemoteID    *string    `yaml:"remote_id"`
	Auth        *string    `yaml:"auth"`
	PSK         *yaml.Node `yaml:"psk"` // recognised only to refuse it
	PSKFile     *string    `yaml:"psk_file"`
	PSKEnv      *string    `yaml:"psk_env"`
	Cert        *string    `yaml:"cert"`
	Key         *string    `yaml:"key"`
	CACerts     *strList   `yaml:"cacerts"`
	CRLs        *strList   `yaml:"crls"`
	SendCert    *string    `yaml:"send_cert"`
	Aggressive  *bool      `yaml:"aggressive"`
	Proposals   *strList   `yaml:"proposals"`
	Legacy      *bool      `yaml:"legacy_algorithms"`
	IKELifetime *duration  `yaml:"ike_lifetime"`
	ReauthTime  *duration  `yaml:"reauth_time"`
	DPDDelay    *duration  `yaml:"dpd_delay"`
	DPDTimeout  *duration  `yaml:"dpd_timeout"`
	DPDAction   *string    `yaml:"dpd_action"`
	Encap       *bool      `yaml:"encap"`
	StartAction *string    `yaml:"start_action"`
	Keyingtries *int64     `yaml:"keyingtries"`
	Retransmit  *yaml.Node `yaml:"retransmit"`
	Children    *yaml.Node `yaml:"children"`
}

type rawRetransmit struct {
	Timeout *duration `yaml:"timeout"`
	Tries   *int64    `yaml:"tries"`
	Base    *float64  `yaml:"base"`
}

type rawChild struct {
	Name         *string    `yaml:"name"`
	LocalTS      *strList   `yaml:"local_ts"`
	RemoteTS     *strList   `yaml:"remote_ts"`
	ESPProposals *strList   `yaml:"esp_proposals"`
	Mode         *string    `yaml:"mode"`
	RekeyTime    *duration  `yaml:"rekey_time"`
	LifeTime     *duration  `yaml:"life_time"`
	RekeyBytes   *byteCount `yaml:"rekey_bytes"`
	LifeBytes    *byteCount `yaml:"life_bytes"`
	StartAction  *string    `yaml:"start_action"`
}

// options are the environment of a parse.
type options struct {
	file      string                       // config file name for errors ("" for Parse)
	baseDir   string                       // relative psk_file paths are relative to it
	lookupEnv func(string) (string, bool)  // os.LookupEnv
	pskFile   func(string) (Secret, error) // readPSKFile
}

// Parse parses and validates a connections document: a YAML mapping whose
// only key is `connections:`, a list of connections. Relative psk_file paths
// are relative to the working directory; psk_env names are looked up in the
// process environment.
func Parse(data []byte) (*Config, error) {
	return parse(data, options{lookupEnv: os.LookupEnv})
}

// Load reads and parses the connections document at path. Relative psk_file
// paths are relative to the document's directory, and errors carry the
// file name and line.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Err: osErr(err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &Error{File: path, Err: osErr(err)}
	}
	return parse(data, options{file: path, baseDir: filepath.Dir(path), lookupEnv: os.LookupEnv})
}

func parse(data []byte, o options) (cfg *Config, err error) {
	if len(data) > MaxFileSize {
		return nil, &Error{File: o.file, Err: errf(ErrInvalid, "document larger than %d bytes", MaxFileSize)}
	}
	var doc yaml.Node
	if err := safeUnmarshal(data, &doc); err != nil {
		return nil, &Error{File: o.file, Err: err}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &Error{File: o.file, Err: errf(ErrMissing, "empty document; expected a `connections:` list")}
	}
	var raw rawDoc
	if fe := decodeStrict(doc.Content[0], &raw); fe != nil {
		return nil, &Error{File: o.file, Line: fe.line, Field: fe.field, Err: fe.err}
	}
	if raw.Connections == nil {
		return nil, &Error{File: o.file, Line: doc.Content[0].Line, Field: "connections", Err: errf(ErrMissing, "no `connections:` list")}
	}
	return decodeConnections(raw.Connections, o)
}

// DecodeConnections decodes and validates a YAML list of connections (the
// value of a `connections:` key), for a daemon config that embeds it.
// Relative psk_file paths are relative to baseDir ("" = working directory).
func DecodeConnections(list *yaml.Node, baseDir string) (*Config, error) {
	return decodeConnections(list, options{baseDir: baseDir, lookupEnv: os.LookupEnv})
}

// safeUnmarshal parses YAML into a node tree, turning a panic inside the
// YAML library into an error: a config file must never crash the daemon.
func safeUnmarshal(data []byte, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errf(ErrInvalid, "YAML parser failed on this document: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty document; the caller reports it
		}
		return errf(ErrInvalid, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return errf(ErrInvalid, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return errf(ErrInvalid, "line %d: a second YAML document; the file must hold exactly one", line)
	}
	return nil
}

func decodeConnections(list *yaml.Node, o options) (*Config, error) {
	list = resolve(list)
	if list == nil || list.Kind != yaml.SequenceNode {
		line, desc := 0, "nothing"
		if list != nil {
			line, desc = list.Line, kindName(list)
		}
		return nil, &Error{File: o.file, Line: line, Field: "connections", Err: errf(ErrInvalid, "expected a list of connections, found %s", desc)}
	}
	if len(list.Content) == 0 {
		return nil, &Error{File: o.file, Line: list.Line, Field: "connections", Err: errf(ErrMissing, "the list is empty")}
	}
	cfg := &Config{}
	pos := &positions{conns: map[string]keyPos{}, children: map[*Child]keyPos{}}
	for i, item := range list.Content {
		c, err := decodeConnection(i, item, o, pos)
		if err != nil {
			return nil, err
		}
		cfg.Connections = append(cfg.Connections, c)
	}
	if err := cfg.Validate(); err != nil {
		if e, ok := err.(*Error); ok {
			e.File = o.file
			pos.locate(cfg, e)
		}
		return nil, err
	}
	return cfg, nil
}

// keyPos is where a mapping (a connection or a child) and its keys are.
type keyPos struct {
	line int
	keys map[string]*yaml.Node // value node of each key
}

func keyPosOf(n *yaml.Node) keyPos {
	kp := keyPos{keys: map[string]*yaml.Node{}}
	if n = resolve(n); n == nil || n.Kind != yaml.MappingNode {
		return kp
	}
	kp.line = n.Line
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k != nil {
			kp.keys[k.Value] = n.Content[i+1]
		}
	}
	return kp
}

// lineOf returns the line of a field such as "proposals[1]" or
// "retransmit.base", or of the mapping when the key is not written.
func (kp keyPos) lineOf(field string) int {
	base, rest := field, ""
	if i := strings.IndexAny(field, "[."); i >= 0 {
		base, rest = field[:i], field[i:]
	}
	n := resolve(kp.keys[base])
	if n == nil {
		return kp.line
	}
	switch {
	case strings.HasPrefix(rest, "[") && n.Kind == yaml.SequenceNode:
		idx, err := strconv.Atoi(strings.TrimSuffix(rest[1:], "]"))
		if err == nil && idx >= 0 && idx < len(n.Content) {
			return n.Content[idx].Line
		}
	case strings.HasPrefix(rest, ".") && n.Kind == yaml.MappingNode:
		return keyPosOf(n).lineOf(rest[1:])
	}
	return n.Line
}

// positions remembers where each connection and child was written, to put
// lines on errors found by Validate.
type positions struct {
	conns    map[string]keyPos
	children map[*Child]keyPos
}

func (p *positions) locate(cfg *Config, e *Error) {
	cp, ok := p.conns[e.Connection]
	if !ok {
		return
	}
	kp := cp
	if e.Child != "" {
		c := cfg.Connection(e.Connection)
		if c == nil {
			return
		}
		ch := c.Child(e.Child)
		if ch == nil {
			return
		}
		if kp, ok = p.children[ch]; !ok {
			return
		}
	}
	e.Line = kp.lineOf(e.Field)
}

// connName returns the name of connection i for errors: its name if it has
// a usable one, else "connections[i]".
func connName(i int, r *rawConn) string {
	if r != nil && r.Name != nil && validName(*r.Name) == nil {
		return *r.Name
	}
	return "connections[" + strconv.Itoa(i) + "]"
}

func decodeConnection(i int, item *yaml.Node, o options, pos *positions) (*Connection, error) {
	var r rawConn
	// The name first, so that every later error can carry it.
	if m := resolve(item); m != nil && m.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(m.Content); j += 2 {
			if k := resolve(m.Content[j]); k != nil && k.Kind == yaml.ScalarNode && k.Value == "name" {
				if v := resolve(m.Content[j+1]); v != nil && v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
					name := v.Value
					r.Name = &name
				}
				break
			}
		}
	}
	name := connName(i, &r)
	r = rawConn{}
	if fe := decodeStrict(item, &r); fe != nil {
		return nil, &Error{File: o.file, Line: fe.line, Connection: name, Field: fe.field, Err: fe.err}
	}
	// fail builds an error at a field of this connection.
	kp := keyPosOf(item)
	fail := func(field, value string, err error) error {
		return &Error{File: o.file, Line: kp.lineOf(field), Connection: name, Field: field, Value: value, Err: err}
	}
	c := &Connection{}
	if r.Name == nil {
		return nil, fail("name", "", errf(ErrMissing, "every connection needs a name"))
	}
	c.Name = *r.Name
	if err := validName(c.Name); err != nil {
		return nil, fail("name", clip(c.Name), err)
	}
	if _, dup := pos.conns[c.Name]; !dup {
		pos.conns[c.Name] = kp
	}
	c.Legacy = r.Legacy != nil && *r.Legacy

	var err error
	if c.Local, err = parseAddrs(r.LocalAddrs); err != nil {
		return nil, fail("local_addrs", "", err)
	}
	if c.Remote, err = parseAddrs(r.RemoteAddrs); err != nil {
		return nil, fail("remote_addrs", "", err)
	}
	if c.LocalPort, err = parsePort(r.LocalPort); err != nil {
		return nil, fail("local_port", "", err)
	}
	if c.RemotePort, err = parsePort(r.RemotePort); err != nil {
		return nil, fail("remote_port", "", err)
	}

	if r.LocalID != nil {
		if c.LocalID, err = ParseIdentity(*r.LocalID); err != nil {
			return nil, fail("local_id", "", err)
		}
		if c.LocalID.IsAny() {
			return nil, fail("local_id", *r.LocalID, errf(ErrInvalid, "%%any is only meaningful for remote_id; leave local_id out to use the local address"))
		}
	} else if c.Local.IsValid() {
		c.LocalID = AddrIdentity(c.Local)
	}
	if r.RemoteID != nil {
		if c.RemoteID, err = ParseIdentity(*r.RemoteID); err != nil {
			return nil, fail("remote_id", "", err)
		}
	} else if c.Remote.IsValid() {
		c.RemoteID = AddrIdentity(c.Remote)
	}

	c.Auth = AuthPSK
	if r.Auth != nil {
		c.Auth = *r.Auth
	}
	if r.PSK != nil {
		// Never echo the value: it is a secret.
		return nil, fail("psk", "", errf(ErrInsecure, "inline secrets are refused; put the key in a file readable only by ikegwd (psk_file) or in the environment (psk_env)"))
	}
	switch {
	case r.PSKFile != nil && r.PSKEnv != nil:
		return nil, fail("psk_file", "", errf(ErrInvalid, "give either psk_file or psk_env, not both"))
	case r.PSKFile != nil:
		path := *r.PSKFile
		if path != "" && !filepath.IsAbs(path) && o.baseDir != "" {
			path = filepath.Join(o.baseDir, path)
		}
		read := o.pskFile
		if read == nil {
			read = readPSKFile
		}
		if c.PSK, err = read(path); err != nil {
			return nil, fail("psk_file", *r.PSKFile, err)
		}
	case r.PSKEnv != nil:
		if c.PSK, err = readPSKEnv(*r.PSKEnv, o.lookupEnv); err != nil {
			return nil, fail("psk_env", *r.PSKEnv, err)
		}
	}
	if (r.PSKFile != nil || r.PSKEnv != nil) && c.Auth != AuthPSK {
		return nil, fail("auth", c.Auth, errf(ErrInvalid, "a PSK is given but auth is not psk"))
	}
	if err := parsePubkey(c, &r, o.baseDir, fail); err != nil {
		return nil, err
	}
	if err := pubkeyIdentities(c, r.LocalID != nil, r.RemoteID != nil, fail); err != nil {
		return nil, err
	}

	c.Aggressive = r.Aggressive != nil && *r.Aggressive

	props := DefaultIKEProposals
	if r.Proposals != nil {
		props = *r.Proposals
		if len(props) == 0 {
			return nil, fail("proposals", "", errf(ErrMissing, "the list is empty; leave it out for the defaults"))
		}
	}
	for j, s := range props {
		ps, err := ParseIKEProposal(s, c.Legacy)
		if err != nil {
			return nil, fail("proposals["+strconv.Itoa(j)+"]", s, err)
		}
		for _, p := range ps {
			if !slices.Contains(c.Proposals, p) {
				c.Proposals = append(c.Proposals, p)
			}
		}
	}

	c.IKELifetime = durOr(r.IKELifetime, DefaultIKELifetime)
	c.ReauthTime = durOr(r.ReauthTime, 0)
	c.DPDDelay = durOr(r.DPDDelay, DefaultDPDDelay)
	c.DPDTimeout = durOr(r.DPDTimeout, DefaultDPDTimeout)
	c.DPDAction = DPDClear
	if r.DPDAction != nil {
		if c.DPDAction, err = ParseDPDAction(*r.DPDAction); err != nil {
			return nil, fail("dpd_action", "", errf(ErrInvalid, "%v", err))
		}
	}
	c.ForceEncap = r.Encap != nil && *r.Encap
	if r.StartAction != nil {
		switch *r.StartAction {
		case "none":
		case "start":
			c.Initiate = true
		case "trap", "route":
			return nil, fail("start_action", *r.StartAction, errf(ErrNotSupported, "trap policies are not supported; use start or none"))
		default:
			return nil, fail("start_action", "", errf(ErrInvalid, "unknown value %q (want none or start)", clip(*r.StartAction)))
		}
	}
	c.Keyingtries = DefaultKeyingtries
	if r.Keyingtries != nil {
		if *r.Keyingtries < 0 || *r.Keyingtries > 1<<20 {
			return nil, fail("keyingtries", "", errf(ErrInvalid, "%d is out of range 0..%d (0 means forever)", *r.Keyingtries, 1<<20))
		}
		c.Keyingtries = int(*r.Keyingtries)
	}

	c.Retransmit = RetransmitConfig{Timeout: DefaultRetransmitTimeout, Tries: DefaultRetransmitTries, Base: DefaultRetransmitBase}
	if r.Retransmit != nil {
		var rr rawRetransmit
		if fe := decodeStrict(r.Retransmit, &rr); fe != nil {
			return nil, &Error{File: o.file, Line: fe.line, Connection: name, Field: joinField("retransmit", fe.field), Err: fe.err}
		}
		c.Retransmit.Timeout = durOr(rr.Timeout, c.Retransmit.Timeout)
		if rr.Tries != nil {
			if *rr.Tries < 1 || *rr.Tries > maxRetransmitTries {
				return nil, fail("retransmit.tries", "", errf(ErrInvalid, "%d is out of range 1..%d", *rr.Tries, maxRetransmitTries))
			}
			c.Retransmit.Tries = int(*rr.Tries)
		}
		if rr.Base != nil {
			c.Retransmit.Base = *rr.Base
		}
	}

	if r.Children == nil {
		return nil, fail("children", "", errf(ErrMissing, "a connection needs at least one child (its IPsec SAs)"))
	}
	kids := resolve(r.Children)
	if kids == nil || kids.Kind != yaml.SequenceNode {
		desc := "nothing"
		if kids != nil {
			desc = kindName(kids)
		}
		return nil, fail("children", "", errf(ErrInvalid, "expected a list of children, found %s", desc))
	}
	for j, item := range kids.Content {
		ch, err := decodeChild(c, j, item, o)
		if err != nil {
			return nil, err
		}
		pos.children[ch] = keyPosOf(item)
		c.Children = append(c.Children, ch)
	}
	return c, nil
}

func joinField(parent, field string) string {
	if field == "" {
		return parent
	}
	return parent + "." + field
}

func durOr(d *duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return time.Duration(*d)
}

func decodeChild(c *Connection, j int, item *yaml.Node, o options) (*Child, error) {
	var r rawChild
	childName := "children[" + strconv.Itoa(j) + "]"
	if m := resolve(item); m != nil && m.Kind == yaml.MappingNode {
		for k := 0; k+1 < len(m.Content); k += 2 {
			if key := resolve(m.Content[k]); key != nil && key.Kind == yaml.ScalarNode && key.Value == "name" {
				if v := resolve(m.Content[k+1]); v != nil && v.Kind == yaml.ScalarNode && validName(v.Value) == nil {
					childName = v.Value
				}
				break
			}
		}
	}
	kp := keyPosOf(item)
	fail := func(field, value string, err error) error {
		return &Error{File: o.file, Line: kp.lineOf(field), Connection: c.Name, Child: childName, Field: field, Value: value, Err: err}
	}
	if fe := decodeStrict(item, &r); fe != nil {
		return nil, &Error{File: o.file, Line: fe.line, Connection: c.Name, Child: childName, Field: fe.field, Err: fe.err}
	}
	ch := &Child{}
	if r.Name == nil {
		return nil, fail("name", "", errf(ErrMissing, "every child needs a name"))
	}
	ch.Name = *r.Name
	if err := validName(ch.Name); err != nil {
		return nil, fail("name", clip(ch.Name), err)
	}
	var err error
	if ch.LocalTS, err = parseTSList("local_ts", r.LocalTS, c.Local, fail); err != nil {
		return nil, err
	}
	if ch.RemoteTS, err = parseTSList("remote_ts", r.RemoteTS, c.Remote, fail); err != nil {
		return nil, err
	}
	props := DefaultESPProposals
	if r.ESPProposals != nil {
		props = *r.ESPProposals
		if len(props) == 0 {
			return nil, fail("esp_proposals", "", errf(ErrMissing, "the list is empty; leave it out for the defaults"))
		}
	}
	for k, s := range props {
		ps, err := ParseESPProposal(s, c.Legacy)
		if err != nil {
			return nil, fail("esp_proposals["+strconv.Itoa(k)+"]", s, err)
		}
		for _, p := range ps {
			if !slices.Contains(ch.ESPProposals, p) {
				ch.ESPProposals = append(ch.ESPProposals, p)
			}
		}
	}
	ch.Mode = sa.Tunnel
	if r.Mode != nil {
		switch *r.Mode {
		case "tunnel":
		case "transport":
			ch.Mode = sa.Transport
		case "beet", "pass", "drop":
			return nil, fail("mode", *r.Mode, errf(ErrNotSupported, "only tunnel and transport modes are supported"))
		default:
			return nil, fail("mode", "", errf(ErrInvalid, "unknown value %q (want tunnel or transport)", clip(*r.Mode)))
		}
	}
	// Lifetimes: life defaults to rekey + 10%; given only a life, rekey
	// defaults to the smaller of 1h and life / 1.1.
	switch {
	case r.RekeyTime != nil && r.LifeTime != nil:
		ch.RekeyTime, ch.LifeTime = time.Duration(*r.RekeyTime), time.Duration(*r.LifeTime)
	case r.RekeyTime != nil:
		ch.RekeyTime = time.Duration(*r.RekeyTime)
		ch.LifeTime = plusTenth(ch.RekeyTime)
	case r.LifeTime != nil:
		ch.LifeTime = time.Duration(*r.LifeTime)
		ch.RekeyTime = min(DefaultRekeyTime, time.Duration(float64(ch.LifeTime)/1.1))
	default:
		ch.RekeyTime = DefaultRekeyTime
		ch.LifeTime = plusTenth(DefaultRekeyTime)
	}
	if r.RekeyBytes != nil {
		ch.RekeyBytes = uint64(*r.RekeyBytes)
	}
	if r.LifeBytes != nil {
		ch.LifeBytes = uint64(*r.LifeBytes)
	} else if ch.RekeyBytes != 0 {
		ch.LifeBytes = ch.RekeyBytes + ch.RekeyBytes/10
		if ch.LifeBytes < ch.RekeyBytes { // overflow
			ch.LifeBytes = ^uint64(0)
		}
	}
	ch.StartAction = "none"
	if c.Initiate {
		ch.StartAction = "start"
	}
	if r.StartAction != nil {
		switch *r.StartAction {
		case "none", "start":
			ch.StartAction = *r.StartAction
		case "trap", "route":
			return nil, fail("start_action", *r.StartAction, errf(ErrNotSupported, "trap policies are not supported; use start or none"))
		default:
			return nil, fail("start_action", "", errf(ErrInvalid, "unknown value %q (want none or start)", clip(*r.StartAction)))
		}
	}
	return ch, nil
}

func plusTenth(d time.Duration) time.Duration {
	if d > maxLifetime {
		return d // Validate refuses it anyway; avoid overflow
	}
	return d + d/10
}

// parseTSList parses local_ts or remote_ts. Not given: the connection's
// address as a host selector, or nothing (= dynamic) when it is any.
// "dynamic" / "%dynamic" is the same, alone.
func parseTSList(field string, l *strList, addr netip.Addr, fail func(string, string, error) error) ([]sa.TrafficSelector, error) {
	host := func() []sa.TrafficSelector {
		if addr.IsValid() {
			return []sa.TrafficSelector{{Prefix: netip.PrefixFrom(addr, addr.BitLen())}}
		}
		return nil
	}
	if l == nil {
		return host(), nil
	}
	if len(*l) == 0 {
		return nil, fail(field, "", errf(ErrMissing, "the list is empty; leave it out for the default"))
	}
	var out []sa.TrafficSelector
	for k, s := range *l {
		f := field + "[" + strconv.Itoa(k) + "]"
		if s == "dynamic" || s == "%dynamic" {
			if len(*l) != 1 {
				return nil, fail(f, s, errf(ErrInvalid, "dynamic must be the only selector"))
			}
			return host(), nil
		}
		if strings.HasPrefix(s, "dynamic[") || strings.HasPrefix(s, "%dynamic[") {
			return nil, fail(f, s, errf(ErrNotSupported, "dynamic with a protocol or port is not supported yet; write the address"))
		}
		ts, err := ParseTS(s)
		if err != nil {
			return nil, fail(f, "", err)
		}
		if slices.Contains(out, ts) {
			return nil, fail(f, s, errf(ErrInvalid, "listed twice"))
		}
		out = append(out, ts)
	}
	return out, nil
}

// parseAddrs parses local_addrs/remote_addrs: one IP address, or %any.
func parseAddrs(l *strList) (netip.Addr, error) {
	if l == nil {
		return netip.Addr{}, nil
	}
	if len(*l) != 1 {
		return netip.Addr{}, errf(ErrInvalid, "give exactly one address (or %%any), found %d", len(*l))
	}
	s := (*l)[0]
	switch s {
	case "%any", "%any4", "%any6":
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if strings.Contains(s, "/") || strings.Contains(s, "-") {
			return netip.Addr{}, errf(ErrNotSupported, "%q: prefixes and ranges are not supported; give one address or %%any", clip(s))
		}
		return netip.Addr{}, errf(ErrInvalid, "%q is not an IP address (host names are not resolved)", clip(s))
	}
	if a.Zone() != "" {
		return netip.Addr{}, errf(ErrNotSupported, "%q: zoned addresses are not supported", clip(s))
	}
	a = a.Unmap()
	if a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	return a, nil
}

func parsePort(p *int64) (uint16, error) {
	if p == nil {
		return DefaultPort, nil
	}
	if *p < 1 || *p > 65535 {
		return 0, errf(ErrInvalid, "port %d is out of range 1..65535", *p)
	}
	return uint16(*p), nil
}

// readPSKFile reads a PSK file: a regular file not accessible by group or
// others, holding the key as text, as 0x-prefixed hex or as 0s-prefixed
// base64 (strongSwan's conventions). Errors never contain the content.
func readPSKFile(path string) (Secret, error) {
	if path == "" {
		return nil, errf(ErrInvalid, "empty path")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, osErr(err)
	}
	if !st.Mode().IsRegular() {
		return nil, errf(ErrInvalid, "not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, errf(ErrInsecure, "mode %04o lets group or others access the key; chmod 600 it", perm)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, osErr(err)
	}
	defer f.Close()
	// Check again on the opened file: it may have been replaced.
	if st2, err := f.Stat(); err != nil || !os.SameFile(st, st2) {
		return nil, errf(ErrInvalid, "file changed while being read")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPSKFileSize+1))
	if err != nil {
		return nil, osErr(err)
	}
	if len(data) > maxPSKFileSize {
		return nil, errf(ErrInvalid, "larger than %d bytes", maxPSKFileSize)
	}
	return decodePSK(string(data))
}

func readPSKEnv(name string, lookup func(string) (string, bool)) (Secret, error) {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return nil, errf(ErrInvalid, "not a valid environment variable name")
	}
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(name)
	if !ok {
		return nil, errf(ErrMissing, "environment variable is not set")
	}
	return decodePSK(v)
}

func decodePSK(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	var b []byte
	switch {
	case s == "":
		return nil, errf(ErrMissing, "the key is empty")
	case strings.HasPrefix(s, "0x"):
		var err error
		if b, err = hex.DecodeString(s[2:]); err != nil {
			return nil, errf(ErrInvalid, "the key starts with 0x but is not valid hex")
		}
	case strings.HasPrefix(s, "0s"):
		var err error
		if b, err = base64.StdEncoding.DecodeString(s[2:]); err != nil {
			return nil, errf(ErrInvalid, "the key starts with 0s but is not valid base64")
		}
	default:
		b = []byte(s)
	}
	if len(b) == 0 {
		return nil, errf(ErrMissing, "the key is empty")
	}
	return Secret(b), nil
}

// osErr strips the path from a file error (the caller's error names it).
func osErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
