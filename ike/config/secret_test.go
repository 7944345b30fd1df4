package config

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// leaks reports whether s shows the secret in any common encoding.
func leaks(s string, secret []byte) bool {
	return strings.Contains(s, string(secret)) ||
		strings.Contains(s, fmt.Sprintf("%x", []byte(string(secret)))) ||
		strings.Contains(s, fmt.Sprintf("%X", []byte(string(secret)))) ||
		strings.Contains(s, fmt.Sprint([]byte(string(secret)))) ||
		strings.Contains(s, fmt.Sprintf("%#v", []byte(string(secret))))
}

func TestSecretFmt(t *testing.T) {
	s := Secret(testPSK)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%10v", "%-20s", "%08x"} {
		out := fmt.Sprintf(verb, s)
		if leaks(out, s) {
			t.Errorf("Sprintf(%q, secret) = %q shows the secret", verb, out)
		}
		if !strings.Contains(out, "<redacted>") {
			t.Errorf("Sprintf(%q, secret) = %q, want <redacted>", verb, out)
		}
	}
	txt, _ := s.MarshalText()
	bin, _ := s.MarshalBinary()
	if s.String() != "<redacted>" || s.GoString() != "<redacted>" || string(txt) != "<redacted>" || string(bin) != "<redacted>" {
		t.Error("String/GoString")
	}
	if string(s) != testPSK {
		t.Error("the bytes themselves must stay usable")
	}
	if !s.Equal(Secret(testPSK)) || s.Equal(Secret("other")) {
		t.Error("Equal")
	}
}

// testConn parses a connection holding testPSK.
func testConn(t *testing.T) *Config {
	t.Helper()
	t.Setenv("IKEGW_TEST_PSK", testPSK)
	return mustParse(t, conn("local_addrs: 192.0.2.10"))
}

func TestConnectionRedaction(t *testing.T) {
	cfg := testConn(t)
	c := cfg.Connections[0]
	secret := []byte(testPSK)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d", "%q"} {
		for name, v := range map[string]any{"*Connection": c, "Connection": *c, "*Config": cfg, "Config": *cfg, "[]*Connection": cfg.Connections} {
			if out := fmt.Sprintf(verb, v); leaks(out, secret) {
				t.Errorf("Sprintf(%q, %s) shows the PSK: %s", verb, name, out)
			}
		}
	}
	r := c.Redacted()
	if leaks(r, secret) || !strings.Contains(r, "psk=<redacted>") || !strings.Contains(r, "dc2: 192.0.2.10") {
		t.Errorf("Redacted() = %q", r)
	}
	if fmt.Sprint(c) != r {
		t.Errorf("%%v of *Connection = %q, want Redacted()", fmt.Sprint(c))
	}
	if s := fmt.Sprintf("%+v", *c); !strings.Contains(s, "PSK:<redacted>") {
		t.Errorf("%%+v of Connection = %s, want PSK:<redacted>", s)
	}

	// JSON, YAML, gob.
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if leaks(string(j), secret) || !bytes.Contains(j, []byte(`"PSK":"\u003credacted\u003e"`)) {
		t.Errorf("json.Marshal: %s", j)
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if leaks(string(y), secret) || !bytes.Contains(y, []byte("psk: <redacted>")) {
		t.Errorf("yaml.Marshal: %s", y)
	}
	var g bytes.Buffer
	if err := gob.NewEncoder(&g).Encode(Secret(secret)); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(g.Bytes(), secret) {
		t.Error("gob encoding shows the PSK")
	}

	// slog, text and JSON handlers, the secret alone and inside values.
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("psk", "psk", c.PSK)
		l.Info("conn", "conn", c)
		l.Info("conn value", "conn", *c)
		l.Info("config", "cfg", cfg)
		l.Info("group", slog.Group("g", "psk", Secret(secret)))
		l.Info("attr", slog.Any("psk", Secret(secret)))
	}
	if leaks(buf.String(), secret) {
		t.Errorf("slog output shows the PSK:\n%s", buf.String())
	}
	if n := strings.Count(buf.String(), "<redacted>"); n < 10 {
		t.Errorf("slog output has %d <redacted>, want at least 10:\n%s", n, buf.String())
	}

	// Errors.
	err = fmt.Errorf("wrapped: %v / %+v / %s", c.PSK, *c, c)
	if leaks(err.Error(), secret) {
		t.Errorf("error shows the PSK: %v", err)
	}
}

// TestErrorsNeverShowSecrets feeds malformed secrets and checks no error
// text contains them.
func TestErrorsNeverShowSecrets(t *testing.T) {
	secrets := map[string]string{
		"0xnothexsecretvalue":      "nothexsecretvalue",
		"0s!!notbase64secretvalue": "notbase64secretvalue",
	}
	for env, secret := range secrets {
		t.Setenv("IKEGW_BAD_PSK", env)
		_, err := Parse(conn("psk_env: IKEGW_BAD_PSK"))
		if err == nil {
			t.Errorf("%q accepted", env)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the secret: %v", err)
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Field != "psk_env" || ce.Value != "IKEGW_BAD_PSK" {
			t.Errorf("error %#v does not name psk_env", err)
		}
	}
	// A secret written inline in any form is refused without echoing it.
	for _, doc := range []string{"psk: topsecretvalue", "psk: {key: topsecretvalue}", "psk: [topsecretvalue]"} {
		_, err := Parse(conn(doc))
		if err == nil || strings.Contains(err.Error(), "topsecretvalue") || !errors.Is(err, ErrInsecure) {
			t.Errorf("%s: %v", doc, err)
		}
	}
}
