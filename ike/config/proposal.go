package config

import (
	"errors"
	"fmt"
	"strings"

	"ikegw/ike/sa"
)

// Errors wrapped by proposal parse errors, for errors.Is.
var (
	// ErrUnknownAlgorithm: a name no spelling matches.
	ErrUnknownAlgorithm = errors.New("unknown algorithm")
	// ErrNeverSupported: a broken algorithm (md5, des, modp768, null) that
	// no setting enables.
	ErrNeverSupported = errors.New("never supported")
	// ErrLegacyAlgorithm: a weak algorithm (3des, modp1024, modp1536) that
	// needs legacy_algorithms: true.
	ErrLegacyAlgorithm = errors.New("legacy algorithm")
	// ErrBadProposal: a proposal that is malformed as a whole (missing or
	// conflicting parts).
	ErrBadProposal = errors.New("bad proposal")
)

// ISAKMP phase 1 attribute values (RFC 2409 Appendix A; RFC 3602; RFC 4868;
// IANA "IPSEC Group Description").
const (
	IKEEncr3DES   uint16 = 5
	IKEEncrAESCBC uint16 = 7

	IKEHashSHA1   uint16 = 2
	IKEHashSHA256 uint16 = 4
	IKEHashSHA384 uint16 = 5
	IKEHashSHA512 uint16 = 6
)

// Diffie-Hellman groups (IANA numbers, shared by IKE and PFS).
const (
	GroupMODP1024   uint16 = 2
	GroupMODP1536   uint16 = 5
	GroupMODP2048   uint16 = 14
	GroupMODP3072   uint16 = 15
	GroupMODP4096   uint16 = 16
	GroupECP256     uint16 = 19
	GroupECP384     uint16 = 20
	GroupECP521     uint16 = 21
	GroupCurve25519 uint16 = 31
)

// IPsec DOI values (RFC 2407 §4.4.4 and §4.5; RFC 4106; RFC 4868).
const (
	ESP3DES         uint8  = 3
	ESPAESCBC       uint8  = 12
	ESPAESGCM16     uint8  = 20
	AuthHMACSHA1    uint16 = 2
	AuthHMACSHA2256 uint16 = 5
	AuthHMACSHA2384 uint16 = 6
	AuthHMACSHA2512 uint16 = 7
)

// IKEProposal is one phase 1 transform, in ISAKMP attribute values.
type IKEProposal struct {
	Encr   uint16 // 7 AES-CBC, 5 3DES-CBC
	KeyLen uint16 // bits: 128/192/256 for AES, 0 for 3DES
	Hash   uint16 // 2 SHA1, 4 SHA2-256, 5 SHA2-384, 6 SHA2-512 (also the PRF)
	Group  uint16 // DH group
}

// String spells the proposal as strongSwan does ("aes256-sha256-modp2048").
func (p IKEProposal) String() string {
	return encrName(p.Encr, p.KeyLen) + "-" + hashName(p.Hash) + "-" + groupName(p.Group)
}

// ESPProposal is one phase 2 (ESP) transform.
type ESPProposal struct {
	TransformID uint8  // ISAKMP IPsec DOI ESP transform: 12 ESP_AES (CBC), 20 ESP_AES_GCM_16 (ICV 16), 3 ESP_3DES
	KeyLen      uint16 // bits (128/192/256; 0 for 3DES)
	AuthAlg     uint16 // IPsec DOI auth attribute: 2 HMAC-SHA1, 5 HMAC-SHA2-256, 6 HMAC-SHA2-384, 7 HMAC-SHA2-512; 0 for GCM
	PFSGroup    uint16 // 0 = no PFS

	// Kernel names for the data plane (sa.EncrAESCBC etc.).
	Encr      string
	Integ     string // "" for GCM
	TruncBits uint16 // ICV bits: 96 for SHA1, half the digest for SHA2, 128 for GCM-16
}

