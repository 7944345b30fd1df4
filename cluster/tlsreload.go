package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"

	"ikegw/cluster/certs"
)

// NewTLSStreamLayerFiles is NewTLSStreamLayer with the node certificate
// read from certFile and keyFile (cert is the pair already loaded from
// them) and read again when they change: a renewed certificate is used
// from the next connection on, without a restart.
func NewTLSStreamLayerFiles(bind, advertise, certFile, keyFile string, cert tls.Certificate, cas *x509.CertPool, log *slog.Logger) (*TLSStreamLayer, error) {
	if log == nil {
		log = slog.Default()
	}
	r, err := certs.NewReloader(certFile, keyFile, cert, "cluster: node certificate", log)
	if err != nil {
		return nil, err
	}
	return newTLSStreamLayer(bind, advertise, cert, cas, log, r.Get)
}
