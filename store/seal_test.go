package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealerRoundTrip(t *testing.T) {
	k := testKey(t)
	s := testSealer(t, k)
	for _, n := range []int{0, 1, 16, 1024, 70000} {
		pt := seededBytes(uint64(n), n)
		ad := []byte("child\x00abcd")
		b := s.Seal(pt, ad)
		if len(b) != n+SealOverhead || b[0] != sealVersion {
			t.Fatalf("sealed %d bytes into %d (version %d)", n, len(b), b[0])
		}
		if n >= 16 && bytes.Contains(b, pt[:16]) {
			t.Fatal("plaintext visible in sealed blob")
		}
		got, err := s.Open(b, ad)
		if err != nil || !bytes.Equal(got, pt) || got == nil {
			t.Fatalf("Open(%d bytes) = %d bytes, %v", n, len(got), err)
		}
		if bytes.Equal(s.Seal(pt, ad), b) {
			t.Fatal("two seals of the same plaintext are equal: nonce not random")
		}
	}
}

func TestSealerRefuses(t *testing.T) {
	s := testSealer(t, testKey(t))
	other := testSealer(t, testKey(t))
	ad := []byte("ike\x00k")
	b := s.Seal([]byte("secret"), ad)
	flip := func(i int) []byte { c := bytes.Clone(b); c[i] ^= 0x80; return c }
	cases := []struct {
		name string
		s    *Sealer
		blob []byte
		ad   []byte
		want error
	}{
		{"other key", other, b, ad, ErrSealed},
		{"other ad", s, b, []byte("ike\x00j"), ErrSealed},
		{"nonce flipped", s, flip(3), ad, ErrSealed},
		{"ciphertext flipped", s, flip(SealOverhead - tagSize), ad, ErrSealed},
		{"tag flipped", s, flip(len(b) - 1), ad, ErrSealed},
		{"version", s, flip(0), ad, ErrMalformedSealed},
		{"short", s, b[:SealOverhead-1], ad, ErrMalformedSealed},
		{"nil", s, nil, ad, ErrMalformedSealed},
	}
	for _, c := range cases {
		got, err := c.s.Open(c.blob, c.ad)
		if !errors.Is(err, c.want) || got != nil {
			t.Errorf("%s: Open = %q, %v; want %v", c.name, got, err, c.want)
		}
	}
	if ErrSealed.Error() != "store: sealed data does not open with the cluster key: wrong key?" {
		t.Errorf("ErrSealed text changed: %q", ErrSealed)
	}
}

func TestSealerPreviousKey(t *testing.T) {
	oldK, newK := testKey(t), testKey(t)
	old := testSealer(t, oldK)
	rot := testSealer(t, newK, oldK)
	b := old.Seal([]byte("x"), nil)
	if got, err := rot.Open(b, nil); err != nil || string(got) != "x" {
		t.Fatalf("rotated sealer cannot open old blob: %v", err)
	}
	if rot.openedWithCurrent(b, nil) {
		t.Fatal("old blob reported as current")
	}
	nb := rot.Seal([]byte("y"), nil)
	if _, err := old.Open(nb, nil); !errors.Is(err, ErrSealed) {
		t.Fatal("new blob not sealed with the new key")
	}
	if !rot.openedWithCurrent(nb, nil) {
		t.Fatal("new blob not reported as current")
	}
}

func TestNewSealerKeySize(t *testing.T) {
	if _, err := NewSealer(make([]byte, 16)); err == nil || !strings.Contains(err.Error(), "current key is 16 bytes") {
		t.Errorf("16-byte key: %v", err)
	}
	if _, err := NewSealer(make([]byte, 32), make([]byte, 31)); err == nil || !strings.Contains(err.Error(), "previous key 1 is 31 bytes") {
		t.Errorf("31-byte previous key: %v", err)
	}
}

func TestSealerNeverPrintsKey(t *testing.T) {
	k := bytes.Repeat([]byte{0xab}, 32)
	s := testSealer(t, k)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), fmt.Sprintf("%v", *s)} {
		if strings.Contains(strings.ToLower(out), "abab") || strings.Contains(out, "171 171") {
			t.Errorf("key visible in %q", out)
		}
	}
}

func TestClusterKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.key")
	if err := GenerateClusterKey(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	k, err := LoadClusterKey(path)
	if err != nil || len(k) != ClusterKeySize {
		t.Fatalf("LoadClusterKey = %d bytes, %v", len(k), err)
	}
	if bytes.Equal(k, make([]byte, ClusterKeySize)) {
		t.Fatal("key is all zeros")
	}
	raw, _ := os.ReadFile(path)
	if strings.TrimSpace(string(raw)) != hex.EncodeToString(k) {
		t.Fatal("file is not the hex of the key")
	}
	if err := GenerateClusterKey(path); !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second GenerateClusterKey: %v", err)
	}
	if k2, _ := LoadClusterKey(path); !bytes.Equal(k, k2) {
		t.Fatal("key changed after refused overwrite")
	}
	other := filepath.Join(dir, "other.key")
	GenerateClusterKey(other)
	if k2, _ := LoadClusterKey(other); bytes.Equal(k, k2) {
		t.Fatal("two generated keys are equal")
	}
	// 0400 is stricter than 0600: accepted.
	os.Chmod(path, 0o400)
	if _, err := LoadClusterKey(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestClusterKeyFileRefused(t *testing.T) {
	dir := t.TempDir()
	good := hex.EncodeToString(seededBytes(1, 32))
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		path string
		want []string
	}{
		{"missing", filepath.Join(dir, "nope.key"), []string{"nope.key", "does not exist"}},
		{"mode 0644", write("wide.key", good, 0o644), []string{"wide.key", "mode 0644"}},
		{"mode 0640", write("group.key", good, 0o640), []string{"group.key", "mode 0640"}},
		{"short", write("short.key", good[:40], 0o600), []string{"short.key", "holds 40 characters"}},
		{"not hex", write("nothex.key", strings.Repeat("zz", 32), 0o600), []string{"nothex.key", "not hex"}},
		{"directory", dir, []string{dir, "not a regular file"}},
		{"huge", write("huge.key", strings.Repeat("a", 5000), 0o600), []string{"huge.key", "larger than"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := LoadClusterKey(c.path)
			if err == nil || k != nil || !errors.Is(err, ErrKeyFile) {
				t.Fatalf("LoadClusterKey = %x, %v; want ErrKeyFile", k, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), good[:16]) || strings.Contains(err.Error(), "zz") {
				t.Errorf("error shows file content: %q", err)
			}
		})
	}
}

func TestClusterKeyFileOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the key file to another user")
	}
	p := filepath.Join(t.TempDir(), "owned.key")
	if err := GenerateClusterKey(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := LoadClusterKey(p)
	if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") || !strings.Contains(err.Error(), p) {
		t.Fatalf("foreign owner: %v", err)
	}
}
