// Package failover owns the active/standby side of an ikegw gateway: the
// role machine (failover/role) that decides when this node is active, the
// virtual IPs and their announcements (failover/vip), the adapter that
// feeds the role machine from the cluster (Leadership), and the cleanup of a
// dead daemon's leftovers (Cleanup). It never commits to Raft and never
// speaks IKE: takeover work (SA install with jumped sequence numbers,
// timers) reaches it as the daemon's role.Callbacks.
//
// Wiring, in ikegwd:
//
//	failover.Cleanup(ctx, vips, dataPlane.Flush)     // every start, before joining
//	mgr, _ := vip.New(vip.Config{VIPs: vips, Announce: ...})
//	m, _ := role.New(role.Config{Witness: node.Role() == cluster.RoleWitness,
//		Lease: clusterCfg.LeaderLeaseTimeout}, failover.NewLeadership(node), mgr, callbacks)
//	go m.Run(ctx)                                      // releases the VIPs when ctx ends
//	m.Handover(ctx)                                    // on SIGTERM, before node.Shutdown
//
// and `ikegwd cleanup` (the systemd unit's ExecStopPost) runs Cleanup alone.
//
// # Planned handover
//
// A planned failover (SIGTERM, `ikegwctl failover --to`) must lose at most
// one 10 ms ping, so only the VIP release, the leadership transfer and the
// target's claim may lie between the last packet the old active forwards
// and the first the target forwards. Everything else happens before the
// release (the daemon's roles.handover and member):
//
//  1. The active picks the target (Leadership.Target), closes its commit
//     gate, which waits for the engine's commits in flight and then refuses
//     every further SA change (the runtime does not send what such a change
//     guards: the peer retransmits and the new active answers), and commits
//     in one entry the jumped counters of every pair (live data plane
//     counters plus the sequence-number margin) and a Handover naming the
//     target (cluster command 9; a cluster with an older member refuses it
//     and the handover goes on the old way). It commits the announcement a
//     second time: Raft tells a follower that an entry is committed only
//     with the next one, and applying it again changes nothing.
//  2. It waits a grace time (60 ms plus 50 us per pair, or one and a half
//     times its own last staging when that is longer, at most 400 ms) for
//     the target to stage. The target,
//     applying the Handover, stages its takeover: reads the records,
//     stages the pairs with the committed jumped counters (in the data
//     plane but sending nothing: kernel SAs without policies, userspace
//     pairs no packet is matched to; the takeover activates them), builds the
//     engine and the IKE runtime (nothing runs yet) and opens its Raft
//     connections.
//  3. The active ends its lease (its send gates close: neither its IKE
//     runtime nor its userspace data plane sends from here on), releases
//     its VIPs, closes its IKE runtime (role.Callbacks.OnHandover), and
//     transfers leadership to the target. Only then does it remove its
//     pairs from the data plane, once the target recorded itself as the
//     active node (cluster.SetActive, right after its claim) or after a
//     second, and only then does the handover return (ikegwd exits after
//     it). The flush and the exit grow with the pairs: at 1,000 tunnels
//     the flush took 34-42 ms, most of a 47-62 ms gap between the release
//     and the claim, when it ran before the transfer, and run next to the
//     target's election and quorum check on the lab's 2 shared cores they
//     delayed it by up to 40 ms (BENCHMARKS.md). With the kernel data
//     plane, whose SAs encrypt without a send gate, the pairs are still
//     flushed before the transfer.
//  4. The target wins the election; it is ready at once when it has
//     applied every entry of an earlier term in its log
//     (Leadership.LeaderReady, cluster.Node.PriorTermsApplied; the repeated
//     announcement may wait): no Barrier round trip. Its activation finishes the staged takeover (restore the
//     engine, start the runtime) with no Raft commit, while the role machine
//     confirms leadership with a quorum as always; then it claims the VIPs.
//
// Why this keeps the invariants (DESIGN.md):
//
//   - One active (2): unchanged. The old active releases before it asks for
//     the transfer; the target claims only as leader, activated, and with a
//     fresh quorum confirmation (failover/role).
//   - Nothing leaves the old active after the release: its lease ended
//     before it (the send gates of the IKE runtime and the userspace data
//     plane drop every packet from then on: cmd/internal/daemon's fence.go),
//     its runtime is closed before the transfer, and the pairs it keeps
//     until the target claimed are never chosen for a packet that leaves.
//     What it sent before the gate closed is covered by the handover's jump
//     (below). Before this node installs pairs again (an activation, a
//     staging), a flush still pending runs first.
//   - Store complete before activation (takeover step 2): a leader's log
//     holds every committed entry, entries of its own term are its own, and
//     a follower applies only entries it knows are committed; so a leader
//     that applied every earlier-term entry of its log holds every
//     committed SA, which is what the Barrier would have waited for. If it
//     has not (the commit index did not reach it), it waits for the
//     Barrier as before. Applied means applied by the FSM
//     (cluster.Node.FSMAppliedIndex): raft's own AppliedIndex counts an
//     entry once it is queued for the FSM. Before that was fixed, a node
//     restarted a few seconds earlier and still applying its log (1,000
//     pairs per counter sync) became leader, read a store that lacked the
//     last takeovers' jumps and installed sequence numbers the peer had
//     seen: the replayed ESP packets of issue 5 at 1,000 tunnels.
//   - The staged state is that store: the closed gate puts every SA change
//     the old active made known to a peer before the Handover entry, and the
//     old active commits none after it. The target uses what it staged only
//     if the last Handover applied is the one it staged for and it leads the
//     term right after the one the Handover was committed in (nobody else
//     led in between). An active that announced a handover and activates
//     again (a failed transfer) first commits a cancelling Handover, before
//     any SA change; a target that sees another Handover drops its staging,
//     and a staging unused for 10 s is dropped too.
//   - Sequence numbers never go back (3): the target starts every pair at
//     the old active's live counter read at time T plus max_pps x
//     HandoverWindow (1 s), committed before the release (so a later
//     takeover jumps from there). The old active forwards from T until it
//     releases, before the target is elected; the target uses the staging
//     only if it activates within HandoverWindow - max_clock_skew of T
//     (SeqBound.StagedValid), otherwise it takes over the slow way, which
//     jumps again from the committed counters by their age.
//
// # Installing the pairs
//
// A full takeover installs every live pair after it has read the records:
// it stages them (xfrm.Stager: both SAs with the jumped counters, no
// policy, no route) while the jumped counters are being committed, and
// activates them (kernel: the policies; userspace: the routes) once the
// commit has returned (the daemon's member.commitAndStage). Commit before
// send (DESIGN.md 1) and "sequence numbers never go back" (3) hold because
// a staged pair sends nothing: the kernel selects an SA for a packet only
// through a policy's template, the userspace engine never chooses a staged
// pair for a packet it reads, and the IKE runtime that carries userspace
// ESP is built only after the commit. No packet with a jumped number leaves
// before the jump is on a quorum; a failed commit leaves staged pairs that
// never sent, and the standby transition that follows flushes them.
//
// Keeping standbys' pairs pre-installed (DESIGN.md's takeover step 4
// allows it) was measured against this and not chosen (BENCHMARKS.md,
// "Installing the pairs at takeover"):
//
//   - What it would save is only the staging where it takes longer than
//     the commit it now overlaps, and the commit's slowdown from sharing
//     the CPU with it (at 1,000 tunnels in the lab: about 40-55 ms, 7-9% of
//     the outage): the part after the commit is the same for a
//     pre-installed pair, which must not hold policies or routes on a
//     standby (kernel: its
//     outbound policies would encrypt the packets standby forwarding hands
//     to the active, with stale sequence numbers; userspace: its routes
//     took those packets from table 4501's forwarding until that rule
//     moved ahead of the data plane's, see failover/vip). With the
//     kernel, a pre-installed pair's activation is slower, not faster: its
//     counters must be read and moved (GETAE and NEWAE of both SAs) before
//     its policies.
//   - What it costs: every standby holds every pair (Go heap about 3.8 KiB
//     per pair with the userspace engine, kernel slab about 5 KiB), every
//     record change a standby applies (new pair, rekey, delete) becomes a
//     data plane call on every standby, and the data plane must follow the
//     store exactly across restarts, failed installs and role changes: a
//     missed delete leaves a pair nobody owns.
//
// # Sequence-number jump
//
// DESIGN.md invariant 3 asks every takeover to start each outbound SA above
// every sequence number the old active used. The jump is derived from a
// bound (SeqBound), not a fixed margin:
//
//	jump = max_pps x (now - T + max_clock_skew), at least seq_margin
//
// where:
//
//   - T is when the pair's last committed counters were read from the old
//     active's data plane (Counters.SyncedAt, stamped before the read), or
//     the pair's establishment if they were never synced (its counters
//     started at 0). The active syncs every pair's counters every
//     counter_sync (1 s by default, 200 ms in the lab), batched in one
//     entry; a sync whose commit failed or lagged simply leaves T older,
//     and the jump grows with it: the age of the last committed sync is
//     known at takeover, whatever happened to the syncs after it.
//   - max_pps (dataplane.max_pps) bounds the packets one pair can send per
//     second. The default, 14,880,952, is 10 GbE line rate in minimum-size
//     frames (64 bytes + 20 of preamble and gap): no ESP packet is smaller,
//     so no pair sends faster through a 10 GbE port. A faster link needs a
//     larger value; a known slower one may use a smaller (smaller jumps).
//   - The old active stopped sending before the new active's takeover
//     began: it died (SIGKILL, node death), or it fenced (dropped its VIPs
//     and stopped its data plane within the leader lease, before any other
//     node could be elected), or it handed over (released before the
//     transfer). So the packets it sent after T are at most max_pps x (its
//     stop - T) <= max_pps x (now - T) in real time.
//   - T is the old active's clock and now the new active's: the clocks may
//     differ by max_clock_skew (dataplane.max_clock_skew, 250 ms by
//     default; members must be NTP-synchronised within it).
//   - The jumped counters are committed with SyncedAt = now before the
//     pairs are installed, so a second takeover jumps from there.
//
// The cost is sequence-number space: with the defaults a takeover 0.5 s
// after the last sync jumps about 11 million, so a pair survives about 380
// takeovers before its 32-bit space runs out (the data plane then refuses
// it and it must be rekeyed); a rekey (hourly by default) starts a new
// pair at 0. In the lab (200 ms sync) the measured jumps were 9-16
// million per takeover at 1,000 tunnels.
package failover
