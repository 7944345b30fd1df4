package ikecrypto

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// A dump is one hex dump from a charon debug log ("LABEL => N bytes @ ADDR"
// followed by "  OFF: XX XX ..." lines), as strongSwan's %B prints chunks.
type dump struct {
	line    int    // line number of the "=>" line
	thread  string // charon thread number, e.g. "14"
	label   string // text before "=>", e.g. "SKEYID_e"; "" for parser rule dumps
	payload string // payload the thread was parsing/generating, e.g. "NONCE_V1"
	data    []byte
}

var (
	reDumpHead = regexp.MustCompile(`^\S+ (\d+)\[(\w+)\] (.*?)\s*=> (\d+) bytes @ `)
	reDumpLine = regexp.MustCompile(`^\S+ (\d+)\[(\w+)\]\s+(\d+): `)
	rePayload  = regexp.MustCompile(`^\S+ (\d+)\[ENC\] (?:starting parsing a (\S+) payload|generating payload of type (\S+))$`)
)

// readCharonLog parses every hex dump of a charon log (plain or .gz).
func readCharonLog(t *testing.T, path string) []dump {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		z, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer z.Close()
		r = z
	}
	var (
		out     []dump
		cur     *dump
		want    int
		payload = map[string]string{}
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		s := sc.Text()
		if cur != nil {
			if m := reDumpLine.FindStringSubmatchIndex(s); m != nil && s[m[2]:m[3]] == cur.thread {
				off, _ := strconv.Atoi(s[m[6]:m[7]])
				if off != len(cur.data) {
					t.Fatalf("%s:%d: hex dump offset %d, want %d", path, n, off, len(cur.data))
				}
				hexPart := s[m[1]:]
				if len(hexPart) > 48 {
					hexPart = hexPart[:48]
				}
				for _, tok := range strings.Fields(hexPart) {
					b, err := hex.DecodeString(tok)
					if err != nil || len(b) != 1 {
						t.Fatalf("%s:%d: bad hex byte %q", path, n, tok)
					}
					cur.data = append(cur.data, b[0])
				}
				if len(cur.data) == want {
					out = append(out, *cur)
					cur = nil
				}
				continue
			}
			t.Fatalf("%s:%d: hex dump of line %d ends after %d of %d bytes", path, n, cur.line, len(cur.data), want)
		}
		if m := rePayload.FindStringSubmatch(s); m != nil {
			payload[m[1]] = m[2] + m[3]
			continue
		}
		if m := reDumpHead.FindStringSubmatch(s); m != nil {
			want, _ = strconv.Atoi(m[4])
			d := dump{line: n, thread: m[1], label: m[3], payload: payload[m[1]]}
			if want == 0 {
				out = append(out, d)
				continue
			}
			cur = &d
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if cur != nil {
		t.Fatalf("%s: log ends inside the hex dump of line %d", path, cur.line)
	}
	return out
}

// labeled returns the dumps with exactly this label, in log order.
func labeled(ds []dump, label string) []dump {
	var out []dump
	for _, d := range ds {
		if d.label == label {
			out = append(out, d)
		}
	}
	return out
}

// one returns the only (or first, when all are equal) dump with a label.
func one(t *testing.T, ds []dump, label string) []byte {
	t.Helper()
	all := labeled(ds, label)
	if len(all) == 0 {
		t.Fatalf("no %q in the log", label)
	}
	for _, d := range all[1:] {
		if string(d.data) != string(all[0].data) {
			t.Fatalf("%q at lines %d and %d differ", label, all[0].line, d.line)
		}
	}
	return all[0].data
}

// reMID extracts the message ID from "next IV for MID 1234".
var reMID = regexp.MustCompile(`^next IV for MID (\d+)$`)

func ivMID(d dump) (uint32, bool) {
	m := reMID.FindStringSubmatch(d.label)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseUint(m[1], 10, 32)
	return uint32(v), err == nil
}

// isakmpPayload is one payload of a decrypted ISAKMP message body.
type isakmpPayload struct {
	typ  uint8 // this payload's type (the previous header's next-payload)
	raw  []byte
	body []byte
}

// walkPayloads splits a decrypted message body into its payload chain,
// starting with payload type first, and returns the chain and the length it
// covers (the rest is CBC padding). ok is false if the chain does not fit.
func walkPayloads(b []byte, first uint8) (ps []isakmpPayload, end int, ok bool) {
	typ := first
	for typ != 0 {
		if len(b)-end < 4 {
			return nil, 0, false
		}
		n := int(binary.BigEndian.Uint16(b[end+2:]))
		if n < 4 || end+n > len(b) {
			return nil, 0, false
		}
		ps = append(ps, isakmpPayload{typ: typ, raw: b[end : end+n], body: b[end+4 : end+n]})
		typ = b[end]
		end += n
	}
	return ps, end, true
}
