package lab

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"ikegw/ike/sa"
)

// ErrSAField is wrapped by errors about a list-sas field that is missing or
// malformed.
var ErrSAField = errors.New("list-sas: bad field")

// IKESA is one IKE SA as `swanctl --list-sas --raw` reports it. SPIs (for
// IKEv1 the cookies) are lower-case hex, as swanctl prints them.
type IKESA struct {
	Name         string // connection name
	UniqueID     uint32
	Version      int    // 1 or 2
	State        string // ESTABLISHED, CONNECTING, REKEYING, DELETING, PASSIVE, ...
	LocalHost    netip.Addr
	LocalPort    uint16
	LocalID      string
	RemoteHost   netip.Addr
	RemotePort   uint16
	RemoteID     string
	Initiator    bool   // this side initiated the SA
	InitiatorSPI string // initiator cookie (hex)
	ResponderSPI string // responder cookie (hex)
	NATLocal     bool   // we are behind a NAT
	NATRemote    bool   // the peer is behind a NAT
	NATFake      bool   // NAT faked (e.g. kernel-libipsec forcing UDP encapsulation)
	NATAny       bool   // any of the above
	EncrAlg      string
	EncrKeysize  int
	IntegAlg     string
	PRFAlg       string
	DHGroup      string
	Established  time.Duration // age; 0 when not established
	RekeyTime    time.Duration // time until rekeying; 0 if none
	ReauthTime   time.Duration // time until reauthentication; 0 if none
	Children     []ChildSA
}

// ChildSA is one CHILD_SA (IPsec SA pair) of an IKE SA.
type ChildSA struct {
	Name        string // child config name
	UniqueID    uint32
	ReqID       uint32
	State       string // INSTALLED, REKEYED, REKEYING, DELETING, ...
	Mode        string // TUNNEL, TRANSPORT, ...
	Protocol    string // ESP, AH
	Encap       bool   // UDP encapsulation
	SPIIn       string // hex
	SPIOut      string // hex
	EncrAlg     string
	EncrKeysize int
	IntegAlg    string
	DHGroup     string // PFS group, empty without PFS
	BytesIn     uint64
	PacketsIn   uint64
	BytesOut    uint64
	PacketsOut  uint64
	UseIn       time.Duration // since the last inbound packet; -1 if none yet
	UseOut      time.Duration // since the last outbound packet; -1 if none yet
	RekeyTime   time.Duration // time until rekeying
	LifeTime    time.Duration // time until expiry
	InstallTime time.Duration // age
	LocalTS     []string
	RemoteTS    []string
}

// Cookies returns the IKE SA's SPI pair as ikegw's shared record type.
func (s IKESA) Cookies() (sa.Cookies, error) {
	var c sa.Cookies
	for _, f := range []struct {
		name, hex string
		dst       *[8]byte
	}{{"initiator-spi", s.InitiatorSPI, &c.I}, {"responder-spi", s.ResponderSPI, &c.R}} {
		b, err := hex.DecodeString(f.hex)
		if err != nil || len(b) != 8 {
			return sa.Cookies{}, fmt.Errorf("%w: IKE SA %q: %s %q is not 8 bytes of hex", ErrSAField, s.Name, f.name, f.hex)
		}
		copy(f.dst[:], b)
	}
	return c, nil
}

// Child returns the first child SA with the given config name and state
// ("" for any state).
func (s IKESA) Child(name, state string) (ChildSA, bool) {
	for _, c := range s.Children {
		if c.Name == name && (state == "" || c.State == state) {
			return c, true
		}
	}
	return ChildSA{}, false
}

// ParseListSAs turns `swanctl --list-sas --raw` output into IKE SAs, in the
// order charon listed them. Other messages (the final "list-sas reply",
// "log" events) are ignored. Unknown keys are ignored; a known key with a
// malformed value is an error naming the SA and the key.
func ParseListSAs(out string) ([]IKESA, error) {
	msgs, err := ParseViciRaw(out)
	if err != nil {
		return nil, err
	}
	var sas []IKESA
	for _, m := range msgs {
		if m.Name != "list-sa event" {
			continue
		}
		for _, e := range m.Body.Entries {
			if e.Kind != ViciSub {
				return nil, fmt.Errorf("%w: list-sa event: %q is not an IKE SA section", ErrSAField, e.Key)
			}
			s, err := decodeIKESA(e.Key, e.Section)
			if err != nil {
				return nil, err
			}
			sas = append(sas, s)
		}
	}
	return sas, nil
}

// fields decodes typed values out of a section, remembering the first
// error together with where it happened.
type fields struct {
	where string
	sec   *ViciSection
	err   error
}

func (f *fields) fail(key, val, want string) {
	if f.err == nil {
		f.err = fmt.Errorf("%w: %s: %s=%q: want %s", ErrSAField, f.where, key, val, want)
	}
}

func (f *fields) str(key string) string {
	v, _ := f.sec.Value(key)
	return v
}

func (f *fields) yes(key string) bool {
	v, ok := f.sec.Value(key)
	if !ok {
		return false
	}
	switch v {
	case "yes":
		return true
	case "no":
		return false
	}
	f.fail(key, v, "yes or no")
	return false
}

