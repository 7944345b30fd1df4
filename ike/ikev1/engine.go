// Package ikev1 is the IKEv1 protocol engine (RFC 2407, 2408, 2409; NAT-T
// RFC 3947/3948; DPD RFC 3706) as a sans-IO state machine.
//
// The engine takes (time, packet), (time, timer) or an administrative request
// and returns a list of actions: persist records, send a packet, install or
// delete an IPsec SA pair, arm a timer. It opens no socket, reads no clock and
// starts no goroutine; the runtime (ike/runtime) executes the actions in
// order. Every Persist action comes before the Send it guards (DESIGN.md
// invariant 1, "commit before send"): the runtime must not send a packet
// that follows a Persist until that Persist is committed.
//
// All state another node needs to continue an SA lives in the sa.IKESA and
// sa.ChildSA records the engine persists; New + Restore with those records
// gives an engine that continues every established SA and every exchange the
// peer has seen a reply to.
//
// Lifetimes. A Quick Mode responder gives the new IPsec SA pair the shorter
// of the accepted transform's lifetime and the child's life_time and
// life_bytes (a transform without one means RFC 2407 §4.5's 28800 s and no
// volume limit). When ours is shorter, message 2 says so twice: the echoed
// transform carries our SA Life Type/Duration pairs (strongSwan reads the
// lifetime there, not in the notify), and a RESPONDER-LIFETIME notify (RFC
// 2407 §4.5.4, §4.6.3.1: protocol ESP, SPI = our inbound SPI, the same
// attribute pairs) follows the other payloads, inside what HASH(2) covers.
// A peer may still keep its own timers (strongSwan 5.9 logs the lifetime it
// received and does): the responder therefore also replaces the pair itself
// at its rekey_time (the data plane's soft limit) and at the latest at 95%
// of the lifetime, and deletes the old one. As initiator the engine takes
// the shortest of its own lifetime, the echoed transform's and a
// RESPONDER-LIFETIME's, and when that falls below the child's rekey_time
// (rekey_bytes) it rekeys at 90% of it. Phase 1 gets no RESPONDER-LIFETIME: like strongSwan (which
// echoes the proposal and runs its IKE SA on its own timers), the engine
// keeps an IKE SA for min(proposed, ike_lifetime) and, when a shorter
// lifetime of ours runs out, deletes the ISAKMP SA with a Delete
// notification so the peer does not keep using it.
//
// An Engine is not safe for concurrent use; the runtime serialises calls.
package ikev1

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"ikegw/ike/config"
	"ikegw/ike/sa"
)

// Packet is an ISAKMP message as received or to be sent, without the 4-byte
// non-ESP marker used on port 4500 (the runtime strips and adds it).
type Packet struct {
	Local  netip.AddrPort
	Remote netip.AddrPort
	Data   []byte
}

// Action is something the runtime must do, in order.
type Action interface{ isAction() }

// Persist must be committed (to the cluster, or to local persistence) before
// any later action in the same list is executed.
type Persist struct {
	IKE            []*sa.IKESA
	Children       []*sa.ChildSA
	DeleteIKE      []sa.Cookies
	DeleteChildren []uint32 // inbound SPIs
	// Counters are data plane counters to merge into stored pairs (by
	// inbound SPI); sequence numbers never go back.
	Counters map[uint32]sa.Counters
}

// Send transmits one ISAKMP message (or a NAT-T keepalive when Keepalive is
// set and Data is the single byte 0xff).
type Send struct {
	Packet
	Keepalive bool
}

// InstallChild installs an IPsec SA pair and its policies in the data plane.
type InstallChild struct{ Child *sa.ChildSA }

// DeleteChild removes an IPsec SA pair from the data plane.
type DeleteChild struct{ Child *sa.ChildSA }

// ArmTimer asks the runtime to call HandleTimer(t) at At. Arming a timer that
// is already armed moves it. StopTimer cancels one.
type ArmTimer struct {
	Timer Timer
	At    time.Time
}

// StopTimer cancels an armed timer, if any.
type StopTimer struct{ Timer Timer }

func (Persist) isAction()      {}
func (Send) isAction()         {}
func (InstallChild) isAction() {}
func (DeleteChild) isAction()  {}
func (ArmTimer) isAction()     {}
func (StopTimer) isAction()    {}

// TimerKind says what a timer is for.
type TimerKind uint8

