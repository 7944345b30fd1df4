package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"ikegw/ike/sa"
)

const testPSK = "correct-horse-battery-staple"

// conn builds a one-connection document from a valid base connection,
// overriding keys with "key: value" lines and removing them with "-key".
func conn(over ...string) []byte {
	lines := []string{"name: dc2", "remote_addrs: 198.51.100.20", "psk_env: IKEGW_TEST_PSK", "children: [{name: net}]"}
	for _, o := range over {
		if k, ok := strings.CutPrefix(o, "-"); ok {
			lines = slicesDeleteKey(lines, k)
			continue
		}
		k, _, _ := strings.Cut(o, ":")
		replaced := false
		for i, l := range lines {
			if lk, _, _ := strings.Cut(l, ":"); lk == k {
				lines[i], replaced = o, true
			}
		}
		if !replaced {
			lines = append(lines, o)
		}
	}
	return []byte("connections:\n  - " + strings.Join(lines, "\n    ") + "\n")
}

func slicesDeleteKey(lines []string, key string) []string {
	var out []string
	for _, l := range lines {
		if lk, _, _ := strings.Cut(l, ":"); lk != key {
			out = append(out, l)
		}
	}
	return out
}

func mustParse(t *testing.T, data []byte) *Config {
	t.Helper()
	cfg, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror: %v", data, err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	cfg := mustParse(t, conn())
	c := cfg.Connection("dc2")
	if c == nil {
		t.Fatal("connection dc2 not found")
	}
	remote := netip.MustParseAddr("198.51.100.20")
	want := &Connection{
		Name:        "dc2",
		Remote:      remote,
		LocalPort:   500,
		RemotePort:  500,
		RemoteID:    Identity{Type: IDIPv4, Data: []byte{198, 51, 100, 20}},
		Auth:        "psk",
		PSK:         Secret(testPSK),
		Proposals:   []IKEProposal{{Encr: 7, KeyLen: 256, Hash: 4, Group: 14}, {Encr: 7, KeyLen: 128, Hash: 2, Group: 14}},
		IKELifetime: 8 * time.Hour,
		DPDDelay:    30 * time.Second,
		DPDTimeout:  150 * time.Second,
		DPDAction:   DPDClear,
		Keyingtries: 3,
		Retransmit:  RetransmitConfig{Timeout: 4 * time.Second, Tries: 5, Base: 1.8},
		Children: []*Child{{
			Name:     "net",
			RemoteTS: []sa.TrafficSelector{{Prefix: netip.PrefixFrom(remote, 32)}},
			ESPProposals: []ESPProposal{
				{TransformID: 12, KeyLen: 256, AuthAlg: 5, Encr: sa.EncrAESCBC, Integ: sa.IntegSHA256, TruncBits: 128},
				{TransformID: 12, KeyLen: 128, AuthAlg: 2, Encr: sa.EncrAESCBC, Integ: sa.IntegSHA1, TruncBits: 96},
			},
			Mode:        sa.Tunnel,
			RekeyTime:   time.Hour,
			LifeTime:    66 * time.Minute,
			StartAction: "none",
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v\n got child %+v\nwant child %+v", *c, *want, *c.Children[0], *want.Children[0])
	}
	if c.Children[0].LocalTS != nil {
		t.Errorf("LocalTS with local_addrs unset = %v, want empty (dynamic)", c.Children[0].LocalTS)
	}
}

func TestDefaultsDerived(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	cfg := mustParse(t, conn("local_addrs: 192.0.2.10", "start_action: start",
		"children: [{name: a, life_time: 30m, rekey_bytes: 1G}, {name: b, rekey_time: 2h, life_bytes: 10M, start_action: none}]"))
	c := cfg.Connections[0]
	if !c.LocalID.Equal(Identity{Type: IDIPv4, Data: []byte{192, 0, 2, 10}}) {
		t.Errorf("LocalID = %v, want the local address", c.LocalID)
	}
	a, b := c.Child("a"), c.Child("b")
	if a == nil || b == nil {
		t.Fatal("children missing")
	}
	if want := []sa.TrafficSelector{{Prefix: netip.MustParsePrefix("192.0.2.10/32")}}; !reflect.DeepEqual(a.LocalTS, want) {
		t.Errorf("LocalTS = %v, want %v", a.LocalTS, want)
	}
	if a.LifeTime != 30*time.Minute || a.RekeyTime != time.Duration(float64(a.LifeTime)/1.1) || a.RekeyTime < 27*time.Minute {
		t.Errorf("life 30m only: rekey %s life %s", a.RekeyTime, a.LifeTime)
	}
	if a.RekeyBytes != 1<<30 || a.LifeBytes != 1<<30+(1<<30)/10 {
		t.Errorf("rekey_bytes 1G: rekey %d life %d", a.RekeyBytes, a.LifeBytes)
	}
	if a.StartAction != "start" || b.StartAction != "none" {
		t.Errorf("start actions: a %q (want the connection's: start), b %q", a.StartAction, b.StartAction)
	}
	if b.RekeyTime != 2*time.Hour || b.LifeTime != 132*time.Minute || b.RekeyBytes != 0 || b.LifeBytes != 10<<20 {
		t.Errorf("b: %+v", *b)
	}
	if !c.Initiate {
		t.Error("start_action: start did not set Initiate")
	}
}

func TestExample(t *testing.T) {
	t.Setenv("IKEGW_PSK_DC2", "dc2-secret")
	t.Setenv("IKEGW_PSK_RW", "0x0102030405060708")
	t.Setenv("IKEGW_PSK_LEGACY", "0sbGVnYWN5LXNlY3JldA==")
	cfg, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Connections) != 3 {
		t.Fatalf("%d connections, want 3", len(cfg.Connections))
	}
	dc2, rw, legacy := cfg.Connection("dc2"), cfg.Connection("roadwarriors"), cfg.Connection("legacy-box")
	if dc2 == nil || rw == nil || legacy == nil {
		t.Fatal("connection missing")
	}
	if string(dc2.PSK) != "dc2-secret" || string(rw.PSK) != "\x01\x02\x03\x04\x05\x06\x07\x08" || string(legacy.PSK) != "legacy-secret" {
		t.Error("PSKs (text, 0x hex, 0s base64) not decoded as expected")
	}
	if len(dc2.Proposals) != 5 || dc2.DPDAction != DPDRestart || !dc2.Initiate || dc2.Keyingtries != 0 || dc2.ReauthTime != 7*time.Hour {
		t.Errorf("dc2: %+v", *dc2)
	}
	if !dc2.LocalID.Equal(Identity{Type: IDFQDN, Data: []byte("gw.dc1.example.net")}) {
		t.Errorf("dc2 local id %v", dc2.LocalID)
	}
	net := dc2.Child("net")
	if net == nil || len(net.RemoteTS) != 2 || net.RemoteTS[1].Port != 53 || net.RekeyBytes != 500<<30 || len(net.ESPProposals) != 2 || net.ESPProposals[0].PFSGroup != 14 {
		t.Errorf("dc2 child net: %+v", net)
	}
	if !rw.RemoteIsAny() || !rw.RemoteID.IsAny() || !rw.Aggressive || len(rw.Proposals) != 2 {
		t.Errorf("roadwarriors: %+v", *rw)
	}
	if ch := rw.Children[0]; ch.RemoteTS != nil || ch.ESPProposals[0].TransformID != ESPAESGCM16 {
		t.Errorf("roadwarriors child: %+v", *ch)
	}
	if ch := legacy.Children[0]; !legacy.Legacy || ch.Mode != sa.Transport || legacy.Proposals[0].Encr != IKEEncr3DES || ch.LifeTime != 22*time.Minute {
		t.Errorf("legacy-box: %+v %+v", *legacy, *ch)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("parsed config does not re-validate: %v", err)
	}
}

func TestParseAccepts(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	tests := []struct {
		name  string
		doc   []byte
		check func(c *Connection) bool
	}{
		{"remote list of one", conn("remote_addrs: [198.51.100.20]"), func(c *Connection) bool { return c.Remote == netip.MustParseAddr("198.51.100.20") }},
		{"remote any", conn("remote_addrs: '%any'"), func(c *Connection) bool { return c.RemoteIsAny() && c.RemoteID.IsZero() }},
		{"remote unspecified is any", conn("remote_addrs: 0.0.0.0"), func(c *Connection) bool { return c.RemoteIsAny() }},
		{"ipv6", conn("local_addrs: 2001:db8::1", "remote_addrs: 2001:db8::2", "children: [{name: n, local_ts: '2001:db8:1::/48', remote_ts: '2001:db8:2::/48'}]"),
			func(c *Connection) bool { return c.Remote.Is6() && c.LocalID.Type == IDIPv6 }},
		{"mapped address unmapped", conn("remote_addrs: '::ffff:198.51.100.20'"), func(c *Connection) bool { return c.Remote.Is4() }},
		{"ports", conn("local_port: 4500", "remote_port: 1"), func(c *Connection) bool { return c.LocalPort == 4500 && c.RemotePort == 1 }},
		{"durations", conn("ike_lifetime: 1d", "reauth_time: 3600", "dpd_delay: 0", "dpd_timeout: 1m30s"), func(c *Connection) bool {
			return c.IKELifetime == 24*time.Hour && c.ReauthTime == time.Hour && c.DPDDelay == 0 && c.DPDTimeout == 90*time.Second
		}},
		{"dpd actions", conn("dpd_action: hold"), func(c *Connection) bool { return c.DPDAction == DPDHold }},
		{"dpd none", conn("dpd_action: none"), func(c *Connection) bool { return c.DPDAction == DPDNone }},
		{"encap", conn("encap: true"), func(c *Connection) bool { return c.ForceEncap }},
		{"aggressive", conn("aggressive: true"), func(c *Connection) bool { return c.Aggressive }},
		{"comma-separated proposals", conn("proposals: 'aes256-sha256-modp2048, aes128-sha1-ecp256'"), func(c *Connection) bool { return len(c.Proposals) == 2 && c.Proposals[1].Group == 19 }},
		{"duplicate proposals merged", conn("proposals: [aes256-sha256-modp2048, aes128-aes256-sha256-modp2048]"), func(c *Connection) bool { return len(c.Proposals) == 2 }},
		{"retransmit partial", conn("retransmit: {tries: 3}"), func(c *Connection) bool {
			return c.Retransmit == RetransmitConfig{Timeout: 4 * time.Second, Tries: 3, Base: 1.8}
		}},
		{"retransmit full", conn("retransmit: {timeout: 500ms, tries: 10, base: 2}"), func(c *Connection) bool {
			return c.Retransmit == RetransmitConfig{Timeout: 500 * time.Millisecond, Tries: 10, Base: 2}
		}},
		{"keyingtries forever", conn("keyingtries: 0"), func(c *Connection) bool { return c.Keyingtries == 0 }},
		{"remote id fqdn", conn("remote_id: '@peer.example'"), func(c *Connection) bool { return c.RemoteID.Type == IDFQDN }},
		{"dynamic ts", conn("local_addrs: 192.0.2.1", "children: [{name: n, local_ts: dynamic}]"), func(c *Connection) bool {
			return c.Children[0].LocalTS[0].Prefix == netip.MustParsePrefix("192.0.2.1/32")
		}},
		{"transport with port", conn("local_addrs: 192.0.2.1", "children: [{name: l2tp, mode: transport, local_ts: '192.0.2.1[udp/1701]', remote_ts: '198.51.100.20[udp]'}]"),
			func(c *Connection) bool {
				return c.Children[0].Mode == sa.Transport && c.Children[0].LocalTS[0].Port == 1701
			}},
		{"several children", conn("children: [{name: a, local_ts: 10.1.0.0/16}, {name: b, local_ts: 10.2.0.0/16}]"), func(c *Connection) bool { return len(c.Children) == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.doc)
			if !tt.check(cfg.Connections[0]) {
				t.Errorf("unexpected result: %+v child %+v", *cfg.Connections[0], *cfg.Connections[0].Children[0])
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("does not re-validate: %v", err)
			}
		})
	}
}

