package config

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"ikegw/ike/pki"
)

// Send-certificate policies (send_cert).
const (
	SendCertAlways  = "always"  // default: CERT in Main Mode messages 5/6
	SendCertIfAsked = "ifasked" // only after a CR
)

// PrivateKey is a signing key loaded from a key file. Its String and
// GoString never show key material.
type PrivateKey struct{ crypto.Signer }

// String returns a placeholder.
func (PrivateKey) String() string { return redacted }

// GoString returns a placeholder.
func (PrivateKey) GoString() string { return redacted }

// PubkeyAuth is the certificate configuration of an auth: pubkey connection.
type PubkeyAuth struct {
	Certs    []*x509.Certificate // cert: our certificate (first) and any intermediates
	Key      PrivateKey          // key: PEM private key file, mode 0600 or stricter
	Trust    *pki.Trust          // cacerts and crls: the CAs peers must chain to, and their CRLs
	SendCert string              // send_cert: always (default) | ifasked
}

// parsePubkey loads cert, key, cacerts and crls into c.Pubkey when auth is
// pubkey, and refuses them otherwise.
func parsePubkey(c *Connection, r *rawConn, baseDir string, fail func(field, value string, err error) error) error {
	given := r.Cert != nil || r.Key != nil || r.CACerts != nil || r.CRLs != nil || r.SendCert != nil
	if c.Auth != AuthPubkey {
		if given {
			return fail("auth", c.Auth, errf(ErrInvalid, "cert, key, cacerts, crls or send_cert given but auth is not pubkey"))
		}
		return nil
	}
	abs := func(p string) string {
		if p != "" && !filepath.IsAbs(p) && baseDir != "" {
			return filepath.Join(baseDir, p)
		}
		return p
	}
	pk := &PubkeyAuth{SendCert: SendCertAlways}
	if r.Cert == nil {
		return fail("cert", "", errf(ErrMissing, "auth pubkey needs our certificate file"))
	}
	certs, err := pki.LoadCerts(abs(*r.Cert))
	if err != nil {
		return fail("cert", *r.Cert, pkiErr(err))
	}
	pk.Certs = certs
	if r.Key == nil {
		return fail("key", "", errf(ErrMissing, "auth pubkey needs the private key file of cert"))
	}
	key, err := pki.LoadKey(abs(*r.Key))
	if err != nil {
		return fail("key", *r.Key, pkiErr(err))
	}
	if !publicEqual(key.Public(), certs[0].PublicKey) {
		return fail("key", *r.Key, errf(ErrInvalid, "the key does not belong to the certificate %q", certs[0].Subject.String()))
	}
	if _, err := pki.AuthMethod(key.Public()); err != nil {
		return fail("key", *r.Key, errf(ErrNotSupported, "%v", err))
	}
	pk.Key = PrivateKey{key}
	if r.CACerts == nil || len(*r.CACerts) == 0 {
		return fail("cacerts", "", errf(ErrMissing, "auth pubkey needs at least one CA certificate file to validate peers"))
	}
	var cas, crls []string
	for _, p := range *r.CACerts {
		cas = append(cas, abs(p))
	}
	if r.CRLs != nil {
		for _, p := range *r.CRLs {
			crls = append(crls, abs(p))
		}
	}
	if pk.Trust, err = pki.LoadTrust(cas, crls); err != nil {
		field := "cacerts"
		var fe *pki.FileError
		if errors.As(err, &fe) {
			for i, p := range crls {
				if p == fe.Path {
					field = "crls[" + strconv.Itoa(i) + "]"
				}
			}
		}
		return fail(field, "", pkiErr(err))
	}
	if r.SendCert != nil {
		switch *r.SendCert {
		case SendCertAlways, SendCertIfAsked:
			pk.SendCert = *r.SendCert
		default:
			return fail("send_cert", *r.SendCert, errf(ErrInvalid, "want always or ifasked"))
		}
	}
	c.Pubkey = pk
	return nil
}

// pubkeyIdentities sets the identity defaults of a certificate
// authenticated connection: without local_id we are our certificate's
// subject DN (its exact DER), and without remote_id we accept any identity
// the peer's certificate chain vouches for (%any; the engine always checks
// the peer's ID against its certificate). A configured local_id must be
// vouched for by our own certificate (subject DN or a subjectAltName), or
// no peer could accept it; a DN equal to the subject is sent with the
// certificate's own encoding.
func pubkeyIdentities(c *Connection, localGiven, remoteGiven bool, fail func(field, value string, err error) error) error {
	if c.Auth != AuthPubkey || c.Pubkey == nil {
		return nil
	}
	cert := c.Pubkey.Certs[0]
	if !localGiven {
		c.LocalID = Identity{Type: IDDERASN1DN, Data: bytes.Clone(cert.RawSubject)}
	} else {
		if err := pki.MatchIdentity(cert, c.LocalID.Type, c.LocalID.Data); err != nil {
			return fail("local_id", c.LocalID.String(), errf(ErrInvalid, "our certificate does not vouch for this identity: %s",
				strings.TrimPrefix(err.Error(), "pki: ")))
		}
		if c.LocalID.Type == IDDERASN1DN {
			c.LocalID.Data = bytes.Clone(cert.RawSubject)
		}
	}
	if !remoteGiven {
		c.RemoteID = Identity{Type: IDAny}
	}
	return nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// pkiErr maps pki errors onto this package's error kinds, keeping the text.
func pkiErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return err
	case errors.Is(err, pki.ErrKeyInsecure):
		return errf(ErrInsecure, "%v", err)
	}
	return errf(ErrInvalid, "%v", err)
}
