// Package api defines the admin API of ikegwd: the JSON views served on
// the admin socket and read by ikegwctl. Views never carry key material.
//
// The API is versioned by URL prefix (/v1/...). A field is never renamed or
// retyped within a version; new fields may be added.
package api

import (
	"encoding/hex"
	"fmt"
	"time"

	"ikegw/ike/pki"
	"ikegw/ike/sa"
)

// Paths of the v1 API.
const (
	PathStatus    = "/v1/status"
	PathSAs       = "/v1/sas"
	PathInitiate  = "/v1/initiate"        // POST ?conn=NAME
	PathTerminate = "/v1/terminate"       // POST ?conn=NAME
	PathRekey     = "/v1/rekey"           // POST ?spi=HEX (inbound SPI)
	PathDPD       = "/v1/dpd"             // POST ?ike=ICOOKIE_RCOOKIE hex
	PathReload    = "/v1/reload"          // POST
	PathMembers   = "/v1/members"         // GET
	PathFailover  = "/v1/failover"        // POST: planned failover away from this node
	PathConfig    = "/v1/config"          // GET: running config, secrets redacted
	PathValidate  = "/v1/config/validate" // POST body: a config file; 200 with Validation
	PathSnapshot  = "/v1/snapshot"        // GET: the SA database snapshot (store.DB.WriteSnapshot)
	PathMetrics   = "/v1/metrics"         // GET: Prometheus text format
	// PathMembersJoin adds a node by its gossip address (any node; the
	// leader makes it a voter). POST ?addr=HOST:PORT; 200 with MemberChange.
	PathMembersJoin = "/v1/members/join"
	// PathMembersRemove removes a node from Raft and gossip (the leader
	// only: another node answers 409 naming the leader). POST ?node=NAME;
	// 200 with MemberChange.
	PathMembersRemove = "/v1/members/remove"
	// PathConfigApply replicates the connections of the posted file to
	// every node through Raft (the leader only, as PathMembersRemove).
	// POST body: a config file; 200 with ConfigApplied, 422 with
	// Validation when the file is refused (nothing changes).
	PathConfigApply = "/v1/config/apply"
	// PathConfigApplied shows the cluster-wide configuration this node
	// runs. GET; 200 with ConfigApplied.
	PathConfigApplied = "/v1/config/applied"
)

// MemberChange is the answer of PathMembersJoin and PathMembersRemove.
type MemberChange struct {
	Action  string   `json:"action"` // join | remove
	Node    string   `json:"node"`
	Members []Member `json:"members"`
}

// ConfigApplied describes the cluster-wide configuration (the connections)
// a node runs.
type ConfigApplied struct {
	// Version counts ConfigApply commits (0: none yet; the node runs the
	// connections of its own file).
	Version uint64 `json:"version"`
	// RaftIndex is the index of the ConfigApply entry that committed this
	// version (when the entry was compacted into a snapshot already: the
	// node's applied index when it loaded it, an upper bound).
	RaftIndex   uint64    `json:"raft_index,omitempty"`
	AppliedAt   time.Time `json:"applied_at,omitzero"`
	Connections []string  `json:"connections"`
	// Error is set when the node could not load the replicated version
	// (e.g. a psk_file missing on this node); it keeps running the
	// previous connections.
	Error string `json:"error,omitempty"`
	// Ignored lists top-level sections of the applied file that are
	// node-local and were not replicated (apply only).
	Ignored []string `json:"ignored,omitempty"`
}

// Member is one cluster node as PathMembers lists it.
type Member struct {
	ID         string `json:"id"`
	Role       string `json:"role"` // gateway | witness
	RaftAddr   string `json:"raft_addr"`
	GossipAddr string `json:"gossip_addr,omitempty"`
	Version    string `json:"version,omitempty"`
	// MaxCommand is the highest Raft command type the member's build
	// applies, as it advertises it (0: unknown).
	MaxCommand uint8  `json:"max_command,omitempty"`
	Status     string `json:"status"` // alive, suspect, dead, left, raft-only
	Voter      bool   `json:"voter"`
	Leader     bool   `json:"leader"`
	InRaft     bool   `json:"in_raft"`
	// Active is true for the gateway recorded as the active node (it owns
	// the VIPs).
	Active bool `json:"active"`
}

// Members is the answer of PathMembers.
type Members struct {
	Members []Member `json:"members"`
	Active  string   `json:"active,omitempty"`
	// EffectiveMaxCommand is the highest command type every alive member
	// applies: the cluster refuses newer ones (0: unknown).
	EffectiveMaxCommand uint8 `json:"effective_max_command,omitempty"`
}

