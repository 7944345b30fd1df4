package vip

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
)

// benchManager is a manager for n VIPs (half IPv4, half IPv6) on a veth
// in a fresh namespace.
func benchManager(b *testing.B, n int, ann Announce) *Manager {
	b.Helper()
	if !isRoot() {
		b.Skip("needs root: creates a network namespace")
	}
	ns := "ikfo-" + suffixB(b)
	newNSB(b, ns)
	var vips []VIP
	for i := range n {
		p := netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/24", 10+i))
		if i%2 == 1 {
			p = netip.MustParsePrefix(fmt.Sprintf("2001:db8::%x/64", 0x10+i))
		}
		vips = append(vips, VIP{Interface: "eth0", Prefix: p})
	}
	m, err := New(Config{VIPs: vips, NetNS: nsPath(ns), Announce: ann, Log: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkRelease times dropping the VIPs: the critical section of a
// fence and of a lost leadership.
func BenchmarkRelease(b *testing.B) {
	for _, n := range []int{2, 16} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			m := benchManager(b, n, Announce{Count: -1})
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				if err := m.Claim(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := m.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClaim times a claim with its first announcement round (the
// part of a takeover that waits for it).
func BenchmarkClaim(b *testing.B) {
	for _, n := range []int{2, 16} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			m := benchManager(b, n, Announce{Count: 1})
			ctx := context.Background()
			for b.Loop() {
				if err := m.Claim(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := m.Release(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkUnsolicitedNA(b *testing.B) {
	ip := netip.MustParseAddr("2001:db8::10")
	for b.Loop() {
		unsolicitedNA(testMAC, ip, false)
	}
}
