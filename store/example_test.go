package store_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"ikegw/ike/sa"
	"ikegw/store"
)

// A node's start-up: load the cluster key, open the SA database, write and
// read records.
func Example() {
	dir, err := os.MkdirTemp("", "store-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	keyFile := filepath.Join(dir, "cluster.key")
	if err := store.GenerateClusterKey(keyFile); err != nil { // once per cluster
		log.Fatal(err)
	}
	key, err := store.LoadClusterKey(keyFile)
	if err != nil {
		log.Fatal(err)
	}
	sealer, err := store.NewSealer(key)
	if err != nil {
		log.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "sa.db"), sealer)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	child := &sa.ChildSA{
		Version: sa.RecordVersion, State: sa.ChildInstalled, Protocol: 50,
		In:  sa.SADir{SPI: 0xc1234567, Encr: sa.EncrAESGCM, EncrKey: make([]byte, 36)},
		Out: sa.SADir{SPI: 0xc7654321, Encr: sa.EncrAESGCM, EncrKey: make([]byte, 36)},
	}
	err = db.Update(func(tx *store.Tx) error {
		if err := tx.PutChild(child); err != nil {
			return err
		}
		// A counters sync: sequence numbers never go back.
		if err := tx.PutCounters(0xc1234567, sa.Counters{OutSeq: 1000, InSeq: 900}); err != nil {
			return err
		}
		if err := tx.PutCounters(0xc1234567, sa.Counters{OutSeq: 10, InSeq: 5}); err != nil {
			return err
		}
		return tx.PutMeta("applied-index", []byte{42})
	})
	if err != nil {
		log.Fatal(err)
	}
	err = db.View(func(tx *store.Tx) error {
		c, err := tx.Child(0xc1234567)
		if err != nil {
			return err
		}
		fmt.Println(c.State, c.Counters.OutSeq, c.Counters.InSeq)
		_, err = tx.Child(1)
		fmt.Println(err)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// INSTALLED 1000 900
	// store: not found
}
