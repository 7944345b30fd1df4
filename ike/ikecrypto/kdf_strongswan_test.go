package ikecrypto

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"os"
	"strconv"
	"testing"
)

// strongSwan known answers. Each run is one IKEv1 Main Mode (PSK) plus one
// Quick Mode between two strongSwan 5.9.8 instances, captured by
// testdata/capture.sh: charon's debug log prints the inputs (nonces, DH
// values, cookies, SA and ID payloads, SPIs, decrypted messages) and the
// outputs of every derivation, on both sides. From the inputs we recompute
// every output and compare:
//
//	SKEYID, SKEYID_d/_a/_e      (RFC 2409 §5)
//	the encryption key Ka       (RFC 2409 Appendix B, expanded when needed)
//	the phase 1 IV, every later IV (hash(last phase 1 block | M-ID), and
//	CBC chaining: the last cipher block of a message is the next IV)
//	every encryption charon logged (plain | padding -> encrypted)
//	HASH_I, HASH_R              (RFC 2409 §5)
//	Quick Mode HASH(1), HASH(2), HASH(3), KEYMAT for both SPIs (§5.5)
//	Informational HASH(1) of the DELETEs (§5.7)
//	NAT-D                        (RFC 3947 §3.2)
type strongswanRun struct {
	name     string
	logs     []string // charon logs of both sides, relative to this package
	psk      string   // file holding the PSK
	hash     HashAlg
	encr     EncrAlg
	keyBits  int
	group    uint16
	pfs      bool
	expand   bool // SKEYID_e is shorter than the key: Appendix B expansion
	espEncr  int  // ESP encryption key bytes
	espInteg int  // ESP integrity key bytes
}