// Validation is the answer of PathValidate.
type Validation struct {
	Valid       bool     `json:"valid"`
	Error       string   `json:"error,omitempty"`
	Node        string   `json:"node,omitempty"`
	Connections []string `json:"connections,omitempty"`
}

// Failover is the answer of PathFailover.
type Failover struct {
	From   string `json:"from"`
	To     string `json:"to,omitempty"`
	Leader string `json:"leader,omitempty"` // the Raft leader after the hand-over, when known
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Status describes a node.
type Status struct {
	Node       string            `json:"node"`
	Version    string            `json:"version"`
	Dataplane  string            `json:"dataplane"`
	Role       string            `json:"role"`
	IKESAs     int               `json:"ike_sas"`
	ChildSAs   int               `json:"child_sas"`
	Engine     map[string]uint64 `json:"engine"`
	Runtime    map[string]uint64 `json:"runtime"`
	StartedAt  time.Time         `json:"started_at"`
	Connection []string          `json:"connections"`
	Cluster    *ClusterStatus    `json:"cluster,omitempty"`
}

// ClusterStatus is the node's Raft view.
type ClusterStatus struct {
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// StoreAppliedIndex is the last entry the node's SA database holds
	// (AppliedIndex, raft's, counts entries merely queued for it);
	// RestartSkipped the entries skipped since start because the database
	// already held them. Both 0 from releases before they were reported.
	StoreAppliedIndex uint64    `json:"store_applied_index,omitempty"`
	RestartSkipped    uint64    `json:"restart_skipped,omitempty"`
	LastIndex         uint64    `json:"last_index"`
	Leader            string    `json:"leader"`
	LeaderReady       bool      `json:"leader_ready"`
	LastTakeover      *Takeover `json:"last_takeover,omitempty"`
	// Removed is true once the leader removed this node from the cluster.
	Removed bool `json:"removed,omitempty"`
	// ConfigVersion is the cluster-wide configuration version this node
	// runs (0: its own file's connections).
	ConfigVersion uint64 `json:"config_version,omitempty"`
}

// Takeover splits this node's last activation.
type Takeover struct {
	Started   time.Time `json:"started"`
	LoadMS    float64   `json:"load_ms"`
	CommitMS  float64   `json:"commit_ms"`
	InstallMS float64   `json:"install_ms"`
	EngineMS  float64   `json:"engine_ms"`
	IKESAs    int       `json:"ike_sas"`
	ChildSAs  int       `json:"child_sas"`
	// Staged: the takeover used what a planned handover to this node
	// prepared (its announcement's jumped counters, no commit of its
	// own); StagedLate: prepared only at activation. Unstaged says why a
	// handover announced to this node was not used.
	Staged     bool   `json:"staged,omitempty"`
	StagedLate bool   `json:"staged_late,omitempty"`
	Unstaged   string `json:"unstaged,omitempty"`
}

// Roles a node reports.
const (
	RoleStandalone = "standalone"
	RoleActive     = "active"
	RoleStandby    = "standby"
	RoleWitness    = "witness"
)

// IKESA is the view of an ISAKMP SA.
type IKESA struct {
	Connection string `json:"connection"`
	ICookie    string `json:"icookie"`
	RCookie    string `json:"rcookie"`
	Role       string `json:"role"`
	State      string `json:"state"`
	Local      string `json:"local"`
	Remote     string `json:"remote"`
	LocalID    string `json:"local_id"`
	RemoteID   string `json:"remote_id"`
	// PeerCert is the SHA-256 fingerprint of the certificate that
	// authenticated the peer (signature authentication only).
	PeerCert    string    `json:"peer_cert_sha256,omitempty"`
	Encr        uint16    `json:"encr"`
	KeyLen      uint16    `json:"key_len"`
	Hash        uint16    `json:"hash"`
	Group       uint16    `json:"group"`
	NATLocal    bool      `json:"nat_local"`
	NATRemote   bool      `json:"nat_remote"`
	Floated     bool      `json:"floated"`
	DPD         bool      `json:"dpd"`
	DPDSeq      uint32    `json:"dpd_seq"`
	Established time.Time `json:"established"`
	RekeyAt     time.Time `json:"rekey_at,omitzero"`
	ExpireAt    time.Time `json:"expire_at,omitzero"`
}

// ChildSA is the view of an IPsec SA pair.
type ChildSA struct {
	Connection  string    `json:"connection"`
	Child       string    `json:"child"`
	ICookie     string    `json:"icookie"`
	RCookie     string    `json:"rcookie"`
	State       string    `json:"state"`
	Reqid       uint32    `json:"reqid"`
	Mode        string    `json:"mode"`
	SPIIn       string    `json:"spi_in"`
	SPIOut      string    `json:"spi_out"`
	Encr        string    `json:"encr"`
	Integ       string    `json:"integ,omitempty"`
	LocalTS     []string  `json:"local_ts"`
	RemoteTS    []string  `json:"remote_ts"`
	UDPEncap    bool      `json:"udp_encap"`
	PFSGroup    uint16    `json:"pfs_group,omitempty"`
	OutSeq      uint64    `json:"out_seq"`
	InSeq       uint64    `json:"in_seq"`
	BytesIn     uint64    `json:"bytes_in"`
	BytesOut    uint64    `json:"bytes_out"`
	PacketsIn   uint64    `json:"packets_in"`
	PacketsOut  uint64    `json:"packets_out"`
	Established time.Time `json:"established"`
	RekeyAt     time.Time `json:"rekey_at,omitzero"`
	ExpireAt    time.Time `json:"expire_at,omitzero"`
}

// SAs is the answer of PathSAs.
type SAs struct {
	IKE      []IKESA   `json:"ike_sas"`
	Children []ChildSA `json:"child_sas"`
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func idString(id sa.Identity) string {
	switch id.Type {
	case 1, 5:
		if a, ok := addrFrom(id.Data); ok {
			return a
		}
	case 2, 3:
		return string(id.Data)
	case 9: // ID_DER_ASN1_DN
		return pki.DNString(id.Data)
	}
	return fmt.Sprintf("type%d:%s", id.Type, hex.EncodeToString(id.Data))
}

// IKEView makes the view of a record.
func IKEView(r *sa.IKESA) IKESA {
	return IKESA{
		Connection: r.Connection, ICookie: hex.EncodeToString(r.Cookies.I[:]), RCookie: hex.EncodeToString(r.Cookies.R[:]),
		Role: r.Role.String(), State: r.State.String(), Local: r.Local.String(), Remote: r.Remote.String(),
		LocalID: idString(r.LocalID), RemoteID: idString(r.RemoteID), PeerCert: hex.EncodeToString(r.PeerCertSHA256),
		Encr: r.Proposal.Encr, KeyLen: r.Proposal.KeyLen, Hash: r.Proposal.Hash, Group: r.Proposal.Group,
		NATLocal: r.NATLocal, NATRemote: r.NATRemote, Floated: r.Floated, DPD: r.DPD, DPDSeq: r.DPDOurSeq,
		Established: unixTime(r.Established), RekeyAt: unixTime(r.RekeyAt), ExpireAt: unixTime(r.ExpireAt),
	}
}

// ChildView makes the view of a record.
func ChildView(c *sa.ChildSA) ChildSA {
	v := ChildSA{
		Connection: c.Connection, Child: c.Child, ICookie: hex.EncodeToString(c.IKE.I[:]), RCookie: hex.EncodeToString(c.IKE.R[:]),
		State: c.State.String(), Reqid: c.Reqid, Mode: c.Mode.String(),
		SPIIn: fmt.Sprintf("%08x", c.In.SPI), SPIOut: fmt.Sprintf("%08x", c.Out.SPI),
		Encr: c.In.Encr, Integ: c.In.Integ, UDPEncap: c.EncapRemotePort != 0, PFSGroup: c.PFSGroup,
		OutSeq: c.Counters.OutSeq, InSeq: c.Counters.InSeq,
		BytesIn: c.Counters.InBytes, BytesOut: c.Counters.OutBytes, PacketsIn: c.Counters.InPackets, PacketsOut: c.Counters.OutPackets,
		Established: unixTime(c.Established), RekeyAt: unixTime(c.RekeyAt), ExpireAt: unixTime(c.ExpireAt),
	}
	for _, t := range c.LocalTS {
		v.LocalTS = append(v.LocalTS, tsString(t))
	}
	for _, t := range c.RemoteTS {
		v.RemoteTS = append(v.RemoteTS, tsString(t))
	}
	return v
}

func tsString(t sa.TrafficSelector) string {
	s := t.Prefix.String()
	if t.Protocol != 0 || t.Port != 0 {
		s += fmt.Sprintf("[%d/%d]", t.Protocol, t.Port)
	}
	return s
}
