package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// EraseCounts deletes every count this store holds, in one transaction, and
// returns how many days it held. The boards' dedupe state stays, so a press
// resent after the erasure is still recognised and not counted again; the
// board settings stay too.
func (s *Store) EraseCounts() (days int, err error) {
	seen := map[string]bool{}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketCounts).ForEach(func(k, _ []byte) error {
			if len(k) >= 10 {
				seen[string(k[:10])] = true
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketCounts); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketCounts)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("erase counts: %w", err)
	}
	return len(seen), nil
}

// FirstDay returns the earliest day with a count, if any.
func (s *Store) FirstDay() (Day, bool, error) {
	var first Day
	err := s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketCounts).Cursor().First()
		if len(k) > 1 {
			first = Day(k[:len(k)-1])
		}
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("first day: %w", err)
	}
	return first, first != "", nil
}
