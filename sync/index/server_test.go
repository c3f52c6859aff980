package index

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/sync/regional"
	"github.com/pulsegate/pulsegate/sync/wire"
	"go.uber.org/goleak"
)

// backends runs fn against SQLite and PostgreSQL.
func backends(t *testing.T, fn func(t *testing.T, open func(t *testing.T) *Store)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, func(t *testing.T) *Store { return openSQLite(t) }) })
	t.Run("postgres", func(t *testing.T) {
		postgresDSN(t)
		fn(t, func(t *testing.T) *Store { return openPostgres(t) })
	})
}

// testIndex is a real index server on loopback HTTPS.
type testIndex struct {
	store *Store
	id    *Identity
	srv   *Server
	ts    *httptest.Server
	now   atomic.Int64 // unix micros
}

func newTestIndex(t *testing.T, store *Store, id *Identity) *testIndex {
	t.Helper()
	ti := &testIndex{store: store, id: id}
	ti.now.Store(micros(t0))
	srv, err := NewServer(ServerConfig{Store: store, Identity: id, Now: ti.clock})
	if err != nil {
		t.Fatal(err)
	}
	ti.srv = srv
	ti.ts = httptest.NewUnstartedServer(srv.Handler())
	ti.ts.TLS = srv.TLSConfig()
	ti.ts.StartTLS()
	t.Cleanup(func() {
		ti.ts.Close()
		srv.Close()
	})
	return ti
}

func (ti *testIndex) clock() time.Time { return fromMicros(ti.now.Load()) }

