package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"ikegw/ike/sa"
)

// Readers, a writer, snapshots and restores run together: every reader sees
// either the whole old or the whole new content, never a mix, and the race
// detector stays quiet.
func TestConcurrentRestore(t *testing.T) {
	s := testSealer(t, testKey(t))
	db := openTestDB(t, s)
	fillDB(t, db, 20)
	// A snapshot with 20 records of connection "dc2", then the live content is
	// retagged "B": restores flip the content between the two whole sets.
	var snapA bytes.Buffer
	if err := db.WriteSnapshot(&snapA); err != nil {
		t.Fatal(err)
	}
	retag := func(tag string) error {
		return db.Update(func(tx *Tx) error {
			for i := range 20 {
				r := sampleIKE(uint64(i))
				r.Connection = tag
				if err := tx.PutIKE(r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := retag("B"); err != nil {
		t.Fatal(err)
	}
	var snapB bytes.Buffer
	if err := db.WriteSnapshot(&snapB); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errc := make(chan error, 8)
	stop := make(chan struct{})
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := db.View(func(tx *Tx) error {
					tags := map[string]int{}
					if err := tx.ForEachIKE(func(r *sa.IKESA) error { tags[r.Connection]++; return nil }); err != nil {
						return err
					}
					if len(tags) != 1 {
						return fmt.Errorf("reader saw a mix of contents: %v", tags)
					}
					return nil
				})
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := db.WriteSnapshot(&bytes.Buffer{}); err != nil {
				errc <- err
				return
			}
		}
	})
	for i := range 10 {
		snap := snapA.Bytes()
		if i%2 == 1 {
			snap = snapB.Bytes()
		}
		if err := db.Restore(bytes.NewReader(snap)); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	// The last restore was B.
	db.View(func(tx *Tx) error {
		r, err := tx.IKE(sampleIKE(3).Cookies)
		if err != nil || r.Connection != "B" {
			t.Errorf("after restores: %v, %v", r, err)
		}
		return nil
	})
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Restore(bytes.NewReader(snapA.Bytes())); !errors.Is(err, errClosed) {
		t.Errorf("Restore on closed DB: %v", err)
	}
}