// String spells the proposal as strongSwan does ("aes128gcm16-ecp256",
// "aes256-sha256").
func (p ESPProposal) String() string {
	var s string
	switch p.TransformID {
	case ESPAESGCM16:
		s = fmt.Sprintf("aes%dgcm16", p.KeyLen)
	case ESPAESCBC:
		s = fmt.Sprintf("aes%d", p.KeyLen)
	case ESP3DES:
		s = "3des"
	default:
		s = fmt.Sprintf("esp-transform(%d)", p.TransformID)
	}
	if p.AuthAlg != 0 {
		s += "-" + espAuthName(p.AuthAlg)
	}
	if p.PFSGroup != 0 {
		s += "-" + groupName(p.PFSGroup)
	}
	return s
}

// algorithm kinds
const (
	kindEncr = iota
	kindHash
	kindGroup
)

type encrAlg struct {
	aes    bool // AES (CBC or GCM); else 3DES
	gcm    bool
	keyLen uint16
	legacy bool
}

var encrAlgs = map[string]encrAlg{
	"aes":         {aes: true, keyLen: 128},
	"aes128":      {aes: true, keyLen: 128},
	"aes192":      {aes: true, keyLen: 192},
	"aes256":      {aes: true, keyLen: 256},
	"3des":        {legacy: true},
	"aes128gcm16": {aes: true, gcm: true, keyLen: 128},
	"aes192gcm16": {aes: true, gcm: true, keyLen: 192},
	"aes256gcm16": {aes: true, gcm: true, keyLen: 256},
	// strongSwan also spells the ICV length in bits.
	"aes128gcm128": {aes: true, gcm: true, keyLen: 128},
	"aes192gcm128": {aes: true, gcm: true, keyLen: 192},
	"aes256gcm128": {aes: true, gcm: true, keyLen: 256},
	"aesgcm16":     {aes: true, gcm: true, keyLen: 128},
}

type hashAlg struct {
	ike, esp uint16 // attribute values
	integ    string // kernel name
	trunc    uint16
}

var hashAlgs = map[string]hashAlg{
	"sha1":     {IKEHashSHA1, AuthHMACSHA1, sa.IntegSHA1, 96},
	"sha":      {IKEHashSHA1, AuthHMACSHA1, sa.IntegSHA1, 96},
	"sha256":   {IKEHashSHA256, AuthHMACSHA2256, sa.IntegSHA256, 128},
	"sha2_256": {IKEHashSHA256, AuthHMACSHA2256, sa.IntegSHA256, 128},
	"sha384":   {IKEHashSHA384, AuthHMACSHA2384, sa.IntegSHA384, 192},
	"sha2_384": {IKEHashSHA384, AuthHMACSHA2384, sa.IntegSHA384, 192},
	"sha512":   {IKEHashSHA512, AuthHMACSHA2512, sa.IntegSHA512, 256},
	"sha2_512": {IKEHashSHA512, AuthHMACSHA2512, sa.IntegSHA512, 256},
}

type groupAlg struct {
	num    uint16
	legacy bool
}

var groupAlgs = map[string]groupAlg{
	"modp1024":   {GroupMODP1024, true},
	"modp1536":   {GroupMODP1536, true},
	"modp2048":   {GroupMODP2048, false},
	"modp3072":   {GroupMODP3072, false},
	"modp4096":   {GroupMODP4096, false},
	"ecp256":     {GroupECP256, false},
	"ecp384":     {GroupECP384, false},
	"ecp521":     {GroupECP521, false},
	"curve25519": {GroupCurve25519, false},
	"x25519":     {GroupCurve25519, false},
}

// never lists broken algorithms with what they are, for the error.
var never = map[string]string{
	"md5":         "hash",
	"hmac_md5":    "hash",
	"des":         "cipher",
	"null":        "cipher",
	"modp768":     "DH group",
	"aes128gcm8":  "cipher (8-byte ICV)",
	"aes192gcm8":  "cipher (8-byte ICV)",
	"aes256gcm8":  "cipher (8-byte ICV)",
	"aes128gcm12": "cipher (12-byte ICV)",
	"aes192gcm12": "cipher (12-byte ICV)",
	"aes256gcm12": "cipher (12-byte ICV)",
	"sha256_96":   "hash (96-bit truncation, not RFC 4868)",
}

