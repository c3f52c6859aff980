package index

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// maxIDLen bounds customer and token ids.
const maxIDLen = 128

func checkID(what, id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%s id %q: want 1 to %d bytes", what, id, maxIDLen)
	}
	return nil
}

// CreateCustomer adds a customer (a tenant). retentionMonths 0 means
// DefaultRetentionMonths. An erased customer's id stays taken.
func (s *Store) CreateCustomer(ctx context.Context, id, name string, retentionMonths int) error {
	if err := checkID("customer", id); err != nil {
		return fmt.Errorf("create customer: %w", err)
	}
	if retentionMonths < 0 {
		return fmt.Errorf("create customer %s: negative retention %d", id, retentionMonths)
	}
	if retentionMonths == 0 {
		retentionMonths = DefaultRetentionMonths
	}
	return s.writeTx(ctx, id, func(c conn) error {
		res, err := c.exec(ctx, `INSERT INTO customers (id, name, retention_months) VALUES (?, ?, ?)
			ON CONFLICT (id) DO NOTHING`, id, name, retentionMonths)
		if err != nil {
			return fmt.Errorf("create customer %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("create customer %s: %w", id, err)
		} else if n == 0 {
			return fmt.Errorf("create customer %s: %w", id, ErrCustomerExists)
		}
		return nil
	})
}

// AddEnrolToken records a one-time enrolment token of the customer. The
// index keeps only a hash of its secret; the caller picks the hash function.
func (s *Store) AddEnrolToken(ctx context.Context, customer, tokenID, secretHash string, expires time.Time) error {
	if err := checkID("token", tokenID); err != nil {
		return fmt.Errorf("add enrolment token: %w", err)
	}
	if secretHash == "" {
		return fmt.Errorf("add enrolment token %s: empty secret hash", tokenID)
	}
	return s.writeTx(ctx, customer, func(c conn) error {
		if _, err := activeCustomer(ctx, c, customer); err != nil {
			return fmt.Errorf("add enrolment token %s: %w", tokenID, err)
		}
		res, err := c.exec(ctx, `INSERT INTO enrol_tokens (token_id, customer, secret_hash, expires_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (token_id) DO NOTHING`, tokenID, customer, secretHash, micros(expires))
		if err != nil {
			return fmt.Errorf("add enrolment token %s: %w", tokenID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("add enrolment token %s: %w", tokenID, err)
		} else if n == 0 {
			return fmt.Errorf("add enrolment token %s: %w", tokenID, ErrTokenExists)
		}
		return nil
	})
}

// UseEnrolToken spends a token and returns its customer. A wrong secret gets
// the same ErrTokenUnknown as a token that does not exist, so the answer does
// not confirm a guessed id; a token is spent only by its right secret, before
// it expires, once.
func (s *Store) UseEnrolToken(ctx context.Context, tokenID, secretHash string, now time.Time) (customer string, err error) {
	err = s.writeTx(ctx, "", func(c conn) error {
		var hash string
		var expires int64
		var used sql.NullInt64
		err := c.queryRow(ctx, `SELECT customer, secret_hash, expires_at, used_at FROM enrol_tokens WHERE token_id = ?`,
			tokenID).Scan(&customer, &hash, &expires, &used)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrTokenUnknown
		case err != nil:
			return err
		case subtle.ConstantTimeCompare([]byte(hash), []byte(secretHash)) != 1:
			return ErrTokenUnknown
		case used.Valid:
			return ErrTokenUsed
		case !now.Before(fromMicros(expires)):
			return ErrTokenExpired
		}
		// The guard on used_at makes a concurrent second use match no row.
		res, err := c.exec(ctx, `UPDATE enrol_tokens SET used_at = ? WHERE token_id = ? AND used_at IS NULL`,
			micros(now), tokenID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return ErrTokenUsed
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("use enrolment token %s: %w", tokenID, err)
	}
	return customer, nil
}
