package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// EraseCounts deletes every count this store holds, in one transaction, and
// returns the days it held, oldest first. The boards' dedupe state stays, so
// a press resent after the erasure is still recognised and not counted
// again; the board settings stay too.
func (s *Store) EraseCounts() (days []Day, err error) {
	seen := map[string]bool{}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketCounts).ForEach(func(k, _ []byte) error {
			if d := string(k[:max(len(k)-1, 0)]); len(k) > 1 && !seen[d] {
				seen[d] = true
				days = append(days, Day(d))
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
		return nil, fmt.Errorf("erase counts: %w", err)
	}
	return days, nil
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
