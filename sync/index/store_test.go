package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/sync/wire"
)

// TestStore runs the one suite against both backends.
func TestStore(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testStore(t, func(t *testing.T) *Store { return openSQLite(t) }) })
	t.Run("postgres", func(t *testing.T) {
		postgresDSN(t) // skips (or fails under CI) here, once, when there is no PostgreSQL
		testStore(t, func(t *testing.T) *Store { return openPostgres(t) })
	})
}

func testStore(t *testing.T, open func(t *testing.T) *Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) *Store)
	}{
		{"Schema", testSchema},
		{"Idempotent", testIdempotent},
		{"VersionOrder", testVersionOrder},
		{"Queries", testQueries},
		{"Invalid", testInvalid},
		{"Tenancy", testTenancy},
		{"Tokens", testTokens},
		{"EraseSite", testEraseSite},
		{"EraseCustomer", testEraseCustomer},
		{"Retention", testRetention},
		{"Export", testExport},
		{"Audit", testAudit},
		{"Concurrent", testConcurrent},
		{"HQKeys", testHQKeys},
		{"PublisherState", testPublisherState},
		{"CustomersAndRetention", testCustomersAndRetention},
		{"ExportCSV", testExportCSV},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

var (
	ctx = context.Background()
	t0  = time.Date(2026, 3, 15, 9, 0, 0, 0, time.UTC)
)

// Sites are 16 hex digits on the wire.
const (
	site1 = "00000000000000a1"
	site2 = "00000000000000b2"
	site3 = "00000000000000c3"
)

func rel(site, region, period, colour string, count int64, version uint64) wire.Release {
	return wire.Release{Site: site, Region: region, Period: period, Colour: colour,
		Count: count, Version: version, Epsilon: "0.5", Sensitivity: 1}
}

func batch(rels []wire.Release, ledger ...wire.Spend) *wire.Batch {
	return &wire.Batch{Version: wire.Version, BatchID: "test", Releases: rels, Ledger: ledger}
}

// sample is a batch over three sites, two regions, months and weeks, all at
// version v with counts that depend on v.
func sample(v uint64) *wire.Batch {
	var rels []wire.Release
	for i, site := range []string{site1, site2, site3} {
		region := "eu-west"
		if site == site3 {
			region = "eu-central"
		}
		for _, p := range []string{"2026-01", "2026-02", "2026-W05", "2026-W06"} {
			rels = append(rels,
				rel(site, region, p, "G", int64(10*i)+int64(v), v),
				rel(site, region, p, "R", int64(5*i)+int64(v), v))
		}
	}
	rels[3].Suppressed, rels[3].Count = true, 0
	return batch(rels,
		wire.Spend{Site: site1, Year: 2026, Releases: int(v) * 8, Epsilon: fmt.Sprintf("%d.5", v)},
		wire.Spend{Site: site2, Year: 2026, Releases: int(v) * 8, Epsilon: fmt.Sprintf("%d.5", v)},
		wire.Spend{Site: site3, Year: 2026, Releases: int(v) * 8, Epsilon: fmt.Sprintf("%d.5", v)},
	)
}

func mustCustomer(t *testing.T, s *Store, id string, retention int) {
	t.Helper()
	if err := s.CreateCustomer(ctx, id, "Customer "+id, retention); err != nil {
		t.Fatal(err)
	}
}

func mustUpsert(t *testing.T, s *Store, customer string, b *wire.Batch, now time.Time) UpsertStats {
	t.Helper()
	st, err := s.Upsert(ctx, customer, b, now)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// dump renders every row the index holds for a customer, every column, in a
// fixed order: two stores (or one store at two times) hold the same data iff
// their dumps are equal.
func dump(t *testing.T, s *Store, customer string) string {
	t.Helper()
	var b strings.Builder
	c := s.read()
	var name string
	var retention int
	var erased *int64
	if err := c.queryRow(ctx, `SELECT name, retention_months, erased_at FROM customers WHERE id = ?`, customer).
		Scan(&name, &retention, &erased); err != nil {
		t.Fatalf("dump customer: %v", err)
	}
	fmt.Fprintf(&b, "customer %s %q %d erased=%v\n", customer, name, retention, erased != nil)
	rows, err := c.query(ctx, `SELECT site, period, colour, region, period_kind, period_end, suppressed, count,
		version, epsilon, sensitivity, received_at FROM releases WHERE customer = ? ORDER BY site, period, colour`, customer)
	if err != nil {
		t.Fatalf("dump releases: %v", err)
	}
	for rows.Next() {
		var site, period, colour, region, kind, eps string
		var end, count, version, sens, received int64
		var sup bool
		if err := rows.Scan(&site, &period, &colour, &region, &kind, &end, &sup, &count, &version, &eps, &sens, &received); err != nil {
			t.Fatalf("dump releases: %v", err)
		}
		fmt.Fprintf(&b, "release %s %s %s %s %s %d %v %d v%d %s %d %d\n", site, period, colour, region, kind, end, sup, count, version, eps, sens, received)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	rows, err = c.query(ctx, `SELECT site, year, releases, epsilon, updated_at FROM ledger WHERE customer = ? ORDER BY site, year`, customer)
	if err != nil {
		t.Fatalf("dump ledger: %v", err)
	}
	for rows.Next() {
		var site, eps string
		var year, n int
		var updated int64
		if err := rows.Scan(&site, &year, &n, &eps, &updated); err != nil {
			t.Fatalf("dump ledger: %v", err)
		}
		fmt.Fprintf(&b, "ledger %s %d %d %s %d\n", site, year, n, eps, updated)
	}
	rows.Close()
	rows, err = c.query(ctx, `SELECT site, erased_at FROM erased_sites WHERE customer = ? ORDER BY site`, customer)
	if err != nil {
		t.Fatalf("dump erased: %v", err)
	}
	for rows.Next() {
		var site string
		var at int64
		if err := rows.Scan(&site, &at); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "erased %s %d\n", site, at)
	}
	rows.Close()
	rows, err = c.query(ctx, `SELECT token_id, secret_hash, expires_at, used_at FROM enrol_tokens WHERE customer = ? ORDER BY token_id`, customer)
	if err != nil {
		t.Fatalf("dump tokens: %v", err)
	}
	for rows.Next() {
		var id, hash string
		var expires int64
		var used *int64
		if err := rows.Scan(&id, &hash, &expires, &used); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "token %s %s %d used=%v\n", id, hash, expires, used != nil)
	}
	rows.Close()
	rows, err = c.query(ctx, `SELECT id, secret_hash, created_at, revoked_at FROM hq_keys WHERE customer = ? ORDER BY id`, customer)
	if err != nil {
		t.Fatalf("dump hq keys: %v", err)
	}
	for rows.Next() {
		var id, hash string
		var created int64
		var revoked *int64
		if err := rows.Scan(&id, &hash, &created, &revoked); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "hq-key %s %s %d revoked=%v\n", id, hash, created, revoked != nil)
	}
	rows.Close()
	rows, err = c.query(ctx, `SELECT state, updated_at FROM publisher_state WHERE customer = ?`, customer)
	if err != nil {
		t.Fatalf("dump publisher state: %v", err)
	}
	for rows.Next() {
		var state string
		var updated int64
		if err := rows.Scan(&state, &updated); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "publisher-state %s %d\n", state, updated)
	}
	rows.Close()
	entries, err := s.AuditLog(ctx, customer, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fmt.Fprintf(&b, "audit %+v\n", e)
	}
	return b.String()
}

