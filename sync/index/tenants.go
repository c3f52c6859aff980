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

// Customer is a tenant of the index.
type Customer struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	RetentionMonths int        `json:"retention_months"`
	ErasedAt        *time.Time `json:"erased_at,omitempty"`
}

// Customers returns every customer, erased ones included, sorted by id.
func (s *Store) Customers(ctx context.Context) ([]Customer, error) {
	rows, err := s.read().query(ctx, `SELECT id, name, retention_months, erased_at FROM customers ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("customers: %w", err)
	}
	defer rows.Close()
	var out []Customer
	for rows.Next() {
		var c Customer
		var erased sql.NullInt64
		if err := rows.Scan(&c.ID, &c.Name, &c.RetentionMonths, &erased); err != nil {
			return nil, fmt.Errorf("customers: %w", err)
		}
		if erased.Valid {
			t := fromMicros(erased.Int64)
			c.ErasedAt = &t
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("customers: %w", err)
	}
	return out, nil
}

// SetRetention sets how many months the customer's releases are kept after
// their period ended (see ApplyRetention).
func (s *Store) SetRetention(ctx context.Context, customer string, months int) error {
	if months <= 0 {
		return fmt.Errorf("set retention of %s: %d months, want at least 1", customer, months)
	}
	err := s.writeTx(ctx, customer, func(c conn) error {
		if _, err := activeCustomer(ctx, c, customer); err != nil {
			return err
		}
		_, err := c.exec(ctx, `UPDATE customers SET retention_months = ? WHERE id = ?`, months, customer)
		return err
	})
	if err != nil {
		return fmt.Errorf("set retention of %s: %w", customer, err)
	}
	return nil
}

// AddHQKey records an HQ key of the customer: the credential HQ pulls the
// customer's regional index with. The index keeps only a hash of its secret.
func (s *Store) AddHQKey(ctx context.Context, customer, id, secretHash string, now time.Time) error {
	if err := checkID("hq key", id); err != nil {
		return fmt.Errorf("add hq key: %w", err)
	}
	if secretHash == "" {
		return fmt.Errorf("add hq key %s: empty secret hash", id)
	}
	return s.writeTx(ctx, customer, func(c conn) error {
		if _, err := activeCustomer(ctx, c, customer); err != nil {
			return fmt.Errorf("add hq key %s: %w", id, err)
		}
		n, err := execCount(ctx, c, `INSERT INTO hq_keys (id, customer, secret_hash, created_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, id, customer, secretHash, micros(now))
		if err != nil {
			return fmt.Errorf("add hq key %s: %w", id, err)
		}
		if n == 0 {
			return fmt.Errorf("add hq key %s: %w", id, ErrHQKeyExists)
		}
		return nil
	})
}

// RevokeHQKey revokes one of the customer's HQ keys. Revoking a revoked key
// is harmless; a key of another customer is ErrHQKeyUnknown.
func (s *Store) RevokeHQKey(ctx context.Context, customer, id string, now time.Time) error {
	err := s.writeTx(ctx, customer, func(c conn) error {
		var revoked sql.NullInt64
		err := c.queryRow(ctx, `SELECT revoked_at FROM hq_keys WHERE id = ? AND customer = ?`, id, customer).Scan(&revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrHQKeyUnknown
		case err != nil:
			return err
		case revoked.Valid:
			return nil
		}
		_, err = c.exec(ctx, `UPDATE hq_keys SET revoked_at = ? WHERE id = ?`, micros(now), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke hq key %s of %s: %w", id, customer, err)
	}
	return nil
}

// CheckHQKey returns the customer of the HQ key id whose secret hashes to
// secretHash. An unknown id, a wrong secret and a revoked key all get the
// same ErrHQKeyUnknown, so the answer confirms nothing about a guessed id;
// a key of an erased customer gets ErrCustomerErased (EraseCustomer deletes
// the keys, so in practice such a key is unknown).
func (s *Store) CheckHQKey(ctx context.Context, id, secretHash string) (customer string, err error) {
	var hash string
	var revoked, erased sql.NullInt64
	err = s.read().queryRow(ctx, `SELECT k.customer, k.secret_hash, k.revoked_at, c.erased_at
		FROM hq_keys k JOIN customers c ON c.id = k.customer WHERE k.id = ?`, id).
		Scan(&customer, &hash, &revoked, &erased)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("check hq key %s: %w", id, ErrHQKeyUnknown)
	case err != nil:
		return "", fmt.Errorf("check hq key %s: %w", id, err)
	case subtle.ConstantTimeCompare([]byte(hash), []byte(secretHash)) != 1 || revoked.Valid:
		return "", fmt.Errorf("check hq key %s: %w", id, ErrHQKeyUnknown)
	case erased.Valid:
		return "", fmt.Errorf("check hq key %s: %w", id, ErrCustomerErased)
	}
	return customer, nil
}

// PublisherState returns the customer's stored regional.Publisher state, or
// nil when there is none yet.
func (s *Store) PublisherState(ctx context.Context, customer string) ([]byte, error) {
	state, err := publisherStateIn(ctx, s.read(), customer)
	if err != nil {
		return nil, fmt.Errorf("publisher state of %s: %w", customer, err)
	}
	return state, nil
}

func publisherStateIn(ctx context.Context, c conn, customer string) ([]byte, error) {
	var state string
	err := c.queryRow(ctx, `SELECT state FROM publisher_state WHERE customer = ?`, customer).Scan(&state)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return []byte(state), nil
}

// SavePublisherState replaces the customer's regional.Publisher state. It
// must succeed before a cell the state records leaves the index.
func (s *Store) SavePublisherState(ctx context.Context, customer string, state []byte, now time.Time) error {
	if len(state) == 0 {
		return fmt.Errorf("save publisher state of %s: empty state", customer)
	}
	err := s.writeTx(ctx, customer, func(c conn) error {
		if _, err := activeCustomer(ctx, c, customer); err != nil {
			return err
		}
		_, err := c.exec(ctx, `INSERT INTO publisher_state (customer, state, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (customer) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
			customer, string(state), micros(now))
		return err
	})
	if err != nil {
		return fmt.Errorf("save publisher state of %s: %w", customer, err)
	}
	return nil
}