func TestAliases(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	doc := `connections:
  - name: a
    remote_addrs: 198.51.100.1
    psk_env: IKEGW_TEST_PSK
    proposals: &props [aes256-sha256-ecp256]
    children: &kids
      - name: net
        local_ts: 10.1.0.0/16
  - name: b
    remote_addrs: 198.51.100.2
    psk_env: IKEGW_TEST_PSK
    proposals: *props
    children: *kids
`
	cfg := mustParse(t, []byte(doc))
	if b := cfg.Connection("b"); b == nil || b.Proposals[0].Group != 19 || b.Children[0].Name != "net" {
		t.Errorf("aliases not followed: %+v", b)
	}
}

// TestParseErrors checks that every error names the connection (and
// child) and the field, with the exact text for each rule.
func TestParseErrors(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	t.Setenv("IKEGW_EMPTY", "")
	tests := []struct {
		doc  []byte
		kind error
		want string
	}{
		{conn("proposals: [aes256-sha256-modp2048, aes999-sha1]"), ErrUnknownAlgorithm,
			`config: connection "dc2": proposals[1] "aes999-sha1": unknown cipher "aes999"`},
		{conn("proposals: [aes256-md5-modp2048]"), ErrNeverSupported,
			`config: connection "dc2": proposals[0] "aes256-md5-modp2048": hash "md5" is insecure and never supported`},
		{conn("proposals: [3des-sha1-modp2048]"), ErrLegacyAlgorithm,
			`config: connection "dc2": proposals[0] "3des-sha1-modp2048": cipher "3des" is weak; set legacy_algorithms: true to allow it`},
		{conn("proposals: []"), ErrMissing,
			`config: connection "dc2": proposals: the list is empty; leave it out for the defaults`},
		{conn("children: [{name: net, esp_proposals: [aes256gcm16-sha256]}]"), ErrBadProposal,
			`config: connection "dc2": child "net": esp_proposals[0] "aes256gcm16-sha256": AEAD cipher "aes256gcm16" takes no integrity algorithm, remove "sha256"`},
		{conn("children: [{name: net, esp_proposals: [3des-sha1]}]"), ErrLegacyAlgorithm,
			`config: connection "dc2": child "net": esp_proposals[0] "3des-sha1": cipher "3des" is weak; set legacy_algorithms: true to allow it`},
		{conn("pfs: true"), ErrUnknownKey,
			`config: connection "dc2": unknown key "pfs"`},
		{conn("remote_adrs: 198.51.100.20"), ErrUnknownKey,
			`config: connection "dc2": unknown key "remote_adrs" (did you mean "remote_addrs"?)`},
		{conn("children: [{name: net, locl_ts: 10.0.0.0/8}]"), ErrUnknownKey,
			`config: connection "dc2": child "net": unknown key "locl_ts" (did you mean "local_ts"?)`},
		{conn("retransmit: {timeout: 2s, tires: 3}"), ErrUnknownKey,
			`config: connection "dc2": retransmit: unknown key "tires" (did you mean "tries"?)`},
		{[]byte("connection:\n  - name: a\n"), ErrUnknownKey,
			`config: line 1: unknown key "connection" (did you mean "connections"?)`},
		{conn("-name"), ErrMissing,
			`config: connections[0]: name: every connection needs a name`},
		{conn("name: 'dc 2'"), ErrInvalid,
			`config: connections[0]: name "dc 2": names may contain only letters, digits, '-', '_' and '.'`},
		{conn("psk: hunter2"), ErrInsecure,
			`config: connection "dc2": psk: inline secrets are refused; put the key in a file readable only by ikegwd (psk_file) or in the environment (psk_env)`},
		{conn("-psk_env"), ErrMissing,
			`config: connection "dc2": psk_file: auth psk needs a pre-shared key: set psk_file or psk_env`},
		{conn("psk_env: IKEGW_NOT_SET_ANYWHERE"), ErrMissing,
			`config: connection "dc2": psk_env "IKEGW_NOT_SET_ANYWHERE": environment variable is not set`},
		{conn("psk_env: IKEGW_EMPTY"), ErrMissing,
			`config: connection "dc2": psk_env "IKEGW_EMPTY": the key is empty`},
		{conn("-psk_env", "psk_file: /nonexistent/x.psk"), os.ErrNotExist,
			`config: connection "dc2": psk_file "/nonexistent/x.psk": no such file or directory`},
		{conn("auth: pubkey", "-psk_env"), ErrMissing,
			`config: connection "dc2": cert: auth pubkey needs our certificate file`},
		{conn("auth: xauth"), ErrInvalid,
			`config: connection "dc2": auth "xauth": a PSK is given but auth is not psk`},
		{conn("auth: xauth", "-psk_env"), ErrInvalid,
			`config: connection "dc2": auth: unknown auth method "xauth" (want psk)`},
		{conn("local_port: 0"), ErrInvalid,
			`config: connection "dc2": local_port: port 0 is out of range 1..65535`},
		{conn("remote_port: 65536"), ErrInvalid,
			`config: connection "dc2": remote_port: port 65536 is out of range 1..65535`},
		{conn("remote_port: abc"), ErrInvalid,
			`config: connection "dc2": remote_port: expected an integer, found a value "abc"`},
		{conn("aggressive: maybe"), ErrInvalid,
			`config: connection "dc2": aggressive: expected true or false, found a value "maybe"`},
		{conn("local_id:"), ErrInvalid,
			`config: connection "dc2": local_id: no value given`},
		{conn("remote_addrs: vpn.example.com"), ErrInvalid,
			`config: connection "dc2": remote_addrs: "vpn.example.com" is not an IP address (host names are not resolved)`},
		{conn("remote_addrs: [198.51.100.20, 198.51.100.21]"), ErrInvalid,
			`config: connection "dc2": remote_addrs: give exactly one address (or %any), found 2`},
		{conn("remote_addrs: 198.51.100.0/24"), ErrNotSupported,
			`config: connection "dc2": remote_addrs: "198.51.100.0/24": prefixes and ranges are not supported; give one address or %any`},
		{conn("local_addrs: 2001:db8::1"), ErrInvalid,
			`config: connection "dc2": remote_addrs: local address 2001:db8::1 and remote address 198.51.100.20 are of different address families`},
		{conn("remote_addrs: '%any'", "start_action: start"), ErrMissing,
			`config: connection "dc2": start_action: start needs a remote address to initiate to; set remote_addrs`},
		{conn("remote_addrs: '%any'", "children: [{name: net, start_action: start}]"), ErrMissing,
			`config: connection "dc2": child "net": start_action: start needs a remote address to initiate to; set remote_addrs on the connection`},
		{conn("remote_addrs: '%any'", "dpd_action: restart"), ErrMissing,
			`config: connection "dc2": dpd_action: restart needs a remote address to initiate to; set remote_addrs or use clear`},
		{conn("start_action: trap"), ErrNotSupported,
			`config: connection "dc2": start_action "trap": trap policies are not supported; use start or none`},
		{conn("start_action: go"), ErrInvalid,
			`config: connection "dc2": start_action: unknown value "go" (want none or start)`},
		{conn("dpd_action: explode"), ErrInvalid,
			`config: connection "dc2": dpd_action: unknown value "explode" (want none, clear, hold or restart)`},
		{conn("local_id: '%any'"), ErrInvalid,
			`config: connection "dc2": local_id "%any": %any is only meaningful for remote_id; leave local_id out to use the local address`},
		{conn("remote_id: '@#zz'"), ErrBadIdentity,
			`config: connection "dc2": remote_id: "@#zz": expected an even number of hex digits after "#"`},
		{conn("ike_lifetime: 5s"), ErrInvalid,
			`config: connection "dc2": ike_lifetime: 5s is out of range 10s..168h0m0s`},
		{conn("ike_lifetime: soon"), ErrInvalid,
			`config: connection "dc2": ike_lifetime: "soon": not a duration (write e.g. 30s, 10m, 8h or 1d)`},
		{conn("ike_lifetime: -1h"), ErrInvalid,
			`config: connection "dc2": ike_lifetime: "-1h": negative duration`},
		{conn("ike_lifetime: 1h", "reauth_time: 2h"), ErrInvalid,
			`config: connection "dc2": reauth_time: 2h0m0s must be shorter than ike_lifetime 1h0m0s`},
		{conn("dpd_delay: 60s", "dpd_timeout: 30s"), ErrInvalid,
			`config: connection "dc2": dpd_timeout: 30s must be at least dpd_delay 1m0s and at most 24h`},
		{conn("dpd_delay: 100ms"), ErrInvalid,
			`config: connection "dc2": dpd_delay: 100ms is neither 0 (off) nor between 1s and 1h`},
		{conn("keyingtries: -1"), ErrInvalid,
			`config: connection "dc2": keyingtries: -1 is out of range 0..1048576 (0 means forever)`},
		{conn("retransmit: {base: 0.5}"), ErrInvalid,
			`config: connection "dc2": retransmit.base: 0.5 is out of range 1..10`},
		{conn("retransmit: {base: .nan}"), ErrInvalid,
			`config: connection "dc2": retransmit.base: NaN is out of range 1..10`},
		{conn("retransmit: {timeout: 10ms}"), ErrInvalid,
			`config: connection "dc2": retransmit.timeout: 10ms is out of range 100ms..1m0s`},
		{conn("retransmit: {tries: 0}"), ErrInvalid,
			`config: connection "dc2": retransmit.tries: 0 is out of range 1..30`},
		{conn("retransmit: 5"), ErrInvalid,
			`config: connection "dc2": retransmit: expected a mapping of keys, found a value "5"`},
		{conn("-children"), ErrMissing,
			`config: connection "dc2": children: a connection needs at least one child (its IPsec SAs)`},
		{conn("children: []"), ErrMissing,
			`config: connection "dc2": children: a connection needs at least one child (its IPsec SAs)`},
		{conn("children: [{local_ts: 10.0.0.0/8}]"), ErrMissing,
			`config: connection "dc2": children[0]: name: every child needs a name`},
		{conn("children: [{name: a}, {name: a}]"), ErrInvalid,
			`config: connection "dc2": child "a": name: two children are named "a"`},
		{conn("children: [{name: n, local_ts: 10.1.0.1/16}]"), ErrBadTS,
			`config: connection "dc2": child "n": local_ts[0]: "10.1.0.1/16": host bits set (did you mean 10.1.0.0/16?)`},
		{conn("children: [{name: n, local_ts: [10.1.0.0/16, 10.1.0.0/16]}]"), ErrInvalid,
			`config: connection "dc2": child "n": local_ts[1] "10.1.0.0/16": listed twice`},
		{conn("children: [{name: n, local_ts: '2001:db8::/32'}]"), ErrInvalid,
			`config: connection "dc2": child "n": remote_ts[0]: 198.51.100.20/32 is IPv4 but local_ts[0] 2001:db8::/32 is IPv6; all selectors of a child must be of one address family`},
		{conn("children: [{name: n, local_ts: 10.0.0.0/8, remote_ts: '2001:db8::/32'}]"), ErrInvalid,
			`config: connection "dc2": child "n": remote_ts[0]: 2001:db8::/32 is IPv6 but local_ts[0] 10.0.0.0/8 is IPv4; all selectors of a child must be of one address family`},
		{conn("children: [{name: n, local_ts: 'dynamic[udp/53]'}]"), ErrNotSupported,
			`config: connection "dc2": child "n": local_ts[0] "dynamic[udp/53]": dynamic with a protocol or port is not supported yet; write the address`},
		{conn("children: [{name: n, local_ts: [dynamic, 10.0.0.0/8]}]"), ErrInvalid,
			`config: connection "dc2": child "n": local_ts[0] "dynamic": dynamic must be the only selector`},
		{conn("children: [{name: n, mode: transport, remote_ts: 10.0.0.0/8}]"), ErrInvalid,
			`config: connection "dc2": child "n": remote_ts[0]: transport mode protects only the two gateways' own traffic; 10.0.0.0/8 is not a single address`},
		{conn("children: [{name: n, mode: transport, remote_ts: 198.51.100.21}]"), ErrInvalid,
			`config: connection "dc2": child "n": remote_ts[0]: transport mode selector 198.51.100.21/32 is not the remote address 198.51.100.20`},
		{conn("children: [{name: n, mode: beet}]"), ErrNotSupported,
			`config: connection "dc2": child "n": mode "beet": only tunnel and transport modes are supported`},
		{conn("children: [{name: n, mode: tunel}]"), ErrInvalid,
			`config: connection "dc2": child "n": mode: unknown value "tunel" (want tunnel or transport)`},
		{conn("children: [{name: n, rekey_time: 2h, life_time: 1h}]"), ErrInvalid,
			`config: connection "dc2": child "n": rekey_time: 2h0m0s must be shorter than life_time 1h0m0s`},
		{conn("children: [{name: n, rekey_time: 8d}]"), ErrInvalid,
			`config: connection "dc2": child "n": rekey_time: 192h0m0s is out of range 10s..168h0m0s`},
		{conn("children: [{name: n, rekey_bytes: 2G, life_bytes: 1G}]"), ErrInvalid,
			`config: connection "dc2": child "n": rekey_bytes: 2147483648 must be smaller than life_bytes 1073741824`},
		{conn("children: [{name: n, rekey_bytes: 1Q}]"), ErrInvalid,
			`config: connection "dc2": child "n": rekey_bytes: "1Q" is not a byte count such as 1000000, 500M or 4G`},
		{conn("children: [{name: n, esp_proposals: [aes256-sha256-modp2048, aes128gcm16-ecp256]}]"), ErrInvalid,
			`config: connection "dc2": child "n": esp_proposals: aes256-sha256-modp2048 and aes128gcm16-ecp256 differ in PFS group; a Quick Mode carries one key exchange, so all proposals of a child must use the same group (or none)`},
		{conn("children: [{name: n, esp_proposals: [aes256-sha256-modp2048-ecp256]}]"), ErrInvalid,
			`config: connection "dc2": child "n": esp_proposals: aes256-sha256-modp2048 and aes256-sha256-ecp256 differ in PFS group; a Quick Mode carries one key exchange, so all proposals of a child must use the same group (or none)`},
		{conn("proposals: [aes128-aes192-aes256-sha1-sha256-sha384-modp2048-modp3072-ecp256-ecp384]"), ErrInvalid,
			`config: connection "dc2": proposals: 36 transforms after expanding the proposals, at most 32`},
		{conn("children: [{name: n, start_action: trap}]"), ErrNotSupported,
			`config: connection "dc2": child "n": start_action "trap": trap policies are not supported; use start or none`},
		{[]byte("connections:\n  - name: a\n    remote_addrs: 198.51.100.1\n    psk_env: IKEGW_TEST_PSK\n    children: [{name: n}]\n  - name: a\n    remote_addrs: 198.51.100.2\n    psk_env: IKEGW_TEST_PSK\n    children: [{name: n}]\n"), ErrInvalid,
			`config: connection "a": name: two connections are named "a"`},
		{[]byte(""), ErrMissing, `config: empty document; expected a ` + "`connections:`" + ` list`},
		{[]byte("connections: []\n"), ErrMissing, `config: line 1: connections: the list is empty`},
		{[]byte("connections: {a: b}\n"), ErrInvalid, `config: line 1: connections: expected a list of connections, found a mapping`},
		{[]byte("connections:\n  - name: a\n    name: b\n"), ErrInvalid, `config: connection "a": name: key given twice (first on line 2)`},
		{[]byte("connections:\n  - <<: {name: a}\n"), ErrNotSupported, `config: connections[0]: <<: YAML merge keys are not supported; write the keys out`},
		{[]byte("connections:\n  - [a, b]\n"), ErrInvalid, `config: connections[0]: expected a mapping of keys, found a list`},
		{[]byte("connections: [\n"), ErrInvalid, `config: line 1: did not find expected node content`},
		{append(conn(), "---\nconnections: []\n"...), ErrInvalid, `config: line 6: a second YAML document; the file must hold exactly one`},
		{[]byte("# only a comment\n"), ErrMissing, `config: empty document; expected a ` + "`connections:`" + ` list`},
		{[]byte("hello\n"), ErrInvalid, `config: line 1: expected a mapping of keys, found a value "hello"`},
	}
	for _, tt := range tests {
		cfg, err := Parse(tt.doc)
		if err == nil {
			t.Errorf("Parse succeeded, want error %q\n%s\n%+v", tt.want, tt.doc, cfg)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Parse:\n%s\n got %s\nwant %s", tt.doc, err, tt.want)
		}
		if !errors.Is(err, tt.kind) {
			t.Errorf("Parse: error %q is not %v", err, tt.kind)
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("Parse: error %q is %T, not *Error", err, err)
		}
		if strings.Contains(err.Error(), testPSK) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the secret: %s", err)
		}
	}
}

func TestPSKFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to umask
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          string // PSK, or error text after the field
		err           error
	}{
		{"ok.psk", testPSK + "\n", 0o600, testPSK, nil},
		{"ro.psk", testPSK, 0o400, testPSK, nil},
		{"hex.psk", "0x00ff10\n", 0o600, "\x00\xff\x10", nil},
		{"b64.psk", "0sAP8Q", 0o600, "\x00\xff\x10", nil},
		{"group.psk", testPSK, 0o640, "mode 0640 lets group or others access the key; chmod 600 it", ErrInsecure},
		{"world.psk", testPSK, 0o604, "mode 0604 lets group or others access the key; chmod 600 it", ErrInsecure},
		{"groupw.psk", testPSK, 0o620, "mode 0620 lets group or others access the key; chmod 600 it", ErrInsecure},
		{"empty.psk", "\n", 0o600, "the key is empty", ErrMissing},
		{"badhex.psk", "0x" + testPSK, 0o600, "the key starts with 0x but is not valid hex", ErrInvalid},
		{"badb64.psk", "0s" + testPSK + "!", 0o600, "the key starts with 0s but is not valid base64", ErrInvalid},
		{"big.psk", strings.Repeat("k", 5000), 0o600, "larger than 4096 bytes", ErrInvalid},
	}
	for _, tt := range tests {
		p := write(tt.name, tt.content, tt.mode)
		cfg, err := Parse(conn("-psk_env", "psk_file: "+p))
		if tt.err == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
				continue
			}
			if got := string(cfg.Connections[0].PSK); got != tt.want {
				t.Errorf("%s: PSK %q, want %q", tt.name, got, tt.want)
			}
			continue
		}
		want := `config: connection "dc2": psk_file "` + p + `": ` + tt.want
		if err == nil || err.Error() != want {
			t.Errorf("%s: error\n %v\nwant\n %s", tt.name, err, want)
		}
		if err != nil && !errors.Is(err, tt.err) {
			t.Errorf("%s: %v is not %v", tt.name, err, tt.err)
		}
		if err != nil && strings.Contains(err.Error(), testPSK) {
			t.Errorf("%s: error shows the key: %v", tt.name, err)
		}
	}
	// Not a regular file.
	if _, err := Parse(conn("-psk_env", "psk_file: "+dir)); err == nil || !strings.HasSuffix(err.Error(), ": not a regular file") {
		t.Errorf("directory as psk_file: %v", err)
	}
	// Both sources.
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	p := write("both.psk", testPSK, 0o600)
	if _, err := Parse(conn("psk_file: " + p)); err == nil || err.Error() != `config: connection "dc2": psk_file: give either psk_file or psk_env, not both` {
		t.Errorf("psk_file and psk_env: %v", err)
	}
}

