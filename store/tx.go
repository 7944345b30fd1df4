package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"ikegw/ike/sa"

	bolt "go.etcd.io/bbolt"
)

// maxMetaKey bounds metadata key names.
const maxMetaKey = 255

// Tx is a transaction on the SA database, valid only inside the Update or
// View function it was passed to. Write methods on a View transaction fail.
type Tx struct {
	tx *bolt.Tx
	s  *Sealer
}

func ikeKey(c sa.Cookies) []byte {
	k := c.Key()
	return k[:]
}

func childKey(spi uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, spi)
}

// put seals plaintext under bucket/key and stores it.
func (tx *Tx) putSealed(bucket, key, plaintext []byte) error {
	return tx.tx.Bucket(bucket).Put(key, tx.s.Seal(plaintext, recordAD(bucket, key)))
}

// getSealed returns the opened value at bucket/key, or ErrNotFound.
func (tx *Tx) getSealed(bucket, key []byte) ([]byte, error) {
	v := tx.tx.Bucket(bucket).Get(key)
	if v == nil {
		return nil, ErrNotFound
	}
	return tx.s.Open(v, recordAD(bucket, key))
}

// PutIKE stores (replaces) an ISAKMP SA record, keyed by its cookies.
func (tx *Tx) PutIKE(r *sa.IKESA) error {
	if r == nil {
		return errors.New("store: put ike: nil record")
	}
	if r.Version > sa.RecordVersion {
		return fmt.Errorf("store: put ike %s: %w: version %d, this build writes up to %d", r.Cookies, sa.ErrNewerRecord, r.Version, sa.RecordVersion)
	}
	b, err := sa.Marshal(r)
	if err != nil {
		return fmt.Errorf("store: put ike %s: encode: %w", r.Cookies, err)
	}
	defer clear(b)
	if err := tx.putSealed(bucketIKE, ikeKey(r.Cookies), b); err != nil {
		return fmt.Errorf("store: put ike %s: %w", r.Cookies, err)
	}
	return nil
}

// DeleteIKE removes an ISAKMP SA record. Deleting a missing one is not an
// error (deletes are idempotent, as Raft may replay them).
func (tx *Tx) DeleteIKE(c sa.Cookies) error {
	if err := tx.tx.Bucket(bucketIKE).Delete(ikeKey(c)); err != nil {
		return fmt.Errorf("store: delete ike %s: %w", c, err)
	}
	return nil
}

// IKE returns the ISAKMP SA record with cookies c, or ErrNotFound.
func (tx *Tx) IKE(c sa.Cookies) (*sa.IKESA, error) {
	k := ikeKey(c)
	v := tx.tx.Bucket(bucketIKE).Get(k)
	if v == nil {
		return nil, ErrNotFound
	}
	return decodeIKE(tx.s, k, v)
}

func decodeIKE(s *Sealer, k, v []byte) (*sa.IKESA, error) {
	pt, err := s.Open(v, recordAD(bucketIKE, k))
	if err != nil {
		return nil, fmt.Errorf("store: ike record %x: %w", k, err)
	}
	defer clear(pt)
	var r sa.IKESA
	if err := sa.Unmarshal(pt, &r); err != nil {
		return nil, fmt.Errorf("store: ike record %x: %w", k, err)
	}
	if !bytes.Equal(ikeKey(r.Cookies), k) {
		return nil, fmt.Errorf("store: ike record %x: holds cookies %s", k, r.Cookies)
	}
	return &r, nil
}

// ForEachIKE calls fn with every ISAKMP SA record, in cookie order. An error
// from fn (or from decoding a record) stops the walk and is returned.
func (tx *Tx) ForEachIKE(fn func(*sa.IKESA) error) error {
	return tx.tx.Bucket(bucketIKE).ForEach(func(k, v []byte) error {
		r, err := decodeIKE(tx.s, k, v)
		if err != nil {
			return err
		}
		return fn(r)
	})
}

// PutChild stores (replaces) an IPsec SA pair record, keyed by r.In.SPI.
func (tx *Tx) PutChild(r *sa.ChildSA) error {
	if r == nil {
		return errors.New("store: put child: nil record")
	}
	if r.In.SPI == 0 {
		return errors.New("store: put child: inbound SPI is 0 (reserved, RFC 4303 §2.1)")
	}
	if r.Version > sa.RecordVersion {
		return fmt.Errorf("store: put child %08x: %w: version %d, this build writes up to %d", r.In.SPI, sa.ErrNewerRecord, r.Version, sa.RecordVersion)
	}
	b, err := sa.Marshal(r)
	if err != nil {
		return fmt.Errorf("store: put child %08x: encode: %w", r.In.SPI, err)
	}
	defer clear(b)
	if err := tx.putSealed(bucketChild, childKey(r.In.SPI), b); err != nil {
		return fmt.Errorf("store: put child %08x: %w", r.In.SPI, err)
	}
	return nil
}

// DeleteChild removes an IPsec SA pair record. Deleting a missing one is not
// an error.
func (tx *Tx) DeleteChild(inSPI uint32) error {
	if err := tx.tx.Bucket(bucketChild).Delete(childKey(inSPI)); err != nil {
		return fmt.Errorf("store: delete child %08x: %w", inSPI, err)
	}
	return nil
}

