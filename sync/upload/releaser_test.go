package upload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/cluster/clustertest"
	"github.com/pulsegate/pulsegate/sync/anon"
	"github.com/pulsegate/pulsegate/sync/index"
	"github.com/pulsegate/pulsegate/sync/wire"
)

// fakeClock is every office's clock: it runs at the real pace (raft and
// gossip time out by it) from a moment the test sets, and moves when the
// test says, to close periods.
type fakeClock struct{ off atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}

func (c *fakeClock) set(t time.Time) { c.off.Store(int64(time.Until(t))) }

func (c *fakeClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())).UTC() }

// testIndex is a real index server (SQLite, TLS) on loopback.
type testIndex struct {
	store *index.Store
	url   string
	pin   string
}

func startIndex(tb testing.TB, now func() time.Time) *testIndex {
	tb.Helper()
	dir := tb.TempDir()
	st, err := index.OpenSQLite(filepath.Join(dir, "index.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	id, err := index.LoadOrCreateIdentity(filepath.Join(dir, "identity"), nil, now())
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := index.NewServer(index.ServerConfig{Store: st, Identity: id, Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.TLS = srv.TLSConfig()
	ts.StartTLS()
	tb.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	return &testIndex{store: st, url: ts.URL, pin: id.Pin()}
}

// enrol makes customer's token at the index and enrols the cluster through
// the office c with the real client.
func (ix *testIndex) enrol(tb testing.TB, c *cluster.Cluster, customer string, now time.Time) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ix.store.CreateCustomer(ctx, customer, customer, 0); err != nil {
		tb.Fatal(err)
	}
	tok := index.EnrolToken{URL: ix.url, ID: "tok-" + customer, Secret: "secret-of-" + customer, Pin: ix.pin}
	if err := ix.store.AddEnrolToken(ctx, customer, tok.ID, index.HashSecret(tok.Secret), now.Add(time.Hour)); err != nil {
		tb.Fatal(err)
	}
	cred, err := index.Enrol(ctx, tok, "test cluster")
	if err != nil {
		tb.Fatal(err)
	}
	err = c.Enrol(ctx, cluster.IndexEnrolment{URL: cred.URL, Pin: cred.Pin, Customer: cred.Customer, CertPEM: cred.CertPEM, KeyPEM: cred.KeyPEM})
	if err != nil {
		tb.Fatal(err)
	}
}

// rows is everything the index holds for the customer, per region.
func (ix *testIndex) rows(tb testing.TB, customer string) (map[string][]wire.Release, []wire.Spend) {
	tb.Helper()
	ctx := context.Background()
	regions, err := ix.store.Regions(ctx, customer)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]wire.Release{}
	for _, r := range regions {
		rels, err := ix.store.Releases(ctx, customer, r, "", "")
		if err != nil {
			tb.Fatal(err)
		}
		out[r] = rels
	}
	ledger, err := ix.store.Ledger(ctx, customer)
	if err != nil {
		tb.Fatal(err)
	}
	return out, ledger
}

// flaky wraps the real client. While lose is set, an upload reaches the
// index and is stored, but its answer is lost on the way back: the office
// cannot tell it from a failed upload and must send it again.
type flaky struct {
	inner   Index
	lose    *atomic.Bool
	uploads *atomic.Int64
}

var errLostAnswer = errors.New("connection reset while reading the index's answer")

func (f flaky) Upload(ctx context.Context, b *wire.Batch) (index.UpsertStats, error) {
	f.uploads.Add(1)
	st, err := f.inner.Upload(ctx, b)
	if err == nil && f.lose.Load() {
		return index.UpsertStats{}, errLostAnswer
	}
	return st, err
}

// publishMonths publishes, from every office, closed days in January to
// March 2026 and an open April 1st.
func publishMonths(tb testing.TB, set *clustertest.Set) {
	tb.Helper()
	for i, c := range set.Nodes {
		days := []cluster.DayCounts{
			{Day: "2026-01-12", Closed: true, Green: uint64(40 + i), Red: 20, Total: uint64(60 + i)},
			{Day: "2026-02-03", Closed: true, Green: 3, Red: 2, Total: 5},
			{Day: "2026-03-30", Closed: true, Green: uint64(100 * (i + 1)), Red: 50, Total: uint64(100*(i+1) + 50)},
			{Day: "2026-04-01", Total: 7},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := c.Publish(ctx, 1, days)
		cancel()
		if err != nil {
			tb.Fatalf("publish from office %d: %v", i, err)
		}
	}
	clustertest.WaitFor(tb, 10*time.Second, "every office's counts everywhere", func() bool {
		for _, c := range set.Nodes {
			if len(c.Sites()) != len(set.Nodes) {
				return false
			}
			for _, sc := range c.Sites() {
				if len(sc.Days) != 4 || sc.Info.TimeZone == "" {
					return false
				}
			}
		}
		return true
	})
}

func releasesOn(c *cluster.Cluster) []cluster.ReleaseRecord {
	var out []cluster.ReleaseRecord
	c.Read(func(s *cluster.State) { out = s.Releases() })
	return out
}

// noisy returns the releases without their upload flags: what was drawn.
func noisy(rs []cluster.ReleaseRecord) []cluster.ReleaseRecord {
	out := make([]cluster.ReleaseRecord, len(rs))
	for i, r := range rs {
		r.Uploaded = false
		out[i] = r
	}
	return out
}

// TestUploadIsExactlyOnceAcrossLostAnswersRetriesAndLeaderChange drives the
// releasers of a real 3-office cluster against a real index: answers lost
// after the index stored a batch, a storm of resends, and the leader killed
// with its upload unacknowledged. The index must end with rows identical to
// one clean upload of the releases, whose noise was drawn exactly once.
func TestUploadIsExactlyOnceAcrossLostAnswersRetriesAndLeaderChange(t *testing.T) {
	clock := newClock(time.Date(2026, 4, 1, 10, 0, 0, 0, time.UTC))
	set := clustertest.New(t, 3, clustertest.Options{Now: clock.Now})
	ix := startIndex(t, clock.Now)
	publishMonths(t, set)
	ix.enrol(t, set.Nodes[1], "acme", clock.Now()) // any office may enrol

	var lose atomic.Bool
	var uploads atomic.Int64
	releasers := make([]*Releaser, len(set.Nodes))
	for i, c := range set.Nodes {
		r, err := New(Config{
			Rules: anon.DefaultRules(), Now: clock.Now,
			Dial: func(e cluster.IndexEnrolment) (Index, error) {
				inner, err := dialIndex(e)
				return flaky{inner, &lose, &uploads}, err
			},
		}, c)
		if err != nil {
			t.Fatal(err)
		}
		releasers[i] = r
	}
	ctx := context.Background()

	// Followers do nothing.
	leader := set.Leader()
	for i, r := range releasers {
		if i != leader {
			if err := r.Round(ctx); err != nil {
				t.Fatalf("follower round: %v", err)
			}
		}
	}
	if n := len(releasesOn(set.Nodes[leader])); n != 0 {
		t.Fatalf("followers released %d periods", n)
	}

	// The leader releases 3 offices × 3 closed months; the index stores
	// them, but the answer is lost.
	lose.Store(true)
	if err := releasers[leader].Round(ctx); !errors.Is(err, errLostAnswer) {
		t.Fatalf("round with the answer lost: %v", err)
	}
	drawn := noisy(releasesOn(set.Nodes[leader]))
	if len(drawn) != 9 {
		t.Fatalf("%d releases, want 9 (3 offices × January to March; April is open)", len(drawn))
	}
	for _, r := range drawn {
		if r.Period == "2026-04" {
			t.Fatal("the current month was released")
		}
	}
	if st := releasers[leader].Status(); st.Pending != 9 || st.LastError == "" {
		t.Fatalf("status after a lost answer = %+v, want 9 pending and the error", st)
	}

	// A retry storm: the same pending releases, again and again, some in
	// parallel from a second client.
	for range 3 {
		if err := releasers[leader].Round(ctx); !errors.Is(err, errLostAnswer) {
			t.Fatalf("retry: %v", err)
		}
	}
	var enr cluster.IndexEnrolment
	set.Nodes[leader].Read(func(s *cluster.State) { enr, _ = s.Index() })
	direct, err := dialIndex(enr)
	if err != nil {
		t.Fatal(err)
	}
	var regions = map[string]string{}
	for _, sc := range set.Nodes[leader].Sites() {
		regions[sc.Info.ID] = sc.Info.Region
	}
	var ledger []anon.Total
	set.Nodes[leader].Read(func(s *cluster.State) { ledger = s.LedgerTotals() })
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := direct.Upload(ctx, Batch(drawn, regions, ledger)); err != nil {
				t.Errorf("resend: %v", err)
			}
		})
	}
	wg.Wait()

	// The leader dies with its uploads unacknowledged. The new leader
	// resends the stored values: no fresh noise, no second release.
	set.Kill(leader)
	lose.Store(false)
	next := set.Leader()
	clustertest.WaitFor(t, 10*time.Second, "the new leader to have the releases", func() bool {
		return len(releasesOn(set.Nodes[next])) == 9
	})
	if err := releasers[next].Round(ctx); err != nil {
		t.Fatalf("new leader's round: %v", err)
	}
	final := releasesOn(set.Nodes[next])
	if !reflect.DeepEqual(noisy(final), drawn) {
		t.Fatalf("the new leader's releases differ from the first draw:\n got %+v\nwant %+v", noisy(final), drawn)
	}
	for _, r := range final {
		if !r.Uploaded {
			t.Fatalf("release %s %s not marked uploaded", r.Site, r.Period)
		}
	}
	if st := releasers[next].Status(); st.Pending != 0 || st.Released != 9 || st.LastError != "" {
		t.Fatalf("status after the upload = %+v", st)
	}
	before := uploads.Load()
	if err := releasers[next].Round(ctx); err != nil {
		t.Fatal(err)
	}
	if uploads.Load() != before {
		t.Fatal("an acknowledged release was uploaded again")
	}

	// The index's rows equal one clean upload of the same releases.
	got, gotLedger := ix.rows(t, "acme")
	ref := startIndex(t, clock.Now)
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := ref.store.CreateCustomer(ctx2, "acme", "acme", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ref.store.Upsert(ctx2, "acme", Batch(drawn, regions, ledger), clock.Now()); err != nil {
		t.Fatal(err)
	}
	want, wantLedger := ref.rows(t, "acme")
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotLedger, wantLedger) {
		t.Fatalf("index rows after lost answers, a retry storm and a leader change:\n got %+v %+v\nwant %+v %+v", got, gotLedger, want, wantLedger)
	}
	if len(got) != 3 {
		t.Fatalf("rows in %d regions, want 3", len(got))
	}
	for _, rels := range got {
		if len(rels) != 6 { // 3 months × 2 colours
			t.Fatalf("%d rows for one office, want 6", len(rels))
		}
	}
}