const (
	TimerRetransmit  TimerKind = iota + 1 // resend the last request of an exchange
	TimerHalfOpen                         // give up a phase 1 that did not complete
	TimerDPD                              // send R-U-THERE / check for the ack
	TimerIKERekey                         // reauthenticate the ISAKMP SA
	TimerIKEExpire                        // ISAKMP SA hard lifetime
	TimerChildRekey                       // start a Quick Mode rekey
	TimerChildExpire                      // IPsec SA pair hard lifetime
	TimerChildDelete                      // delete a rekeyed pair after its grace period
	TimerKeepalive                        // NAT-T keepalive
	TimerExchange                         // give up a phase 2 / informational exchange
	TimerDeleteFlush                      // send the DELETEs gathered for an ISAKMP SA
)

var timerKindNames = [...]string{"", "retransmit", "half-open", "dpd", "ike-rekey", "ike-expire",
	"child-rekey", "child-expire", "child-delete", "keepalive", "exchange", "delete-flush"}

func (k TimerKind) String() string {
	if int(k) < len(timerKindNames) && k != 0 {
		return timerKindNames[k]
	}
	return fmt.Sprintf("timer(%d)", uint8(k))
}

// Timer identifies one timer; it is comparable and usable as a map key.
type Timer struct {
	Kind  TimerKind
	IKE   sa.Cookies
	MsgID uint32 // retransmit / exchange timers of phase 2 and info
	SPI   uint32 // child timers: inbound SPI
}

// Config configures an Engine.
type Config struct {
	Connections []*config.Connection
	// Rand supplies cookies, nonces, SPIs, message IDs and DH keys; nil
	// means crypto/rand.
	Rand io.Reader
	Log  *slog.Logger
	// HalfOpenTimeout bounds a phase 1 or phase 2 exchange that does not
	// complete; zero means 30 s.
	HalfOpenTimeout time.Duration
	// MaxHalfOpen bounds responder phase 1 exchanges in progress; zero
	// means 4096. Past it, new Main/Aggressive Mode requests are dropped
	// (a known peer's evicts an unknown source's first; admission.go).
	MaxHalfOpen int
	// ReservedHalfOpen is the share of MaxHalfOpen that only known peers
	// (connections with an exact remote address) may use; zero means a
	// quarter, negative means none.
	ReservedHalfOpen int
	// MaxHalfOpenPerSource bounds the half-open exchanges of one source
	// address; zero means 128.
	MaxHalfOpenPerSource int
	// LogInterval is the period of the limiter on log lines a remote can
	// trigger (a few lines per kind, then one summary); zero means 10 s.
	LogInterval time.Duration
	// RekeyGrace is how long a rekeyed IPsec SA pair keeps accepting
	// inbound traffic before it is deleted; zero means 10 s.
	RekeyGrace time.Duration
	// KeepaliveInterval for NAT-T keepalives when we are behind a NAT;
	// zero means 20 s.
	KeepaliveInterval time.Duration
}

// Errors returned by the administrative calls.
var (
	ErrUnknownConnection = errors.New("ikev1: unknown connection")
	ErrNoSA              = errors.New("ikev1: no such SA")
)

// Engine is the IKEv1 state machine for one node.
type Engine struct {
	cfg   Config
	rand  io.Reader
	log   *slog.Logger
	conns map[string]*config.Connection

	ikes     map[[16]byte]*ikeSA // by cookie pair (RCookie zero while half-open as initiator)
	halfOpen int                 // responder phase 1 exchanges in progress
	adm      admission           // half-open accounting by source (admission.go)
	loglim   logLimiter
	// knownPeers is the set of exact remote addresses of the connections,
	// read by KnownPeer from other goroutines.
	knownPeers atomic.Pointer[peerSet]
	children   map[uint32]*sa.ChildSA // by inbound SPI
	idx        index
	stats      Stats
}