// Child returns the IPsec SA pair whose inbound SPI is inSPI, or ErrNotFound.
func (tx *Tx) Child(inSPI uint32) (*sa.ChildSA, error) {
	k := childKey(inSPI)
	v := tx.tx.Bucket(bucketChild).Get(k)
	if v == nil {
		return nil, ErrNotFound
	}
	r, _, err := decodeChild(tx.s, k, v)
	return r, err
}

// decodeChild opens and decodes a child record; it also returns the
// plaintext CBOR (the caller clears it).
func decodeChild(s *Sealer, k, v []byte) (*sa.ChildSA, []byte, error) {
	pt, err := s.Open(v, recordAD(bucketChild, k))
	if err != nil {
		return nil, nil, fmt.Errorf("store: child record %x: %w", k, err)
	}
	var r sa.ChildSA
	if err := sa.Unmarshal(pt, &r); err != nil {
		clear(pt)
		return nil, nil, fmt.Errorf("store: child record %x: %w", k, err)
	}
	if !bytes.Equal(childKey(r.In.SPI), k) {
		clear(pt)
		return nil, nil, fmt.Errorf("store: child record %x: holds inbound SPI %08x", k, r.In.SPI)
	}
	return &r, pt, nil
}

// ForEachChild calls fn with every IPsec SA pair record, in inbound SPI
// order. An error from fn (or from decoding a record) stops the walk.
func (tx *Tx) ForEachChild(fn func(*sa.ChildSA) error) error {
	return tx.tx.Bucket(bucketChild).ForEach(func(k, v []byte) error {
		r, pt, err := decodeChild(tx.s, k, v)
		if err != nil {
			return err
		}
		clear(pt)
		return fn(r)
	})
}

// PutCounters merges c into the Counters of the stored child whose inbound
// SPI is inSPI (see MergeCounters: sequence numbers never go back). It
// returns ErrNotFound if there is no such child. Fields of the record that
// this build does not know (written by a newer build) are kept.
func (tx *Tx) PutCounters(inSPI uint32, c sa.Counters) error {
	k := childKey(inSPI)
	v := tx.tx.Bucket(bucketChild).Get(k)
	if v == nil {
		return fmt.Errorf("store: put counters %08x: %w", inSPI, ErrNotFound)
	}
	pt, err := tx.s.Open(v, recordAD(bucketChild, k))
	if err != nil {
		return fmt.Errorf("store: put counters %08x: %w", inSPI, err)
	}
	defer clear(pt)
	nb, err := mergeCountersRaw(pt, c)
	if err != nil {
		return fmt.Errorf("store: put counters %08x: %w", inSPI, err)
	}
	defer clear(nb)
	if err := tx.putSealed(bucketChild, k, nb); err != nil {
		return fmt.Errorf("store: put counters %08x: %w", inSPI, err)
	}
	return nil
}

func checkMetaKey(op, key string) error {
	if key == "" {
		return fmt.Errorf("store: %s: empty key", op)
	}
	if len(key) > maxMetaKey {
		return fmt.Errorf("store: %s %.32q...: key is %d bytes, limit %d", op, key, len(key), maxMetaKey)
	}
	return nil
}

// PutMeta stores small unsealed metadata (applied index, config version,
// active owner, ...). Never put secrets here: use PutSealedMeta.
func (tx *Tx) PutMeta(key string, val []byte) error {
	if err := checkMetaKey("put meta", key); err != nil {
		return err
	}
	if val == nil {
		val = []byte{}
	}
	if err := tx.tx.Bucket(bucketMeta).Put([]byte(key), val); err != nil {
		return fmt.Errorf("store: put meta %q: %w", key, err)
	}
	return nil
}

// Meta returns a copy of the metadata stored under key, or ErrNotFound.
func (tx *Tx) Meta(key string) ([]byte, error) {
	v := tx.tx.Bucket(bucketMeta).Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

// DeleteMeta removes a metadata key (plain or sealed). Missing is not an
// error.
func (tx *Tx) DeleteMeta(key string) error {
	for _, b := range [][]byte{bucketMeta, bucketSMeta} {
		if err := tx.tx.Bucket(b).Delete([]byte(key)); err != nil {
			return fmt.Errorf("store: delete meta %q: %w", key, err)
		}
	}
	return nil
}

// PutSealedMeta stores metadata sealed under the cluster key (e.g. the
// cluster configuration, which holds PSKs).
func (tx *Tx) PutSealedMeta(key string, val []byte) error {
	if err := checkMetaKey("put sealed meta", key); err != nil {
		return err
	}
	if err := tx.putSealed(bucketSMeta, []byte(key), val); err != nil {
		return fmt.Errorf("store: put sealed meta %q: %w", key, err)
	}
	return nil
}

// SealedMeta returns the opened metadata stored under key with
// PutSealedMeta, or ErrNotFound.
func (tx *Tx) SealedMeta(key string) ([]byte, error) {
	v, err := tx.getSealed(bucketSMeta, []byte(key))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("store: sealed meta %q: %w", key, err)
	}
	return v, nil
}
