package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KeyType selects the key algorithm of lab certificates.
type KeyType string

// Key types NewKey accepts.
const (
	RSA2048  KeyType = "rsa2048"
	ECDSA256 KeyType = "ecdsa256"
	ECDSA384 KeyType = "ecdsa384"
)

// NewKey generates a key of the given type.
func NewKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case ECDSA256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSA384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("%w: key type %q (want rsa2048, ecdsa256 or ecdsa384)", ErrUnsupportedKey, t)
}

// CA is a lab certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a self-signed CA valid from now-1h for the given duration.
func NewCA(cn string, kt KeyType, validFor time.Duration) (*CA, error) {
	key, err := NewKey(kt)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: cn, Organization: []string{"ikegw lab"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validFor),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA %q: %w", cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key}, nil
}

// Leaf describes an end-entity certificate to issue.
type Leaf struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	Emails     []string
	KeyType    KeyType
	NotBefore  time.Time // zero: now-1h
	NotAfter   time.Time // zero: now+1 year
	KeyUsage   x509.KeyUsage
	CA         bool // issue an intermediate CA certificate
}

// Issue creates a key and a certificate signed by the CA.
func (ca *CA) Issue(l Leaf) (*x509.Certificate, crypto.Signer, error) {
	key, err := NewKey(l.KeyType)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	nb, na := l.NotBefore, l.NotAfter
	if nb.IsZero() {
		nb = now.Add(-time.Hour)
	}
	if na.IsZero() {
		na = now.AddDate(1, 0, 0)
	}
	ku := l.KeyUsage
	if ku == 0 {
		ku = x509.KeyUsageDigitalSignature
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: l.CommonName, Organization: []string{"ikegw lab"}},
		NotBefore: nb, NotAfter: na, KeyUsage: ku,
		DNSNames: l.DNSNames, IPAddresses: l.IPs, EmailAddresses: l.Emails,
	}
	if l.CA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %q: %w", l.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, key, nil
}

// CRL creates a CRL revoking the given certificates, valid for a day.
func (ca *CA) CRL(revoked ...*x509.Certificate) (*x509.RevocationList, error) {
	now := time.Now()
	var es []x509.RevocationListEntry
	for _, c := range revoked {
		es = append(es, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.UnixNano()), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
		RevokedCertificateEntries: es,
	}, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CRL: %w", err)
	}
	return x509.ParseRevocationList(der)
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LabCert names one end-entity certificate WriteLabCerts issues: the file
// name and common name, and its subjectAltNames. Without any SAN the name
// itself is the DNS name.
type LabCert struct {
	Name   string
	DNS    []string
	IPs    []net.IP
	Emails []string
}

// WriteLab is WriteLabCerts with one certificate per name (CN and DNS name
// the name).
func WriteLab(dir string, kt KeyType, names []string) ([]string, error) {
	cs := make([]LabCert, len(names))
	for i, n := range names {
		cs[i] = LabCert{Name: n}
	}
	return WriteLabCerts(dir, kt, cs)
}

// labCA loads dir's ca.pem/ca.key, or creates them (key type kt) when
// ca.pem does not exist. It returns the paths it created.
func labCA(dir string, kt KeyType) (*CA, []string, error) {
	caPath, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(caPath); !errors.Is(err, fs.ErrNotExist) {
		cs, err := LoadCerts(caPath)
		if err != nil {
			return nil, nil, err
		}
		k, err := LoadKey(caKey)
		if err != nil {
			return nil, nil, err
		}
		if !cs[0].IsCA {
			return nil, nil, &FileError{caPath, fmt.Errorf("%w: %q is not a CA certificate", ErrBadCert, cs[0].Subject.String())}
		}
		return &CA{Cert: cs[0], Key: k}, nil, nil
	}
	ca, err := NewCA("ikegw lab CA", kt, 10*365*24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	kp, err := KeyPEM(ca.Key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeNew(caKey, kp, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeNew(caPath, CertPEM(ca.Cert), 0o644); err != nil {
		return nil, nil, err
	}
	return ca, []string{caPath, caKey}, nil
}

func labName(n string) error {
	if n == "" || n == "ca" || filepath.Base(n) != n || n == "." || n == ".." {
		return fmt.Errorf("pki: bad certificate name %q (a file name other than \"ca\")", n)
	}
	return nil
}

// WriteLabCerts is the `ikegwd certs ike` helper: in dir it creates (once)
// a lab CA, ca.pem and ca.key (0600), and for every certificate not yet
// present <name>.pem and <name>.key (0600), issued by that CA with the name
// as common name (subject "O=ikegw lab, CN=<name>") and the given
// subjectAltNames. Existing files are never overwritten. It returns the
// paths it created.
func WriteLabCerts(dir string, kt KeyType, certs []LabCert) ([]string, error) {
	for _, c := range certs {
		if err := labName(c.Name); err != nil {
			return nil, err
		}
	}
	if _, err := NewKey(kt); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, created, err := labCA(dir, kt)
	if err != nil {
		return nil, err
	}
	for _, lc := range certs {
		cp, kp := filepath.Join(dir, lc.Name+".pem"), filepath.Join(dir, lc.Name+".key")
		if _, err := os.Stat(cp); err == nil {
			continue
		}
		leaf := Leaf{CommonName: lc.Name, DNSNames: lc.DNS, IPs: lc.IPs, Emails: lc.Emails, KeyType: kt}
		if len(lc.DNS)+len(lc.IPs)+len(lc.Emails) == 0 {
			leaf.DNSNames = []string{lc.Name}
		}
		c, k, err := ca.Issue(leaf)
		if err != nil {
			return created, err
		}
		kb, err := KeyPEM(k)
		if err != nil {
			return created, err
		}
		if err := writeNew(kp, kb, 0o600); err != nil {
			return created, err
		}
		if err := writeNew(cp, CertPEM(c), 0o644); err != nil {
			return created, err
		}
		created = append(created, cp, kp)
	}
	return created, nil
}

// WriteLabCRL writes dir/ca.crl (PEM, replacing an older one): a CRL of the
// lab CA in dir revoking the certificates <name>.pem of names, valid for a
// day. It returns the CRL's path.
func WriteLabCRL(dir string, names []string) (string, error) {
	for _, n := range names {
		if err := labName(n); err != nil {
			return "", err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err != nil {
		return "", &FileError{filepath.Join(dir, "ca.pem"), fmt.Errorf("no lab CA to sign the CRL: %w", err)}
	}
	ca, _, err := labCA(dir, "")
	if err != nil {
		return "", err
	}
	var revoked []*x509.Certificate
	for _, n := range names {
		cs, err := LoadCerts(filepath.Join(dir, n+".pem"))
		if err != nil {
			return "", err
		}
		if cs[0].CheckSignatureFrom(ca.Cert) != nil {
			return "", &FileError{filepath.Join(dir, n+".pem"), fmt.Errorf("%w: not issued by the lab CA %q", ErrUnknownCA, ca.Cert.Subject.String())}
		}
		revoked = append(revoked, cs[0])
	}
	crl, err := ca.CRL(revoked...)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "ca.crl")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	return p, nil
}