func diffDumps(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: rows differ\n--- got\n%s--- want\n%s", what, got, want)
	}
}

func testSchema(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	if got := s.Backend(); got != "sqlite" && got != "postgres" {
		t.Errorf("Backend() = %q", got)
	}
	if got := migrations[len(migrations)-1].version; got != SchemaVersion {
		t.Errorf("last migration is %d, SchemaVersion %d", got, SchemaVersion)
	}
	// Opening an up-to-date database migrates nothing.
	if err := s.migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	var n, v int
	if err := s.read().queryRow(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) || v != SchemaVersion {
		t.Errorf("schema_migrations: %d rows, max %d; want %d, %d", n, v, len(migrations), SchemaVersion)
	}
	// Foreign keys are enforced (SQLite needs them switched on per connection).
	if _, err := s.read().exec(ctx, `INSERT INTO erased_sites (customer, site, erased_at) VALUES ('ghost', 'x', 0)`); err == nil {
		t.Error("a row of an unknown customer was accepted: foreign keys are off")
	}
	// A database from a newer program is refused, not scribbled on.
	if _, err := s.read().exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := s.migrate(ctx); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("migrate over a newer schema = %v, want a refusal", err)
	}
}

func testIdempotent(t *testing.T, open func(t *testing.T) *Store) {
	clean := func(b *wire.Batch, now time.Time) string {
		s := open(t)
		mustCustomer(t, s, "acme", 0)
		mustUpsert(t, s, "acme", b, now)
		return dump(t, s, "acme")
	}

	t.Run("same batch five times", func(t *testing.T) {
		s := open(t)
		mustCustomer(t, s, "acme", 0)
		b := sample(1)
		for i := range 5 {
			st := mustUpsert(t, s, "acme", b, t0.Add(time.Duration(i)*time.Hour))
			want := UpsertStats{Unchanged: len(b.Releases)}
			if i == 0 {
				want = UpsertStats{Inserted: len(b.Releases)}
			}
			if st != want {
				t.Errorf("send %d: stats %+v, want %+v", i+1, st, want)
			}
		}
		diffDumps(t, "five sends vs one", dump(t, s, "acme"), clean(b, t0))
	})

	t.Run("interleaved versions", func(t *testing.T) {
		s := open(t)
		mustCustomer(t, s, "acme", 0)
		// v3 first arrives at the fourth send; nothing after it may change a row.
		order := []uint64{2, 1, 2, 3, 1, 3, 2, 1, 3}
		var v3At time.Time
		for i, v := range order {
			now := t0.Add(time.Duration(i) * time.Minute)
			if v == 3 && v3At.IsZero() {
				v3At = now
			}
			mustUpsert(t, s, "acme", sample(v), now)
		}
		diffDumps(t, "interleaved vs newest once", dump(t, s, "acme"), clean(sample(3), v3At))
	})

	t.Run("versions shuffled within one batch", func(t *testing.T) {
		s := open(t)
		mustCustomer(t, s, "acme", 0)
		var rels []wire.Release
		var ledger []wire.Spend
		for _, v := range []uint64{1, 3, 2} {
			b := sample(v)
			rels = append(rels, b.Releases...)
			ledger = append(ledger, b.Ledger...)
		}
		st := mustUpsert(t, s, "acme", batch(rels, ledger...), t0)
		n := len(sample(1).Releases)
		if want := (UpsertStats{Inserted: n, Updated: n, Unchanged: n}); st != want {
			t.Errorf("stats %+v, want %+v", st, want)
		}
		diffDumps(t, "shuffled batch vs newest once", dump(t, s, "acme"), clean(sample(3), t0))
	})
}

