// Package ikecrypto owns the IKEv1 (RFC 2409) cryptographic suite of ikegw:
// the negotiated hash and its HMAC PRF, the phase 1 CBC ciphers, the
// Diffie-Hellman groups, and every key and hash derivation of Main Mode,
// Quick Mode and Informational exchanges (SKEYID and its children, the
// encryption key expansion of Appendix B, IVs, HASH_I/HASH_R, the Quick Mode
// hashes, KEYMAT and NAT-D).
//
// Algorithms are named by their ISAKMP phase 1 attribute values (RFC 2409
// Appendix A). MD5 and DES are never supported. 3DES and the MODP groups 2 and
// 5 are supported but legacy: see IsLegacyEncr and IsLegacyGroup, so the
// configuration can demand an explicit opt-in.
//
// The package is pure computation: it never logs, never touches the network
// or the clock, and never puts key material into errors or String() output.
// It must never import other ikegw packages. Bad input (unknown algorithm,
// wrong lengths, invalid public values) is answered with an error wrapping
// one of the sentinel errors below, never with a panic.
package ikecrypto
