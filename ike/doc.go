// Package ike owns the IKEv1 protocol: the ISAKMP wire codec (ike/isakmp),
// the cryptographic suites and RFC 2409 derivations (ike/ikecrypto), the
// exchanges as a sans-IO state machine (ike/ikev1), and the replicated SA
// records (ike/sa).
//
// Nothing under ike/ opens a socket, reads a clock or starts a goroutine
// inside the state machine: time and packets come in, actions go out. The
// runtime that drives it lives in ike/runtime.
package ike