func (f *fields) uint(key string, bits int, dflt uint64) uint64 {
	v, ok := f.sec.Value(key)
	if !ok {
		return dflt
	}
	n, err := strconv.ParseUint(v, 10, bits)
	if err != nil {
		f.fail(key, v, fmt.Sprintf("an unsigned %d-bit number", bits))
	}
	return n
}

func (f *fields) seconds(key string, dflt time.Duration) time.Duration {
	v, ok := f.sec.Value(key)
	if !ok {
		return dflt
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<32 {
		f.fail(key, v, "seconds")
		return dflt
	}
	return time.Duration(n) * time.Second
}

func (f *fields) addr(key string) netip.Addr {
	v, ok := f.sec.Value(key)
	if !ok {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		f.fail(key, v, "an IP address")
	}
	return a
}

func (f *fields) hex(key string) string {
	v, ok := f.sec.Value(key)
	if !ok {
		return ""
	}
	if _, err := hex.DecodeString(v); err != nil {
		f.fail(key, v, "hex")
	}
	return v
}

func (f *fields) list(key string) []string {
	v, _ := f.sec.List(key)
	return v
}

func decodeIKESA(name string, sec *ViciSection) (IKESA, error) {
	f := &fields{where: fmt.Sprintf("IKE SA %q", name), sec: sec}
	s := IKESA{
		Name:         name,
		UniqueID:     uint32(f.uint("uniqueid", 32, 0)),
		Version:      int(f.uint("version", 8, 0)),
		State:        f.str("state"),
		LocalHost:    f.addr("local-host"),
		LocalPort:    uint16(f.uint("local-port", 16, 0)),
		LocalID:      f.str("local-id"),
		RemoteHost:   f.addr("remote-host"),
		RemotePort:   uint16(f.uint("remote-port", 16, 0)),
		RemoteID:     f.str("remote-id"),
		Initiator:    f.yes("initiator"),
		InitiatorSPI: f.hex("initiator-spi"),
		ResponderSPI: f.hex("responder-spi"),
		NATLocal:     f.yes("nat-local"),
		NATRemote:    f.yes("nat-remote"),
		NATFake:      f.yes("nat-fake"),
		NATAny:       f.yes("nat-any"),
		EncrAlg:      f.str("encr-alg"),
		EncrKeysize:  int(f.uint("encr-keysize", 16, 0)),
		IntegAlg:     f.str("integ-alg"),
		PRFAlg:       f.str("prf-alg"),
		DHGroup:      f.str("dh-group"),
		Established:  f.seconds("established", 0),
		RekeyTime:    f.seconds("rekey-time", 0),
		ReauthTime:   f.seconds("reauth-time", 0),
	}
	if _, ok := sec.Value("uniqueid"); !ok && f.err == nil {
		f.err = fmt.Errorf("%w: %s: no uniqueid", ErrSAField, f.where)
	}
	if f.err != nil {
		return IKESA{}, f.err
	}
	if kids := sec.Sub("child-sas"); kids != nil {
		for _, e := range kids.Entries {
			if e.Kind != ViciSub {
				return IKESA{}, fmt.Errorf("%w: %s: child-sas: %q is not a section", ErrSAField, f.where, e.Key)
			}
			c, err := decodeChildSA(name, e.Key, e.Section)
			if err != nil {
				return IKESA{}, err
			}
			s.Children = append(s.Children, c)
		}
	}
	return s, nil
}

func decodeChildSA(ike, key string, sec *ViciSection) (ChildSA, error) {
	f := &fields{where: fmt.Sprintf("IKE SA %q: child SA %q", ike, key), sec: sec}
	c := ChildSA{
		Name:        f.str("name"),
		UniqueID:    uint32(f.uint("uniqueid", 32, 0)),
		ReqID:       uint32(f.uint("reqid", 32, 0)),
		State:       f.str("state"),
		Mode:        f.str("mode"),
		Protocol:    f.str("protocol"),
		Encap:       f.yes("encap"),
		SPIIn:       f.hex("spi-in"),
		SPIOut:      f.hex("spi-out"),
		EncrAlg:     f.str("encr-alg"),
		EncrKeysize: int(f.uint("encr-keysize", 16, 0)),
		IntegAlg:    f.str("integ-alg"),
		DHGroup:     f.str("dh-group"),
		BytesIn:     f.uint("bytes-in", 64, 0),
		PacketsIn:   f.uint("packets-in", 64, 0),
		BytesOut:    f.uint("bytes-out", 64, 0),
		PacketsOut:  f.uint("packets-out", 64, 0),
		UseIn:       f.seconds("use-in", -1),
		UseOut:      f.seconds("use-out", -1),
		RekeyTime:   f.seconds("rekey-time", 0),
		LifeTime:    f.seconds("life-time", 0),
		InstallTime: f.seconds("install-time", 0),
		LocalTS:     f.list("local-ts"),
		RemoteTS:    f.list("remote-ts"),
	}
	if c.Name == "" && f.err == nil {
		f.err = fmt.Errorf("%w: %s: no name", ErrSAField, f.where)
	}
	if f.err != nil {
		return ChildSA{}, f.err
	}
	return c, nil
}
