// Package index is the central index's storage: the anonymised releases that
// customers' clusters upload (sync/wire), their privacy ledgers, the
// customers and their one-time enrolment tokens, erasure and retention, and
// an append-only audit log.
//
// One Store type runs on SQLite (the default, a single file) or PostgreSQL,
// both through database/sql with a small dialect layer. Every method that
// touches a customer's data takes the customer and filters by it. See
// DESIGN.md for the schema and the reasoning.
package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
)

// DefaultRetentionMonths is how long a customer's releases are kept after
// their period has ended, unless the customer says otherwise.
const DefaultRetentionMonths = 25

// Errors callers may want to tell apart.
var (
	ErrCustomerUnknown = errors.New("unknown customer")
	ErrCustomerExists  = errors.New("customer exists")
	ErrCustomerErased  = errors.New("customer erased")
	ErrTokenExists     = errors.New("enrolment token exists")
	ErrTokenUnknown    = errors.New("unknown enrolment token")
	ErrTokenExpired    = errors.New("enrolment token expired")
	ErrTokenUsed       = errors.New("enrolment token already used")
	ErrHQKeyExists     = errors.New("hq key exists")
	ErrHQKeyUnknown    = errors.New("unknown or revoked hq key")
	ErrBadPeriod       = errors.New("bad period")
	ErrCorrupt         = errors.New("database file is corrupt or not a database")
)

// Store is the index's storage on either backend. It is safe for concurrent
// use.
type Store struct {
	db *sql.DB
	d  *dialect

	// wmu serialises SQLite's writers in the process, so that they queue here
	// instead of polling SQLite's busy handler. Unused for PostgreSQL.
	wmu sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

// OpenSQLite opens (creating it if needed) the SQLite database at path, in
// WAL mode with a busy timeout and foreign keys on, checks that the file is
// sound, and brings its schema up to date.
func OpenSQLite(path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open sqlite %q: path must be non-empty and free of '?' and '#'", path)
	}
	// _txlock=immediate: a write transaction takes the write lock when it
	// begins, so it never fails half-way upgrading a read lock. Read-only
	// transactions still begin deferred.
	dsn := path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	connector, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	db.SetMaxIdleConns(max(4, runtime.GOMAXPROCS(0)))
	s := &Store{db: db, d: sqliteDialect}
	if err := s.checkSQLite(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return s, nil
}

// checkSQLite reads the whole file once (PRAGMA quick_check), so that garbage
// or a damaged file is refused at open, not at some later query. It costs
// about 0.25 s per 75 MB (half a million releases) on a small VM.
func (s *Store) checkSQLite(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return sqliteErr(err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return sqliteErr(err)
		}
		if line != "ok" && len(problems) < 3 {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return sqliteErr(err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrCorrupt, strings.Join(problems, "; "))
	}
	return nil
}

// sqliteErr marks SQLite's "not a database" and "corrupt" errors as
// ErrCorrupt.
func sqliteErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		const corrupt, notADB = 11, 26 // SQLITE_CORRUPT, SQLITE_NOTADB: primary codes, stable forever
		switch se.Code() & 0xff {
		case corrupt, notADB:
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return err
}

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL or
// key=value string, as libpq takes) and brings its schema up to date.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message does not repeat the DSN, which may hold a password.
		return nil, fmt.Errorf("open postgres: parse dsn: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres %s/%s: %w", cfg.Host, cfg.Database, err)
	}
	s := &Store{db: db, d: postgresDialect}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres %s/%s: %w", cfg.Host, cfg.Database, err)
	}
	return s, nil
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

// Backend names the backend: "sqlite" or "postgres".
func (s *Store) Backend() string { return s.d.name }

// read binds the pool to the dialect for statements outside a transaction.
func (s *Store) read() conn { return conn{q: s.db, d: s.d} }

// writeTx runs fn in one write transaction, committed if fn returns nil. With
// a customer, the transaction first takes that customer's lock (see
// dialect.lockCustomer).
func (s *Store) writeTx(ctx context.Context, customer string, fn func(c conn) error) error {
	if s.d == sqliteDialect {
		s.wmu.Lock()
		defer s.wmu.Unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	c := conn{q: tx, d: s.d}
	if customer != "" && s.d.lockCustomer != "" {
		if _, err := c.exec(ctx, s.d.lockCustomer, customerLockKey(customer)); err != nil {
			return fmt.Errorf("lock customer: %w", err)
		}
	}
	if err := fn(c); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// activeCustomer returns the customer's retention, or ErrCustomerUnknown or
// ErrCustomerErased.
func activeCustomer(ctx context.Context, c conn, customer string) (retentionMonths int, err error) {
	var erased sql.NullInt64
	err = c.queryRow(ctx, `SELECT retention_months, erased_at FROM customers WHERE id = ?`, customer).
		Scan(&retentionMonths, &erased)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("%w: %q", ErrCustomerUnknown, customer)
	case err != nil:
		return 0, fmt.Errorf("read customer %q: %w", customer, err)
	case erased.Valid:
		return 0, fmt.Errorf("%w: %q", ErrCustomerErased, customer)
	}
	return retentionMonths, nil
}

// micros and fromMicros convert the schema's BIGINT times.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