func testVersionOrder(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	get := func() wire.Release {
		t.Helper()
		got, err := s.Releases(ctx, "acme", "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		all := []wire.Release{}
		for _, region := range []string{"north", "south"} {
			got, err = s.Releases(ctx, "acme", region, "", "")
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, got...)
		}
		if len(all) != 1 {
			t.Fatalf("%d releases, want 1: %+v", len(all), all)
		}
		return all[0]
	}
	steps := []struct {
		name string
		r    wire.Release
		want UpsertStats
		keep wire.Release
	}{
		{"first", rel(site1, "north", "2026-02", "G", 7, 5), UpsertStats{Inserted: 1}, rel(site1, "north", "2026-02", "G", 7, 5)},
		{"older", rel(site1, "north", "2026-02", "G", 99, 4), UpsertStats{Unchanged: 1}, rel(site1, "north", "2026-02", "G", 7, 5)},
		{"same version, other content", rel(site1, "north", "2026-02", "G", 98, 5), UpsertStats{Unchanged: 1}, rel(site1, "north", "2026-02", "G", 7, 5)},
		{"newer, moved region", rel(site1, "south", "2026-02", "G", 8, 6), UpsertStats{Updated: 1}, rel(site1, "south", "2026-02", "G", 8, 6)},
		{"much newer", rel(site1, "south", "2026-02", "G", 9, math.MaxInt64), UpsertStats{Updated: 1}, rel(site1, "south", "2026-02", "G", 9, math.MaxInt64)},
		{"older again", rel(site1, "north", "2026-02", "G", 1, 7), UpsertStats{Unchanged: 1}, rel(site1, "south", "2026-02", "G", 9, math.MaxInt64)},
	}
	for _, st := range steps {
		got := mustUpsert(t, s, "acme", batch([]wire.Release{st.r}), t0)
		if got != st.want {
			t.Errorf("%s: stats %+v, want %+v", st.name, got, st.want)
		}
		if r := get(); r != st.keep {
			t.Errorf("%s: index holds %+v, want %+v", st.name, r, st.keep)
		}
	}
}

func testQueries(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	var rels []wire.Release
	for _, p := range []string{"2025-11", "2025-12", "2026-01", "2026-02", "2025-W52", "2026-W01", "2026-W02"} {
		for _, site := range []string{site2, site1} {
			rels = append(rels, rel(site, "eu-west", p, "R", 1, 1), rel(site, "eu-west", p, "G", 2, 1))
		}
	}
	rels = append(rels, rel(site3, "us-east", "2026-01", "G", 3, 1), rel(site3, "ap-south", "2026-02", "G", 3, 1))
	mustUpsert(t, s, "acme", batch(rels,
		wire.Spend{Site: site2, Year: 2026, Releases: 4, Epsilon: "2"},
		wire.Spend{Site: site1, Year: 2026, Releases: 4, Epsilon: "2"},
		wire.Spend{Site: site1, Year: 2025, Releases: 8, Epsilon: "4"},
	), t0)

	keys := func(rs []wire.Release) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Period+"/"+r.Site[14:]+"/"+r.Colour)
		}
		return out
	}
	cases := []struct {
		region, from, to string
		want             []string
	}{
		{"eu-west", "2025-12", "2026-01", []string{"2025-12/a1/G", "2025-12/a1/R", "2025-12/b2/G", "2025-12/b2/R",
			"2026-01/a1/G", "2026-01/a1/R", "2026-01/b2/G", "2026-01/b2/R"}},
		{"eu-west", "2026-02", "", []string{"2026-02/a1/G", "2026-02/a1/R", "2026-02/b2/G", "2026-02/b2/R"}},
		{"eu-west", "", "2025-11", []string{"2025-11/a1/G", "2025-11/a1/R", "2025-11/b2/G", "2025-11/b2/R"}},
		{"eu-west", "2025-W52", "2026-W01", []string{"2025-W52/a1/G", "2025-W52/a1/R", "2025-W52/b2/G", "2025-W52/b2/R",
			"2026-W01/a1/G", "2026-W01/a1/R", "2026-W01/b2/G", "2026-W01/b2/R"}},
		{"eu-west", "2026-03", "2026-12", nil},
		{"us-east", "2026-01", "2026-01", []string{"2026-01/c3/G"}},
		{"nowhere", "", "", nil},
	}
	for _, c := range cases {
		got, err := s.Releases(ctx, "acme", c.region, c.from, c.to)
		if err != nil {
			t.Fatalf("Releases(%s, %q, %q): %v", c.region, c.from, c.to, err)
		}
		if !slices.Equal(keys(got), c.want) {
			t.Errorf("Releases(%s, %q, %q) = %v, want %v", c.region, c.from, c.to, keys(got), c.want)
		}
		for _, r := range got {
			if r.Region != c.region || r.Epsilon != "0.5" || r.Sensitivity != 1 || r.Version != 1 {
				t.Errorf("Releases(%s): release %+v lost a field", c.region, r)
			}
		}
	}
	all, err := s.Releases(ctx, "acme", "eu-west", "", "")
	if err != nil || len(all) != 28 {
		t.Errorf("Releases(eu-west, all) = %d releases, %v; want 28", len(all), err)
	}
	for _, bad := range [][2]string{{"2026-01", "2026-W05"}, {"2026-13", ""}, {"", "2026-W54"}, {"26-01", ""}, {"2026-1", ""}} {
		if _, err := s.Releases(ctx, "acme", "eu-west", bad[0], bad[1]); !errors.Is(err, ErrBadPeriod) {
			t.Errorf("Releases(%q, %q) error = %v, want ErrBadPeriod", bad[0], bad[1], err)
		}
	}

	regions, err := s.Regions(ctx, "acme")
	if want := []string{"ap-south", "eu-west", "us-east"}; err != nil || !slices.Equal(regions, want) {
		t.Errorf("Regions = %v, %v; want %v", regions, err, want)
	}
	ledger, err := s.Ledger(ctx, "acme")
	want := []wire.Spend{{Site: site1, Year: 2025, Releases: 8, Epsilon: "4"}, {Site: site1, Year: 2026, Releases: 4, Epsilon: "2"},
		{Site: site2, Year: 2026, Releases: 4, Epsilon: "2"}}
	if err != nil || !slices.Equal(ledger, want) {
		t.Errorf("Ledger = %+v, %v; want %+v", ledger, err, want)
	}
	// The ledger keeps the entry with the most releases.
	mustUpsert(t, s, "acme", batch(nil, wire.Spend{Site: site1, Year: 2025, Releases: 7, Epsilon: "3.5"},
		wire.Spend{Site: site1, Year: 2026, Releases: 6, Epsilon: "3"}), t0)
	ledger, _ = s.Ledger(ctx, "acme")
	want[1] = wire.Spend{Site: site1, Year: 2026, Releases: 6, Epsilon: "3"}
	if !slices.Equal(ledger, want) {
		t.Errorf("Ledger after update = %+v, want %+v", ledger, want)
	}
}