// TestReleasingStopsAtTheYearCap: with a cap of 2 releases a year, the third
// closed month of each office is held back, and says so.
func TestReleasingStopsAtTheYearCap(t *testing.T) {
	clock := newClock(time.Date(2026, 4, 1, 10, 0, 0, 0, time.UTC))
	set := clustertest.New(t, 1, clustertest.Options{Now: clock.Now})
	ix := startIndex(t, clock.Now)
	publishMonths(t, set)
	ix.enrol(t, set.Nodes[0], "acme", clock.Now())
	rules := anon.DefaultRules()
	rules.YearCap = anon.Epsilon{Num: 2, Den: 1}
	r, err := New(Config{Rules: rules, Now: clock.Now}, set.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := r.Status()
	if st.Released != 2 || st.BudgetExhausted != 1 || st.Pending != 0 {
		t.Fatalf("status = %+v, want 2 released and uploaded, 1 held back", st)
	}
	if len(st.Ledger) != 1 || st.Ledger[0].Releases != 2 || st.Ledger[0].Spent.String() != "2" {
		t.Fatalf("ledger = %+v", st.Ledger)
	}
	_, ledger := ix.rows(t, "acme")
	if len(ledger) != 1 || ledger[0].Releases != 2 || ledger[0].Epsilon != "2" {
		t.Fatalf("ledger at the index = %+v, want 2 releases and ε 2", ledger)
	}
	// A new year brings a new budget.
	clock.set(time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := set.Nodes[0].Publish(ctx, 2, []cluster.DayCounts{{Day: "2027-01-02", Total: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 2026-03 stays held back (2026's budget is spent), and so do May to
	// December 2026, due now and over the cap as well. April waits: its
	// 1st is still open in the replica, as this office never closed it.
	if st := r.Status(); st.Released != 2 || st.BudgetExhausted != 9 {
		t.Fatalf("status in 2027 = %+v, want still 2 released, 9 held back", st)
	}
}

func TestNewRefusesRulesTheWireCannotCarry(t *testing.T) {
	rules := anon.DefaultRules()
	rules.Epsilon = anon.Epsilon{Num: 1, Den: 3}
	if _, err := New(Config{Rules: rules}, nil); err == nil {
		t.Fatal("accepted ε 1/3, which has no six-place decimal")
	}
	rules = anon.DefaultRules()
	rules.K = 2
	if _, err := New(Config{Rules: rules}, nil); err == nil {
		t.Fatal("accepted K 2")
	}
}

// TestHQPullsTheRegionalIndexOfFiveOffices is the whole path in one process:
// five real offices in one region count, March closes, the leader releases
// and uploads, and HQ pulls the region's March cell from the real index with
// the real client: published, made of the noisy releases only.
func TestHQPullsTheRegionalIndexOfFiveOffices(t *testing.T) {
	clock := newClock(time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC))
	set := clustertest.New(t, 5, clustertest.Options{Now: clock.Now, Region: func(int) string { return "eu-west" }})
	ix := startIndex(t, clock.Now)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, c := range set.Nodes {
		green, red := uint64(60+10*i), uint64(40+5*i)
		if err := c.Publish(ctx, 1, []cluster.DayCounts{{Day: "2026-03-31", Total: green + red}}); err != nil {
			t.Fatal(err)
		}
		// March 31st closes at midnight; the office republishes it with colours.
		if i == 0 {
			clock.set(time.Date(2026, 4, 1, 0, 1, 0, 0, time.UTC))
		}
		if err := c.Publish(ctx, 2, []cluster.DayCounts{{Day: "2026-03-31", Closed: true, Green: green, Red: red, Total: green + red}}); err != nil {
			t.Fatal(err)
		}
	}
	leader := set.Leader()
	clustertest.WaitFor(t, 10*time.Second, "every office's closed March at the leader", func() bool {
		n := 0
		for _, sc := range set.Nodes[leader].Sites() {
			if len(sc.Days) == 1 && sc.Days[0].Closed && sc.Info.TimeZone != "" {
				n++
			}
		}
		return n == 5
	})
	ix.enrol(t, set.Nodes[leader], "acme", clock.Now())
	r, err := New(Config{Rules: anon.DefaultRules(), Now: clock.Now}, set.Nodes[leader])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Round(ctx); err != nil {
		t.Fatal(err)
	}
	var green, red int64
	for _, rel := range releasesOn(set.Nodes[leader]) {
		if rel.Suppressed {
			t.Fatalf("release %+v suppressed: 100+ presses should clear k = 10", rel)
		}
		green, red = green+rel.Green, red+rel.Red
	}

	key, err := index.NewHQKey(ix.url, ix.pin)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.store.AddHQKey(ctx, "acme", key.ID, index.HashSecret(key.Secret), clock.Now()); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := index.Pull(ctx, key, "eu-west", "2026-03", "2026-03", "json", &buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Cells []struct {
			Period     string  `json:"period"`
			Published  bool    `json:"published"`
			GreenShare float64 `json:"green_share"`
			Green, Red int64
			Total      int64 `json:"total"`
			Sites      int   `json:"sites"`
			Reason     string
		} `json:"cells"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("pull answer %s: %v", buf.String(), err)
	}
	if len(got.Cells) != 1 {
		t.Fatalf("cells = %+v, want March only", got.Cells)
	}
	c := got.Cells[0]
	if !c.Published || c.Period != "2026-03" || c.Sites != 5 || c.Green != green || c.Red != red || c.Total != green+red {
		t.Fatalf("March cell = %+v, want published from 5 sites with green %d red %d (the sums of the noisy releases)", c, green, red)
	}
	if want := math.Round(float64(green)*1000/float64(green+red)) / 10; math.Abs(c.GreenShare-want) > 0.051 {
		t.Fatalf("green share %.1f, want %.1f", c.GreenShare, want)
	}
	buf.Reset()
	if err := index.Pull(ctx, key, "eu-west", "2026-03", "2026-03", "csv", &buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "region,period,published,green_share") ||
		!strings.HasPrefix(lines[1], "eu-west,2026-03,true,") {
		t.Fatalf("CSV pull = %q", buf.String())
	}
}
