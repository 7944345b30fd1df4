// Package cluster owns replication: the hashicorp/raft FSM and its command
// table, membership and health through hashicorp/memberlist, node roles,
// mutual TLS between nodes, and the commit API the IKE runtime writes
// through. It never speaks IKE and never touches the data plane.
//
// # Log entries
//
// Every Raft log entry is
//
//	type (1 byte) | flags (1 byte, bit 0 = ignorable) | command version (1 byte) | Seal(payload, ad = the 3 header bytes)
//
// where the payload is deterministic CBOR (sa.Marshal) and Seal is the
// cluster Sealer (AES-GCM under the cluster key): key material never sits in
// the Raft log in clear. Node.Commit always appends a Batch entry whose
// payload holds groups (one per Commit call) of plain inner commands with the
// same 3-byte header; each group is applied atomically and succeeds or fails
// on its own.
//
// # Rules for adding a command (mixed-version upgrades)
//
//   - A type number is forever; add new types after MaxCommandType and raise
//     it. Register the handler in commandTable (fsm.go), nowhere else.
//   - An FSM refuses an entry whose type it does not know, or whose version
//     is newer than its handler's, unless the entry is flagged ignorable; it
//     then skips it. Flag a command ignorable only if a node that skips it
//     still holds correct state.
//   - Members advertise MaxCommandType in their membership metadata;
//     Commit refuses a non-ignorable command that some alive member cannot
//     apply (ErrUnsupportedByCluster), so a feature switches on only once
//     every member understands it.
//   - Apply is a pure function of (state, entry): time, randomness and keys
//     travel inside the command.
//
// # Leadership
//
// A new leader runs a Barrier (every committed entry applied) before it
// reports {Leader: true, Ready: true} on LeadershipChanges; only then may it
// act as the active node. A witness that becomes leader hands leadership to
// a healthy gateway voter.
//
// # Restart
//
// The SA database (the FSM's state) survives a restart. Each apply
// records its entry's index and term in the same transaction as its
// changes; Raft runs with NoSnapshotRestoreOnStart and the node restores
// the newest snapshot into the database itself only when the database is
// older than it, lost, of another log or of the previous release (which
// records no index: replayed once). Entries the database already holds are
// skipped without being opened (Node.RestartSkipped), so a restarted
// member is ready at once instead of after re-applying up to
// SnapshotThreshold entries. The database is written without fsync; one
// left unsynced by an earlier boot (power loss) is moved aside and rebuilt
// (store.DB.MayHaveLostWrites).
//
// # Membership
//
// Gossip is encrypted with the memberlist keyring. Each member advertises
// its Raft address, role, version and MaxCommandType. With bootstrap_expect
// N, the member with the lowest name among the first N alive members that
// all expect N (and none of which already belongs to a cluster) bootstraps
// Raft with all of them. The leader then adds alive members as voters,
// removes members that left (they announce it before leaving), and removes
// failed members after ReapFailedAfter, but only while three voters remain.
// Two voters without a witness are refused (ErrTwoNodes).
package cluster
