package upload

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/sync/anon"
	"github.com/pulsegate/pulsegate/sync/index"
	"github.com/pulsegate/pulsegate/sync/wire"
)

// Replica is what the releaser needs of the cluster.
type Replica interface {
	IsLeader() bool
	Read(fn func(*cluster.State))
	Apply(ctx context.Context, c cluster.Command) error
}

// Index is an enrolled connection to the central index.
type Index interface {
	Upload(ctx context.Context, b *wire.Batch) (index.UpsertStats, error)
}

// Config configures a Releaser. Zero values take the defaults named.
type Config struct {
	// Rules say how buckets are released. Their ε and cap must be decimals
	// of at most six places: the wire carries them so.
	Rules anon.Rules
	// Kind is the period length: Monthly (the default) or Weekly.
	Kind anon.PeriodKind
	// Interval between rounds; 30s.
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling wait after a
	// failed upload; 2s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// BatchSize is the most releases (two rows each) in one upload; 1000.
	BatchSize int
	// Dial connects to the index with the cluster's enrolment; nil uses
	// index.NewClient.
	Dial func(cluster.IndexEnrolment) (Index, error)
	// Sampler draws the noise; nil is anon.NewSampler (crypto/rand).
	Sampler *anon.Sampler
	Now     func() time.Time
	Logger  *slog.Logger
}

// Status is what the page and /metrics show: numbers of releases and ε,
// never counts.
type Status struct {
	Enrolled        bool
	Customer, URL   string
	Released        int // releases in the replicated state
	Suppressed      int // of which suppressed
	Pending         int // not yet acknowledged by the index
	BudgetExhausted int // due buckets held back because the year's cap is reached
	Uploads         int // successful uploads by this office
	LastUpload      time.Time
	LastError       string
	Ledger          []anon.Total
}

// Releaser releases and uploads on the leader. Run drives it; Round is one
// pass, for tests.
type Releaser struct {
	cfg     Config
	replica Replica
	log     *slog.Logger

	mu        sync.Mutex
	status    Status
	client    Index
	clientFor int64 // the enrolment's At the client was made for
	failures  int
}

var wireEpsilon = regexp.MustCompile(`^[0-9]{1,6}(\.[0-9]{1,6})?$`)

