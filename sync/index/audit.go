package index

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AuditEntry is one line of the audit trail.
type AuditEntry struct {
	ID       int64     `json:"id"`
	Customer string    `json:"customer"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Detail   string    `json:"detail"`
}

// Audit appends an entry to the customer's audit trail ("" for entries about
// no customer). The trail is append-only: nothing in this package changes or
// deletes an entry, not even EraseCustomer, and the schema's triggers refuse
// it to anyone else.
func (s *Store) Audit(ctx context.Context, customer, actor, action, detail string, now time.Time) error {
	if actor == "" || action == "" {
		return fmt.Errorf("audit %s: actor and action are required", customer)
	}
	err := s.writeTx(ctx, "", func(c conn) error {
		_, err := c.exec(ctx, `INSERT INTO audit_log (customer, at, actor, action, detail) VALUES (?, ?, ?, ?, ?)`,
			customer, micros(now), actor, action, detail)
		return err
	})
	if err != nil {
		return fmt.Errorf("audit %s %s: %w", customer, action, err)
	}
	return nil
}

// AuditLog returns the customer's most recent audit entries, newest first; at
// most limit of them, or all with limit ≤ 0.
func (s *Store) AuditLog(ctx context.Context, customer string, limit int) ([]AuditEntry, error) {
	q := `SELECT id, customer, at, actor, action, detail FROM audit_log WHERE customer = ? ORDER BY id DESC`
	args := []any{customer}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.read().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", customer, err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("audit log %s: %w", customer, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit log %s: %w", customer, err)
	}
	return out, nil
}

func scanAudit(rows *sql.Rows) (AuditEntry, error) {
	var e AuditEntry
	var at int64
	err := rows.Scan(&e.ID, &e.Customer, &at, &e.Actor, &e.Action, &e.Detail)
	e.At = fromMicros(at)
	return e, err
}
