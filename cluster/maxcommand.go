package cluster

// ClusterMaxCommand is the highest command type every alive member
// advertises it can apply: the limit Commit enforces (ErrUnsupportedByCluster)
// for non-ignorable commands. Without membership it is this build's
// MaxCommandType.
func (n *Node) ClusterMaxCommand() CommandType {
	if n.gossip == nil {
		return MaxCommandType
	}
	return n.gossip.clusterMaxCommand()
}
