package config

import (
	"fmt"
	"log/slog"
)

// redacted is what every printed form of a Secret shows.
const redacted = "<redacted>"

// Secret holds key material such as a pre-shared key. Every way of printing
// or encoding it (fmt with any verb, %#v, JSON, YAML, text, binary, slog)
// yields "<redacted>", never the bytes. Code that needs the key converts
// explicitly: []byte(secret).
type Secret []byte

// String returns "<redacted>".
func (Secret) String() string { return redacted }

// GoString returns "<redacted>" (for %#v).
func (Secret) GoString() string { return redacted }

// Format writes "<redacted>" for every verb, so %x, %d or %q cannot show the
// bytes either.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON returns the JSON string "<redacted>".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "<redacted>".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalBinary returns "<redacted>", so gob or CBOR encoders that honour
// encoding.BinaryMarshaler do not carry the key either.
func (Secret) MarshalBinary() ([]byte, error) { return []byte(redacted), nil }

// MarshalYAML returns "<redacted>".
func (Secret) MarshalYAML() (any, error) { return redacted, nil }

// LogValue makes slog print "<redacted>".
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Equal reports whether two secrets hold the same bytes.
func (s Secret) Equal(o Secret) bool { return string(s) == string(o) }

var (
	_ fmt.Stringer   = Secret(nil)
	_ fmt.GoStringer = Secret(nil)
	_ fmt.Formatter  = Secret(nil)
	_ slog.LogValuer = Secret(nil)
)