var strongswanRuns = []strongswanRun{
	// Our captures (testdata/capture.sh).
	// aes256-sha1-modp2048, ESP aes256-sha256-modp2048: SKEYID_e (20 bytes)
	// is expanded to the 32-byte AES key; PFS puts g(qm)^xy into KEYMAT.
	{name: "mm-aes256-sha1", logs: []string{"testdata/mm-aes256-sha1/initiator.log.gz", "testdata/mm-aes256-sha1/responder.log.gz"},
		psk: "testdata/mm-aes256-sha1/psk.txt", hash: HashSHA1, encr: EncrAES, keyBits: 256, group: GroupMODP2048,
		pfs: true, expand: true, espEncr: 32, espInteg: 32},
	// 3des-sha1-modp1024, ESP aes128-sha1: 24-byte key from SKEYID_e, 8-byte
	// blocks and IVs; no PFS.
	{name: "mm-3des-sha1", logs: []string{"testdata/mm-3des-sha1/initiator.log.gz", "testdata/mm-3des-sha1/responder.log.gz"},
		psk: "testdata/mm-3des-sha1/psk.txt", hash: HashSHA1, encr: Encr3DES, keyBits: 0, group: GroupMODP1024,
		pfs: false, expand: true, espEncr: 16, espInteg: 20},
	// Elliptic curve groups: KE payloads are x | y (RFC 5903) or the
	// Curve25519 u-coordinate (RFC 8031), g^xy is x alone; SHA2-384/512 PRFs.
	{name: "mm-aes128-sha384-ecp256", logs: []string{"testdata/mm-aes128-sha384-ecp256/initiator.log.gz", "testdata/mm-aes128-sha384-ecp256/responder.log.gz"},
		psk: "testdata/mm-aes128-sha384-ecp256/psk.txt", hash: HashSHA384, encr: EncrAES, keyBits: 128, group: GroupECP256,
		pfs: true, expand: false, espEncr: 16, espInteg: 32},
	{name: "mm-aes256-sha384-ecp384", logs: []string{"testdata/mm-aes256-sha384-ecp384/initiator.log.gz", "testdata/mm-aes256-sha384-ecp384/responder.log.gz"},
		psk: "testdata/mm-aes256-sha384-ecp384/psk.txt", hash: HashSHA384, encr: EncrAES, keyBits: 256, group: GroupECP384,
		pfs: false, expand: false, espEncr: 32, espInteg: 48},
	{name: "mm-aes192-sha512-ecp521", logs: []string{"testdata/mm-aes192-sha512-ecp521/initiator.log.gz", "testdata/mm-aes192-sha512-ecp521/responder.log.gz"},
		psk: "testdata/mm-aes192-sha512-ecp521/psk.txt", hash: HashSHA512, encr: EncrAES, keyBits: 192, group: GroupECP521,
		pfs: false, expand: false, espEncr: 32, espInteg: 64},
	{name: "mm-aes256-sha256-x25519", logs: []string{"testdata/mm-aes256-sha256-x25519/initiator.log.gz", "testdata/mm-aes256-sha256-x25519/responder.log.gz"},
		psk: "testdata/mm-aes256-sha256-x25519/psk.txt", hash: HashSHA256, encr: EncrAES, keyBits: 256, group: GroupCurve25519,
		pfs: true, expand: false, espEncr: 32, espInteg: 32},
	// The wire-format golden captures of ike/isakmp (its testdata/capture.sh).
	// Main Mode aes256-sha256-modp2048, ESP aes256-sha256, no PFS.
	{name: "isakmp/mm-aes256", logs: []string{"../isakmp/testdata/mm-aes256/initiator/charon.log", "../isakmp/testdata/mm-aes256/responder/charon.log"},
		psk: "../isakmp/testdata/mm-aes256/psk.txt", hash: HashSHA256, encr: EncrAES, keyBits: 256, group: GroupMODP2048,
		pfs: false, expand: false, espEncr: 32, espInteg: 32},
	// Main Mode aes128-sha1-modp2048, ESP aes128-sha1-modp2048 (PFS).
	{name: "isakmp/mm-aes128", logs: []string{"../isakmp/testdata/mm-aes128/initiator/charon.log", "../isakmp/testdata/mm-aes128/responder/charon.log"},
		psk: "../isakmp/testdata/mm-aes128/psk.txt", hash: HashSHA1, encr: EncrAES, keyBits: 128, group: GroupMODP2048,
		pfs: true, expand: false, espEncr: 16, espInteg: 20},
	// Aggressive Mode aes256-sha256-modp2048, ESP aes256-sha256.
	{name: "isakmp/am-aes256", logs: []string{"../isakmp/testdata/am-aes256/initiator/charon.log", "../isakmp/testdata/am-aes256/responder/charon.log"},
		psk: "../isakmp/testdata/am-aes256/psk.txt", hash: HashSHA256, encr: EncrAES, keyBits: 256, group: GroupMODP2048,
		pfs: false, expand: false, espEncr: 32, espInteg: 32},
}

func TestStrongSwanKnownAnswers(t *testing.T) {
	for _, run := range strongswanRuns {
		for _, path := range run.logs {
			t.Run(path, func(t *testing.T) {
				checkStrongSwanLog(t, run, path)
			})
		}
	}
}

