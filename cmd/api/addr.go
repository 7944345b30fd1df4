package api

import "net/netip"

func addrFrom(b []byte) (string, bool) {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return "", false
	}
	return a.Unmap().String(), true
}
