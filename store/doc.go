// Package store owns persistence on bbolt: the SA database, the Raft log and
// stable store, snapshots, and the sealing of key material at rest under the
// cluster key. It never decides what to store; callers do. It never logs or
// returns key material, in clear, in errors or in String output.
//
// # SA database
//
// One bbolt file per node (Open), mode 0600, with these buckets:
//
//	sys    layout version and a canary sealed with the cluster key
//	ike    ISAKMP SAs, key: cookies I|R (16 bytes)
//	child  IPsec SA pairs, key: inbound SPI (4 bytes, big endian)
//	meta   small unsealed metadata, key: name
//	smeta  sealed metadata (cluster configuration with PSKs), key: name
//
// Records are encoded with sa.Marshal and sealed whole with Sealer (they carry
// keys); the bucket name and record key are the additional data, so a sealed
// value moved to another place does not open. A database opens only if its
// canary opens with the Sealer, so a node started with the wrong cluster key
// fails at Open instead of at the first read.
//
// # Adding fields to records
//
// The rule is the one in the ike/sa package documentation: a field's integer
// CBOR key is forever, a new field takes the next free key and has a zero
// value meaning "absent", and a change an older node cannot safely ignore
// bumps sa.RecordVersion. The store needs no migration for added fields:
//
//   - Reading: an older build skips keys it does not know (sa.Unmarshal); a
//     record whose Version is newer than sa.RecordVersion is refused with
//     sa.ErrNewerRecord, naming the record.
//   - Writing: PutIKE and PutChild store the record they are given, whole.
//     PutCounters, the one write that rewrites part of a stored record, edits
//     the encoded CBOR map in place and carries keys it does not know
//     through unchanged, so an older node applying a counters sync never
//     strips fields a newer node wrote. Writers refuse records with a
//     Version newer than this build's.
//   - The bucket layout has its own version (sys/layout); a database or
//     snapshot with a newer layout is refused with ErrNewerLayout. A new
//     bucket within the same layout is created at Open.
//
// # Raft
//
// OpenRaftStores keeps the Raft log and stable store in dir/raft.db
// (raft-boltdb/v2) and snapshots in dir/snapshots (raft.FileSnapshotStore,
// the two newest kept). The cluster seals command payloads with the Sealer
// before raft.Apply, so key material is sealed inside the log as well; the
// FSM snapshot is DB.WriteSnapshot, whose values are sealed.
//
// # Crash safety
//
// Every Update is one bbolt transaction, fsynced at commit: after a crash
// (kill -9, power loss) the database holds every committed transaction and
// passes bbolt's consistency check (DB.Check). The tests check this by
// killing a writing child process.
package store