func newIdentity(t testing.TB) *Identity {
	t.Helper()
	id, err := LoadOrCreateIdentity(t.TempDir(), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// token creates the customer if needed and an enrolment token for it, as
// `pulsegate index token create` does.
func (ti *testIndex) token(t *testing.T, customer string, expires time.Time) EnrolToken {
	t.Helper()
	if err := ti.store.CreateCustomer(ctx, customer, "Customer "+customer, 0); err != nil && !errors.Is(err, ErrCustomerExists) {
		t.Fatal(err)
	}
	tok, err := NewEnrolToken(ti.ts.URL, ti.id.Pin())
	if err != nil {
		t.Fatal(err)
	}
	if err := ti.store.AddEnrolToken(ctx, customer, tok.ID, HashSecret(tok.Secret), expires); err != nil {
		t.Fatal(err)
	}
	return tok
}

func (ti *testIndex) hqKey(t *testing.T, customer string) HQKey {
	t.Helper()
	key, err := NewHQKey(ti.ts.URL, ti.id.Pin())
	if err != nil {
		t.Fatal(err)
	}
	if err := ti.store.AddHQKey(ctx, customer, key.ID, HashSecret(key.Secret), t0); err != nil {
		t.Fatal(err)
	}
	return key
}

// enrol enrols a cluster of customer and returns its client.
func (ti *testIndex) enrol(t *testing.T, customer string) (*Client, Credentials) {
	t.Helper()
	cred, err := Enrol(ctx, ti.token(t, customer, t0.Add(time.Hour)), "office of "+customer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, cred
}

// get sends a GET with the HQ key (or none), over a pinned connection.
func (ti *testIndex) get(t *testing.T, key *HQKey, path string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	return ti.do(t, http.MethodGet, path, nil, nil, key, hdr...)
}

func (ti *testIndex) do(t *testing.T, method, path string, body []byte, cert *tls.Certificate, key *HQKey, hdr ...string) (int, string, http.Header) {
	t.Helper()
	cfg := pinnedTLS(ti.id.Pin())
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := newTransport(cfg)
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, ti.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != nil {
		req.Header.Set("Authorization", "Bearer "+key.String())
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func auditActions(t *testing.T, s *Store, customer string) []string {
	t.Helper()
	entries, err := s.AuditLog(ctx, customer, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		out = append(out, e.Action+" by "+strings.Fields(e.Actor)[0])
	}
	return out
}

func TestEnrolAndUpload(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) *Store) {
		ti := newTestIndex(t, open(t), newIdentity(t))
		tok := ti.token(t, "acme", t0.Add(time.Hour))
		cred, err := Enrol(ctx, tok, "Lisbon office")
		if err != nil {
			t.Fatal(err)
		}
		if cred.Customer != "acme" || cred.Pin != ti.id.Pin() || cred.URL != ti.ts.URL {
			t.Errorf("credentials %+v", cred)
		}
		// Credentials survive being kept as JSON.
		j, _ := json.Marshal(cred)
		var kept Credentials
		if err := json.Unmarshal(j, &kept); err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(kept)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := sample(1)
		st, err := c.Upload(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if st != (UpsertStats{Inserted: len(b.Releases)}) {
			t.Errorf("first upload: %+v", st)
		}
		if st, err := c.Upload(ctx, b); err != nil || st != (UpsertStats{Unchanged: len(b.Releases)}) {
			t.Errorf("second upload: %+v, %v", st, err)
		}
		if got, _ := ti.store.Releases(ctx, "acme", "eu-west", "", ""); len(got) != 16 {
			t.Errorf("the index holds %d releases of eu-west, want 16", len(got))
		}
		pair, _ := tls.X509KeyPair(cred.CertPEM, cred.KeyPEM)
		code, body, _ := ti.do(t, http.MethodGet, "/api/v1/ledger", nil, &pair, nil)
		var led struct {
			Customer string
			Ledger   []wire.Spend
		}
		if err := json.Unmarshal([]byte(body), &led); code != 200 || err != nil || led.Customer != "acme" || len(led.Ledger) != 3 ||
			led.Ledger[0] != (wire.Spend{Site: site1, Year: 2026, Releases: 8, Epsilon: "1.5"}) || strings.Contains(body, "count") {
			t.Errorf("ledger: %d %s", code, body)
		}
		// An invalid batch is rejected for good.
		bad := sample(1)
		bad.Releases[0].Colour = "B"
		if _, err := c.Upload(ctx, bad); !errors.Is(err, ErrRejected) {
			t.Errorf("invalid batch: %v, want ErrRejected", err)
		}

		// The token is spent; others fail with their reason.
		expired := ti.token(t, "acme", t0.Add(-time.Minute))
		wrong := ti.token(t, "acme", t0.Add(time.Hour))
		wrong.Secret = "not-the-secret"
		for _, tt := range []struct {
			name string
			tok  EnrolToken
			want string
		}{
			{"reused", tok, "already been used"},
			{"expired", expired, "expired"},
			{"wrong secret", wrong, "unknown enrolment token"},
		} {
			if _, err := Enrol(ctx, tt.tok, "x"); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "403") {
				t.Errorf("%s: Enrol = %v, want a 403 saying %q", tt.name, err, tt.want)
			}
		}
		want := []string{"enrol by cluster", "upload by cluster", "upload by cluster", "pull by cluster"}
		if got := auditActions(t, ti.store, "acme"); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("audit trail %q, want %q", got, want)
		}
		entries, _ := ti.store.AuditLog(ctx, "acme", 0)
		leaf := parsePEMCert(t, cred.CertPEM)
		if e := entries[len(entries)-1]; e.Actor != "cluster "+leaf.SerialNumber.Text(16) || !strings.Contains(e.Detail, `"Lisbon office"`) {
			t.Errorf("enrol audited as %+v", e)
		}
	})
}

func TestPinMismatch(t *testing.T) {
	ti := newTestIndex(t, openSQLite(t), newIdentity(t))
	impostor := newIdentity(t)
	tok := ti.token(t, "acme", t0.Add(time.Hour))
	tok.Pin = impostor.Pin()
	if _, err := Enrol(ctx, tok, "x"); err == nil || !strings.Contains(err.Error(), "index certificate does not match the pinned key") {
		t.Errorf("Enrol against another identity = %v, want the pin message", err)
	}
	// The token was not spent on the wrong server's account.
	_, cred := ti.enrol(t, "acme")
	cred.Pin = impostor.Pin()
	c, err := NewClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Upload(ctx, sample(1)); err == nil || errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "does not match the pinned key") {
		t.Errorf("Upload to a server with another key = %v", err)
	}
	key := ti.hqKey(t, "acme")
	key.Pin = impostor.Pin()
	if err := Pull(ctx, key, "eu-west", "", "", "json", io.Discard); err == nil || !strings.Contains(err.Error(), "does not match the pinned key") {
		t.Errorf("Pull from a server with another key = %v", err)
	}
}

