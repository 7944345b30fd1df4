package cluster

import (
	"github.com/hashicorp/raft"
)

// maxConfigScan bounds how many log entries ConfigIndex reads.
const maxConfigScan = 4096

// ConfigIndex returns the Raft index of the ConfigApply entry that
// committed the given configuration version, searching the local log
// backwards from the applied index (at most 4096 entries; the FSM's
// applied index when it is ahead of raft's, as right after a restart that
// kept the SA database: raft then counts from the snapshot). ok is false
// when the entry is not in that window (compacted into a snapshot, or
// older): callers then know only that it is at or below the applied index.
func (n *Node) ConfigIndex(version uint64) (index uint64, ok bool) {
	if version == 0 {
		return 0, false
	}
	first, err := n.deps.Logs.FirstIndex()
	if err != nil {
		return 0, false
	}
	top := max(n.raft.AppliedIndex(), n.fsm.applied.Load())
	for i, seen := top, 0; i >= first && i > 0 && seen < maxConfigScan; i, seen = i-1, seen+1 {
		var l raft.Log
		if err := n.deps.Logs.GetLog(i, &l); err != nil {
			continue
		}
		if l.Type == raft.LogCommand && configVersionIn(n.deps.Sealer, l.Data) == version {
			return i, true
		}
	}
	return 0, false
}

// configVersionIn returns the version of the (last) ConfigApply command in
// a log entry, 0 if it holds none or cannot be read.
func configVersionIn(s Sealer, data []byte) uint64 {
	if len(data) < headerLen {
		return 0
	}
	hdr := data[:headerLen]
	t := CommandType(hdr[0])
	if t != TypeBatch && t != TypeConfigApply {
		return 0
	}
	body, err := s.Open(data[headerLen:], hdr)
	if err != nil {
		return 0
	}
	if t == TypeConfigApply {
		return configBodyVersion(body)
	}
	var b batchBody
	if err := decMode.Unmarshal(body, &b); err != nil {
		return 0
	}
	var v uint64
	for _, g := range b.Groups {
		for _, c := range g {
			if len(c) >= headerLen && CommandType(c[0]) == TypeConfigApply {
				if x := configBodyVersion(c[headerLen:]); x != 0 {
					v = x
				}
			}
		}
	}
	return v
}

func configBodyVersion(b []byte) uint64 {
	var c ConfigBody
	if err := decMode.Unmarshal(b, &c); err != nil {
		return 0
	}
	return c.Version
}
