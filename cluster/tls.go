package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// handshakeTimeout bounds a TLS handshake with a connecting node.
const handshakeTimeout = 10 * time.Second

// TLSStreamLayer is a raft.StreamLayer over TCP with mutual TLS 1.3: both
// sides present a certificate signed by the cluster CA. A peer with a
// certificate from another CA, or none, is refused during the handshake and
// the refusal is logged; raft never sees the connection.
type TLSStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	log       *slog.Logger
	rto       rtoTuner

	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ raft.StreamLayer = (*TLSStreamLayer)(nil)

// ErrNotNodeCertificate refuses a peer whose certificate, although signed
// by the cluster CA, is not a node certificate.
var ErrNotNodeCertificate = errors.New("cluster: peer certificate is not a node certificate")

// verifyNodePeer accepts a connecting peer only with a node certificate:
// one valid for TLS server use, as certs.IssueNode writes them. Client
// certificates for the admin API (client use only) are refused.
func verifyNodePeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: none presented", ErrNotNodeCertificate)
	}
	leaf := cs.PeerCertificates[0]
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	return fmt.Errorf("%w: %q is valid for client use only (an admin client certificate?)", ErrNotNodeCertificate, leaf.Subject.CommonName)
}

// NewTLSStreamLayer listens on bind (host:port; port 0 picks a free one).
// advertise, when not empty, is the address other nodes dial; otherwise the
// listener's address is used. cert is this node's certificate (it must be
// valid for client and server use) and cas the cluster CA pool.
func NewTLSStreamLayer(bind, advertise string, cert tls.Certificate, cas *x509.CertPool, log *slog.Logger) (*TLSStreamLayer, error) {
	return newTLSStreamLayer(bind, advertise, cert, cas, log, nil)
}

// newTLSStreamLayer: with get, the certificate of each handshake comes
// from get (reloaded files) instead of cert.
func newTLSStreamLayer(bind, advertise string, cert tls.Certificate, cas *x509.CertPool, log *slog.Logger, get func() (*tls.Certificate, error)) (*TLSStreamLayer, error) {
	if cas == nil {
		return nil, errors.New("cluster: raft TLS: no cluster CA")
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("cluster: raft TLS: no node certificate")
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: raft listen on %s: %w", bind, err)
	}
	s := &TLSStreamLayer{
		ln: ln,
		server: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    cas,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS13,
			// The cluster CA also signs admin client certificates
			// (ikegwctl certs client): only node certificates speak Raft.
			VerifyConnection: verifyNodePeer,
		},
		client: &tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      cas,
			MinVersion:   tls.VersionTLS13,
		},
		log:    log,
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
	}
	if get != nil {
		s.server.Certificates = nil
		s.server.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return get() }
		s.client.Certificates = nil
		s.client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() }
	}
	s.advertise = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("cluster: raft advertise address %q: %w", advertise, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("cluster: raft advertise address %q is not a reachable IP", advertise)
		}
		s.advertise = a
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *TLSStreamLayer) acceptLoop() {
	defer s.wg.Done()
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("cluster: raft accept failed", "addr", s.ln.Addr().String(), "err", err)
			return
		}
		s.wg.Add(1)
		go s.handshake(raw)
	}
}

func (s *TLSStreamLayer) handshake(raw net.Conn) {
	defer s.wg.Done()
	s.tune(raw)
	tc := tls.Server(raw, s.server)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Warn("cluster: refused raft connection: TLS handshake failed",
			"remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	peer := ""
	if st := tc.ConnectionState(); len(st.PeerCertificates) > 0 {
		peer = st.PeerCertificates[0].Subject.CommonName
	}
	s.log.Debug("cluster: raft connection accepted", "remote", raw.RemoteAddr().String(), "peer", peer)
	select {
	case s.conns <- tc:
	case <-s.closed:
		tc.Close()
	}
}

// Accept returns the next connection that completed the mutual TLS
// handshake.
func (s *TLSStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for handshakes in progress.
func (s *TLSStreamLayer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// Addr is the address other nodes dial.
func (s *TLSStreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to another node and completes the mutual TLS handshake,
// verifying its certificate against the cluster CA and the address.
func (s *TLSStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, fmt.Errorf("cluster: raft dial %q: %w", address, err)
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", string(address))
	if err == nil {
		s.tune(raw)
		c := tls.Client(raw, cfg)
		if err = c.HandshakeContext(ctx); err == nil {
			return c, nil
		}
		raw.Close()
	}
	s.log.Warn("cluster: raft dial refused or failed", "addr", string(address), "err", err)
	return nil, fmt.Errorf("cluster: raft dial %s: %w", address, err)
}

// SetRTOMin sets the minimum TCP retransmission timeout of the Raft
// connections made or accepted from now on (0: the kernel's default, 200
// ms on Linux). Open sets RTOMinFor(the leader lease); see tcprto.go.
func (s *TLSStreamLayer) SetRTOMin(d time.Duration) { s.rto.set(d) }

// tune applies the connection options to a new TCP connection; a failure
// is logged (the connection still works, with the kernel's timeouts).
func (s *TLSStreamLayer) tune(raw net.Conn) {
	if err := s.rto.apply(raw); err != nil {
		s.log.Warn("cluster: raft connection keeps the kernel's retransmission timeout", "remote", raw.RemoteAddr().String(), "err", err)
	}
}

// NewTLSTransport returns a raft network transport over a TLSStreamLayer.
func NewTLSTransport(s *TLSStreamLayer, log *slog.Logger) *raft.NetworkTransport {
	if log == nil {
		log = slog.Default()
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s,
		MaxPool: 3,
		// Per-RPC I/O deadline (raft scales it for snapshots). Short: a
		// dead or cut-off peer must not hold a dial or a leadership
		// transfer for long on a LAN cluster.
		Timeout: 2 * time.Second,
		Logger:  newHCLog(log, "raft-net"),
	})
}
