package ikecrypto

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps one of them,
// so callers can test with errors.Is.
var (
	// ErrUnsupported: an algorithm or group ID this package does not (or
	// will never) implement, or an unsupported key length.
	ErrUnsupported = errors.New("ikecrypto: unsupported algorithm")
	// ErrInvalidLength: a key, IV, message or DH value of the wrong length.
	ErrInvalidLength = errors.New("ikecrypto: invalid length")
	// ErrInvalidPublicValue: a peer's Diffie-Hellman public value that fails
	// validation (out of range, not on the curve, low order).
	ErrInvalidPublicValue = errors.New("ikecrypto: invalid Diffie-Hellman public value")
	// ErrInvalidPrivateKey: a private DH key that is malformed (wrong length
	// or out of range), e.g. a corrupted replicated record.
	ErrInvalidPrivateKey = errors.New("ikecrypto: invalid Diffie-Hellman private key")
)

// AlgorithmError reports an algorithm, group or key length this package
// refuses. It wraps ErrUnsupported.
type AlgorithmError struct {
	Kind   string // "hash", "encryption", "group", "key length"
	ID     int    // the attribute value (or key length in bits)
	Reason string // why, e.g. "MD5 is never supported"
}

func (e *AlgorithmError) Error() string {
	s := fmt.Sprintf("ikecrypto: unsupported %s %d", e.Kind, e.ID)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Unwrap makes errors.Is(err, ErrUnsupported) true.
func (e *AlgorithmError) Unwrap() error { return ErrUnsupported }

// lengthError reports a length mismatch: what, where, got and want.
func lengthError(what string, got int, want string) error {
	return fmt.Errorf("%w: %s is %d bytes, want %s", ErrInvalidLength, what, got, want)
}
