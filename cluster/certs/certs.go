// Package certs generates the lab certificate authority and the node
// certificates that secure Raft traffic between ikegw nodes (mutual TLS).
// It is what `ikegwd certs` calls, so nobody runs openssl by hand. Keys are
// ECDSA P-256, written 0600; certificates are written 0644. It never reads or
// writes anything outside the directory it is given and never logs key
// material.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside a certificate directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// NodeCertFile and NodeKeyFile name a node's certificate and key files.
func NodeCertFile(name string) string { return name + ".pem" }

// NodeKeyFile names a node's private key file.
func NodeKeyFile(name string) string { return name + "-key.pem" }

// Validity periods of generated certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 2 * 365 * 24 * time.Hour
)

// ErrExists is returned when a file to be generated is already present;
// certificates are never silently overwritten.
var ErrExists = errors.New("certs: file already exists")

// CA is a loaded certificate authority able to sign node certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the CA certificate, PEM-encoded
}

// GenerateCA creates a new lab CA named cn and writes ca.pem and ca-key.pem
// (0600) into dir. It refuses to overwrite existing files.
func GenerateCA(dir, cn string) (*CA, error) {
	if cn == "" {
		return nil, errors.New("certs: generate CA: empty common name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"ikegw cluster"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: sign CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA %q: %w", cn, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeNew(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// LoadCA reads ca.pem and ca-key.pem from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	cert, err := parseCertPEM(certPEM, filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	key, err := parseKeyPEM(keyPEM, keyPath)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("certs: %s does not match %s", keyPath, filepath.Join(dir, CACertFile))
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// IssueNode signs a certificate for the node name, valid for TLS server and
// client use, with name and each of dnsNames as DNS SANs and ips as IP SANs,
// and writes <name>.pem and <name>-key.pem (0600) into dir.
func (ca *CA) IssueNode(dir, name string, dnsNames []string, ips []net.IP) error {
	if name == "" {
		return errors.New("certs: issue node certificate: empty node name")
	}
	if filepath.Base(name) != name || name == "." || name == ".." {
		return fmt.Errorf("certs: issue node certificate: node name %q is not a plain file name", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: generate key for node %q: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"ikegw cluster"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(NodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     append([]string{name}, dnsNames...),
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return fmt.Errorf("certs: sign certificate for node %q: %w", name, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, NodeKeyFile(name)), keyPEM, 0o600); err != nil {
		return err
	}
	return writeNew(filepath.Join(dir, NodeCertFile(name)),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// TLSFiles names the three files a node needs for mutual TLS.
type TLSFiles struct {
	CA   string // the cluster CA certificate
	Cert string // this node's certificate
	Key  string // this node's private key
}

// NodeFiles returns the file names IssueNode wrote for name in dir.
func NodeFiles(dir, name string) TLSFiles {
	return TLSFiles{
		CA:   filepath.Join(dir, CACertFile),
		Cert: filepath.Join(dir, NodeCertFile(name)),
		Key:  filepath.Join(dir, NodeKeyFile(name)),
	}
}

// Load reads the files into a certificate and a CA pool.
func (f TLSFiles) Load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certs: load node certificate %s / key %s: %w", f.Cert, f.Key, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certs: load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("certs: %s holds no PEM certificate", f.CA)
	}
	return cert, pool, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: random serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCertPEM(b []byte, where string) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %s: no PEM CERTIFICATE block", where)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", where, err)
	}
	return c, nil
}

func parseKeyPEM(b []byte, where string) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("certs: %s: no PEM PRIVATE KEY block", where)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: parse private key: %w", where, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("certs: %s: private key is %T, want ECDSA", where, k)
	}
	return ek, nil
}

// writeNew creates path with mode, refusing to overwrite.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return fmt.Errorf("certs: create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("certs: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: close %s: %w", path, err)
	}
	return os.Chmod(path, mode) // umask may have narrowed or widened nothing; be explicit
}

// Node names a node certificate to issue: its name (also a DNS SAN) and the
// IP addresses other nodes dial it on (Raft verifies them).
type Node struct {
	Name string
	DNS  []string
	IPs  []net.IP
}

// Lab makes dir a certificate directory for a cluster: it creates the CA if
// dir has none (named cn), and issues a certificate for each node that has
// none yet. Existing files are kept, so it can be run again to add nodes.
// It returns the names of the nodes it issued.
func Lab(dir, cn string, nodes []Node) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	ca, err := LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		ca, err = GenerateCA(dir, cn)
	}
	if err != nil {
		return nil, err
	}
	var issued []string
	for _, n := range nodes {
		if _, err := os.Stat(filepath.Join(dir, NodeCertFile(n.Name))); err == nil {
			continue
		}
		if err := ca.IssueNode(dir, n.Name, n.DNS, n.IPs); err != nil {
			return issued, err
		}
		issued = append(issued, n.Name)
	}
	return issued, nil
}
