package upload

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/sync/anon"
	"github.com/pulsegate/pulsegate/sync/index"
	"github.com/pulsegate/pulsegate/sync/wire"
)

// countingListener counts the bytes of every connection the index accepts,
// both ways, TLS records and HTTP headers included.
type countingListener struct {
	net.Listener
	in, out *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.in, l.out}, nil
}

type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// BenchmarkUploadBytes measures what one closed period costs on the WAN:
// every office's release of one month (green and red rows, its ledger
// entry) uploaded in one batch to a real index over TLS. It reports the
// msgp body and the bytes on the wire each way, per site and period; the
// first upload of the run pays the TLS handshake, later ones reuse the
// connection, as the leader's client does.
func BenchmarkUploadBytes(b *testing.B) {
	for _, sites := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("sites=%d", sites), func(b *testing.B) {
			now := func() time.Time { return time.Date(2026, 4, 2, 0, 0, 0, 0, time.UTC) }
			dir := b.TempDir()
			st, err := index.OpenSQLite(filepath.Join(dir, "index.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			id, err := index.LoadOrCreateIdentity(filepath.Join(dir, "id"), nil, now())
			if err != nil {
				b.Fatal(err)
			}
			srv, err := index.NewServer(index.ServerConfig{Store: st, Identity: id, Now: now})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			var in, out atomic.Int64
			ts := httptest.NewUnstartedServer(srv.Handler())
			ts.Listener = countingListener{ts.Listener, &in, &out}
			ts.TLS = srv.TLSConfig()
			ts.StartTLS()
			defer ts.Close()
			ix := &testIndex{store: st, url: ts.URL, pin: id.Pin()}
			ctx := context.Background()
			if err := st.CreateCustomer(ctx, "acme", "acme", 0); err != nil {
				b.Fatal(err)
			}
			tok := index.EnrolToken{URL: ix.url, ID: "bench", Secret: "bench-secret", Pin: ix.pin}
			if err := st.AddEnrolToken(ctx, "acme", tok.ID, index.HashSecret(tok.Secret), now().Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
			cred, err := index.Enrol(ctx, tok, "bench")
			if err != nil {
				b.Fatal(err)
			}
			client, err := index.NewClient(cred)
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()

			rels := make([]cluster.ReleaseRecord, sites)
			regions := map[string]string{}
			var ledger []anon.Total
			for i := range rels {
				site := fmt.Sprintf("%016x", 0xa000+i)
				rels[i] = cluster.ReleaseRecord{Site: site, Period: "2026-03", Green: int64(300 + i), Red: int64(120 + i%50),
					Epsilon: "1", Sensitivity: 22, Version: uint64(i + 1)}
				regions[site] = fmt.Sprintf("eu-%d", i%4)
				ledger = append(ledger, anon.Total{Site: site, Year: 2026, Releases: 3, Spent: anon.Epsilon{Num: 3, Den: 1}})
			}
			batch := Batch(rels, regions, ledger)
			body, err := wire.Encode(batch)
			if err != nil {
				b.Fatal(err)
			}
			in.Store(0)
			out.Store(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Every round is a retry of the same batch: the index's work
				// is the idempotent upsert, as in a resend.
				if _, err := client.Upload(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			per := float64(b.N * sites)
			b.ReportMetric(float64(len(body))/float64(sites), "body-B/site-period")
			b.ReportMetric(float64(in.Load())/per, "up-B/site-period")
			b.ReportMetric(float64(out.Load())/per, "down-B/site-period")
		})
	}
}
