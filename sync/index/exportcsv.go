package index

import (
	"archive/zip"
	"context"
	"database/sql"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// csvTable is one file of the CSV export: a header and a query whose
// columns, in order, are written as the rows.
type csvTable struct {
	file   string
	header []string
	query  string
	// times are the indexes of columns holding BIGINT microseconds (or
	// NULL), written as RFC 3339 UTC.
	times []int
}

// csvTables are the export's files, each the same rows as the JSON export's
// array of the same name. Secret hashes are left out, as there.
var csvTables = []csvTable{
	{"customer.csv", []string{"id", "name", "retention_months", "erased_at"},
		`SELECT id, name, retention_months, erased_at FROM customers WHERE id = ?`, []int{3}},
	{"releases.csv", []string{"site", "region", "period", "colour", "suppressed", "count", "version", "epsilon", "sensitivity", "received_at"},
		`SELECT site, region, period, colour, CASE WHEN suppressed THEN 'true' ELSE 'false' END, count, version, epsilon, sensitivity, received_at
		FROM releases WHERE customer = ? ORDER BY site, period, colour`, []int{9}},
	{"ledger.csv", []string{"site", "year", "releases", "epsilon", "updated_at"},
		`SELECT site, year, releases, epsilon, updated_at FROM ledger WHERE customer = ? ORDER BY site, year`, []int{4}},
	{"erased_sites.csv", []string{"site", "erased_at"},
		`SELECT site, erased_at FROM erased_sites WHERE customer = ? ORDER BY site`, []int{1}},
	{"enrol_tokens.csv", []string{"token_id", "expires_at", "used_at"},
		`SELECT token_id, expires_at, used_at FROM enrol_tokens WHERE customer = ? ORDER BY token_id`, []int{1, 2}},
	{"hq_keys.csv", []string{"id", "created_at", "revoked_at"},
		`SELECT id, created_at, revoked_at FROM hq_keys WHERE customer = ? ORDER BY id`, []int{1, 2}},
	{"publisher_state.csv", []string{"updated_at", "state"},
		`SELECT updated_at, state FROM publisher_state WHERE customer = ?`, []int{0}},
	{"audit_log.csv", []string{"id", "customer", "at", "actor", "action", "detail"},
		`SELECT id, customer, at, actor, action, detail FROM audit_log WHERE customer = ? ORDER BY id`, []int{2}},
}

// ExportCSV writes the same data as Export, read from one snapshot, as a
// ZIP archive of CSV files, one per table (customer.csv, releases.csv,
// ledger.csv, erased_sites.csv, enrol_tokens.csv, hq_keys.csv,
// publisher_state.csv, audit_log.csv), each with a header row. Times are
// RFC 3339 in UTC; an empty cell is NULL.
func (s *Store) ExportCSV(ctx context.Context, customer string, w io.Writer) error {
	if err := s.exportCSV(ctx, customer, w); err != nil {
		return fmt.Errorf("export %s as csv: %w", customer, err)
	}
	return nil
}

func (s *Store) exportCSV(ctx context.Context, customer string, w io.Writer) error {
	tx, err := s.db.BeginTx(ctx, s.d.snapshot)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	c := conn{q: tx, d: s.d}
	var one int
	err = c.queryRow(ctx, `SELECT 1 FROM customers WHERE id = ?`, customer).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q", ErrCustomerUnknown, customer)
	} else if err != nil {
		return err
	}
	zw := zip.NewWriter(w)
	for _, t := range csvTables {
		f, err := zw.Create(t.file)
		if err != nil {
			return err
		}
		if err := t.write(ctx, c, customer, f); err != nil {
			return fmt.Errorf("%s: %w", t.file, err)
		}
	}
	return zw.Close()
}

func (t csvTable) write(ctx context.Context, c conn, customer string, w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(t.header); err != nil {
		return err
	}
	rows, err := c.query(ctx, t.query, customer)
	if err != nil {
		return err
	}
	defer rows.Close()
	vals := make([]sql.NullString, len(t.header))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	rec := make([]string, len(vals))
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for i, v := range vals {
			rec[i] = v.String // "" for NULL
		}
		for _, i := range t.times {
			if !vals[i].Valid {
				continue
			}
			us, err := strconv.ParseInt(vals[i].String, 10, 64)
			if err != nil {
				return fmt.Errorf("column %s: %w", t.header[i], err)
			}
			rec[i] = fromMicros(us).Format(time.RFC3339Nano)
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}
