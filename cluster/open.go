package cluster

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"ikegw/cluster/certs"
	"ikegw/ike/sa"
	"ikegw/store"
)

// DBBackend adapts a store.DB to the FSM's Backend.
func DBBackend(db *store.DB) Backend { return dbBackend{db} }

type dbBackend struct{ db *store.DB }

func (b dbBackend) Update(fn func(Writer) error) error {
	return b.db.Update(func(tx *store.Tx) error { return fn(txWriter{tx}) })
}
func (b dbBackend) WriteSnapshot(w io.Writer) error { return b.db.WriteSnapshot(w) }
func (b dbBackend) Restore(r io.Reader) error       { return b.db.Restore(r) }

// txWriter maps store's not-found results to the FSM's contract.
type txWriter struct{ *store.Tx }

func (w txWriter) Meta(key string) ([]byte, error) {
	v, err := w.Tx.Meta(key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return v, err
}

func (w txWriter) SealedMeta(key string) ([]byte, error) {
	v, err := w.Tx.SealedMeta(key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return v, err
}

// PutCounters of an SA pair deleted meanwhile is a no-op: a counters sync
// may race a delete.
func (w txWriter) PutCounters(spi uint32, c sa.Counters) error {
	err := w.Tx.PutCounters(spi, c)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// Files names what Open reads and where it listens.
type Files struct {
	// DataDir holds sa.db (the SA database) and raft/ (log, stable store,
	// snapshots). Created 0700 if missing.
	DataDir string
	// ClusterKey is the 0600 cluster key file (store.GenerateClusterKey).
	ClusterKey string
	// PreviousClusterKeys are key files that open sealed data but never
	// seal (key rotation). When set, Open reseals the SA database under
	// ClusterKey.
	PreviousClusterKeys []string
	// TLS are the cluster CA and this node's certificate and key.
	TLS certs.TLSFiles
	// RaftBind is the Raft listen address (host:port); RaftAdvertise, if
	// set, the address other nodes dial.
	RaftBind      string
	RaftAdvertise string
}

// File names inside Files.DataDir.
const (
	SADBFile = "sa.db"
	RaftDir  = "raft"
)

// Open starts a production node: the SA database and Raft stores on disk,
// sealed with the cluster key, Raft over mutual TLS.
func Open(cfg Config, f Files) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = defaultLog()
	}
	if err := os.MkdirAll(f.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	key, err := store.LoadClusterKey(f.ClusterKey)
	if err != nil {
		return nil, err
	}
	var previous [][]byte
	for _, p := range f.PreviousClusterKeys {
		k, err := store.LoadClusterKey(p)
		if err != nil {
			return nil, fmt.Errorf("cluster: previous cluster key: %w", err)
		}
		previous = append(previous, k)
	}
	sealer, err := store.NewSealer(key, previous...)
	clear(key)
	for _, k := range previous {
		clear(k)
	}
	if err != nil {
		return nil, err
	}
	cert, pool, err := f.TLS.Load()
	if err != nil {
		return nil, err
	}
	dbPath := filepath.Join(f.DataDir, SADBFile)
	db, err := store.Open(dbPath, sealer)
	if err != nil && !errors.Is(err, store.ErrWrongKey) && !errors.Is(err, store.ErrNewerLayout) &&
		!errors.Is(err, store.ErrLocked) && !errors.Is(err, fs.ErrPermission) && !errors.Is(err, fs.ErrNotExist) {
		// The SA database is the Raft FSM and is written without fsync
		// (below): after a power loss it may be damaged. Raft rebuilds it
		// from its fsynced snapshot and log, so start from an empty one and
		// keep the damaged file for inspection.
		aside := fmt.Sprintf("%s.damaged-%d", dbPath, time.Now().Unix())
		if rerr := os.Rename(dbPath, aside); rerr == nil {
			cfg.Log.Warn("cluster: SA database unreadable; moved aside, Raft rebuilds it", "path", dbPath, "moved_to", aside, "err", err)
			db, err = store.Open(dbPath, sealer)
		}
	}
	if err != nil {
		return nil, err
	}
	if db.MayHaveLostWrites() {
		// Written without fsync before a reboot it did not see coming:
		// its latest transactions may be gone while the index it records
		// says otherwise. Start from an empty one, as for a damaged file:
		// Raft restores its snapshot and applies the log after it.
		aside := fmt.Sprintf("%s.unsynced-%d", dbPath, time.Now().Unix())
		db.Close()
		if err := os.Rename(dbPath, aside); err != nil {
			return nil, fmt.Errorf("cluster: SA database %s may have lost writes in a power loss and cannot be moved aside: %w", dbPath, err)
		}
		cfg.Log.Warn("cluster: SA database was written without fsync before the machine rebooted; moved aside, Raft rebuilds it", "path", dbPath, "moved_to", aside)
		if db, err = store.Open(dbPath, sealer); err != nil {
			return nil, err
		}
	}
	if len(previous) > 0 {
		n, err := db.Reseal()
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("cluster: reseal the SA database under the current cluster key: %w", err)
		}
		cfg.Log.Info("cluster: SA database resealed under the current cluster key", "values", n, "previous_keys", len(previous))
	}
	if err := db.SetNoSync(true); err != nil {
		db.Close()
		return nil, err
	}
	rs, err := store.OpenRaftStores(filepath.Join(f.DataDir, RaftDir), newHCLog(cfg.Log, "raft-snapshots"))
	if err != nil {
		db.Close()
		return nil, err
	}
	sl, err := NewTLSStreamLayerFiles(f.RaftBind, f.RaftAdvertise, f.TLS.Cert, f.TLS.Key, cert, pool, cfg.Log.With("node", cfg.NodeID))
	if err != nil {
		rs.Close()
		db.Close()
		return nil, err
	}
	lease := cfg.LeaderLeaseTimeout
	if lease == 0 {
		lease = 500 * time.Millisecond
	}
	sl.SetRTOMin(RTOMinFor(lease))
	trans := NewTLSTransport(sl, cfg.Log.With("node", cfg.NodeID))
	n, err := New(cfg, Deps{
		DB: db, Backend: DBBackend(db), Sealer: sealer,
		Logs: rs.Log, Stable: rs.Stable, Snapshots: rs.Snapshots, Transport: trans,
		Close: func() error { return errors.Join(rs.Close(), db.Close()) },
	})
	if err != nil {
		trans.Close()
		rs.Close()
		db.Close()
		return nil, err
	}
	return n, nil
}

// Store is the SA database, for reads (writes go through Commit). It is nil
// for nodes built on a non-store Backend.
func (n *Node) Store() *store.DB { return n.deps.DB }

// ReadActive returns the active owner last committed with SetActive; ok is
// false when none was.
func ReadActive(db *store.DB) (a ActiveBody, ok bool, err error) {
	err = db.View(func(tx *store.Tx) error {
		raw, err := txWriter{tx}.Meta(metaActive)
		if err != nil || raw == nil {
			return err
		}
		if err := decMode.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("cluster: stored active owner: %w", err)
		}
		ok = true
		return nil
	})
	return a, ok, err
}

// ReadConfig returns the cluster configuration last committed with
// ConfigApply (opaque bytes, possibly holding PSKs: never log them) and its
// version; version 0 and nil data when none was.
func ReadConfig(db *store.DB) (version uint64, data []byte, err error) {
	err = db.View(func(tx *store.Tx) error {
		w := txWriter{tx}
		if version, err = readUint(w, metaConfigVersion); err != nil {
			return err
		}
		data, err = w.SealedMeta(metaConfig)
		return err
	})
	return version, data, err
}