// foreignCert is a client certificate naming acme, from a CA the index does
// not know.
func foreignCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: t0.Add(-time.Hour), NotAfter: t0.AddDate(1, 0, 0)}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{customerURI("acme")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.AddDate(1, 0, 0)}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

func TestAuthorisation(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) *Store) {
		ti := newTestIndex(t, open(t), newIdentity(t))
		ca, credA := ti.enrol(t, "acme")
		cb, _ := ti.enrol(t, "globex")
		const siteB = "00000000000000fb"
		bb := batch([]wire.Release{rel(siteB, "globex-only", "2026-01", "G", 7, 1), rel(siteB, "globex-only", "2026-01", "R", 3, 1)})
		if _, err := cb.Upload(ctx, bb); err != nil {
			t.Fatal(err)
		}
		before := dump(t, ti.store, "globex")

		// A batch names no customer: acme's upload of the same sites lands
		// under acme, and globex's rows are untouched.
		ab := batch([]wire.Release{rel(siteB, "globex-only", "2026-01", "G", 1000, 9), rel(siteB, "globex-only", "2026-01", "R", 1000, 9)})
		if st, err := ca.Upload(ctx, ab); err != nil || st.Inserted != 2 {
			t.Fatalf("acme's upload: %+v, %v", st, err)
		}
		if got, _ := ti.store.Releases(ctx, "acme", "globex-only", "", ""); len(got) != 2 || got[0].Count != 1000 {
			t.Errorf("acme's upload landed as %+v", got)
		}
		diffDumps(t, "globex after acme's upload", strings.ReplaceAll(dump(t, ti.store, "globex"), "upload", ""), strings.ReplaceAll(before, "upload", ""))

		// acme's HQ key sees acme only.
		keyA := ti.hqKey(t, "acme")
		if _, err := ti.store.EraseSite(ctx, "acme", siteB, t0); err != nil { // acme now holds nothing of that region
			t.Fatal(err)
		}
		for _, path := range []string{"/api/v1/regions", "/api/v1/regions/globex-only/index", "/api/v1/export", "/api/v1/export?format=csv", "/api/v1/audit", "/api/v1/ledger"} {
			code, body, _ := ti.get(t, &keyA, path)
			if strings.Contains(body, "globex") && path != "/api/v1/regions/globex-only/index" || strings.Contains(body, `"count":7`) {
				t.Errorf("%s with acme's key: %d %s", path, code, body)
			}
			if path == "/api/v1/regions/globex-only/index" && code != http.StatusNotFound {
				t.Errorf("%s with acme's key: %d, want 404", path, code)
			}
		}

		// No credential, a bad one, another CA.
		if code, body, _ := ti.do(t, http.MethodPost, "/api/v1/batches", mustEncode(t, sample(1)), nil, nil, "Content-Type", "application/x-msgpack"); code != http.StatusUnauthorized {
			t.Errorf("upload without a certificate: %d %s", code, body)
		}
		for _, auth := range []string{"", "Bearer", "Bearer pghq1.garbage", "Basic YTpi", "Bearer " + strings.Replace(keyA.String(), "pghq1.", "pgi1.", 1)} {
			hdr := []string{}
			if auth != "" {
				hdr = []string{"Authorization", auth}
			}
			if code, body, _ := ti.get(t, nil, "/api/v1/regions", hdr...); code != http.StatusUnauthorized || !strings.Contains(body, `"error"`) {
				t.Errorf("regions with Authorization %q: %d %s", auth, code, body)
			}
		}
		wrongSecret := keyA
		wrongSecret.Secret = "x"
		if code, _, _ := ti.get(t, &wrongSecret, "/api/v1/regions"); code != http.StatusUnauthorized {
			t.Errorf("regions with a wrong secret: %d", code)
		}
		evil := foreignCert(t)
		cfg := pinnedTLS(ti.id.Pin())
		cfg.Certificates = []tls.Certificate{evil}
		tr := newTransport(cfg)
		req, _ := http.NewRequest(http.MethodPost, ti.ts.URL+"/api/v1/batches", bytes.NewReader(mustEncode(t, sample(1))))
		req.Header.Set("Content-Type", "application/x-msgpack")
		if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("upload with a foreign CA's certificate: %s", resp.Status)
			}
		} else {
			t.Logf("foreign certificate refused at TLS: %v", err)
		}
		tr.CloseIdleConnections()
		if got, _ := ti.store.Releases(ctx, "acme", "eu-west", "", ""); len(got) != 0 {
			t.Errorf("the foreign certificate wrote %d releases", len(got))
		}

		// An erased customer's certificate and key are refused.
		if _, err := ti.store.EraseCustomer(ctx, "acme", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Upload(ctx, sample(1)); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "403") {
			t.Errorf("upload of an erased customer: %v, want a 403", err)
		}
		pair, _ := tls.X509KeyPair(credA.CertPEM, credA.KeyPEM)
		if code, body, _ := ti.do(t, http.MethodGet, "/api/v1/ledger", nil, &pair, nil); code != http.StatusForbidden {
			t.Errorf("ledger of an erased customer: %d %s, want 403", code, body)
		}
		if code, _, _ := ti.get(t, &keyA, "/api/v1/regions"); code != http.StatusUnauthorized {
			t.Errorf("HQ key of an erased customer: %d, want 401 (its keys are deleted)", code)
		}
	})
}

