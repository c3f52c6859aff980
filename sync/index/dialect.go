package index

import (
	"context"
	"database/sql"
	"hash/fnv"
	"strconv"
	"strings"
)

// dialect is everything that differs between the two backends. The SQL itself
// is written once, with ? placeholders and {{name}} type macros, and kept to
// what both SQLite and PostgreSQL accept.
type dialect struct {
	name string

	// types expands the {{name}} macros of the schema.
	types map[string]string

	// dollar says placeholders are $1, $2, … instead of ?.
	dollar bool

	// lockCustomer, when set, is run first in every transaction that writes a
	// customer's data, with customerLockKey(customer) as its argument, so that
	// an erasure and an upload of the same customer cannot interleave
	// (PostgreSQL runs transactions concurrently; SQLite's writers are
	// serialised by Store.wmu and BEGIN IMMEDIATE instead).
	lockCustomer string

	// lockMigrations, when set, is run first in the migration transaction so
	// that two processes opening one database migrate it once.
	lockMigrations string

	// snapshot are the options of a read-only transaction that sees one
	// consistent state (Export).
	snapshot *sql.TxOptions

	// maxParams bounds the placeholders of one statement.
	maxParams int
}

var sqliteDialect = &dialect{
	name: "sqlite",
	types: map[string]string{
		// Binary collation is SQLite's default: byte order, as in Go.
		"key":    "TEXT",
		"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", // AUTOINCREMENT: ids are never reused
		// The table is its primary key's b-tree: a lookup by key reads every
		// column there, with no second b-tree to keep, and the planner never
		// prefers a secondary index that covers the columns but not the key.
		"clustered": "WITHOUT ROWID",
	},
	snapshot:  &sql.TxOptions{ReadOnly: true}, // a deferred BEGIN in WAL mode reads one snapshot
	maxParams: 32766,
}

var postgresDialect = &dialect{
	name:   "postgres",
	dollar: true,
	types: map[string]string{
		// Keys sort and compare bytewise whatever the database's locale is, so
		// that period ranges and the order of results match SQLite's.
		"key":       `TEXT COLLATE "C"`,
		"serial":    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		"clustered": "",
	},
	lockCustomer:   "SELECT pg_advisory_xact_lock(?)", // bigint key: never equal to a two-int key
	lockMigrations: "SELECT pg_advisory_xact_lock(7300, 0)",
	snapshot:       &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead},
	maxParams:      65535,
}

// customerLockKey maps a customer to an advisory lock key. Two customers
// sharing a key only wait for each other.
func customerLockKey(customer string) int64 {
	h := fnv.New64a()
	h.Write([]byte("pulsegate/index/customer\x00" + customer))
	return int64(h.Sum64())
}

// expand replaces the {{name}} macros of a schema statement.
func (d *dialect) expand(stmt string) string {
	for k, v := range d.types {
		stmt = strings.ReplaceAll(stmt, "{{"+k+"}}", v)
	}
	return stmt
}

// rebind turns the ? placeholders of query into the dialect's. None of the
// package's SQL has a ? inside a string literal.
func (d *dialect) rebind(query string) string {
	if !d.dollar || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + len(query)/4)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// conn binds a querier to the dialect, so callers write ? everywhere.
type conn struct {
	q querier
	d *dialect
}

func (c conn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return c.q.ExecContext(ctx, c.d.rebind(query), args...)
}

func (c conn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return c.q.QueryContext(ctx, c.d.rebind(query), args...)
}

func (c conn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return c.q.QueryRowContext(ctx, c.d.rebind(query), args...)
}

// placeholders returns "(?, ?, …), (?, …)": rows groups of cols placeholders.
func placeholders(rows, cols int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(one+", ", rows), ", ")
}
