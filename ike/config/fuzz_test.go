package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"ikegw/ike/sa"
)

// fuzzSecret holds control characters, which no identity, name or quoted
// value in an error can contain raw, so finding it in output is a leak.
const fuzzSecret = "\x01fuzz-psk\x02"

func fuzzOptions() options {
	return options{
		lookupEnv: func(string) (string, bool) { return fuzzSecret, true },
		pskFile: func(path string) (Secret, error) {
			if path == "psk" {
				return Secret(fuzzSecret), nil
			}
			return nil, errf(ErrInvalid, "no such file in the fuzz harness")
		},
	}
}

// FuzzParse feeds arbitrary documents to the parser: it must never panic,
// every failure is a *Error that does not show the PSK, and every document
// that parses re-validates and prints without the PSK.
func FuzzParse(f *testing.F) {
	if ex, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(ex)
	}
	f.Add(conn())
	f.Add(conn("-psk_env", "psk_file: psk"))
	f.Add(conn("local_addrs: 2001:db8::1", "remote_addrs: 2001:db8::2", "children: [{name: n, local_ts: '2001:db8:1::/48[tcp/443]', mode: transport}]"))
	f.Add(conn("proposals: [aes128-aes256-sha256-sha1-modp2048-ecp256, 3des-md5-modp768]", "legacy_algorithms: true"))
	f.Add(conn("remote_addrs: '%any'", "remote_id: '%any'", "aggressive: true", "children: [{name: n, esp_proposals: aes128gcm16-ecp256, rekey_bytes: 1G}]"))
	f.Add(conn("retransmit: {timeout: 1s, tries: 2, base: 1.5}", "dpd_delay: 5", "dpd_timeout: 1d"))
	f.Add([]byte("connections:\n  - &a {name: x}\n  - *a\n"))
	f.Add([]byte("connections: [\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(data, fuzzOptions())
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %q is %T, not *Error", err, err)
			}
			if strings.Contains(err.Error(), fuzzSecret) {
				t.Fatalf("error shows the PSK: %q", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config does not re-validate: %v\n%s", err, data)
		}
		j, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		for _, out := range []string{string(j), fmt.Sprintf("%+v %#v %v", cfg, cfg, cfg.Connections)} {
			if strings.Contains(out, fuzzSecret) {
				t.Fatalf("output shows the PSK: %q", out)
			}
		}
		for _, c := range cfg.Connections {
			if strings.Contains(c.Redacted(), fuzzSecret) || strings.Contains(fmt.Sprintf("%+v", *c), fuzzSecret) {
				t.Fatalf("connection output shows the PSK")
			}
			for _, id := range []Identity{c.LocalID, c.RemoteID} {
				if id.IsZero() {
					continue
				}
				back, err := ParseIdentity(id.String())
				if err != nil || !back.Equal(id) {
					t.Fatalf("identity %+v prints as %q, which reads back as %+v, %v", id, id.String(), back, err)
				}
			}
			if m := cfg.MatchRemote(c.Remote); !c.RemoteIsAny() && (len(m) == 0 || m[0].Remote != c.Remote) {
				t.Fatalf("MatchRemote(%s) does not start with an exact match", c.Remote)
			}
			for _, ch := range c.Children {
				for _, ts := range append(append([]sa.TrafficSelector{}, ch.LocalTS...), ch.RemoteTS...) {
					if back, err := ParseTS(FormatTS(ts)); err != nil || back != ts {
						t.Fatalf("selector %+v prints as %q, which reads back as %+v, %v", ts, FormatTS(ts), back, err)
					}
				}
				for _, p := range ch.ESPProposals {
					if back, err := ParseESPProposal(p.String(), c.Legacy); err != nil || len(back) != 1 || back[0] != p {
						t.Fatalf("ESP proposal %+v prints as %q, which reads back as %+v, %v", p, p.String(), back, err)
					}
				}
			}
			for _, p := range c.Proposals {
				if back, err := ParseIKEProposal(p.String(), c.Legacy); err != nil || len(back) != 1 || back[0] != p {
					t.Fatalf("IKE proposal %+v prints as %q, which reads back as %+v, %v", p, p.String(), back, err)
				}
			}
		}
	})
}
