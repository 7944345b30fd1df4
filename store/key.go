package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrKeyFile is wrapped by every error about the cluster key file.
var ErrKeyFile = errors.New("store: cluster key file")

// maxKeyFile bounds how much of a key file is read.
const maxKeyFile = 4096

// GenerateClusterKey writes a new random cluster key (ClusterKeySize bytes,
// hex-encoded, one line) to path with mode 0600. It refuses to overwrite an
// existing file. The key is fsynced, as is the directory entry.
func GenerateClusterKey(path string) error {
	key := make([]byte, ClusterKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("%w %s: random: %w", ErrKeyFile, path, err)
	}
	buf := make([]byte, hex.EncodedLen(len(key))+1)
	hex.Encode(buf, key)
	buf[len(buf)-1] = '\n'
	clear(key)
	defer clear(buf)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w %s: already exists, refusing to overwrite", ErrKeyFile, path)
		}
		return fmt.Errorf("%w %s: create: %w", ErrKeyFile, path, err)
	}
	// The umask cannot widen 0600, but make the mode explicit anyway.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w %s: chmod: %w", ErrKeyFile, path, err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w %s: write: %w", ErrKeyFile, path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w %s: sync: %w", ErrKeyFile, path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("%w %s: close: %w", ErrKeyFile, path, err)
	}
	return syncDir(filepath.Dir(path))
}

// LoadClusterKey reads the cluster key from path. The file must be a regular
// file owned by the running user with no permission bits for group or
// others (0600 or stricter), and hold exactly ClusterKeySize hex-encoded
// bytes (surrounding white space is ignored). Errors name the path and the
// problem, never the content.
func LoadClusterKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w %s: does not exist (create one with GenerateClusterKey and copy it to every node)", ErrKeyFile, path)
		}
		return nil, fmt.Errorf("%w %s: %w", ErrKeyFile, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w %s: stat: %w", ErrKeyFile, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w %s: not a regular file (%s)", ErrKeyFile, path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w %s: mode %04o gives access to group or others, want 0600 or stricter", ErrKeyFile, path, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := os.Getuid(); int(st.Uid) != uid {
			return nil, fmt.Errorf("%w %s: owned by uid %d, not by the running user (uid %d)", ErrKeyFile, path, st.Uid, uid)
		}
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w %s: read: %w", ErrKeyFile, path, err)
	}
	defer clear(raw)
	if len(raw) > maxKeyFile {
		return nil, fmt.Errorf("%w %s: larger than %d bytes, not a key file", ErrKeyFile, path, maxKeyFile)
	}
	txt := bytes.TrimSpace(raw)
	if len(txt) != hex.EncodedLen(ClusterKeySize) {
		return nil, fmt.Errorf("%w %s: holds %d characters, want %d hex digits (%d bytes)", ErrKeyFile, path, len(txt), hex.EncodedLen(ClusterKeySize), ClusterKeySize)
	}
	key := make([]byte, ClusterKeySize)
	if _, err := hex.Decode(key, txt); err != nil {
		// Do not wrap err: hex errors quote the offending byte.
		return nil, fmt.Errorf("%w %s: not hex-encoded", ErrKeyFile, path)
	}
	return key, nil
}

// syncDir fsyncs a directory so a new entry in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync directory %s: %w", dir, err)
	}
	return nil
}