func testInvalid(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	before := dump(t, s, "acme")
	good := rel(site1, "eu", "2026-01", "G", 1, 1)
	for _, c := range []struct {
		name string
		b    *wire.Batch
	}{
		{"wire version", &wire.Batch{Version: 99, Releases: []wire.Release{good}}},
		{"bad colour", batch([]wire.Release{good, rel(site1, "eu", "2026-01", "B", 1, 1)})},
		{"bad site", batch([]wire.Release{rel("Lisbon", "eu", "2026-01", "G", 1, 1)})},
		{"version beyond BIGINT", batch([]wire.Release{good, rel(site1, "eu", "2026-02", "G", 1, math.MaxInt64+1)})},
		{"no batch", nil},
	} {
		if _, err := s.Upsert(ctx, "acme", c.b, t0); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("%s: Upsert error = %v, want wire.ErrInvalid", c.name, err)
		}
	}
	diffDumps(t, "after refused batches", dump(t, s, "acme"), before)
	if _, err := s.Upsert(ctx, "nobody", sample(1), t0); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("Upsert for an unknown customer = %v, want ErrCustomerUnknown", err)
	}
	if err := s.CreateCustomer(ctx, "acme", "again", 0); !errors.Is(err, ErrCustomerExists) {
		t.Errorf("CreateCustomer twice = %v, want ErrCustomerExists", err)
	}
	for _, id := range []string{"", strings.Repeat("x", 129)} {
		if err := s.CreateCustomer(ctx, id, "x", 0); err == nil {
			t.Errorf("CreateCustomer(%q) succeeded", id)
		}
	}
	if err := s.CreateCustomer(ctx, "neg", "x", -1); err == nil {
		t.Error("CreateCustomer with negative retention succeeded")
	}
}

// testTenancy checks that what one customer does never touches another's
// rows, even where their site ids and keys are the same.
func testTenancy(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "alpha", 1)
	mustCustomer(t, s, "beta", 0)
	mustUpsert(t, s, "alpha", sample(1), t0)
	mustUpsert(t, s, "beta", sample(2), t0)
	if err := s.AddEnrolToken(ctx, "beta", "beta-tok", "hash-b", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "beta", "hq:bob", "upload", "batch 1", t0); err != nil {
		t.Fatal(err)
	}
	var betaExport bytes.Buffer
	if err := s.Export(ctx, "beta", &betaExport); err != nil {
		t.Fatal(err)
	}
	beta := dump(t, s, "beta")
	betaReleases, _ := s.Releases(ctx, "beta", "eu-west", "", "")

	check := func(step string) {
		t.Helper()
		diffDumps(t, "beta after alpha's "+step, dump(t, s, "beta"), beta)
		got, err := s.Releases(ctx, "beta", "eu-west", "", "")
		if err != nil || !slices.Equal(got, betaReleases) {
			t.Errorf("beta's releases changed after alpha's %s (%v)", step, err)
		}
		var e bytes.Buffer
		if err := s.Export(ctx, "beta", &e); err != nil || e.String() != betaExport.String() {
			t.Errorf("beta's export changed after alpha's %s (%v)", step, err)
		}
	}
	// alpha reads only alpha's rows.
	got, _ := s.Releases(ctx, "alpha", "eu-west", "", "")
	for _, r := range got {
		if r.Version != 1 {
			t.Fatalf("alpha reads a release of version %d: beta's", r.Version)
		}
	}
	if l, _ := s.Ledger(ctx, "alpha"); len(l) != 3 || l[0].Releases != 8 {
		t.Errorf("alpha's ledger = %+v", l)
	}
	mustUpsert(t, s, "beta", batch([]wire.Release{rel(site1, "beta-only", "2026-01", "G", 1, 1)}), t0)
	beta = dump(t, s, "beta")
	betaExport.Reset()
	s.Export(ctx, "beta", &betaExport)
	if r, _ := s.Regions(ctx, "alpha"); slices.Contains(r, "beta-only") {
		t.Errorf("alpha's regions include beta's: %v", r)
	}
	if r, _ := s.Releases(ctx, "alpha", "beta-only", "", ""); len(r) != 0 {
		t.Errorf("alpha reads beta's region: %+v", r)
	}
	if a, _ := s.AuditLog(ctx, "alpha", 0); len(a) != 0 {
		t.Errorf("alpha reads beta's audit trail: %+v", a)
	}
	var e bytes.Buffer
	if err := s.Export(ctx, "alpha", &e); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(e.String(), "beta") || strings.Contains(e.String(), "hq:bob") {
		t.Errorf("alpha's export mentions beta:\n%s", e.String())
	}

	mustUpsert(t, s, "alpha", sample(5), t0.Add(time.Hour))
	check("upload")
	if err := s.Audit(ctx, "alpha", "hq:alice", "export", "", t0); err != nil {
		t.Fatal(err)
	}
	check("audit")
	if err := s.AddEnrolToken(ctx, "alpha", "alpha-tok", "hash-a", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if c, err := s.UseEnrolToken(ctx, "alpha-tok", "hash-a", t0); err != nil || c != "alpha" {
		t.Fatalf("UseEnrolToken = %q, %v", c, err)
	}
	check("token")
	if _, err := s.EraseSite(ctx, "alpha", site1, t0); err != nil {
		t.Fatal(err)
	}
	check("site erasure")
	// alpha keeps one month, beta 25: alpha's 2026-01 goes, beta's stays.
	if n, err := s.ApplyRetention(ctx, t0.AddDate(0, 2, 0)); err != nil || n == 0 {
		t.Fatalf("ApplyRetention = %d, %v", n, err)
	}
	check("retention")
	if _, err := s.EraseCustomer(ctx, "alpha", t0); err != nil {
		t.Fatal(err)
	}
	check("erasure")
}

