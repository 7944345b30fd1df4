// Package xfrm owns the data plane: one interface (DataPlane) with two
// implementations, the Linux kernel through netlink XFRM (xfrm/kernel) and a
// userspace ESP engine on a TUN device (xfrm/userspace). It imports nothing
// of ikegw but the shared SA types (ike/sa), and it never touches an SA,
// policy, device or route it did not create. Both implementations are also
// Stagers: a pair's SAs installed first without letting it send, and
// activated later (how a takeover installs while it commits its jumped
// counters). Package xfrmtest holds the contract tests every
// implementation runs (Run, RunStager); packages esp and replay are the
// userspace engine's ESP codec and anti-replay window.
//
// # Replay bitmap
//
// sa.Counters carries the inbound anti-replay state as InSeq and
// ReplayBitmap; every data plane reads and writes it in this layout:
//
// The window is anchored at InSeq, the highest inbound sequence number
// accepted. Bit d of the window (d = 0, 1, ...) is set when sequence number
// InSeq-d has been accepted; bit d lives in word d/64 at bit position d%64
// (least significant first), so word 0 bit 0 is InSeq itself. This is the
// kernel's non-ESN xfrm_replay_state.bitmap (bit d = seq-d) extended to more
// words. When a restored bitmap is shorter than the receiver's window, the
// missing (older) positions count as already received, so a restore never
// accepts a replay; bits beyond the receiver's window are ignored (those
// numbers are too old anyway). An exporter whose window is narrower than the
// words it writes (the kernel's non-ESN window is 32 bits) sets the bits
// beyond its window: it cannot vouch for those numbers, so they count as
// received. InSeq = 0 means nothing was received yet.
package xfrm
