package isakmp

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/decrypted/* (decrypted golden bodies, fuzz seeds)")

// saveDecrypted writes the decrypted body of golden message name when
// -update is given, and otherwise checks the saved copy is the same.
func saveDecrypted(t *testing.T, name string, plain []byte) {
	t.Helper()
	path := "testdata/decrypted/" + name
	if *update {
		if err := os.MkdirAll("testdata/decrypted", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, plain, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Decrypted -update)", err)
	}
	if string(saved) != string(plain) {
		t.Errorf("%s differs from the decrypted message", path)
	}
}

// logDump returns the bytes of the first hex dump in a charon log (ike=4)
// that follows a line containing label, e.g. "encryption key Ka =>".
func logDump(t *testing.T, path, label string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []byte
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !in {
			in = strings.Contains(line, label)
			continue
		}
		// "00:00:50 10[IKE]   16: 02 E5 6F ...  ascii"
		_, rest, ok := strings.Cut(line, "[IKE] ")
		if !ok {
			break
		}
		idx, data, ok := strings.Cut(strings.TrimSpace(rest), ": ")
		if !ok || strings.Trim(idx, "0123456789") != "" {
			break
		}
		hexPart := data
		if len(hexPart) > 47 {
			hexPart = hexPart[:47]
		}
		b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(hexPart), " ", ""))
		if err != nil {
			t.Fatalf("%s: dump line %q: %v", path, line, err)
		}
		out = append(out, b...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no dump after %q", path, label)
	}
	return out
}

// TestGoldenDecryptedMainMode decrypts Main Mode messages 5 and 6 of the
// golden captures with the key and IV charon logged, and decodes the
// plaintext: this checks that the saved logs match the saved packets (the
// crypto package's known-answer vectors) and that DecodePayloads stops
// before the CBC padding.
func TestGoldenDecryptedMainMode(t *testing.T) {
	for _, run := range []string{"mm-aes256", "mm-aes128"} {
		t.Run(run, func(t *testing.T) {
			log := "testdata/" + run + "/initiator/charon.log"
			key := logDump(t, log, "encryption key Ka =>")
			iv := logDump(t, log, "initial IV =>")
			block, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]PayloadType{
				"05-i": {PayloadID, PayloadHash, PayloadNotify},
				"06-r": {PayloadID, PayloadHash},
			}
			for _, msg := range []string{"05-i", "06-r"} {
				h, body, err := ParseEncrypted(readGolden(t, run+"-"+msg+".bin"))
				if err != nil {
					t.Fatal(err)
				}
				plain := make([]byte, len(body))
				cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, body)
				iv = body[len(body)-aes.BlockSize:] // next IV: last ciphertext block
				saveDecrypted(t, run+"-"+msg+".bin", plain)
				d, err := DecodePayloads(h.NextPayload, plain)
				if err != nil {
					t.Fatalf("%s: %v (plaintext %x)", msg, err, plain)
				}
				if got := types(d.Payloads); !reflect.DeepEqual(got, want[msg]) {
					t.Fatalf("%s: payloads %v, want %v", msg, got, want[msg])
				}
				if pad := len(plain) - d.Len; pad < 0 || pad >= aes.BlockSize+1 {
					t.Errorf("%s: %d bytes of padding", msg, pad)
				}
				id := d.Payloads[0].(*ID)
				wantID := map[string]string{"05-i": "IPV4_ADDR 192.0.2.1", "06-r": "IPV4_ADDR 192.0.2.2"}[msg]
				if id.String() != wantID {
					t.Errorf("%s: ID %s, want %s", msg, id, wantID)
				}
				if msg == "05-i" {
					n := d.Payloads[2].(*Notify)
					if n.NotifyType != NotifyInitialContact || n.Protocol != ProtoISAKMP || len(n.SPI) != 16 {
						t.Errorf("notify %+v", n)
					}
				}
				_, out, err := AppendPayloads(nil, d.Payloads)
				if err != nil || string(out) != string(plain[:d.Len]) {
					t.Errorf("%s: re-encoded plaintext differs: %v", msg, err)
				}
			}
		})
	}
}

// TestGoldenDecryptedQuickMode decrypts the first Quick Mode message of
// each capture with the IV charon logged for its message ID and checks the
// phase 2 SA strongSwan proposed (ESP, UDP-encapsulated tunnel, PFS group
// in the mm-aes128 run) decodes and re-encodes exactly.
func TestGoldenDecryptedQuickMode(t *testing.T) {
	tests := []struct {
		run    string
		types  []PayloadType
		keyLen uint16
		auth   uint16
		pfs    bool
	}{
		{"mm-aes256", []PayloadType{PayloadHash, PayloadSA, PayloadNonce, PayloadID, PayloadID}, 256, AuthAlgHMACSHA256, false},
		{"mm-aes128", []PayloadType{PayloadHash, PayloadSA, PayloadNonce, PayloadKE, PayloadID, PayloadID}, 128, AuthAlgHMACSHA1, true},
		{"am-aes256", []PayloadType{PayloadHash, PayloadSA, PayloadNonce, PayloadID, PayloadID}, 256, AuthAlgHMACSHA256, false},
	}
	for _, tt := range tests {
		t.Run(tt.run, func(t *testing.T) {
			log := "testdata/" + tt.run + "/initiator/charon.log"
			name := tt.run + "-07-i.bin"
			if tt.run == "am-aes256" {
				name = tt.run + "-04-i.bin"
			}
			h, body, err := ParseEncrypted(readGolden(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if h.Exchange != ExchangeQuick {
				t.Fatalf("%s is %s", name, h.Exchange)
			}
			key := logDump(t, log, "encryption key Ka =>")
			iv := logDump(t, log, fmt.Sprintf("next IV for MID %d =>", h.MessageID))
			block, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			plain := make([]byte, len(body))
			cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, body)
			saveDecrypted(t, name, plain)
			d, err := DecodePayloads(h.NextPayload, plain)
			if err != nil {
				t.Fatalf("%v (plaintext %x)", err, plain)
			}
			if got := types(d.Payloads); !reflect.DeepEqual(got, tt.types) {
				t.Fatalf("payloads %v, want %v", got, tt.types)
			}
			sa := d.Payloads[1].(*SA)
			if sa.DOI != DOIIPsec || sa.Situation != SitIdentityOnly || len(sa.Proposals) != 1 {
				t.Fatalf("SA %+v", sa)
			}
			prop := sa.Proposals[0]
			if prop.Protocol != ProtoESP || len(prop.SPI) != 4 || len(prop.Transforms) != 1 {
				t.Fatalf("proposal %+v", prop)
			}
			tr := prop.Transforms[0]
			if tr.ID != ESPAESCBC {
				t.Errorf("transform ID %d", tr.ID)
			}
			wantAttr := map[uint16]uint16{
				AttrEncapsulationMode: EncapUDPTunnel,
				AttrSAKeyLength:       tt.keyLen,
				AttrAuthAlgorithm:     tt.auth,
				AttrSALifeType:        LifeSeconds,
			}
			if tt.pfs {
				wantAttr[AttrSAGroupDescription] = GroupModp2048
			}
			for typ, v := range wantAttr {
				a, ok := tr.Attr(typ)
				if got, ok2 := a.Uint(); !ok || !ok2 || got != uint64(v) {
					t.Errorf("attribute %d = %+v, want %d", typ, a, v)
				}
			}
			if _, ok := tr.Attr(AttrSAGroupDescription); ok != tt.pfs {
				t.Errorf("PFS group present: %v, want %v", ok, tt.pfs)
			}
			for i, want := range []string{"IPV4_ADDR 10.1.0.1", "IPV4_ADDR 10.2.0.1"} {
				id := d.Payloads[len(d.Payloads)-2+i].(*ID)
				if id.String() != want {
					t.Errorf("ID %d: %s, want %s", i, id, want)
				}
			}
			_, out, err := AppendPayloads(nil, d.Payloads)
			if err != nil || string(out) != string(plain[:d.Len]) {
				t.Errorf("re-encoded plaintext differs: %v", err)
			}
		})
	}
}

// TestGoldenDecryptedDPD decrypts the DPD exchange of the mm-dpd capture
// (RFC 3706): R-U-THERE from the initiator and the responder's
// R-U-THERE-ACK echoing its sequence number, each with the IV its sender
// logged for the message ID.
func TestGoldenDecryptedDPD(t *testing.T) {
	var seq []byte
	for _, tt := range []struct {
		file, sender string
		typ          NotifyType
	}{
		{"mm-dpd-10-i.bin", "initiator", NotifyRUThere},
		{"mm-dpd-11-r.bin", "responder", NotifyRUThereAck},
	} {
		msg := readGolden(t, tt.file)
		h, body, err := ParseEncrypted(msg)
		if err != nil {
			t.Fatal(err)
		}
		if h.Exchange != ExchangeInfo {
			t.Fatalf("%s: exchange %s", tt.file, h.Exchange)
		}
		log := "testdata/mm-dpd/" + tt.sender + "/charon.log"
		block, err := aes.NewCipher(logDump(t, log, "encryption key Ka =>"))
		if err != nil {
			t.Fatal(err)
		}
		plain := make([]byte, len(body))
		cipher.NewCBCDecrypter(block, logDump(t, log, fmt.Sprintf("next IV for MID %d =>", h.MessageID))).CryptBlocks(plain, body)
		saveDecrypted(t, tt.file, plain)
		d, err := DecodePayloads(h.NextPayload, plain)
		if err != nil {
			t.Fatalf("%s: %v (plaintext %x)", tt.file, err, plain)
		}
		if got := types(d.Payloads); !reflect.DeepEqual(got, []PayloadType{PayloadHash, PayloadNotify}) {
			t.Fatalf("%s: payloads %v", tt.file, got)
		}
		n := d.Payloads[1].(*Notify)
		cookies := append(append([]byte(nil), h.ICookie[:]...), h.RCookie[:]...)
		if n.NotifyType != tt.typ || n.DOI != DOIIPsec || n.Protocol != ProtoISAKMP ||
			string(n.SPI) != string(cookies) || len(n.Data) != 4 {
			t.Errorf("%s: notify %+v", tt.file, n)
		}
		if seq != nil && string(n.Data) != string(seq) {
			t.Errorf("ACK sequence %x, R-U-THERE sent %x", n.Data, seq)
		}
		seq = n.Data
	}
}
