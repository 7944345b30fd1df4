package cluster

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/cluster/certs"
)

// raftServer is a TLS raft transport that answers RequestVote and counts
// the RPCs that reached raft.
type raftServer struct {
	addr raft.ServerAddress
	rpcs atomic.Int64
	logs *syncBuf
	pool *x509.CertPool
}

func newRaftServer(t *testing.T, dir string) *raftServer {
	t.Helper()
	labFiles(t, dir, "n1", "n2")
	cert, pool, err := certs.NodeFiles(dir, "n1").Load()
	if err != nil {
		t.Fatal(err)
	}
	s := &raftServer{logs: &syncBuf{}, pool: pool}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewTLSStreamLayer("127.0.0.1:0", "", cert, pool, log)
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTLSTransport(srv, quietLog())
	t.Cleanup(func() { tr.Close() })
	go func() {
		for rpc := range tr.Consumer() {
			s.rpcs.Add(1)
			rpc.Respond(&raft.RequestVoteResponse{Term: 1}, nil)
		}
	}()
	s.addr = raft.ServerAddress(srv.Addr().String())
	return s
}

func requestVote(tr raft.Transport, addr raft.ServerAddress) error {
	var resp raft.RequestVoteResponse
	return tr.RequestVote("n1", addr, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("x"), Addr: []byte("x")}, Term: 7}, &resp)
}

// clientOnlyCert issues, from dir's cluster CA, a certificate for TLS
// client use only, as `ikegwctl certs client` does for admins.
func clientOnlyCert(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("ikegw:role=admin")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestRaftRefusesAdminClientCertificate: the cluster CA also signs the
// admin API's client certificates; one of them must not be able to speak
// Raft (send votes, append entries) to a node.
func TestRaftRefusesAdminClientCertificate(t *testing.T) {
	dir := t.TempDir()
	s := newRaftServer(t, dir)
	c, err := tls.Dial("tcp", string(s.addr), &tls.Config{Certificates: []tls.Certificate{clientOnlyCert(t, dir)},
		RootCAs: s.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3: the server checks the client certificate after the
		// client's handshake finished; the refusal shows on the first read.
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatal("a client-only certificate of the cluster CA was served by the raft transport")
	}
	waitFor(t, 5*time.Second, "refusal logged", func() bool {
		return strings.Contains(s.logs.String(), "not a node certificate")
	})
	if n := s.rpcs.Load(); n != 0 {
		t.Fatalf("%d RPCs reached raft", n)
	}
	if err := verifyNodePeer(tls.ConnectionState{}); !errors.Is(err, ErrNotNodeCertificate) {
		t.Fatalf("no certificate: %v", err)
	}
}

// recorder is a TCP proxy that keeps what the client sent.
type recorder struct {
	ln   net.Listener
	mu   sync.Mutex
	sent bytes.Buffer
}

func newRecorder(t *testing.T, to string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			go func() {
				io.Copy(c, s)
				c.Close()
			}()
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						r.mu.Lock()
						r.sent.Write(buf[:n])
						r.mu.Unlock()
						s.Write(buf[:n])
					}
					if err != nil {
						s.Close()
						return
					}
				}
			}()
		}
	}()
	return r
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.sent.Bytes())
}

// TestRaftReplayedStreamRefused: an attacker on the cluster network
// records a node's raft connection (a vote request) and replays the bytes
// on a new connection. TLS 1.3 gives every handshake fresh keys: the
// replay fails the handshake, nothing reaches raft, and the refusal is
// logged. (A replayed vote is how a standby could be pushed into an
// election without holding a key.)
func TestRaftReplayedStreamRefused(t *testing.T) {
	dir := t.TempDir()
	s := newRaftServer(t, dir)
	rec := newRecorder(t, string(s.addr))
	cert, pool, err := certs.NodeFiles(dir, "n2").Load()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewTLSStreamLayer("127.0.0.1:0", "", cert, pool, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctr := NewTLSTransport(cl, quietLog())
	t.Cleanup(func() { ctr.Close() })
	if err := requestVote(ctr, raft.ServerAddress(rec.ln.Addr().String())); err != nil {
		t.Fatalf("vote through the recording proxy: %v", err)
	}
	if n := s.rpcs.Load(); n != 1 {
		t.Fatalf("%d RPCs after one vote", n)
	}
	captured := rec.bytes()
	if len(captured) < 100 {
		t.Fatalf("captured only %d bytes", len(captured))
	}
	refusals := strings.Count(s.logs.String(), "refused raft connection")
	c, err := net.Dial("tcp", string(s.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(captured); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c) // until the server closes the connection
	waitFor(t, 10*time.Second, "replay refusal logged", func() bool {
		return strings.Count(s.logs.String(), "refused raft connection") > refusals
	})
	if n := s.rpcs.Load(); n != 1 {
		t.Fatalf("the replayed stream delivered %d more RPCs to raft", n-1)
	}
}

// TestTLSReloadsNodeCertificate: a node certificate replaced on disk is
// presented from the next connection on, without a restart; a replacement
// that does not load is refused (logged) and the last good one stays.
func TestTLSReloadsNodeCertificate(t *testing.T) {
	dir, work := t.TempDir(), t.TempDir()
	labFiles(t, dir, "n1", "n2")
	certFile, keyFile := filepath.Join(work, "n1.pem"), filepath.Join(work, "n1-key.pem")
	install := func(from string) {
		t.Helper()
		for _, f := range [][2]string{{certs.NodeCertFile("n1"), certFile}, {certs.NodeKeyFile("n1"), keyFile}} {
			b, err := os.ReadFile(filepath.Join(from, f[0]))
			if err != nil {
				t.Fatal(err)
			}
			tmp := f[1] + ".tmp"
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, f[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(dir)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, pool, err := certs.NodeFiles(dir, "n1").Load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	srv, err := NewTLSStreamLayerFiles("127.0.0.1:0", "", certFile, keyFile, cert, pool, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	client, _, err := certs.NodeFiles(dir, "n2").Load()
	if err != nil {
		t.Fatal(err)
	}
	served := func() *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: pool,
			ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := served()
	// Renewal: a new certificate for n1 from the same CA, moved into place.
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	renewed := t.TempDir()
	if err := ca.IssueNode(renewed, "n1", nil, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	install(renewed)
	later := time.Now().Add(time.Minute)
	os.Chtimes(certFile, later, later)
	second := served()
	if second.Cmp(first) == 0 {
		t.Fatal("the renewed certificate was not served")
	}
	if !strings.Contains(logs.String(), "node certificate reloaded") {
		t.Error("reload not logged")
	}
	// A broken replacement: refused, the renewed pair stays.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := served(); got.Cmp(second) != 0 {
		t.Fatalf("after a broken replacement the layer serves serial %v, want the last good %v", got, second)
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Fatalf("broken replacement logged %d times, want once", n)
	}
	served()
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Fatalf("broken replacement logged again (%d) on the next connection", n)
	}
}
