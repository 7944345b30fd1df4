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
package failover
