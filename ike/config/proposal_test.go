package config

import (
	"errors"
	"reflect"
	"testing"

	"ikegw/ike/sa"
)

func TestParseIKEProposal(t *testing.T) {
	aes := func(k uint16, h, g uint16) IKEProposal { return IKEProposal{Encr: 7, KeyLen: k, Hash: h, Group: g} }
	tests := []struct {
		in     string
		legacy bool
		want   []IKEProposal
	}{
		{"aes256-sha256-modp2048", false, []IKEProposal{aes(256, 4, 14)}},
		{"aes128-sha1-modp2048", false, []IKEProposal{aes(128, 2, 14)}},
		{"aes256-sha384-ecp384", false, []IKEProposal{aes(256, 5, 20)}},
		{"aes128-sha256-curve25519", false, []IKEProposal{aes(128, 4, 31)}},
		{"aes128-sha256-x25519", false, []IKEProposal{aes(128, 4, 31)}},
		{"aes-sha-modp3072", false, []IKEProposal{aes(128, 2, 15)}},
		{"aes192-sha2_256-modp4096", false, []IKEProposal{aes(192, 4, 16)}},
		{"aes256-sha2_384-ecp256", false, []IKEProposal{aes(256, 5, 19)}},
		{"aes256-sha512-ecp521", false, []IKEProposal{aes(256, 6, 21)}},
		{"aes256-sha2_512-modp2048", false, []IKEProposal{aes(256, 6, 14)}},
		{"AES256-SHA256-MODP2048", false, []IKEProposal{aes(256, 4, 14)}},
		// Order of kinds does not matter; the cross product keeps the
		// written order: ciphers, then hashes, then groups.
		{"modp2048-sha256-aes256", false, []IKEProposal{aes(256, 4, 14)}},
		{"aes128-aes256-sha256-modp2048-ecp256", false, []IKEProposal{
			aes(128, 4, 14), aes(128, 4, 19), aes(256, 4, 14), aes(256, 4, 19)}},
		{"aes256-sha256-sha1-modp2048", false, []IKEProposal{aes(256, 4, 14), aes(256, 2, 14)}},
		// Legacy algorithms with legacy_algorithms: true.
		{"3des-sha1-modp1024", true, []IKEProposal{{Encr: 5, Hash: 2, Group: 2}}},
		{"aes128-sha1-modp1536", true, []IKEProposal{aes(128, 2, 5)}},
	}
	for _, tt := range tests {
		got, err := ParseIKEProposal(tt.in, tt.legacy)
		if err != nil {
			t.Errorf("ParseIKEProposal(%q, %v): %v", tt.in, tt.legacy, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseIKEProposal(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseIKEProposalErrors(t *testing.T) {
	tests := []struct {
		in     string
		legacy bool
		kind   error
		msg    string
	}{
		{"aes999-sha1-modp2048", false, ErrUnknownAlgorithm, `unknown cipher "aes999"`},
		{"aes256-sha999-modp2048", false, ErrUnknownAlgorithm, `unknown hash "sha999"`},
		{"aes256-sha256-modp9999", false, ErrUnknownAlgorithm, `unknown DH group "modp9999"`},
		{"aes256-sha256-modp2048-frobnicate", false, ErrUnknownAlgorithm, `unknown algorithm "frobnicate"`},
		{"aes256-md5-modp2048", true, ErrNeverSupported, `hash "md5" is insecure and never supported`},
		{"des-sha1-modp2048", true, ErrNeverSupported, `cipher "des" is insecure and never supported`},
		{"aes256-sha1-modp768", true, ErrNeverSupported, `DH group "modp768" is insecure and never supported`},
		{"null-sha1-modp2048", true, ErrNeverSupported, `cipher "null" is insecure and never supported`},
		{"3des-sha1-modp2048", false, ErrLegacyAlgorithm, `cipher "3des" is weak; set legacy_algorithms: true to allow it`},
		{"aes256-sha1-modp1024", false, ErrLegacyAlgorithm, `DH group "modp1024" is weak; set legacy_algorithms: true to allow it`},
		{"aes256-sha1-modp1536", false, ErrLegacyAlgorithm, `DH group "modp1536" is weak; set legacy_algorithms: true to allow it`},
		{"aes256-sha256", false, ErrBadProposal, `no DH group (e.g. modp2048); IKEv1 phase 1 always needs one`},
		{"aes256-modp2048", false, ErrBadProposal, `no hash (e.g. sha256)`},
		{"sha256-modp2048", false, ErrBadProposal, `no cipher (e.g. aes256)`},
		{"aes256gcm16-modp2048", false, ErrBadProposal, `AEAD cipher "aes256gcm16" is not defined for IKEv1 phase 1; use it in esp_proposals`},
		{"", false, ErrBadProposal, `empty proposal`},
		{"aes256--sha256-modp2048", false, ErrBadProposal, `empty algorithm name (doubled or trailing "-")`},
		{"aes256-sha256-modp2048-", false, ErrBadProposal, `empty algorithm name (doubled or trailing "-")`},
		{"aes256-aes256-sha256-modp2048", false, ErrBadProposal, `"aes256" listed twice`},
	}
	for _, tt := range tests {
		got, err := ParseIKEProposal(tt.in, tt.legacy)
		if err == nil {
			t.Errorf("ParseIKEProposal(%q) = %+v, want error", tt.in, got)
			continue
		}
		if !errors.Is(err, tt.kind) {
			t.Errorf("ParseIKEProposal(%q): error %v is not %v", tt.in, err, tt.kind)
		}
		if err.Error() != tt.msg {
			t.Errorf("ParseIKEProposal(%q): error\n %s\nwant\n %s", tt.in, err, tt.msg)
		}
	}
}

func TestParseESPProposal(t *testing.T) {
	cbc := func(k, auth uint16, integ string, trunc, pfs uint16) ESPProposal {
		return ESPProposal{TransformID: 12, KeyLen: k, AuthAlg: auth, PFSGroup: pfs, Encr: sa.EncrAESCBC, Integ: integ, TruncBits: trunc}
	}
	gcm := func(k, pfs uint16) ESPProposal {
		return ESPProposal{TransformID: 20, KeyLen: k, PFSGroup: pfs, Encr: sa.EncrAESGCM, TruncBits: 128}
	}
	tests := []struct {
		in     string
		legacy bool
		want   []ESPProposal
	}{
		{"aes256-sha256", false, []ESPProposal{cbc(256, 5, sa.IntegSHA256, 128, 0)}},
		{"aes128-sha1-modp2048", false, []ESPProposal{cbc(128, 2, sa.IntegSHA1, 96, 14)}},
		{"aes256-sha384", false, []ESPProposal{cbc(256, 6, sa.IntegSHA384, 192, 0)}},
		{"aes192-sha512-ecp521", false, []ESPProposal{cbc(192, 7, sa.IntegSHA512, 256, 21)}},
		{"aes-sha2_256", false, []ESPProposal{cbc(128, 5, sa.IntegSHA256, 128, 0)}},
		{"aes256gcm16", false, []ESPProposal{gcm(256, 0)}},
		{"aes128gcm16-ecp256", false, []ESPProposal{gcm(128, 19)}},
		{"aes192gcm16-curve25519", false, []ESPProposal{gcm(192, 31)}},
		{"aes256gcm128-modp3072", false, []ESPProposal{gcm(256, 15)}},
		{"3des-sha1", true, []ESPProposal{{TransformID: 3, AuthAlg: 2, Encr: sa.Encr3DES, Integ: sa.IntegSHA1, TruncBits: 96}}},
		{"aes128-sha256-modp1024", true, []ESPProposal{cbc(128, 5, sa.IntegSHA256, 128, 2)}},
		{"aes128-aes256-sha256-sha1", false, []ESPProposal{
			cbc(128, 5, sa.IntegSHA256, 128, 0), cbc(128, 2, sa.IntegSHA1, 96, 0),
			cbc(256, 5, sa.IntegSHA256, 128, 0), cbc(256, 2, sa.IntegSHA1, 96, 0)}},
		{"aes128gcm16-aes256gcm16-modp2048-ecp256", false, []ESPProposal{gcm(128, 14), gcm(128, 19), gcm(256, 14), gcm(256, 19)}},
		// A CBC and an AEAD cipher in one string: the integrity algorithm
		// goes with the CBC cipher only.
		{"aes128gcm16-aes256-sha256", false, []ESPProposal{gcm(128, 0), cbc(256, 5, sa.IntegSHA256, 128, 0)}},
	}
	for _, tt := range tests {
		got, err := ParseESPProposal(tt.in, tt.legacy)
		if err != nil {
			t.Errorf("ParseESPProposal(%q, %v): %v", tt.in, tt.legacy, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseESPProposal(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		for _, p := range got {
			if err := validESPProposal(p, tt.legacy); err != nil {
				t.Errorf("ParseESPProposal(%q) gave %+v that does not validate: %v", tt.in, p, err)
			}
			back, err := ParseESPProposal(p.String(), tt.legacy)
			if err != nil || len(back) != 1 || back[0] != p {
				t.Errorf("%+v: String %q reads back as %+v, %v", p, p.String(), back, err)
			}
		}
	}
}

func TestParseESPProposalErrors(t *testing.T) {
	tests := []struct {
		in     string
		legacy bool
		kind   error
		msg    string
	}{
		{"aes256", false, ErrBadProposal, `no integrity algorithm (e.g. sha256) for a CBC cipher`},
		{"aes256gcm16-sha256", false, ErrBadProposal, `AEAD cipher "aes256gcm16" takes no integrity algorithm, remove "sha256"`},
		{"sha256-modp2048", false, ErrBadProposal, `no cipher (e.g. aes256 or aes256gcm16)`},
		{"3des-sha1", false, ErrLegacyAlgorithm, `cipher "3des" is weak; set legacy_algorithms: true to allow it`},
		{"aes256-sha256-modp1024", false, ErrLegacyAlgorithm, `DH group "modp1024" is weak; set legacy_algorithms: true to allow it`},
		{"aes256-md5", true, ErrNeverSupported, `hash "md5" is insecure and never supported`},
		{"null-sha256", true, ErrNeverSupported, `cipher "null" is insecure and never supported`},
		{"aes128gcm8", true, ErrNeverSupported, `cipher (8-byte ICV) "aes128gcm8" is insecure and never supported`},
		{"aes128-sha256_96", true, ErrNeverSupported, `hash (96-bit truncation, not RFC 4868) "sha256_96" is insecure and never supported`},
		{"aes512-sha256", false, ErrUnknownAlgorithm, `unknown cipher "aes512"`},
		{"chacha20poly1305", false, ErrUnknownAlgorithm, `unknown cipher "chacha20poly1305"`},
		{"aes256-sha256-ecp999", false, ErrUnknownAlgorithm, `unknown DH group "ecp999"`},
	}
	for _, tt := range tests {
		got, err := ParseESPProposal(tt.in, tt.legacy)
		if err == nil {
			t.Errorf("ParseESPProposal(%q) = %+v, want error", tt.in, got)
			continue
		}
		if !errors.Is(err, tt.kind) {
			t.Errorf("ParseESPProposal(%q): error %v is not %v", tt.in, err, tt.kind)
		}
		if err.Error() != tt.msg {
			t.Errorf("ParseESPProposal(%q): error\n %s\nwant\n %s", tt.in, err, tt.msg)
		}
	}
}

func TestIKEProposalStringRoundTrip(t *testing.T) {
	for _, s := range []string{"aes256-sha256-modp2048", "aes128-sha1-curve25519", "aes192-sha512-ecp521", "3des-sha384-modp1536"} {
		ps, err := ParseIKEProposal(s, true)
		if err != nil || len(ps) != 1 {
			t.Fatalf("%q: %v %v", s, ps, err)
		}
		if got := ps[0].String(); got != s {
			t.Errorf("%+v.String() = %q, want %q", ps[0], got, s)
		}
		if err := validIKEProposal(ps[0], true); err != nil {
			t.Errorf("%q does not validate: %v", s, err)
		}
	}
}