func checkStrongSwanLog(t *testing.T, run strongswanRun, path string) {
	psk, err := os.ReadFile(run.psk)
	if err != nil {
		t.Fatal(err)
	}
	psk = bytes.TrimSuffix(psk, []byte("\n"))
	ds := readCharonLog(t, path)
	p, err := NewPRF(run.hash)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCipher(run.encr, run.keyBits)
	if err != nil {
		t.Fatal(err)
	}
	g, err := GroupByID(run.group)
	if err != nil {
		t.Fatal(err)
	}
	bs, glen := c.BlockSize(), g.PublicLen()
	expect := func(what string, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Errorf("%s (%s):\n got %x\nwant %x", what, path, got, want)
		}
	}

	// Inputs of phase 1. HASH_I data is g^xi | g^xr | CKY-I | CKY-R | SAi_b |
	// IDii_b; the phase 1 nonces are the first two NONCE_V1 payload bodies
	// (message 3 carries Ni, message 4 Nr).
	hashIData := one(t, ds, "HASH_I data")
	hashRData := one(t, ds, "HASH_R data")
	if len(hashIData) < 2*glen+16+8 {
		t.Fatalf("HASH_I data is %d bytes", len(hashIData))
	}
	gxi, gxr := hashIData[:glen], hashIData[glen:2*glen]
	ckyI, ckyR := hashIData[2*glen:2*glen+8], hashIData[2*glen+8:2*glen+16]
	rest := hashIData[2*glen+16:]
	// IDii_b for an IPv4 address: type 1, protocol, port, 4 address bytes.
	saiB, idiiB := rest[:len(rest)-8], rest[len(rest)-8:]
	if idiiB[0] != 1 {
		t.Fatalf("IDii_b %x is not an ID_IPV4_ADDR", idiiB)
	}
	var nonces [][]byte
	for _, d := range ds {
		if d.label == "" && d.payload == "NONCE_V1" && len(d.data) >= 8 {
			nonces = append(nonces, d.data)
		}
	}
	if len(nonces) < 2 {
		t.Fatalf("found %d NONCE_V1 bodies, want at least 2", len(nonces))
	}
	ni, nr := nonces[0], nonces[1]
	// g^xy as IKEv1 encodes it: MODP left-padded to the prime length, ECP
	// the x coordinate, Curve25519 32 bytes.
	secretLen := map[uint16]int{GroupMODP1024: 128, GroupMODP2048: 256, GroupECP256: 32, GroupECP384: 48, GroupECP521: 66, GroupCurve25519: 32}[run.group]
	gxy := one(t, ds, "shared Diffie Hellman secret")
	if len(gxy) != secretLen {
		t.Fatalf("g^xy is %d bytes, want %d", len(gxy), secretLen)
	}

	// strongSwan's KE values pass our validation (length, range, on the
	// curve) and give a secret of the same encoding.
	ourPriv, _, err := g.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, pub := range [][]byte{gxi, gxr} {
		z, err := g.Shared(ourPriv, pub)
		if err != nil || len(z) != secretLen {
			t.Fatalf("strongSwan's public value refused or odd: %d bytes, %v", len(z), err)
		}
	}

	// Phase 1 keys.
	skeyid := SKEYIDPSK(p, psk, ni, nr)
	expect("SKEYID", skeyid, one(t, ds, "SKEYID"))
	d, a, e := DeriveSKEYIDs(p, skeyid, gxy, ckyI, ckyR)
	expect("SKEYID_d", d, one(t, ds, "SKEYID_d"))
	expect("SKEYID_a", a, one(t, ds, "SKEYID_a"))
	expect("SKEYID_e", e, one(t, ds, "SKEYID_e"))
	ka := ExpandKey(p, e, c.KeyLen())
	expect("encryption key Ka", ka, one(t, ds, "encryption key Ka"))
	if expanded := len(e) < c.KeyLen(); expanded != run.expand {
		t.Errorf("key expansion used: %v, want %v", expanded, run.expand)
	}
	expect("initial IV", Phase1IV(p, gxi, gxr, bs), one(t, ds, "initial IV"))

	// HASH_I and HASH_R, and that HASH_R data holds the same values swapped.
	expect("HASH_I", HashI(p, skeyid, gxi, gxr, ckyI, ckyR, saiB, idiiB), one(t, ds, "HASH_I"))
	wantRPrefix := bytes.Join([][]byte{gxr, gxi, ckyR, ckyI, saiB}, nil)
	if !bytes.HasPrefix(hashRData, wantRPrefix) {
		t.Fatalf("HASH_R data does not start with g^xr | g^xi | CKY-R | CKY-I | SAi_b")
	}
	idirB := hashRData[len(wantRPrefix):]
	expect("HASH_R", HashR(p, skeyid, gxr, gxi, ckyR, ckyI, saiB, idirB), one(t, ds, "HASH_R"))

	// NAT-D: every natd_chunk (CKY-I | CKY-R | IPv4 | port) and the hash
	// that follows it.
	natd := 0
	for i, dd := range ds {
		if dd.label != "natd_chunk" {
			continue
		}
		if i+1 >= len(ds) || ds[i+1].label != "natd_hash" || len(dd.data) != 22 {
			t.Fatalf("line %d: natd_chunk without natd_hash", dd.line)
		}
		ch := dd.data
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ch[16:20])), binary.BigEndian.Uint16(ch[20:]))
		expect("NAT-D for "+ap.String(), NATD(p, ch[:8], ch[8:16], ap), ds[i+1].data)
		natd++
	}
	if natd < 2 {
		t.Errorf("only %d NAT-D hashes checked", natd)
	}

	// IVs and encryption. "IV", "plain", "padding", "encrypted" in a row is
	// a message we sent; the "next IV for MID m" after it is its last cipher
	// block. The first IV of a new message ID m is hash(last phase 1 block |
	// m); the last phase 1 block is the last "next IV for MID 0" so far.
	var (
		lastPhase1 = one(t, ds, "initial IV")
		seenMID    = map[uint32]bool{0: true}
		lastSent   []byte
		sentMID    uint32
		ivOwner    = map[string]uint32{} // IV value -> message ID it was made for
		sends      int
		phase2IVs  int
	)
	for i, dd := range ds {
		if mid, ok := ivMID(dd); ok {
			if lastSent != nil && mid == sentMID {
				expect("IV after a sent message (its last block)", dd.data, lastSent[len(lastSent)-bs:])
				lastSent = nil
			}
			if !seenMID[mid] {
				expect("first IV of M-ID "+dd.label, ExchangeIV(p, lastPhase1, mid, bs), dd.data)
				seenMID[mid] = true
				phase2IVs++
			}
			if mid == 0 {
				lastPhase1 = dd.data
			}
			ivOwner[string(dd.data)] = mid
			continue
		}
		if dd.label == "IV" && i+3 < len(ds) && ds[i+1].label == "plain" && ds[i+2].label == "padding" && ds[i+3].label == "encrypted" {
			in := append(bytes.Clone(ds[i+1].data), ds[i+2].data...)
			enc, err := c.Encrypt(ka, dd.data, in)
			if err != nil {
				t.Fatalf("line %d: %v", dd.line, err)
			}
			expect("encryption at line "+strconv.Itoa(ds[i+3].line), enc, ds[i+3].data)
			dec, err := c.Decrypt(ka, dd.data, ds[i+3].data)
			if err != nil || !bytes.Equal(dec, in) {
				t.Errorf("line %d: decryption does not give plain | padding", dd.line)
			}
			lastSent = ds[i+3].data
			sentMID = ivOwner[string(dd.data)] // 0 for the initial IV of phase 1
			sends++
		}
	}
	// (An Aggressive Mode responder encrypts only its Quick Mode reply.)
	if sends < 1 || phase2IVs < 2 {
		t.Errorf("checked %d encryptions and %d phase 2 IVs, want at least 1 and 2", sends, phase2IVs)
	}

	// Phase 2: classify every decrypted message by its payload chain
	// (phase 2 bodies start with HASH; the second payload tells the kind).
	const (
		plSA, plKE, plHash, plNonce, plDelete = 1, 4, 8, 10, 12
	)
	var qm1, qm2, qm3 []isakmpPayload
	var infos [][]isakmpPayload
	for _, dd := range labeled(ds, "plain") {
		ps, _, ok := walkPayloads(dd.data, plHash)
		if !ok {
			continue
		}
		switch {
		case len(ps) >= 2 && ps[1].typ == plSA && qm1 == nil:
			qm1 = ps
		case len(ps) >= 2 && ps[1].typ == plSA && qm2 == nil:
			qm2 = ps
		case len(ps) == 1 && len(ps[0].body) == p.Size() && qm2 != nil && qm3 == nil:
			qm3 = ps
		case len(ps) >= 2 && ps[1].typ == plDelete:
			infos = append(infos, ps)
		}
	}
	if qm1 == nil || qm2 == nil || qm3 == nil {
		t.Fatalf("Quick Mode messages not found (have %v %v %v)", qm1 != nil, qm2 != nil, qm3 != nil)
	}
	find := func(ps []isakmpPayload, typ uint8) []byte {
		for _, x := range ps {
			if x.typ == typ {
				return x.body
			}
		}
		t.Fatalf("payload %d missing", typ)
		return nil
	}
	rawAfterHash := func(ps []isakmpPayload) []byte {
		var b []byte
		for _, x := range ps[1:] {
			b = append(b, x.raw...)
		}
		return b
	}
	var qmMID uint32
	for _, dd := range ds {
		if mid, ok := ivMID(dd); ok && mid != 0 {
			qmMID = mid
			break
		}
	}
	qmNi, qmNr := find(qm1, plNonce), find(qm2, plNonce)
	h1 := QMHash1(p, a, qmMID, rawAfterHash(qm1))
	expect("Quick Mode HASH(1)", h1, qm1[0].body)
	expect("Quick Mode HASH(1) as logged", h1, one(t, ds, "Hash(1)"))
	h2 := QMHash2(p, a, qmMID, qmNi, rawAfterHash(qm2))
	expect("Quick Mode HASH(2)", h2, qm2[0].body)
	expect("Quick Mode HASH(2) as logged", h2, one(t, ds, "Hash(2)"))
	h3 := QMHash3(p, a, qmMID, qmNi, qmNr)
	expect("Quick Mode HASH(3)", h3, qm3[0].body)
	expect("Quick Mode HASH(3) as logged", h3, one(t, ds, "Hash(3)"))

	// KEYMAT. SA body: DOI(4) situation(4), then the proposal payload
	// header(4) number protocol spi-size transforms, then the SPI.
	spiOf := func(sa []byte) []byte {
		if len(sa) < 16 || sa[8+6] != 4 {
			t.Fatalf("SA body %x has no 4-byte SPI", sa)
		}
		return sa[16:20]
	}
	spiI, spiR := spiOf(find(qm1, plSA)), spiOf(find(qm2, plSA))
	var gqm []byte
	if run.pfs {
		gqm = one(t, ds, "DH secret")
		keI, keR := find(qm1, plKE), find(qm2, plKE)
		if len(keI) != glen || len(keR) != glen || len(gqm) != secretLen {
			t.Fatalf("PFS KE values %d, %d bytes, secret %d; want %d, %d", len(keI), len(keR), len(gqm), glen, secretLen)
		}
	} else if len(labeled(ds, "DH secret")) != 0 {
		t.Fatal("run without PFS logs a Quick Mode DH secret")
	}
	const protoESP = 3
	need := run.espEncr + run.espInteg
	// Keys for the SA the responder receives on (initiator -> responder)
	// use the responder's SPI, and the other way round.
	kmI := KEYMAT(p, d, gqm, protoESP, spiR, qmNi, qmNr, need)
	kmR := KEYMAT(p, d, gqm, protoESP, spiI, qmNi, qmNr, need)
	expect("encryption initiator key", kmI[:run.espEncr], one(t, ds, "encryption initiator key"))
	expect("integrity initiator key", kmI[run.espEncr:], one(t, ds, "integrity initiator key"))
	expect("encryption responder key", kmR[:run.espEncr], one(t, ds, "encryption responder key"))
	expect("integrity responder key", kmR[run.espEncr:], one(t, ds, "integrity responder key"))
	seed := bytes.Join([][]byte{gqm, {protoESP}, spiR, qmNi, qmNr}, nil)
	expect("initiator SA seed", seed, one(t, ds, "initiator SA seed"))

	// Informational DELETEs (sent by the initiator; the responder log has
	// them as received): HASH(1) = prf(SKEYID_a, M-ID | rest). Their
	// message IDs are the phase 2 IVs after the Quick Mode's.
	var infoMIDs []uint32
	for _, dd := range ds {
		if mid, ok := ivMID(dd); ok && mid != 0 && mid != qmMID && !containsMID(infoMIDs, mid) {
			infoMIDs = append(infoMIDs, mid)
		}
	}
	if len(infos) == 0 || len(infos) != len(infoMIDs) {
		t.Fatalf("%d Informational messages, %d message IDs", len(infos), len(infoMIDs))
	}
	for i, ps := range infos {
		expect("Informational HASH(1)", InfoHash(p, a, infoMIDs[i], rawAfterHash(ps)), ps[0].body)
	}
}

func containsMID(ms []uint32, m uint32) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}
