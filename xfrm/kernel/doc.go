// Package kernel is the Linux XFRM data plane: it installs IPsec SA pairs
// and their policies in the kernel over NETLINK_XFRM, reads and sets their
// counters (XFRM_MSG_GETAE / NEWAE), and turns the kernel's expire events
// into xfrm.Expiry values.
//
// It owns exactly the SAs and policies whose reqid lies in its configured
// range (Config.ReqidBase, Config.ReqidSpan): a pair's kernel reqid is
// ReqidBase + sa.ChildSA.Reqid, and every policy template carries it. It
// never changes or removes anything outside that range, nor any SA or
// policy with an XFRM mark; a policy of someone else on the same selector
// is a conflict (xfrm.ErrConflict), never overwritten.
//
// SAs use the kernel's non-ESN replay state (XFRMA_REPLAY_VAL: 32-bit
// sequence numbers, a 32-packet window at most), set when the SA is added
// so that a standby continues the outbound sequence and restores the
// inbound window at takeover. Requests are built here on the layouts of
// github.com/vishvananda/netlink/nl rather than with the library's
// XfrmState calls, because the library cannot pipeline requests, read or
// set the counters of a live SA, or set the lifetime counters on add, and
// because it may send XFRMA_SA_PCPU on get and delete (refused by kernels
// >= 6.13) and panics printing an XfrmState (nil Pcpunum). Key material is
// never logged and never part of an error.
//
// Every method holds one lock for its whole kernel exchange: calls are
// serialized. InstallChildren pipelines its requests (Config.Window per
// send). StageChildren and ActivateChildren (xfrm.Stager) split it in two,
// as a takeover does: the SAs without policies (they encrypt nothing)
// while the jumped counters are committed, the policies after. Raising the
// outbound sequence number of an installed pair, or moving a staged pair's
// counters forward, reads them (GETAE) and writes them back (NEWAE:
// replay state, and the lifetime counters with the times read); packets
// sent between the two are not counted, so the pair must be idle, as a
// staged pair is (it sends nothing, and no inbound ESP reaches a node
// without the VIPs).
//
// Policy cost: the kernel hashes a policy only when both selectors are
// host prefixes (/32, /128; see "ip xfrm policy set hthresh4"); every other
// ("inexact") policy is kept on one list per direction that each insert
// walks, so installing many subnet policies costs more per policy the more
// are installed. Measured in the VM (TCG, loaded 2-core host):
// BenchmarkInstallPairs.
//
// EnableESPInUDP and BypassPolicy prepare the IKE sockets for this data
// plane; Probe tells whether the running kernel can hold ESP states.
package kernel
