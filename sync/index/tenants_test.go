package index

import (
	"archive/zip"
	"bytes"
	"encoding/csv"
	"errors"
	"github.com/pulsegate/pulsegate/sync/wire"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func testHQKeys(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	mustCustomer(t, s, "globex", 0)
	for _, k := range []struct{ customer, id string }{{"acme", "k1"}, {"acme", "k2"}, {"globex", "g1"}} {
		if err := s.AddHQKey(ctx, k.customer, k.id, "hash-"+k.id, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddHQKey(ctx, "globex", "k1", "other", t0); !errors.Is(err, ErrHQKeyExists) {
		t.Errorf("AddHQKey with a taken id = %v, want ErrHQKeyExists", err)
	}
	if err := s.AddHQKey(ctx, "nobody", "n1", "h", t0); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("AddHQKey for an unknown customer = %v, want ErrCustomerUnknown", err)
	}
	if err := s.AddHQKey(ctx, "acme", "", "h", t0); err == nil {
		t.Error("AddHQKey with an empty id succeeded")
	}
	steps := []struct {
		name, id, hash string
		want           string
		err            error
	}{
		{"acme's first", "k1", "hash-k1", "acme", nil},
		{"acme's second", "k2", "hash-k2", "acme", nil},
		{"globex's", "g1", "hash-g1", "globex", nil},
		{"wrong secret", "k1", "hash-k2", "", ErrHQKeyUnknown},
		{"prefix of the secret", "k1", "hash-k", "", ErrHQKeyUnknown},
		{"empty secret", "k1", "", "", ErrHQKeyUnknown},
		{"unknown id", "zz", "hash-k1", "", ErrHQKeyUnknown},
	}
	for _, st := range steps {
		got, err := s.CheckHQKey(ctx, st.id, st.hash)
		if got != st.want || !errors.Is(err, st.err) {
			t.Errorf("%s: CheckHQKey = %q, %v; want %q, %v", st.name, got, err, st.want, st.err)
		}
	}
	// Revocation is per customer: globex cannot revoke acme's key.
	if err := s.RevokeHQKey(ctx, "globex", "k1", t0); !errors.Is(err, ErrHQKeyUnknown) {
		t.Errorf("RevokeHQKey of another customer's key = %v, want ErrHQKeyUnknown", err)
	}
	if err := s.RevokeHQKey(ctx, "acme", "k1", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeHQKey(ctx, "acme", "k1", t0); err != nil {
		t.Errorf("revoking twice = %v", err)
	}
	if _, err := s.CheckHQKey(ctx, "k1", "hash-k1"); !errors.Is(err, ErrHQKeyUnknown) {
		t.Errorf("revoked key: %v, want ErrHQKeyUnknown", err)
	}
	if c, err := s.CheckHQKey(ctx, "k2", "hash-k2"); c != "acme" || err != nil {
		t.Errorf("the other key after revoking one: %q, %v", c, err)
	}
	// A key whose customer is erased but whose row survived (by a hand
	// edit: EraseCustomer deletes keys) is refused as erased.
	if _, err := s.read().exec(ctx, `UPDATE customers SET erased_at = 1 WHERE id = 'globex'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckHQKey(ctx, "g1", "hash-g1"); !errors.Is(err, ErrCustomerErased) {
		t.Errorf("key of an erased customer = %v, want ErrCustomerErased", err)
	}
}

func testPublisherState(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 0)
	mustCustomer(t, s, "globex", 0)
	if st, err := s.PublisherState(ctx, "acme"); st != nil || err != nil {
		t.Errorf("PublisherState before any = %q, %v; want nil, nil", st, err)
	}
	for i, state := range []string{`{"v":1}`, `{"v":2,"long":"` + strings.Repeat("x", 100000) + `"}`} {
		if err := s.SavePublisherState(ctx, "acme", []byte(state), t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.PublisherState(ctx, "acme"); string(got) != state || err != nil {
			t.Errorf("PublisherState after save %d = %.40q, %v", i, got, err)
		}
	}
	if st, err := s.PublisherState(ctx, "globex"); st != nil || err != nil {
		t.Errorf("globex's state = %q, %v; want nil (states are per customer)", st, err)
	}
	if err := s.SavePublisherState(ctx, "nobody", []byte(`{}`), t0); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("SavePublisherState for an unknown customer = %v", err)
	}
	if err := s.SavePublisherState(ctx, "acme", nil, t0); err == nil {
		t.Error("saving an empty state succeeded")
	}
}

func testCustomersAndRetention(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "b", 0)
	mustCustomer(t, s, "a", 7)
	if err := s.SetRetention(ctx, "b", 3); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{0, -1} {
		if err := s.SetRetention(ctx, "b", bad); err == nil {
			t.Errorf("SetRetention(%d) succeeded", bad)
		}
	}
	if err := s.SetRetention(ctx, "nobody", 3); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("SetRetention of an unknown customer = %v", err)
	}
	if _, err := s.EraseCustomer(ctx, "a", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRetention(ctx, "a", 3); !errors.Is(err, ErrCustomerErased) {
		t.Errorf("SetRetention of an erased customer = %v", err)
	}
	cs, err := s.Customers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != "a" || cs[0].ErasedAt == nil || !cs[0].ErasedAt.Equal(t0) || cs[0].RetentionMonths != 7 ||
		cs[1] != (Customer{ID: "b", Name: "Customer b", RetentionMonths: 3}) {
		t.Errorf("Customers = %+v", cs)
	}
	// The new retention is what ApplyRetention uses: 3 months keeps 2026-01
	// at t0 (15 March) and drops 2025-11.
	mustUpsert(t, s, "b", batch([]wire.Release{rel(site1, "eu", "2025-11", "G", 1, 1), rel(site1, "eu", "2026-01", "G", 1, 1)}), t0)
	if n, err := s.ApplyRetention(ctx, t0); n != 1 || err != nil {
		t.Errorf("ApplyRetention = %d, %v; want 1", n, err)
	}
}

func testExportCSV(t *testing.T, open func(t *testing.T) *Store) {
	s := open(t)
	mustCustomer(t, s, "acme", 13)
	mustCustomer(t, s, "globex", 0)
	b := sample(2)
	mustUpsert(t, s, "acme", b, t0)
	mustUpsert(t, s, "globex", batch([]wire.Release{rel("00000000000000ff", "us", "2026-01", "G", 5, 1)}), t0)
	if err := s.AddHQKey(ctx, "acme", "hqk", "secret-hash-hq", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEnrolToken(ctx, "acme", "tok", "secret-hash-tok", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, "acme", "operator", "x", "a, \"quoted\"\nline", t0); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := s.ExportCSV(ctx, "acme", &out); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out.Bytes(), []byte("secret-hash")) {
		t.Error("the CSV export carries a secret hash")
	}
	zr, err := zip.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][][]string{}
	var names []string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(rc).ReadAll()
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		files[f.Name] = recs
		names = append(names, f.Name)
	}
	want := []string{"customer.csv", "releases.csv", "ledger.csv", "erased_sites.csv", "enrol_tokens.csv", "hq_keys.csv", "publisher_state.csv", "audit_log.csv"}
	if !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}
	if got := files["customer.csv"]; len(got) != 2 || !slices.Equal(got[1], []string{"acme", "Customer acme", "13", ""}) {
		t.Errorf("customer.csv = %q", got)
	}
	rels := files["releases.csv"]
	if len(rels) != 1+len(b.Releases) {
		t.Fatalf("releases.csv has %d rows, want %d", len(rels)-1, len(b.Releases))
	}
	// Suppressed release of sample: site1 2026-02 R (index 3).
	first := []string{site1, "eu-west", "2026-01", "G", "false", "2", "2", "0.5", "1", "2026-03-15T09:00:00Z"}
	if !slices.Equal(rels[1], first) {
		t.Errorf("releases.csv row 1 = %q, want %q", rels[1], first)
	}
	if !slices.Contains(files["releases.csv"][4], "true") {
		t.Errorf("the suppressed release reads %q", rels[4])
	}
	if bytes.Contains(out.Bytes(), []byte("00000000000000ff")) {
		t.Error("the export of acme carries globex's site")
	}
	if got := files["hq_keys.csv"]; len(got) != 2 || !slices.Equal(got[1], []string{"hqk", "2026-03-15T09:00:00Z", ""}) {
		t.Errorf("hq_keys.csv = %q", got)
	}
	audit := files["audit_log.csv"]
	if len(audit) != 2 || audit[1][5] != "a, \"quoted\"\nline" {
		t.Errorf("audit_log.csv = %q", audit)
	}
	if err := s.ExportCSV(ctx, "nobody", io.Discard); !errors.Is(err, ErrCustomerUnknown) {
		t.Errorf("ExportCSV of an unknown customer = %v", err)
	}
}
