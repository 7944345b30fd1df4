package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves a node certificate from its files and loads them
// again when either changes (size or modification time), so a renewed
// certificate takes effect on the next connection without a restart. A
// replacement that does not load (half-written, key of another
// certificate) is logged once and the last good pair stays in use.
type certReloader struct {
	certFile, keyFile string
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

// newCertReloader starts from cert, the pair as loaded from the files.
func newCertReloader(certFile, keyFile string, cert tls.Certificate, log *slog.Logger) (*certReloader, error) {
	st, err := fileStamp(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: node certificate: %w", err)
	}
	return &certReloader{certFile: certFile, keyFile: keyFile, log: log, cert: &cert, stamp: st}, nil
}

// get returns the current pair, reloading the files if they changed.
func (r *certReloader) get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := fileStamp(r.certFile, r.keyFile)
	if err != nil || st == r.stamp || st == r.refused {
		return r.cert, nil // files missing for a moment: keep the last pair
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err == nil {
		var leaf *x509.Certificate
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err == nil {
			c.Leaf = leaf
			r.cert, r.stamp, r.refused = &c, st, ""
			r.log.Info("cluster: node certificate reloaded", "cert", r.certFile, "subject", leaf.Subject.CommonName,
				"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			return r.cert, nil
		}
	}
	r.refused = st
	r.log.Warn("cluster: changed node certificate files do not load; still using the previous pair", "cert", r.certFile, "key", r.keyFile, "err", err)
	return r.cert, nil
}

// NewTLSStreamLayerFiles is NewTLSStreamLayer with the node certificate
// read from certFile and keyFile (cert is the pair already loaded from
// them) and read again when they change: a renewed certificate is used
// from the next connection on, without a restart.
func NewTLSStreamLayerFiles(bind, advertise, certFile, keyFile string, cert tls.Certificate, cas *x509.CertPool, log *slog.Logger) (*TLSStreamLayer, error) {
	if log == nil {
		log = slog.Default()
	}
	r, err := newCertReloader(certFile, keyFile, cert, log)
	if err != nil {
		return nil, err
	}
	return newTLSStreamLayer(bind, advertise, cert, cas, log, r.get)
}
