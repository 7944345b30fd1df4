// Package xfrm owns the data plane: one interface with two implementations,
// the Linux kernel through netlink XFRM and a userspace ESP engine on a TUN
// device. It imports nothing of ikegw but the shared SA types (ike/sa).
package xfrm
