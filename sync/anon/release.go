package anon

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Errors from Decide and Publish.
var (
	ErrBadRules   = errors.New("bad release rules")
	ErrPeriodOpen = errors.New("period not closed")
)

// MinK is the lowest suppression threshold Validate accepts: a customer may
// raise it, never lower it.
const MinK = 10

// maxCount bounds an exact count so count + noise cannot overflow int64.
const maxCount = 1 << 62

// Rules say how a bucket is released. The zero value is invalid; start from
// DefaultRules.
type Rules struct {
	// K suppresses a bucket whose noisy green+red total is below it.
	K uint64
	// Epsilon is the budget one release spends.
	Epsilon Epsilon
	// Sensitivity Δ is the most presses one person can add to a bucket; 0
	// means one per working day of the period. A value below that is refused:
	// it would promise more privacy than the noise gives.
	Sensitivity uint64
	// YearCap bounds the ε a site spends per calendar year.
	YearCap Epsilon
}

// DefaultRules are K = 10, ε = 1 per release, Δ = one press per working
// day, and a cap of 12 per site and year: one monthly release a month.
func DefaultRules() Rules {
	return Rules{K: MinK, Epsilon: Epsilon{1, 1}, YearCap: Epsilon{12, 1}}
}

// Validate checks r on its own; Decide also checks Sensitivity against the
// period.
func (r Rules) Validate() error {
	switch {
	case r.K < MinK:
		return fmt.Errorf("%w: K %d below the minimum %d", ErrBadRules, r.K, MinK)
	case !r.Epsilon.positive():
		return fmt.Errorf("%w: epsilon %s must be positive", ErrBadRules, r.Epsilon)
	case !r.YearCap.valid() || r.YearCap.Cmp(r.Epsilon) < 0:
		return fmt.Errorf("%w: year cap %s below epsilon %s", ErrBadRules, r.YearCap, r.Epsilon)
	}
	return nil
}

// Release is what leaves the office for one site and period. It carries no
// exact count: Green and Red are noisy, and both are 0 when Suppressed.
type Release struct {
	Site       string
	Period     string // Period.String: "2026-03" or "2026-W09"
	Suppressed bool
	Green, Red int64 // noisy, clamped at ≥ 0
	// Epsilon and Sensitivity are what this release spent and assumed, so the
	// index can show the guarantee next to the numbers.
	Epsilon     Epsilon
	Sensitivity uint64
	// Version is the ledger sequence number of the charge that paid for this
	// release (set by Publish; 0 from Decide alone). It only grows, so the
	// index can keep the newest release per bucket.
	Version uint64
}

// Decide turns the exact green and red counts of site over p into a Release:
// each count gets independent discrete Laplace noise of scale Δ/ε, is clamped
// at 0, and the pair is suppressed when the noisy total is below K.
//
// Suppression looks at the noisy total, not the exact one, so that it is
// post-processing of an ε-DP output and the suppression bit is covered by the
// same ε (DESIGN.md). Decide spends no budget itself: use Publish, which
// charges the ledger first.
func Decide(r Rules, site string, p Period, green, red uint64, s *Sampler) (Release, error) {
	delta, err := r.check(site, p)
	if err != nil {
		return Release{}, err
	}
	return decide(r, site, p, delta, green, red, s)
}

// Publish releases a closed period: it checks the rules, charges the ledger
// for the site and the calendar year of p's last day, then decides. The
// charge comes first and stays even if deciding fails: a budget can be
// wasted, never overspent.
//
// Call it once per bucket and keep the Release: resending the stored value is
// free, calling Publish again spends ε again and hands out a second noisy
// look at the same counts.
func Publish(l *Ledger, r Rules, site string, p Period, today string, green, red uint64, s *Sampler) (Release, error) {
	delta, err := r.check(site, p)
	if err != nil {
		return Release{}, err
	}
	if !p.Closed(today) {
		return Release{}, fmt.Errorf("publish %s %s on %q: %w", site, p, today, ErrPeriodOpen)
	}
	seq, err := l.charge(site, p.End.Year, p.String(), r.Epsilon, r.YearCap)
	if err != nil {
		return Release{}, err
	}
	rel, err := decide(r, site, p, delta, green, red, s)
	if err != nil {
		return Release{}, err
	}
	rel.Version = seq
	return rel, nil
}

// check validates everything that does not depend on the counts and returns
// the sensitivity in force for p.
func (r Rules) check(site string, p Period) (uint64, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	if site == "" {
		return 0, fmt.Errorf("%w: empty site", ErrBadRules)
	}
	if !p.valid() {
		return 0, fmt.Errorf("%w: %s to %s is not one whole %s period", ErrBadPeriod, p.Start, p.End, p.Kind)
	}
	days := p.WorkingDays()
	switch {
	case r.Sensitivity == 0:
		return days, nil
	case r.Sensitivity < days:
		return 0, fmt.Errorf("%w: sensitivity %d below one press per working day (%d in %s)", ErrBadRules, r.Sensitivity, days, p)
	}
	return r.Sensitivity, nil
}

func decide(r Rules, site string, p Period, delta, green, red uint64, s *Sampler) (Release, error) {
	// Scale b = Δ/ε = Δ·Den/Num, kept rational.
	hi, scaleNum := bits.Mul64(delta, r.Epsilon.Den)
	if hi != 0 {
		return Release{}, fmt.Errorf("%w: sensitivity %d / epsilon %s overflows", ErrBadRules, delta, r.Epsilon)
	}
	g, err := noisy(s, green, scaleNum, r.Epsilon.Num)
	if err != nil {
		return Release{}, fmt.Errorf("decide %s %s green: %w", site, p, err)
	}
	rd, err := noisy(s, red, scaleNum, r.Epsilon.Num)
	if err != nil {
		return Release{}, fmt.Errorf("decide %s %s red: %w", site, p, err)
	}
	rel := Release{Site: site, Period: p.String(), Epsilon: r.Epsilon, Sensitivity: delta}
	// Both noisy values are drawn even when the bucket ends up suppressed, so
	// how much randomness was read does not hint at the outcome.
	if uint64(g)+uint64(rd) < r.K {
		rel.Suppressed = true
		return rel, nil
	}
	rel.Green, rel.Red = g, rd
	return rel, nil
}

// noisy returns max(0, c + DL(num/den)). The clamp is post-processing: it
// looks only at the noisy value, so it costs no privacy, and a negative count
// would only confuse readers.
func noisy(s *Sampler, c, num, den uint64) (int64, error) {
	if c > maxCount {
		return 0, fmt.Errorf("count %d over %d", c, uint64(maxCount))
	}
	n, err := s.DiscreteLaplace(num, den)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64-int64(c) {
		return 0, fmt.Errorf("count %d plus noise %d overflows", c, n)
	}
	return max(int64(c)+n, 0), nil
}