// Stats counts what the engine did, for metrics.
type Stats struct {
	Received, Sent uint64
	Malformed      uint64 // packets that did not decode or decrypt
	Dropped        uint64 // well-formed but unwanted (unknown SA, limits)
	// Of Dropped: new phase 1 requests refused by the half-open limits
	// (global or unknown sources' share) and by the per-source limit.
	DroppedHalfOpenLimit uint64
	DroppedSourceLimit   uint64
	// EvictedHalfOpen counts unknown sources' half-open SAs removed to
	// admit a known peer.
	EvictedHalfOpen uint64
	// LogSuppressed counts remote-triggered log lines held back by the
	// log limiter (summarised once per interval).
	LogSuppressed          uint64
	Retransmits            uint64 // requests we resent
	AnsweredFromCache      uint64 // retransmitted requests answered with the cached reply
	Resaved                uint64 // of those, replies whose commit had failed (PersistFailed), committed again first
	Phase1Done, Phase2Done uint64
	Phase1Failed           uint64
	Phase2Failed           uint64
	Phase1FailedBy         [NumFailReasons]uint64 // Phase1Failed split by reason
	Phase2FailedBy         [NumFailReasons]uint64 // Phase2Failed split by reason
	DPDSent, DPDAcked      uint64
	DPDTimeouts            uint64
	Deletes                uint64
	ChildRekeys            uint64 // IPsec SA pairs replaced by a rekey (either side started it)
	IKEReauths             uint64 // ISAKMP SAs replaced by a reauthentication
}

// New builds an engine for the given connections.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		cfg:      cfg,
		rand:     cfg.Rand,
		log:      cfg.Log,
		conns:    map[string]*config.Connection{},
		ikes:     map[[16]byte]*ikeSA{},
		children: map[uint32]*sa.ChildSA{},
		idx:      newIndex(),
		adm:      newAdmission(),
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.cfg.HalfOpenTimeout == 0 {
		e.cfg.HalfOpenTimeout = 30 * time.Second
	}
	if e.cfg.MaxHalfOpen <= 0 {
		e.cfg.MaxHalfOpen = defaultMaxHalfOpen
	}
	switch {
	case e.cfg.ReservedHalfOpen == 0:
		e.cfg.ReservedHalfOpen = e.cfg.MaxHalfOpen / 4
	case e.cfg.ReservedHalfOpen < 0:
		e.cfg.ReservedHalfOpen = 0
	case e.cfg.ReservedHalfOpen >= e.cfg.MaxHalfOpen:
		return nil, fmt.Errorf("ikev1: ReservedHalfOpen %d must be below MaxHalfOpen %d", e.cfg.ReservedHalfOpen, e.cfg.MaxHalfOpen)
	}
	if e.cfg.MaxHalfOpenPerSource <= 0 {
		e.cfg.MaxHalfOpenPerSource = defaultMaxHalfOpenPerSource
	}
	if e.cfg.LogInterval <= 0 {
		e.cfg.LogInterval = defaultLogInterval
	}
	if e.cfg.RekeyGrace == 0 {
		e.cfg.RekeyGrace = 10 * time.Second
	}
	if e.cfg.KeepaliveInterval == 0 {
		e.cfg.KeepaliveInterval = 20 * time.Second
	}
	for _, c := range cfg.Connections {
		if _, dup := e.conns[c.Name]; dup {
			return nil, fmt.Errorf("ikev1: connection %q defined twice", c.Name)
		}
		e.conns[c.Name] = c
	}
	e.setKnownPeers()
	return e, nil
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats { return e.stats }

// Reconfigure replaces the connection set. Established SAs of a removed
// connection keep running until they expire or are deleted; they are not
// rekeyed.
func (e *Engine) Reconfigure(conns []*config.Connection) error {
	m := map[string]*config.Connection{}
	for _, c := range conns {
		if _, dup := m[c.Name]; dup {
			return fmt.Errorf("ikev1: connection %q defined twice", c.Name)
		}
		m[c.Name] = c
	}
	e.conns = m
	e.cfg.Connections = conns
	e.setKnownPeers()
	for _, s := range e.ikes {
		s.conn = m[s.rec.Connection]
	}
	return nil
}

// out collects the actions of one call.
type out struct{ acts []Action }

func (o *out) add(a Action) { o.acts = append(o.acts, a) }

func (o *out) persistIKE(r *sa.IKESA) {
	cp := cloneIKE(r)
	o.add(Persist{IKE: []*sa.IKESA{cp}})
}

func (o *out) send(local, remote netip.AddrPort, data []byte) {
	o.add(Send{Packet: Packet{Local: local, Remote: remote, Data: data}})
}

func (o *out) arm(t Timer, at time.Time) { o.add(ArmTimer{Timer: t, At: at}) }
func (o *out) stop(t Timer)              { o.add(StopTimer{Timer: t}) }

func (e *Engine) randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(e.rand, b); err != nil {
		// crypto/rand never fails on Linux; a test reader that runs dry is
		// a programming error in the test.
		panic(fmt.Sprintf("ikev1: random source failed: %v", err))
	}
	return b
}

func (e *Engine) randUint32() uint32 {
	b := e.randBytes(4)
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
