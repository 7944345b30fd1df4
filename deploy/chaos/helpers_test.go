package chaos

import (
	"os"
	"path/filepath"
	"testing"
)

func writePSK(dir string) error {
	return os.WriteFile(filepath.Join(dir, "psk"), []byte("0123456789abcdef0123456789abcdef"), 0o600)
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
