package index

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// EraseSite deletes the customer's releases and ledger entries of a site and
// records the site as erased, so that later uploads of it are refused. It
// returns the number of rows deleted. Erasing a site twice is harmless.
func (s *Store) EraseSite(ctx context.Context, customer, site string, now time.Time) (int, error) {
	if site == "" {
		return 0, fmt.Errorf("erase site of %s: empty site", customer)
	}
	var deleted int
	err := s.writeTx(ctx, customer, func(c conn) error {
		deleted = 0
		if _, err := activeCustomer(ctx, c, customer); err != nil {
			return err
		}
		for _, table := range []string{"releases", "ledger"} {
			n, err := execCount(ctx, c, `DELETE FROM `+table+` WHERE customer = ? AND site = ?`, customer, site)
			if err != nil {
				return fmt.Errorf("delete %s: %w", table, err)
			}
			deleted += n
		}
		if _, err := c.exec(ctx, `INSERT INTO erased_sites (customer, site, erased_at) VALUES (?, ?, ?)
			ON CONFLICT (customer, site) DO NOTHING`, customer, site, micros(now)); err != nil {
			return fmt.Errorf("record erasure: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("erase site %s of %s: %w", site, customer, err)
	}
	return deleted, nil
}

// EraseCustomer deletes everything held for the customer except its audit
// trail (releases, ledger, erased sites, enrolment tokens, HQ keys and the
// regional publisher's state) and leaves a tombstone, so that its clusters' later uploads and its
// tokens are refused (ErrCustomerErased) and its id is not handed out again.
// It returns the number of releases and ledger entries deleted. Erasing an
// erased customer deletes nothing and is not an error.
func (s *Store) EraseCustomer(ctx context.Context, customer string, now time.Time) (int, error) {
	var deleted int
	err := s.writeTx(ctx, customer, func(c conn) error {
		deleted = 0
		if _, err := activeCustomer(ctx, c, customer); errors.Is(err, ErrCustomerErased) {
			return nil
		} else if err != nil {
			return err
		}
		for _, table := range []string{"releases", "ledger", "erased_sites", "enrol_tokens", "hq_keys", "publisher_state"} {
			n, err := execCount(ctx, c, `DELETE FROM `+table+` WHERE customer = ?`, customer)
			if err != nil {
				return fmt.Errorf("delete %s: %w", table, err)
			}
			if table == "releases" || table == "ledger" {
				deleted += n
			}
		}
		if _, err := c.exec(ctx, `UPDATE customers SET name = '', erased_at = ? WHERE id = ?`,
			micros(now), customer); err != nil {
			return fmt.Errorf("leave tombstone: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("erase customer %s: %w", customer, err)
	}
	return deleted, nil
}

// ApplyRetention deletes, customer by customer, the releases whose period
// ended more than the customer's retention months before now, and the ledger
// years that ended before then. It returns the number of rows deleted; after
// an error it has still deleted what it reports. It is idempotent.
func (s *Store) ApplyRetention(ctx context.Context, now time.Time) (deleted int, err error) {
	type customer struct {
		id     string
		months int
	}
	rows, err := s.read().query(ctx, `SELECT id, retention_months FROM customers WHERE erased_at IS NULL ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("apply retention: %w", err)
	}
	var customers []customer
	for rows.Next() {
		var c customer
		if err := rows.Scan(&c.id, &c.months); err != nil {
			rows.Close()
			return 0, fmt.Errorf("apply retention: %w", err)
		}
		customers = append(customers, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("apply retention: %w", err)
	}

	for _, cu := range customers {
		cutoff := now.UTC().AddDate(0, -cu.months, 0)
		// A ledger year ends at 1 January of the next year.
		lastYear := cutoff.Year() - 1
		if cutoff.Equal(time.Date(cutoff.Year(), 1, 1, 0, 0, 0, 0, time.UTC)) {
			lastYear--
		}
		err := s.writeTx(ctx, cu.id, func(c conn) error {
			n, err := execCount(ctx, c, `DELETE FROM releases WHERE customer = ? AND period_end < ?`, cu.id, micros(cutoff))
			if err != nil {
				return fmt.Errorf("delete releases: %w", err)
			}
			m, err := execCount(ctx, c, `DELETE FROM ledger WHERE customer = ? AND year <= ?`, cu.id, lastYear)
			if err != nil {
				return fmt.Errorf("delete ledger: %w", err)
			}
			deleted += n + m
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("apply retention to %s: %w", cu.id, err)
		}
	}
	return deleted, nil
}

func execCount(ctx context.Context, c conn, query string, args ...any) (int, error) {
	res, err := c.exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// The export document. Field names are part of the customer's copy of their
// data: change them only with exportFormatVersion.
const exportFormatVersion = 2 // 2 added hq_keys and publisher_state

type exportCustomer struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	RetentionMonths int        `json:"retention_months"`
	ErasedAt        *time.Time `json:"erased_at,omitempty"`
}

type exportRelease struct {
	Site        string    `json:"site"`
	Region      string    `json:"region"`
	Period      string    `json:"period"`
	Colour      string    `json:"colour"`
	Suppressed  bool      `json:"suppressed"`
	Count       int64     `json:"count"`
	Version     uint64    `json:"version"`
	Epsilon     string    `json:"epsilon"`
	Sensitivity uint64    `json:"sensitivity"`
	ReceivedAt  time.Time `json:"received_at"`
}

type exportSpend struct {
	Site      string    `json:"site"`
	Year      int       `json:"year"`
	Releases  int       `json:"releases"`
	Epsilon   string    `json:"epsilon"`
	UpdatedAt time.Time `json:"updated_at"`
}

type exportErasedSite struct {
	Site     string    `json:"site"`
	ErasedAt time.Time `json:"erased_at"`
}

// exportToken leaves out the secret's hash: it is a credential, not data.
type exportToken struct {
	TokenID   string     `json:"token_id"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
}

// exportHQKey leaves out the secret's hash, as exportToken does.
type exportHQKey struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Export writes everything the index holds for the customer as one JSON
// document: the customer, its releases, ledger, erased sites, enrolment
// tokens and HQ keys (without secrets), the regional publisher's state
// (which site sets were published, as JSON, or null) and audit trail, read from one snapshot. Rows are
// streamed, so a large customer does not have to fit in memory.
func (s *Store) Export(ctx context.Context, customer string, w io.Writer) error {
	if err := s.export(ctx, customer, w); err != nil {
		return fmt.Errorf("export %s: %w", customer, err)
	}
	return nil
}

func (s *Store) export(ctx context.Context, customer string, w io.Writer) error {
	tx, err := s.db.BeginTx(ctx, s.d.snapshot)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	c := conn{q: tx, d: s.d}

	var cu exportCustomer
	var erased sql.NullInt64
	err = c.queryRow(ctx, `SELECT id, name, retention_months, erased_at FROM customers WHERE id = ?`, customer).
		Scan(&cu.ID, &cu.Name, &cu.RetentionMonths, &erased)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q", ErrCustomerUnknown, customer)
	} else if err != nil {
		return err
	}
	if erased.Valid {
		t := fromMicros(erased.Int64)
		cu.ErasedAt = &t
	}

	bw := bufio.NewWriterSize(w, 64<<10)
	e := &jsonWriter{w: bw}
	e.raw(`{"format":"pulsegate-index-export","format_version":`)
	e.value(exportFormatVersion)
	e.raw(`,"customer":`)
	e.value(cu)

	e.array(ctx, c, "releases", `SELECT site, region, period, colour, suppressed, count, version, epsilon, sensitivity, received_at
		FROM releases WHERE customer = ? ORDER BY site, period, colour`, customer,
		func(rows *sql.Rows) (any, error) {
			var r exportRelease
			var version, sens, received int64
			err := rows.Scan(&r.Site, &r.Region, &r.Period, &r.Colour, &r.Suppressed, &r.Count, &version, &r.Epsilon, &sens, &received)
			r.Version, r.Sensitivity, r.ReceivedAt = uint64(version), uint64(sens), fromMicros(received)
			return r, err
		})
	e.array(ctx, c, "ledger", `SELECT site, year, releases, epsilon, updated_at FROM ledger
		WHERE customer = ? ORDER BY site, year`, customer,
		func(rows *sql.Rows) (any, error) {
			var l exportSpend
			var updated int64
			err := rows.Scan(&l.Site, &l.Year, &l.Releases, &l.Epsilon, &updated)
			l.UpdatedAt = fromMicros(updated)
			return l, err
		})
	e.array(ctx, c, "erased_sites", `SELECT site, erased_at FROM erased_sites WHERE customer = ? ORDER BY site`, customer,
		func(rows *sql.Rows) (any, error) {
			var es exportErasedSite
			var at int64
			err := rows.Scan(&es.Site, &at)
			es.ErasedAt = fromMicros(at)
			return es, err
		})
	e.array(ctx, c, "enrol_tokens", `SELECT token_id, expires_at, used_at FROM enrol_tokens
		WHERE customer = ? ORDER BY token_id`, customer,
		func(rows *sql.Rows) (any, error) {
			var t exportToken
			var expires int64
			var used sql.NullInt64
			err := rows.Scan(&t.TokenID, &expires, &used)
			t.ExpiresAt = fromMicros(expires)
			if used.Valid {
				u := fromMicros(used.Int64)
				t.UsedAt = &u
			}
			return t, err
		})
	e.array(ctx, c, "hq_keys", `SELECT id, created_at, revoked_at FROM hq_keys
		WHERE customer = ? ORDER BY id`, customer,
		func(rows *sql.Rows) (any, error) {
			var k exportHQKey
			var created int64
			var revoked sql.NullInt64
			err := rows.Scan(&k.ID, &created, &revoked)
			k.CreatedAt = fromMicros(created)
			if revoked.Valid {
				r := fromMicros(revoked.Int64)
				k.RevokedAt = &r
			}
			return k, err
		})
	if e.err == nil {
		state, err := publisherStateIn(ctx, c, customer)
		if err != nil {
			return err
		}
		e.raw(`,"publisher_state":`)
		if state == nil || !json.Valid(state) {
			e.raw("null")
		} else {
			e.raw(string(state))
		}
	}
	e.array(ctx, c, "audit_log", `SELECT id, customer, at, actor, action, detail FROM audit_log
		WHERE customer = ? ORDER BY id`, customer,
		func(rows *sql.Rows) (any, error) { return scanAudit(rows) })
	e.raw("}\n")
	if e.err != nil {
		return e.err
	}
	return bw.Flush()
}

// jsonWriter writes one JSON document piece by piece and keeps the first
// error.
type jsonWriter struct {
	w   *bufio.Writer
	err error
}

func (j *jsonWriter) raw(s string) {
	if j.err == nil {
		_, j.err = j.w.WriteString(s)
	}
}

func (j *jsonWriter) value(v any) {
	if j.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		j.err = err
		return
	}
	_, j.err = j.w.Write(b)
}

// array writes `,"name":[…]` with one element per row of the query.
func (j *jsonWriter) array(ctx context.Context, c conn, name, query, customer string, scan func(*sql.Rows) (any, error)) {
	if j.err != nil {
		return
	}
	rows, err := c.query(ctx, query, customer)
	if err != nil {
		j.err = fmt.Errorf("read %s: %w", name, err)
		return
	}
	defer rows.Close()
	j.raw(`,"` + name + `":[`)
	for first := true; rows.Next() && j.err == nil; first = false {
		v, err := scan(rows)
		if err != nil {
			j.err = fmt.Errorf("read %s: %w", name, err)
			return
		}
		if !first {
			j.raw(",")
		}
		j.value(v)
	}
	if err := rows.Err(); err != nil && j.err == nil {
		j.err = fmt.Errorf("read %s: %w", name, err)
	}
	j.raw("]")
}
