package xfrm

import (
	"context"
	"errors"
	"fmt"

	"ikegw/ike/sa"
)

// Kinds of data plane, as returned by DataPlane.Kind.
const (
	KindKernel    = "kernel"    // Linux XFRM through netlink (xfrm/kernel)
	KindUserspace = "userspace" // ESP in userspace on a TUN device (xfrm/userspace)
)

// Sentinel errors shared by every implementation. Implementations wrap them
// with what was wrong and where; test with errors.Is.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("xfrm: data plane closed")
	// ErrInvalidChild is wrapped by *InvalidChildError: the ChildSA record
	// is malformed (see Validate).
	ErrInvalidChild = errors.New("xfrm: invalid child SA")
	// ErrUnsupported is returned when a well-formed ChildSA asks for
	// something this data plane cannot do (an algorithm, transport mode,
	// an address family).
	ErrUnsupported = errors.New("xfrm: unsupported by this data plane")
	// ErrConflict is returned by InstallChild when a different pair is
	// already installed under the same inbound or outbound SPI.
	ErrConflict = errors.New("xfrm: conflicting SA already installed")
)

// DataPlane installs and removes IPsec SA pairs and their policies for one
// node. A pair is identified by its inbound SPI (sa.ChildSA.ID).
//
// Every method is safe for concurrent use. Methods that take a context
// honour its cancellation for the work they still have to do; a cancelled
// InstallChild may leave the pair half installed, which a later
// InstallChild (same record) or DeleteChild repairs.
//
// A DataPlane only ever touches what it created itself (kernel: its reqid
// range and mark; userspace: its own TUN device and routes). Nothing else on
// the machine is read, changed or removed.
//
// Implementations: xfrm/kernel (Linux XFRM) and xfrm/userspace.
type DataPlane interface {
	// Kind names the implementation: KindKernel or KindUserspace.
	Kind() string

	// InstallChild installs both SAs of the pair and the policies for
	// c.LocalTS x c.RemoteTS (outbound, inbound and, for the kernel,
	// forward), with c.Counters as the starting state:
	//   - the first outbound packet carries sequence number
	//     c.Counters.OutSeq+1;
	//   - the inbound anti-replay window is restored from c.Counters.InSeq
	//     and c.Counters.ReplayBitmap (layout: see the package
	//     documentation, "Replay bitmap");
	//   - byte and packet counters start from the values in c.Counters, so
	//     byte lifetimes count the traffic the pair carried before.
	// c is validated with Validate first; an invalid record gives an error
	// wrapping ErrInvalidChild, something this data plane cannot do gives
	// one wrapping ErrUnsupported, and nothing is installed.
	//
	// Installing a pair that is already installed with the same SPIs,
	// addresses, algorithms, keys, mode, selectors and encapsulation ports
	// succeeds and keeps the live counters, except that the outbound
	// sequence number is raised to c.Counters.OutSeq if that is higher (it
	// never goes back). A staged pair (Stager) is activated. A different
	// pair under an SPI already in use gives an error wrapping
	// ErrConflict.
	//
	// InstallChild does not retain c or its slices after it returns.
	InstallChild(ctx context.Context, c *sa.ChildSA) error

	// DeleteChild removes both SAs of the pair c.ID() and, unless another
	// installed pair still uses them, its policies. Deleting a pair that
	// is not installed is not an error (a retried delete succeeds). Only
	// c.In.SPI, c.Out.SPI and the selectors are consulted.
	DeleteChild(ctx context.Context, c *sa.ChildSA) error

	// Counters reads the live counters of every installed pair, keyed by
	// inbound SPI. OutSeq is the last outbound sequence number used; InSeq
	// and ReplayBitmap are the inbound replay state in the layout of the
	// package documentation; bytes and packets count inner packets as the
	// kernel does (the whole inner IP packet in tunnel mode, before
	// encryption outbound and after decryption inbound) and include the
	// starting values given to InstallChild. SyncedAt is left zero: the
	// caller stamps it. The map and its slices belong to the caller.
	Counters(ctx context.Context) (map[uint32]sa.Counters, error)

	// Expiries delivers lifetime events (time and bytes, soft and hard) of
	// installed pairs, by inbound SPI. The same channel is returned on every
	// call; it is closed by Close. It is buffered: a consumer that falls
	// behind by more than the buffer loses events (they are logged). A pair
	// that reaches a hard limit is no longer used by the data plane for
	// either direction, whether or not its event was read; it stays listed
	// by Installed until deleted.
	Expiries() <-chan Expiry

	// Installed lists the inbound SPIs of the pairs this node has
	// installed, in ascending order.
	Installed(ctx context.Context) ([]uint32, error)

	// Flush removes every SA and policy this node owns (and nothing else).
	// It is used at start and by the cleanup step after a daemon death.
	Flush(ctx context.Context) error

	// Close releases the data plane's resources (sockets, devices,
	// goroutines) and closes the Expiries channel. It does not Flush: SAs a
	// kernel data plane installed stay in the kernel (call Flush first to
	// remove them); a userspace data plane's SAs end with it. After Close
	// every method returns an error wrapping ErrClosed; Close itself is
	// idempotent.
	Close() error
}

// Stager is implemented by data planes that can install a pair's SAs
// without letting them carry traffic, and let them carry it later. Both
// data planes implement it. It is how a node installs the SAs of a
// takeover before it may send (while the jumped counters are being
// committed), and what a standby keeping its pairs pre-installed would
// use (measured and not chosen: failover package documentation,
// "Installing the pairs"; BenchmarkTakeoverInstall in xfrm/userspace and
// BenchmarkTakeover in xfrm/kernel).
//
// A staged pair sends nothing: the kernel installs no policy for it (no
// packet is selected for its outbound SA); the userspace engine never
// matches it to a packet it reads (its routes are installed at staging:
// what they lead into the engine is dropped until activation). Its inbound
// SA may decrypt what reaches it. It is listed by Installed, read by Counters and
// removed by DeleteChild and Flush like an installed pair.
type Stager interface {
	// StageChildren installs the SAs of each pair as InstallChild does
	// (validation, starting counters, conflicts), without its policies.
	// Staging a pair that is already installed, staged or not, changes
	// nothing. The error joins one error per pair that failed, each naming
	// the pair; the others are staged.
	StageChildren(ctx context.Context, cs []*sa.ChildSA) error

	// ActivateChildren lets each pair carry traffic. A staged pair first
	// has its counters moved forward to c.Counters (never back): the
	// outbound sequence number is raised to c.Counters.OutSeq, the inbound
	// replay window is replaced by c's when c.Counters.InSeq is ahead of
	// it, byte and packet counters are raised; then it may send (kernel:
	// its policies are installed; userspace: it is matched to packets). A pair that is not installed is
	// installed as by InstallChild; an active one is treated as by
	// InstallChild (outbound sequence number raised). InstallChild on a
	// staged pair activates it. The error joins one error per pair that
	// failed; the others are active.
	ActivateChildren(ctx context.Context, cs []*sa.ChildSA) error
}

// Expiry is a lifetime event of an installed pair.
type Expiry struct {
	SPI   uint32 // inbound SPI of the pair (sa.ChildSA.ID)
	Hard  bool   // hard limit reached: the pair no longer carries traffic
	Bytes bool   // the byte limit was reached (false: the time limit)
}

func (e Expiry) String() string {
	kind, limit := "soft", "time"
	if e.Hard {
		kind = "hard"
	}
	if e.Bytes {
		limit = "bytes"
	}
	return fmt.Sprintf("expiry spi=0x%08x %s %s", e.SPI, kind, limit)
}
