package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Reloader serves a certificate from its files and loads them again when
// either changes (size or modification time), so a renewed certificate
// takes effect on the next TLS handshake without a restart. A replacement
// that does not load (half-written, key of another certificate) is logged
// once and the last good pair stays in use. Its Get fits
// tls.Config.GetCertificate and GetClientCertificate through a closure.
type Reloader struct {
	certFile, keyFile string
	what              string // for log lines: "node certificate", "admin certificate"
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // size and mtime of both files when cert was loaded
	refused string // stamp of the last pair that did not load
}

func fileStamp(paths ...string) (string, error) {
	s := ""
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

// NewReloader starts from cert, the pair as already loaded from certFile
// and keyFile; what names the certificate in log lines (for example "node
// certificate").
func NewReloader(certFile, keyFile string, cert tls.Certificate, what string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	st, err := fileStamp(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &Reloader{certFile: certFile, keyFile: keyFile, what: what, log: log, cert: &cert, stamp: st}, nil
}

// Get returns the current pair, reloading the files if they changed. It
// never fails: with files missing for a moment or a replacement that does
// not load, the last good pair is returned.
func (r *Reloader) Get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := fileStamp(r.certFile, r.keyFile)
	if err != nil || st == r.stamp || st == r.refused {
		return r.cert, nil
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err == nil {
		var leaf *x509.Certificate
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err == nil {
			c.Leaf = leaf
			r.cert, r.stamp, r.refused = &c, st, ""
			r.log.Info(r.what+" reloaded", "cert", r.certFile, "subject", leaf.Subject.CommonName,
				"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			return r.cert, nil
		}
	}
	r.refused = st
	r.log.Warn(r.what+": changed files do not load; still using the previous pair", "cert", r.certFile, "key", r.keyFile, "err", err)
	return r.cert, nil
}