// guessKind names what an unknown token probably was, for the error.
func guessKind(tok string) string {
	switch {
	case strings.HasPrefix(tok, "aes"), strings.HasPrefix(tok, "3des"), strings.HasPrefix(tok, "des"),
		strings.HasPrefix(tok, "camellia"), strings.HasPrefix(tok, "blowfish"), strings.HasPrefix(tok, "cast"),
		strings.HasPrefix(tok, "chacha"), strings.HasPrefix(tok, "twofish"), strings.HasPrefix(tok, "serpent"):
		return "cipher"
	case strings.HasPrefix(tok, "sha"), strings.HasPrefix(tok, "md"), strings.HasPrefix(tok, "hmac"),
		strings.HasPrefix(tok, "aesxcbc"), strings.HasPrefix(tok, "prf"):
		return "hash"
	case strings.HasPrefix(tok, "modp"), strings.HasPrefix(tok, "ecp"), strings.HasPrefix(tok, "curve"),
		strings.HasPrefix(tok, "x448"), strings.HasPrefix(tok, "x25519"), strings.HasPrefix(tok, "ecp"):
		return "DH group"
	}
	return "algorithm"
}

// token is one classified algorithm name of a proposal string.
type token struct {
	name  string
	kind  int
	encr  encrAlg
	hash  hashAlg
	group groupAlg
}

// tokenize splits and classifies a proposal string. ike selects the phase 1
// rules (no AEAD).
func tokenize(s string, legacy, ike bool) ([]token, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errf(ErrBadProposal, "empty proposal")
	}
	var toks []token
	seen := map[string]bool{}
	for _, raw := range strings.Split(s, "-") {
		name := strings.ToLower(strings.TrimSpace(raw))
		if name == "" {
			return nil, errf(ErrBadProposal, "empty algorithm name (doubled or trailing \"-\")")
		}
		if seen[name] {
			return nil, errf(ErrBadProposal, "%q listed twice", name)
		}
		seen[name] = true
		if what, ok := never[name]; ok {
			return nil, errf(ErrNeverSupported, "%s %q is insecure and never supported", what, name)
		}
		var t token
		t.name = name
		if e, ok := encrAlgs[name]; ok {
			if e.legacy && !legacy {
				return nil, errf(ErrLegacyAlgorithm, "cipher %q is weak; set legacy_algorithms: true to allow it", name)
			}
			if e.gcm && ike {
				return nil, errf(ErrBadProposal, "AEAD cipher %q is not defined for IKEv1 phase 1; use it in esp_proposals", name)
			}
			t.kind, t.encr = kindEncr, e
		} else if h, ok := hashAlgs[name]; ok {
			t.kind, t.hash = kindHash, h
		} else if g, ok := groupAlgs[name]; ok {
			if g.legacy && !legacy {
				return nil, errf(ErrLegacyAlgorithm, "DH group %q is weak; set legacy_algorithms: true to allow it", name)
			}
			t.kind, t.group = kindGroup, g
		} else {
			return nil, errf(ErrUnknownAlgorithm, "unknown %s %q", guessKind(name), name)
		}
		toks = append(toks, t)
	}
	return toks, nil
}

func split(toks []token) (encrs, hashes, groups []token) {
	for _, t := range toks {
		switch t.kind {
		case kindEncr:
			encrs = append(encrs, t)
		case kindHash:
			hashes = append(hashes, t)
		case kindGroup:
			groups = append(groups, t)
		}
	}
	return
}

