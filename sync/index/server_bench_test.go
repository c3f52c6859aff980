package index

import (
	"io"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// BenchmarkRegionalIndex is HQ's pull as HQ makes it: the regional index of
// 2 years (24 monthly cells) of a region of 10,000 sites (480k rows, next to
// a second region of 1,000 sites), through the real server over HTTPS with
// the real client (a new pinned TLS connection per pull), as JSON. The first
// pull publishes the 24 cells and stores the publication state; later ones
// check the same cells again. One op is one pull; p50 and p99 are of their
// latencies.
func BenchmarkRegionalIndex(b *testing.B) {
	const sites, otherSites = 10_000, 1_000
	const seedBatch = 100 * 2 * benchMonths
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			if err := s.CreateCustomer(ctx, "bench", "Bench", 0); err != nil {
				b.Fatal(err)
			}
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
			id, err := LoadOrCreateIdentity(b.TempDir(), nil, t0)
			if err != nil {
				b.Fatal(err)
			}
			now := func() time.Time { return t0.AddDate(2, 0, 0) }
			srv, err := NewServer(ServerConfig{Store: s, Identity: id, Now: now})
			if err != nil {
				b.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(srv.Handler())
			ts.TLS = srv.TLSConfig()
			ts.StartTLS()
			defer func() {
				ts.Close()
				srv.Close()
			}()
			key, err := NewHQKey(ts.URL, id.Pin())
			if err != nil {
				b.Fatal(err)
			}
			if err := s.AddHQKey(ctx, "bench", key.ID, HashSecret(key.Secret), t0); err != nil {
				b.Fatal(err)
			}
			var lat []time.Duration
			for b.Loop() {
				t := time.Now()
				if err := Pull(ctx, key, "eu-west", benchPeriods[0], benchPeriods[benchMonths-1], "json", io.Discard); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t))
			}
			first := lat[0]
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(first.Microseconds())/1000, "first-ms")
		})
	}
}
