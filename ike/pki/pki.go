// Package pki holds the trust decisions for IKEv1 signature authentication
// with X.509 certificates: loading certificates, keys (0600 enforced) and
// CRLs from files, validating a peer's chain (expiry, CA, key usage,
// revocation), matching an ISAKMP identity against a certificate, the
// IKEv1 signature schemes strongSwan uses (RSA PKCS#1 v1.5 over the raw
// HASH_I/HASH_R without DigestInfo, ECDSA over the raw hash with r|s) and a
// lab CA generator.
//
// It does not import cluster/ and has no ikev1 dependency: the engine calls
// it.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// Errors wrapped by every refusal; match with errors.Is.
var (
	ErrNoCert           = errors.New("pki: no certificate")
	ErrBadCert          = errors.New("pki: malformed certificate")
	ErrExpired          = errors.New("pki: certificate expired or not yet valid")
	ErrUnknownCA        = errors.New("pki: certificate not signed by a trusted CA")
	ErrKeyUsage         = errors.New("pki: certificate key usage forbids signatures")
	ErrRevoked          = errors.New("pki: certificate revoked")
	ErrBadCRL           = errors.New("pki: bad CRL")
	ErrIdentityMismatch = errors.New("pki: identity does not match certificate")
	ErrKeyFile          = errors.New("pki: bad private key file")
	ErrKeyInsecure      = errors.New("pki: private key file accessible to group or others")
	ErrBadSignature     = errors.New("pki: signature verification failed")
	ErrUnsupportedKey   = errors.New("pki: unsupported key type")
)

// FileError names the file a load failed on.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// ParseCerts parses PEM (one or more CERTIFICATE blocks) or a single DER
// certificate.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PEM block %d: %v", ErrBadCert, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) > 0 {
		return out, nil
	}
	c, err := x509.ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("%w: neither PEM CERTIFICATE nor DER: %v", ErrBadCert, err)
	}
	return []*x509.Certificate{c}, nil
}

// LoadCerts reads certificates (PEM or DER) from a file.
func LoadCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{path, err}
	}
	cs, err := ParseCerts(data)
	if err != nil {
		return nil, &FileError{path, err}
	}
	return cs, nil
}

// LoadKey reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC 1 EC) whose
// file mode must not grant any access to group or others.
func LoadKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, &FileError{path, err}
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, &FileError{path, fmt.Errorf("%w: mode %04o, want 0600 or stricter", ErrKeyInsecure, fi.Mode().Perm())}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{path, err}
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, &FileError{path, err}
	}
	return k, nil
}

// ParseKey parses a PEM private key. Errors never include key material.
func ParseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKeyFile)
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM type %q", ErrKeyFile, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not parse", ErrKeyFile, b.Type)
	}
	switch s := k.(type) {
	case *rsa.PrivateKey:
		return s, nil
	case *ecdsa.PrivateKey:
		return s, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, k)
}

// Fingerprint is the SHA-256 of a certificate's DER (sa.IKESA.PeerCertSHA256).
func Fingerprint(c *x509.Certificate) []byte {
	s := sha256.Sum256(c.Raw)
	return s[:]
}

// Trust is the set of CAs and CRLs one connection accepts peers under.
type Trust struct {
	roots *x509.CertPool
	cas   []*x509.Certificate
	crls  []*x509.RevocationList
}

// NewTrust builds a Trust from CA certificates and CRLs. Each CRL's
// signature must verify under one of the CAs.
func NewTrust(cas []*x509.Certificate, crls []*x509.RevocationList) (*Trust, error) {
	if len(cas) == 0 {
		return nil, fmt.Errorf("%w: no CA certificate", ErrNoCert)
	}
	t := &Trust{roots: x509.NewCertPool(), cas: cas}
	for _, c := range cas {
		t.roots.AddCert(c)
	}
	for i, l := range crls {
		ok := false
		for _, c := range cas {
			if bytes.Equal(l.RawIssuer, c.RawSubject) && l.CheckSignatureFrom(c) == nil {
				ok = true
				break
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: CRL %d (issuer %q) not signed by a configured CA", ErrBadCRL, i+1, l.Issuer.String())
		}
		t.crls = append(t.crls, l)
	}
	return t, nil
}

// LoadTrust reads CA certificate files and CRL files (PEM or DER).
func LoadTrust(caFiles, crlFiles []string) (*Trust, error) {
	var cas []*x509.Certificate
	for _, p := range caFiles {
		cs, err := LoadCerts(p)
		if err != nil {
			return nil, err
		}
		cas = append(cas, cs...)
	}
	var crls []*x509.RevocationList
	for _, p := range crlFiles {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, &FileError{p, err}
		}
		if b, _ := pem.Decode(data); b != nil {
			data = b.Bytes
		}
		l, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, &FileError{p, fmt.Errorf("%w: %v", ErrBadCRL, err)}
		}
		crls = append(crls, l)
	}
	return NewTrust(cas, crls)
}

// CADNs returns the DER subject names of the CAs, for CR payloads.
func (t *Trust) CADNs() [][]byte {
	out := make([][]byte, len(t.cas))
	for i, c := range t.cas {
		out[i] = c.RawSubject
	}
	return out
}