func testTokens(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	exp := t0.Add(24 * time.Hour)
	for _, tok := range []string{"t1", "t2", "race"} {
		if err := s.AddEnrolToken(ctx, "acme", tok, "hash-"+tok, exp); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddEnrolToken(ctx, "acme", "t1", "other", exp); !errors.Is(err, ErrTokenExists) {
		t.Errorf("AddEnrolToken twice = %v, want ErrTokenExists", err)
	}
	if err := s.AddEnrolToken(ctx, "nobody", "t9", "h", exp); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("AddEnrolToken for an unknown customer = %v, want ErrCustomerUnknown", err)
	}
	steps := []struct {
		name, id, hash string
		now            time.Time
		want           error
	}{
		{"unknown id", "nope", "hash-t1", t0, ErrTokenUnknown},
		{"wrong secret", "t1", "hash-t2", t0, ErrTokenUnknown},
		{"prefix of the secret", "t1", "hash-t", t0, ErrTokenUnknown},
		{"empty secret", "t1", "", t0, ErrTokenUnknown},
		{"expired", "t2", "hash-t2", exp, ErrTokenExpired},
		{"right", "t1", "hash-t1", exp.Add(-time.Second), nil},
		{"reused", "t1", "hash-t1", t0, ErrTokenUsed},
		{"reused, wrong secret", "t1", "x", t0, ErrTokenUnknown},
		{"expired, still", "t2", "hash-t2", exp.Add(time.Hour), ErrTokenExpired},
	}
	for _, st := range steps {
		c, err := s.UseEnrolToken(ctx, st.id, st.hash, st.now)
		if !errors.Is(err, st.want) || (st.want == nil && c != "acme") {
			t.Errorf("%s: UseEnrolToken = %q, %v; want %v", st.name, c, err, st.want)
		}
	}
	// Many at once: exactly one wins.
	var wg sync.WaitGroup
	results := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.UseEnrolToken(ctx, "race", "hash-race", t0)
			results <- err
		})
	}
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrTokenUsed):
			t.Errorf("concurrent use: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent uses succeeded, want 1", won)
	}
}

func testEraseSite(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	mustUpsert(t, s, "acme", sample(1), t0)
	n, err := s.EraseSite(ctx, "acme", site1, t0)
	if want := 8 + 1; err != nil || n != want { // 4 periods × 2 colours, 1 ledger year
		t.Fatalf("EraseSite = %d, %v; want %d", n, err, want)
	}
	holds := func() (sites []string) {
		t.Helper()
		for _, region := range []string{"eu-west", "eu-central"} {
			rs, err := s.Releases(ctx, "acme", region, "", "")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if !slices.Contains(sites, r.Site) {
					sites = append(sites, r.Site)
				}
			}
		}
		l, _ := s.Ledger(ctx, "acme")
		for _, e := range l {
			if e.Site == site1 {
				sites = append(sites, "ledger:"+e.Site)
			}
		}
		slices.Sort(sites)
		return sites
	}
	if got := holds(); !slices.Equal(got, []string{site2, site3}) {
		t.Errorf("after erasure the index holds sites %v", got)
	}
	before := dump(t, s, "acme")
	// The cluster does not know yet and sends everything again, newer.
	st := mustUpsert(t, s, "acme", sample(2), t0.Add(time.Hour))
	if st.Refused != 8 || st.Updated != 16 {
		t.Errorf("upload after erasure: stats %+v, want 8 refused, 16 updated", st)
	}
	if got := holds(); !slices.Equal(got, []string{site2, site3}) {
		t.Errorf("an erased site came back: %v", got)
	}
	if n, err := s.EraseSite(ctx, "acme", site1, t0); err != nil || n != 0 {
		t.Errorf("EraseSite again = %d, %v; want 0, nil", n, err)
	}
	if strings.Count(before, "erased ") != 1 {
		t.Errorf("erasure not recorded once:\n%s", before)
	}
	if _, err := s.EraseSite(ctx, "nobody", site1, t0); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("EraseSite of an unknown customer = %v", err)
	}
}