// ParseIKEProposal parses a phase 1 proposal in strongSwan's spelling
// ("aes256-sha256-modp2048"). Several algorithms of a kind give the cross
// product, ciphers outermost, then hashes, then groups, in the order written
// ("aes128-aes256-sha256-modp2048-ecp256" is four transforms). Every
// proposal needs at least one cipher, hash and DH group. legacy allows 3des,
// modp1024 and modp1536.
func ParseIKEProposal(s string, legacy bool) ([]IKEProposal, error) {
	toks, err := tokenize(s, legacy, true)
	if err != nil {
		return nil, err
	}
	encrs, hashes, groups := split(toks)
	switch {
	case len(encrs) == 0:
		return nil, errf(ErrBadProposal, "no cipher (e.g. aes256)")
	case len(hashes) == 0:
		return nil, errf(ErrBadProposal, "no hash (e.g. sha256)")
	case len(groups) == 0:
		return nil, errf(ErrBadProposal, "no DH group (e.g. modp2048); IKEv1 phase 1 always needs one")
	}
	var out []IKEProposal
	for _, e := range encrs {
		for _, h := range hashes {
			for _, g := range groups {
				p := IKEProposal{Encr: IKEEncr3DES, Hash: h.hash.ike, Group: g.group.num}
				if e.encr.aes {
					p.Encr, p.KeyLen = IKEEncrAESCBC, e.encr.keyLen
				}
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// ParseESPProposal parses a phase 2 proposal in strongSwan's spelling:
// "aes256-sha256" (no PFS), "aes128-sha1-modp2048" (PFS with group 14),
// "aes256gcm16", "aes128gcm16-ecp256", "3des-sha1" (legacy). Several
// algorithms of a kind give the cross product in the order written; AEAD
// (GCM) ciphers take no integrity algorithm, CBC ciphers need one.
func ParseESPProposal(s string, legacy bool) ([]ESPProposal, error) {
	toks, err := tokenize(s, legacy, false)
	if err != nil {
		return nil, err
	}
	encrs, hashes, groups := split(toks)
	if len(encrs) == 0 {
		return nil, errf(ErrBadProposal, "no cipher (e.g. aes256 or aes256gcm16)")
	}
	hasCBC := false
	for _, e := range encrs {
		if !e.encr.gcm {
			hasCBC = true
		}
	}
	if hasCBC && len(hashes) == 0 {
		return nil, errf(ErrBadProposal, "no integrity algorithm (e.g. sha256) for a CBC cipher")
	}
	if !hasCBC && len(hashes) > 0 {
		return nil, errf(ErrBadProposal, "AEAD cipher %q takes no integrity algorithm, remove %q", encrs[0].name, hashes[0].name)
	}
	pfs := []uint16{0}
	if len(groups) > 0 {
		pfs = pfs[:0]
		for _, g := range groups {
			pfs = append(pfs, g.group.num)
		}
	}
	var out []ESPProposal
	for _, e := range encrs {
		var base ESPProposal
		switch {
		case e.encr.gcm:
			base = ESPProposal{TransformID: ESPAESGCM16, KeyLen: e.encr.keyLen, Encr: sa.EncrAESGCM, TruncBits: 128}
		case e.encr.aes:
			base = ESPProposal{TransformID: ESPAESCBC, KeyLen: e.encr.keyLen, Encr: sa.EncrAESCBC}
		default:
			base = ESPProposal{TransformID: ESP3DES, Encr: sa.Encr3DES}
		}
		integs := []token{{}}
		if !e.encr.gcm {
			integs = hashes
		}
		for _, h := range integs {
			for _, g := range pfs {
				p := base
				if !e.encr.gcm {
					p.AuthAlg, p.Integ, p.TruncBits = h.hash.esp, h.hash.integ, h.hash.trunc
				}
				p.PFSGroup = g
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func encrName(encr, keyLen uint16) string {
	switch encr {
	case IKEEncrAESCBC:
		return fmt.Sprintf("aes%d", keyLen)
	case IKEEncr3DES:
		return "3des"
	}
	return fmt.Sprintf("encr(%d)", encr)
}

func hashName(h uint16) string {
	switch h {
	case IKEHashSHA1:
		return "sha1"
	case IKEHashSHA256:
		return "sha256"
	case IKEHashSHA384:
		return "sha384"
	case IKEHashSHA512:
		return "sha512"
	}
	return fmt.Sprintf("hash(%d)", h)
}

func espAuthName(a uint16) string {
	switch a {
	case AuthHMACSHA1:
		return "sha1"
	case AuthHMACSHA2256:
		return "sha256"
	case AuthHMACSHA2384:
		return "sha384"
	case AuthHMACSHA2512:
		return "sha512"
	}
	return fmt.Sprintf("auth(%d)", a)
}

func groupName(g uint16) string {
	for name, a := range groupAlgs {
		if a.num == g && name != "x25519" {
			return name
		}
	}
	return fmt.Sprintf("group(%d)", g)
}
