package lab

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

const testPSK = "s3cret-psk-do-not-leak"

func twoConnConfig() SwanConfig {
	return SwanConfig{
		LogLevels:         map[string]int{"default": 1, "ike": 4, "enc": 4},
		RetransmitTries:   2,
		RetransmitTimeout: 1500 * time.Millisecond,
		RetransmitBase:    1.4,
		Charon:            map[string]string{"make_before_break": "no", "plugins.kernel-libipsec.allow_peer_ts": "yes"},
		Conns: []SwanConn{
			{
				Name: "dc1", LocalAddrs: []string{"192.0.2.2"}, RemoteAddrs: []string{"192.0.2.10"},
				PSK: testPSK, Proposals: []string{"aes256-sha256-modp2048", "aes128-sha1-modp2048"},
				DPDDelay: 2 * time.Second, DPDTimeout: 10 * time.Second, RekeyTime: -1, Encap: true,
				Children: []SwanChild{
					{Name: "net", LocalTS: []string{"10.2.0.0/24"}, RemoteTS: []string{"10.1.0.0/24", "10.3.0.0/24"},
						ESPProposals: []string{"aes256-sha256"}, StartAction: "start", DPDAction: "restart", RekeyTime: 90 * time.Second, LifeTime: 100 * time.Second},
					{Name: "net6", LocalTS: []string{"fd00:2::/64"}, RemoteTS: []string{"fd00:1::/64"}, ESPProposals: []string{"aes128-sha1"}, Mode: "tunnel"},
				},
			},
			{
				Name: "road", Version: 1, Aggressive: true, LocalID: "gw.example", RemoteID: "road@example",
				LocalAddrs: []string{"192.0.2.2"}, RemoteAddrs: []string{"%any"}, LocalPort: 4500, PSK: "other",
				Extra:    map[string]string{"unique": "replace"},
				Children: []SwanChild{{Name: "road-net", LocalTS: []string{"0.0.0.0/0"}, Extra: map[string]string{"inactivity": "30s"}}},
			},
		},
	}
}

func TestSwanConfGolden(t *testing.T) {
	cfg := twoConnConfig()
	sc, err := cfg.StrongswanConf("/tmp/x/charon.log")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := cfg.SwanctlConf()
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{"strongswan.conf.golden": sc, "swanctl.conf.golden": sw} {
		p := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s differs (run with -update after checking):\n%s", name, got)
		}
	}
	if strings.Contains(sc, testPSK) {
		t.Error("strongswan.conf holds the PSK")
	}
	if !strings.Contains(sw, `secret = "`+testPSK+`"`) {
		t.Error("swanctl.conf lacks the PSK")
	}
}

func TestSwanConfigDefaults(t *testing.T) {
	cfg := SwanConfig{Conns: []SwanConn{{Name: "c", PSK: "k", Children: []SwanChild{{Name: "ch"}}}}}
	sc, err := cfg.StrongswanConf("/l")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kernel-libipsec", "default = 1", "ike = 2", "path = /l"} {
		if !strings.Contains(sc, want) {
			t.Errorf("default strongswan.conf lacks %q:\n%s", want, sc)
		}
	}
	sw, err := cfg.SwanctlConf()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version = 1", "aggressive = no", "auth = psk"} {
		if !strings.Contains(sw, want) {
			t.Errorf("default swanctl.conf lacks %q:\n%s", want, sw)
		}
	}
}

func TestSwanConfigErrors(t *testing.T) {
	ok := func() SwanConfig { return twoConnConfig() }
	tests := []struct {
		name string
		mod  func(c *SwanConfig)
		want string
	}{
		{"no conns", func(c *SwanConfig) { c.Conns = nil }, "no connections"},
		{"bad conn name", func(c *SwanConfig) { c.Conns[0].Name = "a b" }, `connection name "a b"`},
		{"dup conn", func(c *SwanConfig) { c.Conns[1].Name = "dc1" }, `"dc1" defined twice`},
		{"version", func(c *SwanConfig) { c.Conns[0].Version = 3 }, "version 3"},
		{"no psk", func(c *SwanConfig) { c.Conns[0].PSK = "" }, "no PSK"},
		{"psk quote", func(c *SwanConfig) { c.Conns[0].PSK = `a"b` + testPSK }, "PSK has a quote"},
		{"port", func(c *SwanConfig) { c.Conns[0].RemotePort = 70000 }, "port out of range"},
		{"addr injection", func(c *SwanConfig) { c.Conns[0].LocalAddrs = []string{"1.2.3.4 }"} }, `local_addrs "1.2.3.4 }"`},
		{"proposal", func(c *SwanConfig) { c.Conns[0].Proposals = []string{""} }, "proposals"},
		{"id", func(c *SwanConfig) { c.Conns[1].LocalID = "a\"b" }, "identity"},
		{"no children", func(c *SwanConfig) { c.Conns[0].Children = nil }, "no children"},
		{"dup child", func(c *SwanConfig) { c.Conns[0].Children[1].Name = "net" }, `child "net": defined twice`},
		{"ts", func(c *SwanConfig) { c.Conns[0].Children[0].RemoteTS = []string{"10.0.0.0/8,"} }, "remote_ts"},
		{"mode", func(c *SwanConfig) { c.Conns[0].Children[0].Mode = "tun nel" }, "mode"},
		{"extra", func(c *SwanConfig) { c.Conns[0].Extra = map[string]string{"x": "}"} }, `setting "x"`},
		{"charon key", func(c *SwanConfig) { c.Charon = map[string]string{"a b": "1"} }, `setting "a b"`},
		{"log level", func(c *SwanConfig) { c.LogLevels = map[string]int{"ike": 9} }, "log level"},
		{"plugin", func(c *SwanConfig) { c.Plugins = []string{"x y"} }, "plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.mod(&c)
			_, err1 := c.SwanctlConf()
			_, err2 := c.StrongswanConf("/l")
			for _, err := range []error{err1, err2} {
				if !errors.Is(err, ErrSwanConfig) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, want ErrSwanConfig mentioning %q", err, tt.want)
				}
				if err != nil && strings.Contains(err.Error(), testPSK) {
					t.Errorf("error leaks the PSK: %v", err)
				}
			}
		})
	}
}

func TestSecretRedacted(t *testing.T) {
	cfg := twoConnConfig()
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if out := fmt.Sprintf(format, cfg); strings.Contains(out, testPSK) {
			t.Errorf("Sprintf(%q, cfg) shows the PSK: %s", format, out)
		}
	}
	if got := cfg.Conns[0].PSK.String(); got != "<redacted>" {
		t.Errorf("Secret.String() = %q", got)
	}
}