func testEraseCustomer(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	mustUpsert(t, s, "acme", sample(1), t0)
	if err := s.AddEnrolToken(ctx, "acme", "tok", "h", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHQKey(ctx, "acme", "hqk", "hq-hash", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePublisherState(ctx, "acme", []byte(`{"format":1}`), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EraseSite(ctx, "acme", site3, t0); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, s, "acme"); !strings.Contains(got, "hq-key hqk") || !strings.Contains(got, "publisher-state") {
		t.Fatalf("before erasure the dump lacks the key or the state:\n%s", got)
	}
	if err := s.Audit(ctx, "acme", "hq:carol", "erase-request", "ticket 42", t0); err != nil {
		t.Fatal(err)
	}
	n, err := s.EraseCustomer(ctx, "acme", t0)
	if want := 16 + 2; err != nil || n != want {
		t.Fatalf("EraseCustomer = %d, %v; want %d", n, err, want)
	}
	want := "customer acme \"\" 25 erased=true\n" +
		"audit {ID:1 Customer:acme At:2026-03-15 09:00:00 +0000 UTC Actor:hq:carol Action:erase-request Detail:ticket 42}\n"
	diffDumps(t, "after erasure", dump(t, s, "acme"), want)
	if _, err := s.Upsert(ctx, "acme", sample(2), t0); !errors.Is(err, ErrCustomerErased) {
		t.Errorf("Upsert after erasure = %v, want ErrCustomerErased", err)
	}
	if _, err := s.UseEnrolToken(ctx, "tok", "h", t0); !errors.Is(err, ErrTokenUnknown) {
		t.Errorf("token after erasure = %v, want ErrTokenUnknown", err)
	}
	if _, err := s.CheckHQKey(ctx, "hqk", "hq-hash"); !errors.Is(err, ErrHQKeyUnknown) {
		t.Errorf("hq key after erasure = %v, want ErrHQKeyUnknown", err)
	}
	if err := s.SavePublisherState(ctx, "acme", []byte(`{}`), t0); !errors.Is(err, ErrCustomerErased) {
		t.Errorf("SavePublisherState after erasure = %v, want ErrCustomerErased", err)
	}
	if err := s.AddEnrolToken(ctx, "acme", "tok2", "h", t0.Add(time.Hour)); !errors.Is(err, ErrCustomerErased) {
		t.Errorf("AddEnrolToken after erasure = %v, want ErrCustomerErased", err)
	}
	if err := s.CreateCustomer(ctx, "acme", "Acme again", 0); !errors.Is(err, ErrCustomerExists) {
		t.Errorf("CreateCustomer over a tombstone = %v, want ErrCustomerExists", err)
	}
	if n, err := s.EraseCustomer(ctx, "acme", t0); err != nil || n != 0 {
		t.Errorf("EraseCustomer again = %d, %v; want 0, nil", n, err)
	}
	if _, err := s.EraseCustomer(ctx, "nobody", t0); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("EraseCustomer of an unknown customer = %v", err)
	}
}

func testRetention(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "long", 0) // 25 months
	mustCustomer(t, s, "short", 3)
	var rels []wire.Release
	for _, p := range []string{"2023-12", "2024-01", "2024-02", "2025-10", "2025-11", "2025-12",
		"2024-W05", "2024-W06", "2024-W07", "2025-W48", "2025-W49", "2025-W50"} {
		rels = append(rels, rel(site1, "eu", p, "G", 1, 1))
	}
	ledger := []wire.Spend{{Site: site1, Year: 2022, Releases: 1, Epsilon: "1"}, {Site: site1, Year: 2023, Releases: 1, Epsilon: "1"},
		{Site: site1, Year: 2024, Releases: 1, Epsilon: "1"}}
	for _, c := range []string{"long", "short"} {
		mustUpsert(t, s, c, batch(rels, ledger...), t0)
	}
	periods := func(c string) []string {
		t.Helper()
		rs, err := s.Releases(ctx, c, "eu", "", "")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Period)
		}
		l, _ := s.Ledger(ctx, c)
		for _, e := range l {
			out = append(out, fmt.Sprint(e.Year))
		}
		return out
	}
	steps := []struct {
		now         time.Time
		deleted     int
		long, short []string
	}{
		// Long: 25 months before 2026-03-01 is 2024-02-01, exactly when
		// 2024-01 ended: not more than 25 months ago, so it stays; 2023-12
		// goes, and ledger years 2022 and 2023 (ended 2024-01-01). 2024-W05
		// ends Monday 2024-02-05: it stays.
		// Short: 3 months before is 2025-12-01, when 2025-11 and 2025-W48
		// ended: they stay; 2025-10, everything from 2024 and every ledger
		// year (the last ended 2025-01-01) go.
		{time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), 3 + 10,
			[]string{"2024-01", "2024-02", "2025-10", "2025-11", "2025-12", "2024-W05", "2024-W06", "2024-W07", "2025-W48", "2025-W49", "2025-W50", "2024"},
			[]string{"2025-11", "2025-12", "2025-W48", "2025-W49", "2025-W50"}},
		{time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), 0, nil, nil}, // idempotent: same as before
		// Long: 25 months before 2026-03-15 09:00 is 2024-02-15 09:00:
		// 2024-01, 2024-W05 and W06 (ended the 12th) go; ledger 2024 stays.
		// Short: 2025-12-15 09:00: 2025-11, W48, W49 and W50 (ended the
		// 15th at midnight) go.
		{t0, 3 + 4,
			[]string{"2024-02", "2025-10", "2025-11", "2025-12", "2024-W07", "2025-W48", "2025-W49", "2025-W50", "2024"},
			[]string{"2025-12"}},
	}
	var prevLong, prevShort []string
	for i, st := range steps {
		n, err := s.ApplyRetention(ctx, st.now)
		if err != nil {
			t.Fatal(err)
		}
		if n != st.deleted {
			t.Errorf("step %d: deleted %d rows, want %d", i, n, st.deleted)
		}
		if st.long == nil {
			st.long, st.short = prevLong, prevShort
		}
		slices.Sort(st.long)
		slices.Sort(st.short)
		gotLong, gotShort := periods("long"), periods("short")
		slices.Sort(gotLong)
		slices.Sort(gotShort)
		if !slices.Equal(gotLong, st.long) {
			t.Errorf("step %d: long keeps %v, want %v", i, gotLong, st.long)
		}
		if !slices.Equal(gotShort, st.short) {
			t.Errorf("step %d: short keeps %v, want %v", i, gotShort, st.short)
		}
		prevLong, prevShort = st.long, st.short
	}
}