// New checks cfg and returns a Releaser over replica. It starts nothing.
func New(cfg Config, replica Replica) (*Releaser, error) {
	if err := cfg.Rules.Validate(); err != nil {
		return nil, err
	}
	for _, e := range []anon.Epsilon{cfg.Rules.Epsilon, cfg.Rules.YearCap} {
		if !wireEpsilon.MatchString(e.String()) {
			return nil, fmt.Errorf("%w: %s is not a decimal of at most six places", anon.ErrBadRules, e)
		}
	}
	if cfg.Kind != anon.Monthly && cfg.Kind != anon.Weekly {
		return nil, fmt.Errorf("%w: period kind %d", anon.ErrBadRules, cfg.Kind)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 2 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Minute, cfg.MinBackoff)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.Dial == nil {
		cfg.Dial = dialIndex
	}
	if cfg.Sampler == nil {
		cfg.Sampler = anon.NewSampler()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Releaser{cfg: cfg, replica: replica, log: cfg.Logger.With("component", "upload")}, nil
}

func dialIndex(e cluster.IndexEnrolment) (Index, error) {
	return index.NewClient(index.Credentials{URL: e.URL, Pin: e.Pin, Customer: e.Customer, CertPEM: e.CertPEM, KeyPEM: e.KeyPEM})
}

// Run does a round every Interval, waiting longer (doubling, jittered) after
// a failed upload, until ctx ends. Only the leader's rounds do anything.
func (r *Releaser) Run(ctx context.Context) {
	for {
		wait := r.cfg.Interval
		if err := r.Round(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = r.backoff()
			r.log.Warn("releasing to the index failed; will retry", "err", err, "retry_in", wait.Round(time.Second))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff returns the next wait after a failure: MinBackoff doubled per
// consecutive failure up to MaxBackoff, then a uniformly random point in
// its upper half, so that clusters cut off together do not return together.
func (r *Releaser) backoff() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.cfg.MinBackoff << min(r.failures-1, 20)
	if d <= 0 || d > r.cfg.MaxBackoff {
		d = r.cfg.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// Round releases every due bucket and uploads what the index has not
// acknowledged, if this office leads and the cluster is enrolled. It returns
// the first error; what was done before it stays done.
func (r *Releaser) Round(ctx context.Context) error {
	enr, enrolled := r.refreshStatus()
	if !enrolled || !r.replica.IsLeader() {
		return nil
	}
	if err := r.release(ctx); err != nil {
		return r.failed(err)
	}
	if err := r.upload(ctx, enr); err != nil {
		return r.failed(err)
	}
	r.mu.Lock()
	r.failures = 0
	r.status.LastError = ""
	r.mu.Unlock()
	r.refreshStatus()
	return nil
}

func (r *Releaser) failed(err error) error {
	r.mu.Lock()
	r.failures++
	r.status.LastError = err.Error()
	r.mu.Unlock()
	r.refreshStatus()
	return err
}

// release draws and proposes a release for every due bucket.
func (r *Releaser) release(ctx context.Context) error {
	rules := r.cfg.Rules
	var due []Bucket
	var err error
	fits := map[[2]string]bool{}
	r.replica.Read(func(s *cluster.State) {
		due, err = Due(s.Sites(), s.Released, r.cfg.Kind, r.cfg.Now())
		for _, b := range due {
			fits[[2]string{b.Site, b.Period.String()}] = s.BudgetFits(b.Site, b.Period.End.Year, rules.Epsilon, rules.YearCap)
		}
	})
	if err != nil {
		return err
	}
	exhausted := 0
	for _, b := range due {
		if !fits[[2]string{b.Site, b.Period.String()}] {
			exhausted++
			continue
		}
		rel, err := anon.Decide(rules, b.Site, b.Period, b.Green, b.Red, r.cfg.Sampler)
		if err != nil {
			return fmt.Errorf("release %s %s: %w", b.Site, b.Period, err)
		}
		cmd := cluster.Command{Type: cluster.CmdRelease, Release: &cluster.ReleaseCmd{
			Release: cluster.ReleaseRecord{
				Site: rel.Site, Period: rel.Period, Suppressed: rel.Suppressed, Green: rel.Green, Red: rel.Red,
				Epsilon: rel.Epsilon.String(), Sensitivity: rel.Sensitivity, At: r.cfg.Now().Unix(),
			},
			Cap: rules.YearCap.String(),
		}}
		switch err := r.replica.Apply(ctx, cmd); {
		case errors.Is(err, cluster.ErrAlreadyReleased):
			// Another leader got there first; its value stands.
		case errors.Is(err, anon.ErrBudgetExhausted):
			exhausted++
		case err != nil:
			return fmt.Errorf("release %s %s: %w", b.Site, b.Period, err)
		default:
			r.log.Info("released a closed period", "site", b.Site, "period", b.Period.String(), "suppressed", rel.Suppressed)
		}
	}
	r.mu.Lock()
	if exhausted > 0 && r.status.BudgetExhausted != exhausted {
		r.log.Warn("privacy budget for the year is spent: periods are held back", "buckets", exhausted)
	}
	r.status.BudgetExhausted = exhausted
	r.mu.Unlock()
	return nil
}

// upload sends the releases the index has not acknowledged, BatchSize at a
// time, and records each acknowledged batch in the replicated state.
func (r *Releaser) upload(ctx context.Context, enr cluster.IndexEnrolment) error {
	var pending []cluster.ReleaseRecord
	regions := map[string]string{}
	var ledger []anon.Total
	r.replica.Read(func(s *cluster.State) {
		for _, rel := range s.Releases() {
			if !rel.Uploaded {
				pending = append(pending, rel)
			}
		}
		for _, sc := range s.Sites() {
			regions[sc.Info.ID] = sc.Info.Region
		}
		ledger = s.LedgerTotals()
	})
	if len(pending) == 0 {
		return nil
	}
	client, err := r.dial(enr)
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(pending, r.cfg.BatchSize) {
		b := Batch(chunk, regions, ledger)
		stats, err := client.Upload(ctx, b)
		if err != nil {
			return fmt.Errorf("upload %d releases: %w", len(chunk), err)
		}
		refs := make([]cluster.ReleaseRef, len(chunk))
		for i, rel := range chunk {
			refs[i] = cluster.ReleaseRef{Site: rel.Site, Period: rel.Period, Version: rel.Version}
		}
		if err := r.replica.Apply(ctx, cluster.Command{Type: cluster.CmdUploaded, Uploaded: refs}); err != nil {
			return fmt.Errorf("record upload: %w", err)
		}
		r.mu.Lock()
		r.status.Uploads++
		r.status.LastUpload = r.cfg.Now()
		r.mu.Unlock()
		r.log.Info("uploaded releases to the index", "batch", b.BatchID, "releases", len(chunk),
			"inserted", stats.Inserted, "updated", stats.Updated, "unchanged", stats.Unchanged, "refused", stats.Refused)
	}
	return nil
}

// Batch builds the upload of some releases: two rows per release, one per
// colour, and the ledger of the sites they belong to.
func Batch(rels []cluster.ReleaseRecord, regions map[string]string, ledger []anon.Total) *wire.Batch {
	id := make([]byte, 8)
	crand.Read(id) //nolint:errcheck // crypto/rand.Read never fails
	b := &wire.Batch{Version: wire.Version, BatchID: hex.EncodeToString(id)}
	sites := map[string]bool{}
	for _, rel := range rels {
		sites[rel.Site] = true
		for _, c := range []struct {
			colour string
			n      int64
		}{{"G", rel.Green}, {"R", rel.Red}} {
			b.Releases = append(b.Releases, wire.Release{
				Site: rel.Site, Region: regions[rel.Site], Period: rel.Period, Colour: c.colour,
				Suppressed: rel.Suppressed, Count: c.n, Version: rel.Version,
				Epsilon: rel.Epsilon, Sensitivity: rel.Sensitivity,
			})
		}
	}
	for _, t := range ledger {
		if sites[t.Site] {
			b.Ledger = append(b.Ledger, wire.Spend{Site: t.Site, Year: t.Year, Releases: t.Releases, Epsilon: t.Spent.String()})
		}
	}
	return b
}

// dial reuses the client while the enrolment is the same.
func (r *Releaser) dial(enr cluster.IndexEnrolment) (Index, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil && r.clientFor == enr.At {
		return r.client, nil
	}
	c, err := r.cfg.Dial(enr)
	if err != nil {
		return nil, fmt.Errorf("connect to the index: %w", err)
	}
	if old, ok := r.client.(io.Closer); ok {
		old.Close() // idle connections of a replaced enrolment
	}
	r.client, r.clientFor = c, enr.At
	return c, nil
}

// refreshStatus recomputes the status from the replica and returns the
// enrolment.
func (r *Releaser) refreshStatus() (cluster.IndexEnrolment, bool) {
	var enr cluster.IndexEnrolment
	var ok bool
	var released, suppressed, pending int
	var ledger []anon.Total
	r.replica.Read(func(s *cluster.State) {
		enr, ok = s.Index()
		for _, rel := range s.Releases() {
			released++
			if rel.Suppressed {
				suppressed++
			}
			if !rel.Uploaded {
				pending++
			}
		}
		ledger = s.LedgerTotals()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Enrolled, r.status.Customer, r.status.URL = ok, enr.Customer, enr.URL
	r.status.Released, r.status.Suppressed, r.status.Pending = released, suppressed, pending
	r.status.Ledger = ledger
	return enr, ok
}

// Status returns the latest status.
func (r *Releaser) Status() Status {
	r.refreshStatus()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Ledger = slices.Clone(st.Ledger)
	return st
}
