package index

import (
	"context"
	"fmt"
	"time"
)

// migration is one step of the schema. Statements in common run on both
// backends (after {{macro}} expansion); the others only on theirs.
type migration struct {
	version  int
	common   []string
	sqlite   []string
	postgres []string
}

// migrations are applied in order, each once, in one transaction per step,
// and recorded in schema_migrations. Never edit a released step: add one.
//
// Times are BIGINT microseconds since the Unix epoch (UTC) on both backends,
// so no driver's time conversion is involved.
var migrations = []migration{{
	version: 1,
	common: []string{
		`CREATE TABLE customers (
			id               {{key}} PRIMARY KEY,
			name             TEXT NOT NULL,
			retention_months INTEGER NOT NULL CHECK (retention_months > 0),
			erased_at        BIGINT
		)`,
		`CREATE TABLE enrol_tokens (
			token_id    {{key}} PRIMARY KEY,
			customer    {{key}} NOT NULL REFERENCES customers (id),
			secret_hash TEXT NOT NULL,
			expires_at  BIGINT NOT NULL,
			used_at     BIGINT
		)`,
		`CREATE INDEX enrol_tokens_customer ON enrol_tokens (customer)`,
		`CREATE TABLE releases (
			customer    {{key}} NOT NULL REFERENCES customers (id),
			site        {{key}} NOT NULL,
			period      {{key}} NOT NULL,
			colour      {{key}} NOT NULL,
			region      {{key}} NOT NULL,
			period_kind {{key}} NOT NULL,
			period_end  BIGINT NOT NULL,
			suppressed  BOOLEAN NOT NULL,
			count       BIGINT NOT NULL,
			version     BIGINT NOT NULL,
			epsilon     TEXT NOT NULL,
			sensitivity BIGINT NOT NULL,
			received_at BIGINT NOT NULL,
			PRIMARY KEY (customer, site, period, colour)
		) {{clustered}}`,
		// HQ's query: one customer's region over a range of periods of one
		// kind, in (period, site, colour) order, answered from this index
		// alone (it covers every column the query reads), without a lookup
		// into the table per row.
		`CREATE INDEX releases_region ON releases (customer, region, period_kind, period, site, colour,
			suppressed, count, version, epsilon, sensitivity)`,
		`CREATE TABLE ledger (
			customer   {{key}} NOT NULL REFERENCES customers (id),
			site       {{key}} NOT NULL,
			year       INTEGER NOT NULL,
			releases   INTEGER NOT NULL,
			epsilon    TEXT NOT NULL,
			updated_at BIGINT NOT NULL,
			PRIMARY KEY (customer, site, year)
		) {{clustered}}`,
		`CREATE TABLE erased_sites (
			customer  {{key}} NOT NULL REFERENCES customers (id),
			site      {{key}} NOT NULL,
			erased_at BIGINT NOT NULL,
			PRIMARY KEY (customer, site)
		)`,
		// No foreign key to customers: the trail outlives a customer's erasure.
		`CREATE TABLE audit_log (
			id       {{serial}},
			customer {{key}} NOT NULL,
			at       BIGINT NOT NULL,
			actor    TEXT NOT NULL,
			action   TEXT NOT NULL,
			detail   TEXT NOT NULL
		)`,
		`CREATE INDEX audit_log_customer ON audit_log (customer, id)`,
	},
	// The package never changes or removes an audit entry; the triggers make
	// the database refuse it too, whoever asks.
	sqlite: []string{
		`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
		BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
		`CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
		BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
	},
	postgres: []string{
		`CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'audit_log is append-only';
		END
		$$`,
		`CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
		FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()`,
		`CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
		FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()`,
		// Roles other than the owner (a read-only HQ role, say) get no way to
		// change the trail either.
		`REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC`,
	},
}, {
	version: 2,
	common: []string{
		// HQ's keys: one customer may hold several; revoked keys are kept
		// (revoked_at set) so an id is never handed out twice.
		`CREATE TABLE hq_keys (
			id          {{key}} PRIMARY KEY,
			customer    {{key}} NOT NULL REFERENCES customers (id),
			secret_hash TEXT NOT NULL,
			created_at  BIGINT NOT NULL,
			revoked_at  BIGINT
		)`,
		`CREATE INDEX hq_keys_customer ON hq_keys (customer)`,
		// The customer's regional.Publisher: what has been published, so that
		// no later cell can be differenced against it (sync/regional).
		`CREATE TABLE publisher_state (
			customer   {{key}} PRIMARY KEY REFERENCES customers (id),
			state      TEXT NOT NULL,
			updated_at BIGINT NOT NULL
		)`,
	},
}}

// SchemaVersion is the schema version this package creates and understands:
// the version of the last migration.
const SchemaVersion = 2

// migrate brings the schema up to SchemaVersion. It refuses a database
// written by a newer version of the package.
func (s *Store) migrate(ctx context.Context) error {
	return s.writeTx(ctx, "", func(c conn) error {
		if s.d.lockMigrations != "" {
			if _, err := c.exec(ctx, s.d.lockMigrations); err != nil {
				return fmt.Errorf("lock migrations: %w", err)
			}
		}
		if _, err := c.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at BIGINT NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var current int
		if err := c.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > SchemaVersion {
			return fmt.Errorf("schema version %d is newer than this program's %d", current, SchemaVersion)
		}
		for _, m := range migrations {
			if m.version <= current {
				continue
			}
			stmts := m.common
			if s.d == postgresDialect {
				stmts = append(stmts[:len(stmts):len(stmts)], m.postgres...)
			} else {
				stmts = append(stmts[:len(stmts):len(stmts)], m.sqlite...)
			}
			for _, stmt := range stmts {
				if _, err := c.exec(ctx, s.d.expand(stmt)); err != nil {
					return fmt.Errorf("migration %d: %w", m.version, err)
				}
			}
			if _, err := c.exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.version, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("record migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}
