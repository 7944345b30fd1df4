package daemon

import (
	"context"
	"errors"

	"ikegw/ike/ikev1"
	"ikegw/ike/sa"
	"ikegw/store"
)

// storePersister persists engine records in the node's own bbolt SA
// database: a single node's durable state (a restarted ikegwd resumes every
// SA from it). The cluster's commit path replaces it when clustered.
type storePersister struct{ db *store.DB }

func (p storePersister) Persist(_ context.Context, ps ikev1.Persist) error {
	return p.db.Update(func(tx *store.Tx) error {
		for _, r := range ps.IKE {
			if err := tx.PutIKE(r); err != nil {
				return err
			}
		}
		for _, c := range ps.Children {
			if err := tx.PutChild(c); err != nil {
				return err
			}
		}
		for _, c := range ps.DeleteIKE {
			if err := tx.DeleteIKE(c); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		for _, s := range ps.DeleteChildren {
			if err := tx.DeleteChild(s); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		for spi, c := range ps.Counters {
			if err := tx.PutCounters(spi, c); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	})
}

// loadAll reads every record of the SA database.
func loadAll(db *store.DB) (ikes []*sa.IKESA, kids []*sa.ChildSA, err error) {
	err = db.View(func(tx *store.Tx) error {
		if err := tx.ForEachIKE(func(r *sa.IKESA) error { ikes = append(ikes, r); return nil }); err != nil {
			return err
		}
		return tx.ForEachChild(func(c *sa.ChildSA) error { kids = append(kids, c); return nil })
	})
	return
}
