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
//  2. It waits a grace time (60 ms plus 50 us per pair) for the target to
//     stage. The target,
//     applying the Handover, stages its takeover: reads the records,
//     installs the pairs with the committed jumped counters, builds the
//     engine and the IKE runtime (nothing runs yet) and opens its Raft
//     connections.
//  3. The active releases its VIPs, stops IKE and its data plane, and
//     transfers leadership to the target.
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
//   - Store complete before activation (takeover step 2): a leader's log
//     holds every committed entry, entries of its own term are its own, and
//     a follower applies only entries it knows are committed; so a leader
//     that applied every earlier-term entry of its log holds every
//     committed SA, which is what the Barrier would have waited for. If it
//     has not (the commit index did not reach it), it waits for the
//     Barrier as before.
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
//     the old active's live counter plus the margin, committed before the
//     release (so a later takeover jumps from there); the old active
//     forwards for a few milliseconds after reading its counters, far less
//     than the margin covers (one sync interval at line rate).
package failover