// exportDoc mirrors the document Export writes.
type exportDoc struct {
	Format         string             `json:"format"`
	FormatVersion  int                `json:"format_version"`
	Customer       exportCustomer     `json:"customer"`
	Releases       []exportRelease    `json:"releases"`
	Ledger         []exportSpend      `json:"ledger"`
	ErasedSites    []exportErasedSite `json:"erased_sites"`
	EnrolTokens    []exportToken      `json:"enrol_tokens"`
	HQKeys         []exportHQKey      `json:"hq_keys"`
	PublisherState json.RawMessage    `json:"publisher_state"`
	AuditLog       []AuditEntry       `json:"audit_log"`
}

func testExport(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 13)
	b := sample(4)
	mustUpsert(t, s, "acme", b, t0)
	if _, err := s.EraseSite(ctx, "acme", site3, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"used", "open"} {
		if err := s.AddEnrolToken(ctx, "acme", tok, "secret-hash-"+tok, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UseEnrolToken(ctx, "used", "secret-hash-used", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHQKey(ctx, "acme", "hqk", "secret-hash-hq", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePublisherState(ctx, "acme", []byte(`{"format":1,"customer":"acme","cells":[]}`), t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "acme", "hq:dan", "export", `quotes " and \ survive`, t0); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := s.Export(ctx, "acme", &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "secret-hash") {
		t.Error("the export carries a token's secret hash")
	}
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	dec.DisallowUnknownFields()
	var doc exportDoc
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode export: %v\n%s", err, out.String())
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Errorf("the export is more than one JSON document (%v)", err)
	}
	if doc.Format != "pulsegate-index-export" || doc.FormatVersion != 2 {
		t.Errorf("format %q %d", doc.Format, doc.FormatVersion)
	}
	if doc.Customer != (exportCustomer{ID: "acme", Name: "Customer acme", RetentionMonths: 13}) {
		t.Errorf("customer %+v", doc.Customer)
	}
	var want []exportRelease
	for _, r := range b.Releases {
		if r.Site != site3 {
			want = append(want, exportRelease{r.Site, r.Region, r.Period, r.Colour, r.Suppressed, r.Count, r.Version, r.Epsilon, r.Sensitivity, t0})
		}
	}
	slices.SortFunc(want, func(a, b exportRelease) int {
		return strings.Compare(a.Site+a.Period+a.Colour, b.Site+b.Period+b.Colour)
	})
	if !slices.EqualFunc(doc.Releases, want, func(a, b exportRelease) bool { return a == b }) {
		t.Errorf("releases:\n got %+v\nwant %+v", doc.Releases, want)
	}
	if len(doc.Ledger) != 2 || doc.Ledger[0] != (exportSpend{site1, 2026, 32, "4.5", t0}) {
		t.Errorf("ledger %+v", doc.Ledger)
	}
	if len(doc.ErasedSites) != 1 || doc.ErasedSites[0] != (exportErasedSite{site3, t0.Add(time.Minute)}) {
		t.Errorf("erased sites %+v", doc.ErasedSites)
	}
	if len(doc.EnrolTokens) != 2 || doc.EnrolTokens[0].TokenID != "open" || doc.EnrolTokens[0].UsedAt != nil ||
		doc.EnrolTokens[1].UsedAt == nil || !doc.EnrolTokens[1].UsedAt.Equal(t0) {
		t.Errorf("tokens %+v", doc.EnrolTokens)
	}
	if len(doc.HQKeys) != 1 || doc.HQKeys[0].ID != "hqk" || !doc.HQKeys[0].CreatedAt.Equal(t0) || doc.HQKeys[0].RevokedAt != nil {
		t.Errorf("hq keys %+v", doc.HQKeys)
	}
	if string(doc.PublisherState) != `{"format":1,"customer":"acme","cells":[]}` {
		t.Errorf("publisher state %s", doc.PublisherState)
	}
	if len(doc.AuditLog) != 1 || doc.AuditLog[0].Detail != `quotes " and \ survive` || !doc.AuditLog[0].At.Equal(t0) {
		t.Errorf("audit %+v", doc.AuditLog)
	}

	var empty bytes.Buffer
	if err := s.Export(ctx, "nobody", &empty); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("Export of an unknown customer = %v", err)
	}
	// An erased customer's export is its tombstone and its audit trail.
	if _, err := s.EraseCustomer(ctx, "acme", t0); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := s.Export(ctx, "acme", &out); err != nil {
		t.Fatal(err)
	}
	doc = exportDoc{}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Customer.ErasedAt == nil || len(doc.Releases)+len(doc.Ledger)+len(doc.ErasedSites)+len(doc.EnrolTokens)+len(doc.HQKeys) != 0 ||
		string(doc.PublisherState) != "null" || len(doc.AuditLog) != 1 {
		t.Errorf("export after erasure: %s", out.String())
	}
}

func testAudit(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	for i := range 5 {
		if err := s.Audit(ctx, "acme", "hq:eve", fmt.Sprintf("action-%d", i), "", t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Audit(ctx, "other", "hq:eve", "x", "", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "", "index", "retention", "deleted 0", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "acme", "", "x", "", t0); err == nil {
		t.Error("Audit without an actor succeeded")
	}
	got, err := s.AuditLog(ctx, "acme", 2)
	if err != nil || len(got) != 2 || got[0].Action != "action-4" || got[1].Action != "action-3" || !got[0].At.Equal(t0.Add(4*time.Second)) {
		t.Errorf("AuditLog(acme, 2) = %+v, %v", got, err)
	}
	all, _ := s.AuditLog(ctx, "acme", 0)
	if len(all) != 5 || all[4].Action != "action-0" {
		t.Errorf("AuditLog(acme, 0) = %+v", all)
	}
	if sys, _ := s.AuditLog(ctx, "", 0); len(sys) != 1 || sys[0].Action != "retention" {
		t.Errorf("AuditLog(\"\") = %+v", sys)
	}

	// The database itself refuses to change the trail.
	attacks := []string{
		`UPDATE audit_log SET detail = 'rewritten'`,
		`DELETE FROM audit_log WHERE customer = 'acme'`,
	}
	if s.Backend() == "postgres" {
		attacks = append(attacks, `TRUNCATE audit_log`)
	}
	for _, q := range attacks {
		if _, err := s.db.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: error %v, want the append-only refusal", q, err)
		}
	}
	after, _ := s.AuditLog(ctx, "acme", 0)
	if !slices.Equal(after, all) {
		t.Errorf("the audit trail changed:\n%+v\n%+v", after, all)
	}
}

// testConcurrent sends versions 1..n of the same rows from several goroutines
// in different orders: the newest wins and the stats add up exactly.
func testConcurrent(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	const writers, versions = 4, 6
	var mu sync.Mutex
	var total UpsertStats
	var wg sync.WaitGroup
	errs := make(chan error, writers*versions)
	for w := range writers {
		wg.Go(func() {
			for i := range versions {
				v := uint64((i+w*2)%versions + 1)
				st, err := s.Upsert(ctx, "acme", sample(v), t0)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				total.Inserted += st.Inserted
				total.Updated += st.Updated
				total.Unchanged += st.Unchanged
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := len(sample(1).Releases)
	if total.Inserted != n || total.Inserted+total.Updated+total.Unchanged != n*writers*versions {
		t.Errorf("stats add up to %+v for %d rows sent %d times", total, n, writers*versions)
	}
	fresh := open(t)
	mustCustomer(t, fresh, "acme", 0)
	mustUpsert(t, fresh, "acme", sample(versions), t0)
	diffDumps(t, "concurrent vs newest once", dump(t, s, "acme"), dump(t, fresh, "acme"))
}

// TestOpenSQLiteDamaged checks that a file that is not a sound SQLite
// database is refused at open with a clear error.
func TestOpenSQLiteDamaged(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := OpenSQLite(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCustomer(ctx, "acme", "Acme", 0); err != nil {
		t.Fatal(err)
	}
	var rels []wire.Release
	for i := range 2000 {
		rels = append(rels, rel(fmt.Sprintf("%016x", i), "eu", "2026-01", "G", int64(i), 1))
	}
	mustUpsert(t, s, "acme", batch(rels), t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sound, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(sound) < 20*4096 {
		t.Fatalf("test database is only %d bytes", len(sound))
	}

	// It reopens, data intact.
	s, err = OpenSQLite(good)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got, _ := s.Releases(ctx, "acme", "eu", "", ""); len(got) != 2000 {
		t.Errorf("after reopen: %d releases, want 2000", len(got))
	}
	s.Close()

	garbage := bytes.Repeat([]byte("not a database, just some bytes. "), 1000)
	damaged := slices.Clone(sound)
	for i := 8 * 4096; i < 12*4096; i++ { // scribble over b-tree pages
		damaged[i] = byte(i * 7)
	}
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"garbage", garbage},
		{"damaged pages", damaged},
		{"header only", sound[:100]},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".db")
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenSQLite(path)
			if err == nil {
				s.Close()
				t.Fatal("OpenSQLite succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Errorf("OpenSQLite error = %v, want ErrCorrupt naming the file", err)
			}
			t.Logf("OpenSQLite: %v", err)
		})
	}
	for _, path := range []string{dir, "", "a?b"} {
		if s, err := OpenSQLite(path); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded", path)
		}
	}
}

// TestAuditLogNeverChanged reads the package's own source: no statement in
// it may change or remove an audit entry.
func TestAuditLogNeverChanged(t *testing.T) {
	forbidden := regexp.MustCompile(`(?is)\b(UPDATE\s+audit_log|DELETE\s+FROM\s+audit_log|TRUNCATE\s+(TABLE\s+)?audit_log|DROP\s+TABLE\s+(IF\s+EXISTS\s+)?audit_log|DROP\s+TRIGGER)\b`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		if m := forbidden.Find(src); m != nil {
			t.Errorf("%s: %q changes the append-only audit log", f, m)
		}
	}
	if checked == 0 {
		t.Fatal("no source checked")
	}
}
