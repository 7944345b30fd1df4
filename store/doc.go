// Package store owns persistence on bbolt: the SA database, the Raft log and
// stable store, snapshots, and the sealing of key material at rest under the
// cluster key. It never decides what to store; callers do.
package store
