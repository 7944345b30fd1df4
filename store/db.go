package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound is returned when a record or metadata key does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrWrongKey is wrapped (together with ErrSealed) when a database or a
// snapshot was sealed under another cluster key.
var ErrWrongKey = errors.New("store: database sealed under another cluster key")

// ErrNewerLayout is returned when a database or snapshot was written by a
// newer build with a layout this build does not understand.
var ErrNewerLayout = errors.New("store: database layout newer than this build understands")

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("store: database locked by another process")

// layoutVersion is the bucket layout this build writes (sys/layout).
const layoutVersion = 1

// Buckets. Their names are also part of every record's additional data, so
// a sealed value moved to another bucket or key does not open.
var (
	bucketSys   = []byte("sys")   // layout version, canary
	bucketIKE   = []byte("ike")   // key: cookies I|R (16 bytes)
	bucketChild = []byte("child") // key: inbound SPI, 4 bytes big endian
	bucketMeta  = []byte("meta")  // key: name; value: plain bytes
	bucketSMeta = []byte("smeta") // key: name; value: sealed bytes

	allBuckets = [][]byte{bucketSys, bucketIKE, bucketChild, bucketMeta, bucketSMeta}

	keyLayout = []byte("layout")
	keyCanary = []byte("canary")
	// keyUnsynced holds the boot ID of the machine while the database is
	// written without fsync (SetNoSync); Close removes it.
	keyUnsynced = []byte("unsynced")
)

// bootIDFile names the kernel's random ID of the running boot.
var bootIDFile = "/proc/sys/kernel/random/boot_id"

// bootID returns the running boot's ID, "" when unknown.
func bootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// canaryText is the plaintext of the canary: a database opens only if its
// canary opens with the Sealer.
var canaryText = []byte("ikegw store canary v1")

// openTimeout bounds the wait for bbolt's file lock (another process holding
// the database).
const openTimeout = 2 * time.Second

// DB is the SA database of one node: a bbolt file holding the replicated
// ISAKMP and IPsec SA records, sealed under the cluster key, and metadata.
// A DB is safe for concurrent use; Update transactions are serialized.
type DB struct {
	path string
	s    *Sealer

	mu sync.RWMutex // guards bolt against Close
	bo *bolt.DB
	// lostWrites: written without fsync in an earlier boot and not closed
	// (see MayHaveLostWrites).
	lostWrites bool
}

// Open opens (creating with mode 0600 if needed) the SA database at path.
// A new database gets a canary sealed with s; an existing one must open
// with s, or Open fails with an error wrapping ErrWrongKey and ErrSealed.
func Open(path string, s *Sealer) (*DB, error) {
	if s == nil {
		return nil, fmt.Errorf("store: open %s: nil Sealer", path)
	}
	bo, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w (waited %s)", path, ErrLocked, openTimeout)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := tightenMode(path); err != nil {
		bo.Close()
		return nil, err
	}
	db := &DB{path: path, s: s, bo: bo}
	if err := bo.Update(func(tx *bolt.Tx) error {
		if err := initTx(tx, s); err != nil {
			return err
		}
		if v := tx.Bucket(bucketSys).Get(keyUnsynced); v != nil {
			boot := bootID()
			db.lostWrites = boot == "" || string(v) != boot
		}
		return nil
	}); err != nil {
		bo.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// MayHaveLostWrites reports whether the database was written without fsync
// (SetNoSync) during an earlier boot of the machine and never closed: a
// power loss or a kernel crash may have dropped its latest transactions,
// or damaged it in ways bbolt does not notice when it opens. A process
// that died (kill -9) on the running boot loses nothing: its writes are in
// the page cache.
func (db *DB) MayHaveLostWrites() bool { return db.lostWrites }

// SetNoSync turns fsync of each write transaction off (or back on). Only
// for a database that another durable source can rebuild: a cluster node's
// SA database is the Raft FSM, rebuilt from the fsynced Raft snapshot and
// log when it cannot be trusted, so it need not fsync every apply (each
// commit would otherwise wait for three fsynced transactions in a row). A
// standalone node's database is its only copy and must keep fsync.
//
// Before turning fsync off it records the running boot's ID, fsynced;
// turning it back on and Close fsync the database and remove the record.
// Open of a database whose record names another boot reports
// MayHaveLostWrites. On an error fsync stays as it was.
func (db *DB) SetNoSync(noSync bool) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.bo == nil {
		return errClosed
	}
	if noSync == db.bo.NoSync {
		return nil
	}
	if noSync {
		if err := db.bo.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketSys).Put(keyUnsynced, []byte(bootID()))
		}); err != nil {
			return fmt.Errorf("store: %s: record the unsynced boot: %w", db.path, err)
		}
		db.bo.NoSync = true
		// Growing the file without fsync too: bbolt's growth is an
		// ftruncate and a full fsync, in the middle of a transaction
		// that is itself not synced (9 per node in a 16-committer
		// commit benchmark, on the leader's apply path).
		db.bo.NoGrowSync = true
		return nil
	}
	return db.syncedLocked()
}

