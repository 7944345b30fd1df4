// Package cluster owns replication: the hashicorp/raft FSM and its command
// table, membership and health through hashicorp/memberlist, node roles,
// mutual TLS between nodes, and the commit API the IKE runtime writes
// through. It never speaks IKE and never touches the data plane.
package cluster
