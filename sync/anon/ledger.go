package anon

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// ErrBudgetExhausted reports a charge that would take a site's ε for the year
// past its cap. Nothing is charged and nothing may be released.
var ErrBudgetExhausted = errors.New("privacy budget exhausted")

// Entry is one charge, in the order charges were made.
type Entry struct {
	Seq     uint64  `json:"seq"` // 1, 2, 3, … over the whole ledger
	Site    string  `json:"site"`
	Year    int     `json:"year"`
	Period  string  `json:"period,omitempty"` // set by Publish
	Epsilon Epsilon `json:"epsilon"`
	Cap     Epsilon `json:"cap"`   // the cap in force when charged
	Spent   Epsilon `json:"spent"` // the site's total for Year after this charge
}

// Total is a site's spend for one calendar year.
type Total struct {
	Site     string
	Year     int
	Releases int
	Spent    Epsilon
}

type siteYear struct {
	site string
	year int
}

// Ledger is the privacy-loss account of a cluster: an append-only list of
// charges and, per site and calendar year, their exact sum. It does no I/O and
// reads no clock, so the caller can keep it in replicated state. The zero
// Ledger is empty and ready. It is not safe for concurrent use.
type Ledger struct {
	entries []Entry
	totals  map[siteYear]Total
}

// Charge records eps against site for year if the year's total stays within
// cap, and otherwise returns ErrBudgetExhausted and records nothing: an
// unclear budget means no release.
func (l *Ledger) Charge(site string, year int, eps, cap Epsilon) error {
	_, err := l.charge(site, year, "", eps, cap)
	return err
}

// ChargeRelease is Charge for one release of period, and returns the
// charge's sequence number, which versions the release. Keep the ledger in
// the same replicated state as the release it pays for.
func (l *Ledger) ChargeRelease(site string, year int, period string, eps, cap Epsilon) (uint64, error) {
	return l.charge(site, year, period, eps, cap)
}

// Fits reports whether charging eps to site for year would stay within cap.
func (l *Ledger) Fits(site string, year int, eps, cap Epsilon) bool {
	sum, ok := epsilonOf(new(big.Rat).Add(l.Spent(site, year).rat(), eps.rat()))
	return ok && sum.Cmp(cap) <= 0
}

func (l *Ledger) charge(site string, year int, period string, eps, cap Epsilon) (uint64, error) {
	switch {
	case site == "":
		return 0, errors.New("charge: empty site")
	case !eps.positive():
		return 0, fmt.Errorf("charge %s %d: epsilon %s must be positive", site, year, eps)
	case !cap.valid():
		return 0, fmt.Errorf("charge %s %d: cap %s is not a number", site, year, cap)
	}
	k := siteYear{site, year}
	t := l.totals[k]
	spent := Epsilon{0, 1}
	if t.Releases > 0 {
		spent = t.Spent
	}
	sum, ok := epsilonOf(new(big.Rat).Add(spent.rat(), eps.rat()))
	if !ok {
		return 0, fmt.Errorf("charge %s %d: %s + %s does not fit: %w", site, year, spent, eps, ErrBudgetExhausted)
	}
	if sum.Cmp(cap) > 0 {
		return 0, fmt.Errorf("charge %s %d: spent %s + %s over cap %s: %w", site, year, spent, eps, cap, ErrBudgetExhausted)
	}
	if l.totals == nil {
		l.totals = make(map[siteYear]Total)
	}
	seq := uint64(len(l.entries)) + 1
	l.entries = append(l.entries, Entry{Seq: seq, Site: site, Year: year, Period: period, Epsilon: eps, Cap: cap, Spent: sum})
	l.totals[k] = Total{Site: site, Year: year, Releases: t.Releases + 1, Spent: sum}
	return seq, nil
}

// Spent returns the ε site has spent in year (0 if nothing).
func (l *Ledger) Spent(site string, year int) Epsilon {
	if t, ok := l.totals[siteYear{site, year}]; ok {
		return t.Spent
	}
	return Epsilon{0, 1}
}

// Releases returns how many charges site has made in year.
func (l *Ledger) Releases(site string, year int) int {
	return l.totals[siteYear{site, year}].Releases
}

// Entries returns a copy of every charge, oldest first.
func (l *Ledger) Entries() []Entry { return slices.Clone(l.entries) }

// Totals returns the spend per site and year, sorted by site then year.
func (l *Ledger) Totals() []Total {
	out := make([]Total, 0, len(l.totals))
	for _, t := range l.totals {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Total) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Year, b.Year))
	})
	return out
}

type ledgerJSON struct {
	Entries []Entry `json:"entries"`
}

// MarshalJSON writes the charges; totals are derived and not stored.
func (l Ledger) MarshalJSON() ([]byte, error) {
	return json.Marshal(ledgerJSON{Entries: l.entries})
}

// UnmarshalJSON replays the charges through Charge's checks and refuses a
// ledger whose sequence numbers or running totals do not add up, or that went
// over a cap: a damaged ledger must not quietly hand out fresh budget.
func (l *Ledger) UnmarshalJSON(p []byte) error {
	var in ledgerJSON
	if err := json.Unmarshal(p, &in); err != nil {
		return fmt.Errorf("decode ledger: %w", err)
	}
	var fresh Ledger
	for i, e := range in.Entries {
		seq, err := fresh.charge(e.Site, e.Year, e.Period, e.Epsilon, e.Cap)
		if err != nil {
			return fmt.Errorf("decode ledger entry %d: %w", i, err)
		}
		if seq != e.Seq || fresh.entries[i].Spent != e.Spent {
			return fmt.Errorf("decode ledger entry %d: seq %d spent %s, replay gives seq %d spent %s", i, e.Seq, e.Spent, seq, fresh.entries[i].Spent)
		}
	}
	*l = fresh
	return nil
}