// syncedLocked fsyncs the database, turns fsync back on and removes the
// unsynced record (fsynced). db.mu is held.
func (db *DB) syncedLocked() error {
	if err := db.bo.Sync(); err != nil {
		return fmt.Errorf("store: %s: fsync: %w", db.path, err)
	}
	db.bo.NoSync = false
	db.bo.NoGrowSync = false
	if err := db.bo.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSys).Delete(keyUnsynced) }); err != nil {
		return fmt.Errorf("store: %s: remove the unsynced record: %w", db.path, err)
	}
	return nil
}

// tightenMode sets an existing database file that is open to group or
// others to 0600: its metadata is not sealed.
func tightenMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("store: open %s: mode %04o is open to group or others and chmod 0600 failed: %w", path, perm, err)
		}
		slog.Warn("store: database file was open to group or others; set to 0600", "path", path, "mode", fmt.Sprintf("%04o", perm))
	}
	return nil
}

// initTx creates the buckets of a new database, or checks the layout and
// canary of an existing one.
func initTx(tx *bolt.Tx, s *Sealer) error {
	if tx.Bucket(bucketSys) == nil {
		// New database, or not ours: refuse a file that has other buckets.
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			return fmt.Errorf("not an ikegw SA database (bucket %q without %q)", name, bucketSys)
		}); err != nil {
			return err
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucket(b); err != nil {
				return fmt.Errorf("create bucket %q: %w", b, err)
			}
		}
		sys := tx.Bucket(bucketSys)
		if err := sys.Put(keyLayout, []byte{layoutVersion}); err != nil {
			return err
		}
		return sys.Put(keyCanary, s.Seal(canaryText, recordAD(bucketSys, keyCanary)))
	}
	if err := checkSys(tx, s); err != nil {
		return err
	}
	// Buckets added by later layouts of the same version would be created
	// here; layout 1 has them all.
	for _, b := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %q: %w", b, err)
		}
	}
	return nil
}

// checkSys verifies the layout version and the canary of a database.
func checkSys(tx *bolt.Tx, s *Sealer) error {
	sys := tx.Bucket(bucketSys)
	if sys == nil {
		return fmt.Errorf("not an ikegw SA database (no %q bucket)", bucketSys)
	}
	lv := sys.Get(keyLayout)
	if len(lv) != 1 {
		return fmt.Errorf("not an ikegw SA database (sys/layout is %d bytes)", len(lv))
	}
	if lv[0] > layoutVersion {
		return fmt.Errorf("%w: layout %d, this build reads up to %d", ErrNewerLayout, lv[0], layoutVersion)
	}
	c := sys.Get(keyCanary)
	if c == nil {
		return fmt.Errorf("not an ikegw SA database (no canary)")
	}
	pt, err := s.Open(c, recordAD(bucketSys, keyCanary))
	if err != nil {
		return fmt.Errorf("%w: the canary record does not open (%w); is this node's cluster key file the cluster's?", ErrWrongKey, err)
	}
	if !bytes.Equal(pt, canaryText) {
		return fmt.Errorf("%w: the canary record opens to unexpected content", ErrWrongKey)
	}
	return nil
}

