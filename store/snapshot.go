package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A snapshot is the whole bbolt file of one read transaction, framed so a
// truncated or damaged stream is refused before bbolt ever reads it:
//
//	magic "ikegwSNP" | version (1 byte) | length (8 bytes, big endian) |
//	bbolt file (length bytes) | SHA-256 of the bbolt file (32 bytes)
//
// Values inside are sealed as in the database, so a snapshot carries no key
// material in clear.
var snapMagic = []byte("ikegwSNP")

const (
	snapVersion = 1
	snapHeader  = 8 + 1 + 8
	// maxSnapshot bounds the length a snapshot header may claim.
	maxSnapshot = 1 << 40
)

// ErrBadSnapshot is wrapped by Restore errors about the snapshot stream.
var ErrBadSnapshot = errors.New("store: bad snapshot")

// WriteSnapshot writes a consistent copy of the whole database (one read
// transaction) to w. It runs concurrently with Update.
func (db *DB) WriteSnapshot(w io.Writer) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bo == nil {
		return errClosed
	}
	err := db.bo.View(func(tx *bolt.Tx) error {
		size := tx.Size()
		hdr := make([]byte, 0, snapHeader)
		hdr = append(hdr, snapMagic...)
		hdr = append(hdr, snapVersion)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(size))
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		h := sha256.New()
		n, err := tx.WriteTo(io.MultiWriter(w, h))
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("wrote %d bytes of a %d-byte database", n, size)
		}
		_, err = w.Write(h.Sum(nil))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: snapshot %s: %w", db.path, err)
	}
	return nil
}

// Restore replaces the whole content of the database with a snapshot made by
// WriteSnapshot, atomically (one write transaction: readers see the old or
// the new content, a crash leaves the old). The snapshot must be intact, its
// layout known and its canary must open with this database's Sealer (same
// cluster key); otherwise nothing changes and the error says why.
func (db *DB) Restore(r io.Reader) error {
	f, err := os.CreateTemp(db.tempDir(), ".restore-*.db")
	if err != nil {
		return fmt.Errorf("store: restore %s: temporary file: %w", db.path, err)
	}
	tmp := f.Name()
	defer removeQuiet(tmp)
	if err := copySnapshot(f, bufio.NewReaderSize(r, 1<<16)); err != nil {
		f.Close()
		return fmt.Errorf("store: restore %s: %w", db.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: restore %s: temporary file: %w", db.path, err)
	}
	src, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: openTimeout, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("store: restore %s: %w: bbolt: %w", db.path, ErrBadSnapshot, err)
	}
	defer src.Close()
	if err := verifySnapshotDB(src, db.s); err != nil {
		return fmt.Errorf("store: restore %s: %w", db.path, err)
	}

	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bo == nil {
		return errClosed
	}
	err = src.View(func(stx *bolt.Tx) error {
		return db.bo.Update(func(dtx *bolt.Tx) error {
			// The unsynced record describes this file, not the
			// snapshot's source: keep ours.
			var unsynced []byte
			if sys := dtx.Bucket(bucketSys); sys != nil {
				unsynced = bytes.Clone(sys.Get(keyUnsynced))
			}
			for _, b := range allBuckets {
				if err := dtx.DeleteBucket(b); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
					return fmt.Errorf("drop bucket %q: %w", b, err)
				}
				nb, err := dtx.CreateBucket(b)
				if err != nil {
					return fmt.Errorf("create bucket %q: %w", b, err)
				}
				sb := stx.Bucket(b)
				if sb == nil {
					continue
				}
				nb.FillPercent = 0.9 // keys are copied in order
				if err := sb.ForEach(func(k, v []byte) error {
					if v == nil {
						return fmt.Errorf("%w: nested bucket %q in %q", ErrBadSnapshot, k, b)
					}
					if bytes.Equal(b, bucketSys) && bytes.Equal(k, keyUnsynced) {
						return nil
					}
					return nb.Put(k, v)
				}); err != nil {
					return fmt.Errorf("copy bucket %q: %w", b, err)
				}
			}
			if unsynced != nil {
				return dtx.Bucket(bucketSys).Put(keyUnsynced, unsynced)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("store: restore %s: %w", db.path, err)
	}
	return nil
}

// copySnapshot checks the frame of a snapshot from r and writes the bbolt
// file it holds to f, fsynced.
func copySnapshot(f *os.File, r io.Reader) error {
	hdr := make([]byte, snapHeader)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("%w: header: %w", ErrBadSnapshot, err)
	}
	if !bytes.Equal(hdr[:8], snapMagic) {
		return fmt.Errorf("%w: not an ikegw SA database snapshot (magic %q)", ErrBadSnapshot, hdr[:8])
	}
	if hdr[8] != snapVersion {
		return fmt.Errorf("%w: snapshot format %d, this build reads %d", ErrBadSnapshot, hdr[8], snapVersion)
	}
	size := binary.BigEndian.Uint64(hdr[9:])
	if size > maxSnapshot {
		return fmt.Errorf("%w: header claims %d bytes, limit %d", ErrBadSnapshot, size, int64(maxSnapshot))
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, int64(size)))
	if err != nil {
		return fmt.Errorf("%w: body: %w", ErrBadSnapshot, err)
	}
	if uint64(n) != size {
		return fmt.Errorf("%w: truncated: %d of %d bytes", ErrBadSnapshot, n, size)
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, sum); err != nil {
		return fmt.Errorf("%w: checksum: %w", ErrBadSnapshot, err)
	}
	if subtle.ConstantTimeCompare(sum, h.Sum(nil)) != 1 {
		return fmt.Errorf("%w: SHA-256 mismatch (damaged in transit or storage)", ErrBadSnapshot)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("temporary file: %w", err)
	}
	return nil
}

// verifySnapshotDB runs bbolt's consistency check on a restored file and
// verifies its layout and canary. bbolt may panic on a damaged file; that
// becomes an error.
func verifySnapshotDB(src *bolt.DB, s *Sealer) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: bbolt failed reading it: %v", ErrBadSnapshot, p)
		}
	}()
	return src.View(func(tx *bolt.Tx) error {
		if err := checkTx(tx); err != nil {
			return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
		}
		if err := checkSys(tx, s); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		return nil
	})
}