func mustEncode(t testing.TB, b *wire.Batch) []byte {
	t.Helper()
	p, err := wire.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// regionBatch is one period of a region: site i sends green 50+10i, red 50.
func regionBatch(region, period string, sites ...int) *wire.Batch {
	var rels []wire.Release
	for _, i := range sites {
		site := fmt.Sprintf("%016x", 0x100+i)
		rels = append(rels, rel(site, region, period, "G", int64(50+10*i), 1), rel(site, region, period, "R", 50, 1))
	}
	return batch(rels)
}

type indexDoc struct {
	Customer, Region, From, To string
	Rules                      map[string]float64
	Cells                      []map[string]any
}

func (ti *testIndex) pullJSON(t *testing.T, key HQKey, region, from, to string) indexDoc {
	t.Helper()
	var buf bytes.Buffer
	if err := Pull(ctx, key, region, from, to, "json", &buf); err != nil {
		t.Fatal(err)
	}
	var doc indexDoc
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	return doc
}

func TestRegionalIndexHTTP(t *testing.T) {
	backends(t, func(t *testing.T, open func(t *testing.T) *Store) {
		store, id := open(t), newIdentity(t)
		ti := newTestIndex(t, store, id)
		c, _ := ti.enrol(t, "acme")
		for _, b := range []*wire.Batch{regionBatch("eu-west", "2026-01", 0, 1, 2, 3, 4, 5), regionBatch("eu-south", "2026-01", 6, 7, 8)} {
			if _, err := c.Upload(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		key := ti.hqKey(t, "acme")
		doc := ti.pullJSON(t, key, "eu-west", "2026-01", "2026-02")
		want := map[string]any{"period": "2026-01", "published": true, "green_share": 60.0, "green": 450.0, "red": 300.0,
			"total": 750.0, "sites": 6.0, "version": 1.0}
		if doc.Customer != "acme" || doc.Region != "eu-west" || doc.From != "2026-01" || doc.To != "2026-02" || len(doc.Cells) != 1 ||
			fmt.Sprint(doc.Cells[0]) != fmt.Sprint(want) || doc.Rules["min_sites"] != 5 || doc.Rules["max_site_share"] != 0.5 {
			t.Errorf("eu-west: %+v\nwant cell %v", doc, want)
		}
		if st, _ := store.PublisherState(ctx, "acme"); !strings.Contains(string(st), "eu-west") {
			t.Errorf("after publishing, the stored publisher state is %s", st)
		}
		doc = ti.pullJSON(t, key, "eu-south", "2026-01", "2026-01")
		if len(doc.Cells) != 1 || doc.Cells[0]["published"] != false || doc.Cells[0]["reason"] != "too_few_sites" ||
			doc.Cells[0]["green"] != nil || doc.Cells[0]["total"] != nil || doc.Cells[0]["message"] == "" {
			t.Errorf("eu-south: %+v", doc.Cells)
		}

		// CSV, chosen by format or by Accept.
		var buf bytes.Buffer
		if err := Pull(ctx, key, "eu-west", "2026-01", "2026-01", "csv", &buf); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		wantCSV := [][]string{cellsCSVHeader, {"eu-west", "2026-01", "true", "60.0", "450", "300", "750", "6", "1", ""}}
		if fmt.Sprint(recs) != fmt.Sprint(wantCSV) {
			t.Errorf("csv %q\nwant %q", recs, wantCSV)
		}
		code, body, hdr := ti.get(t, &key, "/api/v1/regions/eu-south/index?from=2026-01&to=2026-01", "Accept", "text/csv")
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") ||
			body != strings.Join(cellsCSVHeader, ",")+"\neu-south,2026-01,false,,,,,,,too_few_sites\n" {
			t.Errorf("csv by Accept: %d %q", code, body)
		}
		for _, q := range []string{"from=2026-13&to=2026-14", "from=2026-03&to=2026-01", "from=2026-01&to=2026-W05", "from=2026-01", "format=xml"} {
			if code, body, _ := ti.get(t, &key, "/api/v1/regions/eu-west/index?"+q); code != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
				t.Errorf("?%s: %d %s", q, code, body)
			}
		}

		// Restart on the same database: the new server remembers what was
		// published, so adding one office to eu-west's January would
		// difference it out.
		ti.ts.Close()
		ti.srv.Close()
		ti2 := newTestIndex(t, store, id)
		key.URL = ti2.ts.URL
		c2, _ := ti2.enrol(t, "acme")
		if _, err := c2.Upload(ctx, regionBatch("eu-west", "2026-01", 9)); err != nil {
			t.Fatal(err)
		}
		doc = ti2.pullJSON(t, key, "eu-west", "2026-01", "2026-01")
		if len(doc.Cells) != 1 || doc.Cells[0]["reason"] != "would_isolate" || doc.Cells[0]["green"] != nil {
			t.Errorf("after the restart, 7 sites next to the published 6: %+v", doc.Cells)
		}
		// Without that memory the same request would have published.
		fresh := regionalPublisherWithout(t, store, ti2)
		if !fresh {
			t.Error("a publisher without state withheld the 7-site cell too: the test proves nothing")
		}
		actions := auditActions(t, store, "acme")
		pulls := 0
		for _, a := range actions {
			if a == "pull by hq-key" {
				pulls++
			}
		}
		if pulls < 5 {
			t.Errorf("%d pulls audited: %q", pulls, actions)
		}
	})
}

// regionalPublisherWithout reports whether a publisher with no memory would
// publish eu-west's January as it now stands.
func regionalPublisherWithout(t *testing.T, store *Store, ti *testIndex) bool {
	t.Helper()
	rels, err := store.Releases(ctx, "acme", "eu-west", "2026-01", "2026-01")
	if err != nil {
		t.Fatal(err)
	}
	p := regional.NewPublisher("acme")
	return p.Cell(ti.srv.rules, "eu-west", "2026-01", periodBuckets(rels)[0].buckets).Published
}

func TestRetentionLoop(t *testing.T) {
	store := openSQLite(t)
	id := newIdentity(t)
	mustCustomer(t, store, "acme", 1)
	mustUpsert(t, store, "acme", batch([]wire.Release{rel(site1, "eu", "2025-06", "G", 1, 1), rel(site1, "eu", "2026-02", "G", 1, 1)}), t0)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	srv, err := NewServer(ServerConfig{Store: store, Identity: id, RetentionEvery: 20 * time.Millisecond, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	waitFor(t, 5*time.Second, func() bool {
		entries, _ := store.AuditLog(ctx, "", 0)
		return len(entries) >= 3
	})
	entries, _ := store.AuditLog(ctx, "", 0)
	last := entries[len(entries)-1] // the first run
	if last.Action != "retention" || last.Actor != "index" || last.Detail != "deleted 1 rows" || entries[0].Detail != "deleted 0 rows" {
		t.Errorf("retention audited as %+v", entries)
	}
	if got, _ := store.Releases(ctx, "acme", "eu", "", ""); len(got) != 1 || got[0].Period != "2026-02" {
		t.Errorf("after retention: %+v", got)
	}
	// The server answers meanwhile.
	tr := newTransport(pinnedTLS(id.Pin()))
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %s", resp.Status)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Close has waited for Serve: its listener is closed already.
	if conn, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		conn.Close()
		t.Error("the listener is still open after Close")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return after Close")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	n := len(entries)
	time.Sleep(60 * time.Millisecond) // three intervals: a loop still running would audit again
	if after, _ := store.AuditLog(ctx, "", 0); len(after) < n || len(after) > n+1 {
		t.Errorf("retention kept running after Close: %d entries, then %d", n, len(after))
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	store, id := openSQLite(t), newIdentity(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, err := NewServer(ServerConfig{Store: store, Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(cctx, ln) }()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the listener is still open")
	}
	if _, err := NewServer(ServerConfig{Store: store, Identity: id, Rules: regional.Rules{MinSites: 2, MinPresses: 100, MaxSiteShare: 0.5}}); err == nil {
		t.Error("NewServer accepted rules below the floors")
	}
}

func TestHQPage(t *testing.T) {
	ti := newTestIndex(t, openSQLite(t), newIdentity(t))
	c, _ := ti.enrol(t, "acme")
	if _, err := c.Upload(ctx, regionBatch("eu-west", "2026-02", 0, 1, 2, 3, 4, 5)); err != nil {
		t.Fatal(err)
	}
	key := ti.hqKey(t, "acme")
	if code, _, hdr := ti.get(t, nil, "/hq/"); code != http.StatusSeeOther || hdr.Get("Location") != "/hq/login" {
		t.Errorf("/hq/ without a key: %d %v", code, hdr)
	}
	code, body, hdr := ti.get(t, nil, "/hq/login")
	if code != 200 || !strings.Contains(body, "<form") {
		t.Errorf("login form: %d %s", code, body)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		hdr.Get("X-Content-Type-Options") != "nosniff" || hdr.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("headers %v", hdr)
	}
	form := func(k string) []byte { return []byte(url.Values{"key": {k}}.Encode()) }
	code, _, hdr = ti.do(t, http.MethodPost, "/hq/login", form("pghq1.nonsense"), nil, nil, "Content-Type", "application/x-www-form-urlencoded")
	if code != http.StatusUnauthorized || hdr.Get("Set-Cookie") != "" {
		t.Errorf("login with a bad key: %d, cookie %q", code, hdr.Get("Set-Cookie"))
	}
	// A cross-site form post is refused before it is read.
	code, _, hdr = ti.do(t, http.MethodPost, "/hq/login", form(key.String()), nil, nil, "Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "cross-site")
	if code != http.StatusForbidden || hdr.Get("Set-Cookie") != "" {
		t.Errorf("cross-site login: %d", code)
	}
	code, _, hdr = ti.do(t, http.MethodPost, "/hq/login", form(key.String()), nil, nil, "Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "same-origin")
	cookie := hdr.Get("Set-Cookie")
	if code != http.StatusSeeOther || !strings.HasPrefix(cookie, "pg_hq=") || !strings.Contains(cookie, "HttpOnly") ||
		!strings.Contains(cookie, "Secure") || !strings.Contains(cookie, "SameSite=Strict") || !strings.Contains(cookie, "Path=/") {
		t.Fatalf("login: %d, cookie %q", code, cookie)
	}
	value := strings.TrimPrefix(strings.Split(cookie, ";")[0], "pg_hq=")
	code, body, hdr = ti.get(t, nil, "/hq/?from=2026-01&to=2026-03", "Cookie", "pg_hq="+value)
	if code != 200 || !strings.Contains(body, "eu-west") || !strings.Contains(body, "<svg") || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Errorf("hq page: %d %.300s", code, body)
	}
	if !strings.Contains(body, "60.0") {
		t.Errorf("hq page lacks the published share 60.0 %%")
	}
	// The default range ends with the last closed month (February at t0).
	if code, body, _ = ti.get(t, &key, "/hq/"); code != 200 || !strings.Contains(body, "2026-02") {
		t.Errorf("default range page: %d", code)
	}
	if code, _, _ = ti.get(t, &key, "/hq/?from=2026-05&to=2026-01"); code != http.StatusBadRequest {
		t.Errorf("bad range page: %d", code)
	}
	code, _, hdr = ti.do(t, http.MethodPost, "/hq/logout", nil, nil, nil, "Cookie", "pg_hq="+value)
	if code != http.StatusSeeOther || !strings.Contains(hdr.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d %v", code, hdr)
	}
	for path, ct := range map[string]string{"/openapi.json": "application/json", "/healthz": "text/plain"} {
		if code, body, hdr := ti.get(t, nil, path); code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), ct) || body == "" {
			t.Errorf("%s: %d %s", path, code, hdr.Get("Content-Type"))
		}
	}
	if !json.Valid(openAPIDoc) {
		t.Error("openapi.json is not JSON")
	}
}

func TestBodyLimits(t *testing.T) {
	ti := newTestIndex(t, openSQLite(t), newIdentity(t))
	_, cred := ti.enrol(t, "acme")
	pair, _ := tls.X509KeyPair(cred.CertPEM, cred.KeyPEM)
	big := bytes.Repeat([]byte{0x90}, maxBatchBody+1)
	if code, body, _ := ti.do(t, http.MethodPost, "/api/v1/batches", big, &pair, nil, "Content-Type", "application/x-msgpack"); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized batch: %d %s", code, body)
	}
	if code, _, _ := ti.do(t, http.MethodPost, "/api/v1/batches", mustEncode(t, sample(1)), &pair, nil, "Content-Type", "application/json"); code != http.StatusUnsupportedMediaType {
		t.Errorf("wrong content type: %d", code)
	}
	if code, _, _ := ti.do(t, http.MethodPost, "/api/v1/enrol", bytes.Repeat([]byte(" "), maxEnrolBody+1), nil, nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized enrolment: %d", code)
	}
	// A bad request does not spend the token.
	tok := ti.token(t, "acme", t0.Add(time.Hour))
	req, _ := json.Marshal(enrolRequest{TokenID: tok.ID, Secret: tok.Secret, CSR: "not pem"})
	if code, body, _ := ti.do(t, http.MethodPost, "/api/v1/enrol", req, nil, nil); code != http.StatusBadRequest || !strings.Contains(body, "csr") {
		t.Errorf("enrolment with a bad csr: %d %s", code, body)
	}
	if _, err := Enrol(ctx, tok, "after a bad request"); err != nil {
		t.Errorf("the token was spent by a bad request: %v", err)
	}
}

// FuzzBatchesHandler sends arbitrary bodies as an enrolled cluster: the
// handler answers 2xx or 4xx, never 5xx, and never panics.
func FuzzBatchesHandler(f *testing.F) {
	store := openSQLite(f)
	id := newIdentity(f)
	if err := store.CreateCustomer(ctx, "acme", "Acme", 0); err != nil {
		f.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Store: store, Identity: id, Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	csr, _ := newCSR(f, "x")
	p, err := id.IssueClient("acme", csr, t0)
	if err != nil {
		f.Fatal(err)
	}
	leaf := parsePEMCert(f, p)
	state := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf},
		VerifiedChains: [][]*x509.Certificate{{leaf, id.ClientCA()}}}
	f.Add(mustEncode(f, sample(1)))
	f.Add(mustEncode(f, regionBatch("eu", "2026-W05", 1, 2)))
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte("\xde\x00\x01\xa1v\x01"))
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "https://index/api/v1/batches", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-msgpack")
		req.TLS = state
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 || (rec.Code != 200 && !json.Valid(rec.Body.Bytes())) {
			t.Fatalf("body %x: %d %s", body, rec.Code, rec.Body.String())
		}
		if rec.Code == 200 {
			if _, err := wire.Decode(body); err != nil {
				t.Fatalf("accepted a batch that does not decode: %v", err)
			}
		}
	})
}