// recordAD is the additional data binding a sealed value to its place.
func recordAD(bucket, key []byte) []byte {
	ad := make([]byte, 0, len(bucket)+1+len(key))
	ad = append(ad, bucket...)
	ad = append(ad, 0)
	return append(ad, key...)
}

// Path returns the database file name.
func (db *DB) Path() string { return db.path }

// Close closes the database. Transactions in flight finish first.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.bo == nil {
		return nil
	}
	var serr error
	if db.bo.NoSync && !db.bo.IsReadOnly() {
		serr = db.syncedLocked()
	}
	err := db.bo.Close()
	db.bo = nil
	if err != nil {
		return errors.Join(serr, fmt.Errorf("store: close %s: %w", db.path, err))
	}
	return serr
}

var errClosed = errors.New("store: database is closed")

// Update runs fn in a read-write transaction, committed (and fsynced) if fn
// returns nil, rolled back otherwise.
func (db *DB) Update(fn func(tx *Tx) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bo == nil {
		return errClosed
	}
	return db.bo.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, s: db.s}) })
}

// View runs fn in a read-only transaction: a consistent view of the
// database. Values returned by Tx methods stay valid after View returns.
func (db *DB) View(fn func(tx *Tx) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bo == nil {
		return errClosed
	}
	return db.bo.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx, s: db.s}) })
}

// Check runs bbolt's consistency check over the whole database and returns
// the first problems found (nil if none).
func (db *DB) Check() error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bo == nil {
		return errClosed
	}
	return db.bo.View(checkTx)
}

func checkTx(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: consistency check failed: %w", errors.Join(errs...))
	}
	return nil
}

// Reseal rewrites every sealed value that does not open with the Sealer's
// current key (it opened with a previous key) under the current key, in one
// transaction. It returns how many values it rewrote. Run it on every node
// after a key rotation, before dropping the previous key.
func (db *DB) Reseal() (int, error) {
	n := 0
	err := db.Update(func(tx *Tx) error {
		for _, b := range [][]byte{bucketSys, bucketIKE, bucketChild, bucketSMeta} {
			bk := tx.tx.Bucket(b)
			type kv struct{ k, v []byte }
			var todo []kv
			err := bk.ForEach(func(k, v []byte) error {
				if bytes.Equal(b, bucketSys) && !bytes.Equal(k, keyCanary) {
					return nil
				}
				ad := recordAD(b, k)
				if db.s.openedWithCurrent(v, ad) {
					return nil
				}
				pt, err := db.s.Open(v, ad)
				if err != nil {
					return fmt.Errorf("store: reseal %s/%x: %w", b, k, err)
				}
				todo = append(todo, kv{bytes.Clone(k), db.s.Seal(pt, ad)})
				return nil
			})
			if err != nil {
				return err
			}
			for _, e := range todo {
				if err := bk.Put(e.k, e.v); err != nil {
					return fmt.Errorf("store: reseal %s/%x: %w", b, e.k, err)
				}
			}
			n += len(todo)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Counts returns how many ISAKMP and IPsec SA records the database holds.
func (db *DB) Counts() (ike, child int, err error) {
	err = db.View(func(tx *Tx) error {
		ike = tx.tx.Bucket(bucketIKE).Stats().KeyN
		child = tx.tx.Bucket(bucketChild).Stats().KeyN
		return nil
	})
	return ike, child, err
}

// tempDir returns a directory for temporary files beside the database.
func (db *DB) tempDir() string { return filepath.Dir(db.path) }

// removeQuiet removes a temporary file, ignoring errors.
func removeQuiet(p string) { _ = os.Remove(p) }