// Verify parses the peer's certificates (DER, end entity first, as in CERT
// payloads) and validates the end entity at now: chain to a configured CA,
// validity, key usage allowing digital signatures, and no CRL revoking any
// certificate of the chain. It returns the end-entity certificate.
func (t *Trust) Verify(ders [][]byte, now time.Time) (*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, ErrNoCert
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("%w: CERT %d: %v", ErrBadCert, i+1, err)
		}
		certs[i] = c
	}
	ee := certs[0]
	subj := ee.Subject.String()
	if now.Before(ee.NotBefore) || now.After(ee.NotAfter) {
		return nil, fmt.Errorf("%w: %q valid %s to %s, now %s", ErrExpired, subj,
			ee.NotBefore.UTC().Format(time.RFC3339), ee.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if ee.KeyUsage != 0 && ee.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrKeyUsage, subj)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := ee.Verify(x509.VerifyOptions{
		Roots: t.roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var ie x509.CertificateInvalidError
		if errors.As(err, &ie) && ie.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: chain of %q: %v", ErrExpired, subj, err)
		}
		return nil, fmt.Errorf("%w: %q issued by %q: %v", ErrUnknownCA, subj, ee.Issuer.String(), err)
	}
	for _, ch := range chains {
		for _, c := range ch {
			if err := t.revoked(c); err != nil {
				return nil, err
			}
		}
	}
	return ee, nil
}

func (t *Trust) revoked(c *x509.Certificate) error {
	for _, l := range t.crls {
		if !bytes.Equal(l.RawIssuer, c.RawIssuer) {
			continue
		}
		for _, e := range l.RevokedCertificateEntries {
			if e.SerialNumber != nil && e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return fmt.Errorf("%w: %q serial %s at %s by CRL of %q", ErrRevoked, c.Subject.String(),
					c.SerialNumber.Text(16), e.RevocationTime.UTC().Format(time.RFC3339), l.Issuer.String())
			}
		}
	}
	return nil
}

// ISAKMP identification types (RFC 2407 §4.6.2.1) MatchIdentity knows.
const (
	IDIPv4      uint8 = 1
	IDFQDN      uint8 = 2
	IDUserFQDN  uint8 = 3
	IDIPv6      uint8 = 5
	IDDERASN1DN uint8 = 9
)

// MatchIdentity checks that an ISAKMP identity (type and wire data) is
// vouched for by the certificate: DER_ASN1_DN against the subject, FQDN,
// USER_FQDN and IPv4/IPv6 against the subjectAltName DNS, email and IP
// entries.
func MatchIdentity(c *x509.Certificate, idType uint8, data []byte) error {
	switch idType {
	case IDDERASN1DN:
		if DNEqual(data, c.RawSubject) {
			return nil
		}
		return fmt.Errorf("%w: DN %q is not the subject %q", ErrIdentityMismatch, DNString(data), DNString(c.RawSubject))
	case IDFQDN:
		for _, n := range c.DNSNames {
			if strings.EqualFold(n, string(data)) {
				return nil
			}
		}
		return fmt.Errorf("%w: FQDN %q not in DNS names %q of %q", ErrIdentityMismatch, printable(data), c.DNSNames, c.Subject.String())
	case IDUserFQDN:
		for _, n := range c.EmailAddresses {
			if strings.EqualFold(n, string(data)) {
				return nil
			}
		}
		return fmt.Errorf("%w: user FQDN %q not in email addresses %q of %q", ErrIdentityMismatch, printable(data), c.EmailAddresses, c.Subject.String())
	case IDIPv4, IDIPv6:
		if (idType == IDIPv4 && len(data) != 4) || (idType == IDIPv6 && len(data) != 16) {
			return fmt.Errorf("%w: address identity of %d bytes", ErrIdentityMismatch, len(data))
		}
		for _, ip := range c.IPAddresses {
			if ip.Equal(net.IP(data)) {
				return nil
			}
		}
		return fmt.Errorf("%w: address %s not in IP addresses %v of %q", ErrIdentityMismatch, net.IP(data), c.IPAddresses, c.Subject.String())
	}
	return fmt.Errorf("%w: identity type %d cannot be matched against a certificate", ErrIdentityMismatch, idType)
}

func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// IKEv1 authentication methods (RFC 2409 / RFC 4754).
const (
	AuthRSASig   uint16 = 3
	AuthECDSA256 uint16 = 9
	AuthECDSA384 uint16 = 10
	AuthECDSA521 uint16 = 11
)

// AuthMethod returns the IKEv1 authentication method for a key.
func AuthMethod(pub crypto.PublicKey) (uint16, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return AuthRSASig, nil
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return AuthECDSA256, nil
		case 384:
			return AuthECDSA384, nil
		case 521:
			return AuthECDSA521, nil
		}
	}
	return 0, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// Sign makes the SIG payload body for HASH_I or HASH_R the way strongSwan's
// IKEv1 pubkey authenticator does: RSA PKCS#1 v1.5 over the raw hash (no
// DigestInfo, SIGN_RSA_EMSA_PKCS1_NULL); ECDSA over the raw hash, encoded
// as fixed-length r|s (SIGN_ECDSA_WITH_NULL, RFC 4754).
func Sign(key crypto.Signer, hash []byte) ([]byte, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return rsa.SignPKCS1v15(rand.Reader, k, crypto.Hash(0), hash)
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, hash)
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*n)
		r.FillBytes(out[:n])
		s.FillBytes(out[n:])
		return out, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, key)
}

// VerifySig checks a SIG payload body against the hash with the peer
// certificate's public key.
func VerifySig(pub crypto.PublicKey, hash, sig []byte) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.Hash(0), hash, sig); err != nil {
			return fmt.Errorf("%w: RSA", ErrBadSignature)
		}
		return nil
	case *ecdsa.PublicKey:
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return fmt.Errorf("%w: ECDSA signature of %d bytes, want %d", ErrBadSignature, len(sig), 2*n)
		}
		r := new(big.Int).SetBytes(sig[:n])
		s := new(big.Int).SetBytes(sig[n:])
		if !ecdsa.Verify(k, hash, r, s) {
			return fmt.Errorf("%w: ECDSA", ErrBadSignature)
		}
		return nil
	}
	return fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}
