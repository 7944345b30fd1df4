// Package chaos runs issue 8's chaos test against the gwlab cluster lab:
// gateways and a witness in network namespaces, several strongSwan peers on
// the outside segment each holding many tunnels (IKEv1 children) to the
// outside VIP, and rounds of random, seeded faults — SIGKILL of a daemon
// (active or standby), death and restart of a node with its disk, a
// partition of one member's cluster link, 10% packet loss on the cluster
// segment, SIGSTOP/SIGCONT of the active — while the peers set up and tear
// down tunnels.
//
// After every round, once the cluster settled (one active, every member
// back, a ping answered through every peer's pinned tunnel), a checker
// asserts the invariants of DESIGN.md as a peer can see them:
//
//   - every child SA a peer holds is known, with its IKE SA's cookies and
//     both SPIs, to the active's SA view and to every other member's
//     replicated records;
//   - no two gateways held the outside or inside VIP on an up interface at
//     the same instant (a sampler reads every gateway's addresses through
//     netlink every 5 ms for the whole run);
//   - no peer renegotiated phase 1 (each peer's IKE SA keeps its uniqueid
//     and cookies from setup to the end), and no tunnel a peer did not tear
//     down itself disappeared;
//   - counters never went back: no "ESP sequence number verification
//     failed" in any peer's log, and the outbound sequence number of every
//     SA, live on the active or replicated, never decreases between rounds.
//
// The fault sequence is a pure function of the seed (Plan): the same seed
// injects the same faults, on the same roles, with the same durations.
// Which node holds a role, and the exact interleaving with the peers'
// tunnel churn, depend on timing.
//
// The package owns nothing but what it creates through gwlab and
// deploy/lab (namespaces, processes, nftables tables; all removed on
// Close, also on failure). It needs root, strongSwan and an ikegwd binary.
package chaos