// TestLoad checks file:line in errors and psk_file relative to the
// config file's directory.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dc2.psk"), []byte(testPSK), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, conn("-psk_env", "psk_file: dc2.psk"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Run from elsewhere: the relative path must resolve against dir.
	t.Chdir(t.TempDir())
	cfg, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Connections[0].PSK) != testPSK {
		t.Error("PSK not read from the file next to the config")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, conn("-psk_env", "psk_file: dc2.psk", "proposals: [aes999-sha1-modp2048]"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	want := "config: " + bad + `:6: connection "dc2": proposals[0] "aes999-sha1-modp2048": unknown cipher "aes999"`
	if err == nil || err.Error() != want {
		t.Errorf("Load error\n %v\nwant\n %s", err, want)
	}
	bad2 := filepath.Join(dir, "bad2.yaml")
	if err := os.WriteFile(bad2, conn("-psk_env", "psk_file: dc2.psk", "retransmit:\n      tries: 2\n      bsae: 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad2)
	want = "config: " + bad2 + `:8: connection "dc2": retransmit: unknown key "bsae" (did you mean "base"?)`
	if err == nil || err.Error() != want {
		t.Errorf("Load error\n %v\nwant\n %s", err, want)
	}
	// Errors found by Validate point at the key too.
	bad3 := filepath.Join(dir, "bad3.yaml")
	doc := "connections:\n  - name: dc2\n    psk_file: dc2.psk\n    remote_addrs: 198.51.100.20\n    children:\n      - name: a\n      - name: b\n        remote_ts:\n          - 10.0.0.0/8\n          - 2001:db8::/32\n"
	if err := os.WriteFile(bad3, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad3)
	want = "config: " + bad3 + `:10: connection "dc2": child "b": remote_ts[1]: 2001:db8::/32 is IPv6 but local_ts (dynamic, same family as 198.51.100.20) is IPv4; all selectors of a child must be of one address family`
	if err == nil || err.Error() != want {
		t.Errorf("Load error\n %v\nwant\n %s", err, want)
	}
	bad4 := filepath.Join(dir, "bad4.yaml")
	doc = "connections:\n  - name: dc2\n    psk_file: dc2.psk\n    remote_addrs: 198.51.100.20\n    retransmit: {tries: 3,\n      base: 20}\n    children: [{name: a}]\n"
	if err := os.WriteFile(bad4, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad4)
	want = "config: " + bad4 + `:6: connection "dc2": retransmit.base: 20 is out of range 1..10`
	if err == nil || err.Error() != want {
		t.Errorf("Load error\n %v\nwant\n %s", err, want)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || err.Error() != "config: "+filepath.Join(dir, "missing.yaml")+": no such file or directory" {
		t.Errorf("Load missing file: %v", err)
	}
}

func TestMatchRemote(t *testing.T) {
	mk := func(name, remote string) *Connection {
		c := &Connection{Name: name}
		if remote != "" {
			c.Remote = netip.MustParseAddr(remote)
		}
		return c
	}
	any1, a, any2, b, a2 := mk("any1", ""), mk("a", "198.51.100.1"), mk("any2", "0.0.0.0"), mk("b", "198.51.100.2"), mk("a2", "198.51.100.1")
	cfg := &Config{Connections: []*Connection{any1, a, any2, b, a2}}
	names := func(cs []*Connection) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	tests := []struct {
		addr string
		want []string
	}{
		{"198.51.100.1", []string{"a", "a2", "any1", "any2"}},
		{"::ffff:198.51.100.1", []string{"a", "a2", "any1", "any2"}},
		{"198.51.100.2", []string{"b", "any1", "any2"}},
		{"203.0.113.9", []string{"any1", "any2"}},
	}
	for _, tt := range tests {
		if got := names(cfg.MatchRemote(netip.MustParseAddr(tt.addr))); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("MatchRemote(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if cfg.Connection("b") != b || cfg.Connection("nope") != nil {
		t.Error("Connection lookup")
	}
	if a.Child("x") != nil {
		t.Error("Child lookup on a connection without children")
	}
}

// TestValidateBuilt checks Validate on configurations built in code.
func TestValidateBuilt(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	base := func() *Config { return mustParse(t, conn()) }
	tests := []struct {
		mut  func(c *Connection)
		want string
	}{
		{func(c *Connection) { c.Children = nil }, `config: connection "dc2": children: a connection needs at least one child (its IPsec SAs)`},
		{func(c *Connection) { c.Children[0] = nil }, `config: connection "dc2": children[0]: nil child`},
		{func(c *Connection) { c.PSK = nil }, `config: connection "dc2": psk_file: auth psk needs a pre-shared key: set psk_file or psk_env`},
		{func(c *Connection) { c.Proposals = nil }, `config: connection "dc2": proposals: no IKE proposals`},
		{func(c *Connection) { c.Proposals[0].KeyLen = 100 }, `config: connection "dc2": proposals[0]: cipher 7 with key length 100`},
		{func(c *Connection) { c.Proposals[0].Group = 2 }, `config: connection "dc2": proposals[0]: DH group "modp1024" is weak; set legacy_algorithms: true to allow it`},
		{func(c *Connection) { c.Children[0].ESPProposals[0].Integ = sa.IntegSHA1 }, `config: connection "dc2": child "net": esp_proposals[0]: kernel names "cbc(aes)"/"hmac(sha1)"/128 do not match transform 12, auth 5`},
		{func(c *Connection) { c.Children[0].Mode = 0 }, `config: connection "dc2": child "net": mode: mode(0) is neither tunnel nor transport`},
		{func(c *Connection) { c.Children[0].RemoteTS = []sa.TrafficSelector{{}} }, `config: connection "dc2": child "net": remote_ts[0]: no prefix`},
		{func(c *Connection) { c.LocalID = Identity{Type: 77, Data: []byte{1}} }, `config: connection "dc2": local_id: identity type 77`},
		{func(c *Connection) { c.RemoteID = Identity{Type: IDIPv4, Data: []byte{1}} }, `config: connection "dc2": remote_id: IPv4 identity with 1 bytes`},
		{func(c *Connection) { c.RemoteID = Identity{Type: IDDERASN1DN, Data: []byte("CN=gw")} }, `config: connection "dc2": remote_id: DER_ASN1_DN identity: bad distinguished name: 5 bytes starting 434e3d6777 are not a DER name`},
		{func(c *Connection) { c.Name = "" }, `config: name: empty name`},
		{func(c *Connection) { c.LocalPort = 0 }, `config: connection "dc2": local_port: port 0 is out of range 1..65535`},
		{func(c *Connection) { c.Children[0].StartAction = "" }, `config: connection "dc2": child "net": start_action: unknown value "" (want none or start)`},
	}
	for i, tt := range tests {
		cfg := base()
		tt.mut(cfg.Connections[0])
		err := cfg.Validate()
		if err == nil {
			t.Errorf("case %d: Validate succeeded, want %q", i, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("case %d: got\n %s\nwant\n %s", i, err, tt.want)
		}
	}
	if err := (&Config{}).Validate(); err == nil || err.Error() != "config: connections: no connections" {
		t.Errorf("empty Config: %v", err)
	}
	if err := (&Config{Connections: []*Connection{nil}}).Validate(); err == nil || err.Error() != "config: connections[0]: nil connection" {
		t.Errorf("nil connection: %v", err)
	}
}

func TestParseErrorsDynamicFamily(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	// Local address unknown, remote IPv6: the dynamic local selector is
	// IPv6 too, so an IPv4 remote_ts cannot work.
	_, err := Parse(conn("remote_addrs: 2001:db8::2", "children: [{name: n, remote_ts: 10.0.0.0/8}]"))
	want := `config: connection "dc2": child "n": remote_ts[0]: 10.0.0.0/8 is IPv4 but local_ts (dynamic, same family as 2001:db8::2) is IPv6; all selectors of a child must be of one address family`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestMainModePSKConflict(t *testing.T) {
	t.Setenv("PSK_A", "key-a")
	t.Setenv("PSK_B", "key-b")
	two := func(a, b string) []byte {
		if !strings.Contains(a, "psk_env") {
			a += ", psk_env: PSK_A"
		}
		return []byte("connections:\n" +
			"  - {name: a, children: [{name: n}], " + a + "}\n" +
			"  - {name: b, psk_env: PSK_B, children: [{name: n}], " + b + "}\n")
	}
	conflict := func(from string) string {
		return `config: connection "b": Main Mode from ` + from + ` also matches connection "a", which has a different PSK; an IKEv1 Main Mode responder must pick the PSK by address before it sees the peer's identity (use one PSK for both, different local addresses, or aggressive: true)`
	}
	tests := []struct {
		a, b string
		want string
	}{
		{"remote_addrs: 198.51.100.1", "remote_addrs: 198.51.100.1", conflict("198.51.100.1")},
		{"remote_addrs: '%any'", "remote_addrs: '%any'", conflict("%any")},
		{"remote_addrs: '%any', local_addrs: 192.0.2.1", "remote_addrs: '%any'", conflict("%any")},
		{"remote_addrs: 198.51.100.1", "remote_addrs: 198.51.100.2", ""},
		{"remote_addrs: '%any'", "remote_addrs: 198.51.100.2", ""}, // exact wins
		{"remote_addrs: '%any', local_addrs: 192.0.2.1", "remote_addrs: '%any', local_addrs: 192.0.2.2", ""},
		{"remote_addrs: '%any'", "remote_addrs: '%any', aggressive: true", ""},
		{"remote_addrs: '%any', local_port: 4501", "remote_addrs: '%any'", ""},
		{"remote_addrs: '%any', psk_env: PSK_B", "remote_addrs: '%any'", ""}, // same key
	}
	for _, tt := range tests {
		_, err := Parse(two(tt.a, tt.b))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("{%s} {%s}: %v", tt.a, tt.b, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("{%s} {%s}: got %v\nwant %s", tt.a, tt.b, err, tt.want)
		}
	}
}

func TestMulticastRefused(t *testing.T) {
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	_, err := Parse(conn("remote_addrs: 224.0.0.5"))
	if want := `config: connection "dc2": remote_addrs: multicast address 224.0.0.5 cannot be an IKE endpoint`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestExampleShowsEveryKey keeps testdata/example.yaml a complete reference.
func TestExampleShowsEveryKey(t *testing.T) {
	ex, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{rawDoc{}, rawConn{}, rawRetransmit{}, rawChild{}} {
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			key, _, _ := strings.Cut(rt.Field(i).Tag.Get("yaml"), ",")
			if !strings.Contains(string(ex), key+":") {
				t.Errorf("testdata/example.yaml does not show key %q", key)
			}
		}
	}
}

// TestDecodeConnections embeds the connections list in a larger document,
// as ikegwd's config does.
func TestDecodeConnections(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.psk"), []byte(testPSK), 0o600); err != nil {
		t.Fatal(err)
	}
	var daemon struct {
		Node        string    `yaml:"node"`
		Connections yaml.Node `yaml:"connections"`
	}
	doc := "node: gw1\nconnections:\n  - name: a\n    remote_addrs: 198.51.100.1\n    psk_file: k.psk\n    children: [{name: n}]\n"
	if err := yaml.Unmarshal([]byte(doc), &daemon); err != nil {
		t.Fatal(err)
	}
	cfg, err := DecodeConnections(&daemon.Connections, dir)
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Connection("a"); c == nil || string(c.PSK) != testPSK {
		t.Errorf("connection a: %v", c)
	}
	_, err = DecodeConnections(&yaml.Node{Kind: yaml.ScalarNode, Value: "x", Line: 3}, dir)
	if err == nil || err.Error() != `config: line 3: connections: expected a list of connections, found a value "x"` {
		t.Errorf("scalar: %v", err)
	}
	if _, err := DecodeConnections(nil, dir); err == nil {
		t.Error("nil node accepted")
	}
}
