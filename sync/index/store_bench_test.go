package index

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/sync/wire"
)

// Benchmarks of the index on both backends. PostgreSQL runs on the private
// server the tests start (fsync on, unix socket); SQLite on a file in
// TMPDIR.
//
//	go test ./sync/index -run '^$' -bench Ingest -benchtime 1000x          # 1M rows per backend
//	go test ./sync/index -run '^$' -bench RegionalQuery -benchtime 100x    # seeds 528k rows per backend first

var benchBackends = []struct {
	name string
	open func(testing.TB) *Store
}{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

const benchMonths = 24

var benchPeriods = func() []string {
	var ps []string
	for i := range benchMonths {
		ps = append(ps, fmt.Sprintf("%04d-%02d", 2024+i/12, i%12+1))
	}
	return ps
}()

// benchRow fills r with the n-th row of a customer's history: site n/48 has
// 24 months × 2 colours. Consecutive rows share a site, as an office's
// uploads do.
func benchRow(r *wire.Release, n int, region string, version uint64) {
	site := n / (2 * benchMonths)
	*r = wire.Release{
		Site:        fmt.Sprintf("%016x", site),
		Region:      region,
		Period:      benchPeriods[(n/2)%benchMonths],
		Colour:      [2]string{"G", "R"}[n%2],
		Count:       int64(n % 97),
		Version:     version,
		Epsilon:     "0.25",
		Sensitivity: 1,
	}
}

// benchBatch returns a batch of rows [first, first+size) with the ledger
// entries of their sites.
func benchBatch(first, size int, region string) *wire.Batch {
	b := &wire.Batch{Version: wire.Version, BatchID: fmt.Sprint(first), Releases: make([]wire.Release, size)}
	for i := range size {
		benchRow(&b.Releases[i], first+i, region, 1)
	}
	for site := first / (2 * benchMonths); site <= (first+size-1)/(2*benchMonths); site++ {
		for _, y := range []int{2024, 2025} {
			b.Ledger = append(b.Ledger, wire.Spend{Site: fmt.Sprintf("%016x", site), Year: y, Releases: 24, Epsilon: "6"})
		}
	}
	return b
}

// BenchmarkIngest uploads batches of 1000 new releases (about 21 sites × 24
// months × 2 colours, with their ledger entries) into one customer; one op is
// one batch, one transaction. -benchtime 1000x stores 1M rows.
func BenchmarkIngest(b *testing.B) {
	const batchSize = 1000
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			if err := s.CreateCustomer(ctx, "bench", "Bench", 0); err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				st, err := s.Upsert(ctx, "bench", benchBatch(n*batchSize, batchSize, "eu-west"), t0)
				if err != nil {
					b.Fatal(err)
				}
				if st.Inserted != batchSize {
					b.Fatalf("batch %d: %+v", n, st)
				}
				n++
			}
			b.ReportMetric(float64(n*batchSize)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkRegionalQuery asks for 12 months of one region of a customer whose
// region holds 10,000 sites × 24 months × 2 colours (480k rows; 240k match),
// next to a second region of 1,000 sites. One op is one Releases call; p50
// and p99 are of the calls' latencies.
func BenchmarkRegionalQuery(b *testing.B) {
	const sites, otherSites = 10_000, 1_000
	const seedBatch = 100 * 2 * benchMonths // 100 sites per upload
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			if err := s.CreateCustomer(ctx, "bench", "Bench", 0); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			rows := sites * 2 * benchMonths
			for first := 0; first < rows; first += seedBatch {
				if _, err := s.Upsert(ctx, "bench", benchBatch(first, seedBatch, "eu-west"), t0); err != nil {
					b.Fatal(err)
				}
			}
			for first := rows; first < rows+otherSites*2*benchMonths; first += seedBatch {
				if _, err := s.Upsert(ctx, "bench", benchBatch(first, seedBatch, "us-east"), t0); err != nil {
					b.Fatal(err)
				}
			}
			b.Logf("%s: seeded %d rows in %v", be.name, rows+otherSites*2*benchMonths, time.Since(start).Round(time.Millisecond))

			var lat []time.Duration
			for b.Loop() {
				t := time.Now()
				got, err := s.Releases(ctx, "bench", "eu-west", "2024-07", "2025-06")
				lat = append(lat, time.Since(t))
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != sites*12*2 {
					b.Fatalf("%d releases, want %d", len(got), sites*12*2)
				}
			}
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(sites*12*2), "rows/query")
		})
	}
}
