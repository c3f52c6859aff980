package regional

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
)

// SiteBucket is what one site released for the cell's period: its green and
// red counts, already noised at the office, or a suppressed bucket.
type SiteBucket struct {
	Site       string
	Suppressed bool
	Green, Red int64 // noised at the office, ≥ 0
}

// Reason says, for machines, why a cell was withheld.
type Reason string

const (
	// ReasonTooFewSites: fewer than MinSites sites contributed.
	ReasonTooFewSites Reason = "too_few_sites"
	// ReasonTooFewPresses: the cell's total is below MinPresses.
	ReasonTooFewPresses Reason = "too_few_presses"
	// ReasonDominantSite: one site holds more than MaxSiteShare of the total.
	ReasonDominantSite Reason = "dominant_site"
	// ReasonWouldIsolate: together with cells already published for the same
	// period, this cell would single out a site or a handful of sites.
	ReasonWouldIsolate Reason = "would_isolate"
	// ReasonInvalidInput: the region, period or buckets are malformed (an
	// empty name, a site named twice, a negative count, an overflowing total).
	ReasonInvalidInput Reason = "invalid_input"
	// ReasonInvalidRules: the rules fail Validate; nothing is published under
	// rules looser than the floors.
	ReasonInvalidRules Reason = "invalid_rules"
)

// Cell is the outcome for one (region, period): either published figures or
// a reason for withholding them. A withheld cell carries no figures at all,
// and its Message names thresholds only — never a count or a site — so that
// the explanation cannot leak what the withholding protects.
type Cell struct {
	Region, Period string
	Published      bool

	// Set only when Published.
	Green, Red, Total int64 // sums over the contributing sites
	Sites             int   // number of contributing sites
	// GreenPermille is the green share in tenths of a percent, 0–1000
	// (625 reads 62.5 %), rounded half up from green/total. It is a display
	// figure: 999.5‰ and above reads 100.0 % although red may be > 0, and
	// the counts stay the reference.
	GreenPermille int
	// Version numbers the distinct site sets published for this (region,
	// period), from 1. Republishing the same sites gives the same version
	// and, by construction, the same figures.
	Version int

	// Set only when withheld.
	Reason  Reason
	Message string
}

// GreenPercent is GreenPermille as a percentage with one decimal.
func (c Cell) GreenPercent() float64 { return float64(c.GreenPermille) / 10 }

func withhold(region, period string, r Reason, msg string) Cell {
	return Cell{Region: region, Period: period, Reason: r, Message: msg}
}

// tally is what the buckets of one cell add up to.
type tally struct {
	sites             []string // contributing sites, sorted
	green, red, total int64
	largest           int64 // the largest total of one contributing site
}

var (
	errEmptySite     = errors.New("a bucket has no site name")
	errDuplicateSite = errors.New("two buckets name the same site")
	errNegative      = errors.New("a bucket has a negative count")
	errOverflow      = errors.New("the counts overflow")
)

// tallyBuckets adds up the contributing buckets. A site contributes when its
// bucket is not suppressed and its total is above zero: a zero bucket adds
// nothing, and counting it would let two busy sites and three silent ones
// pass for five. The errors name no site, since they end up in Message.
func tallyBuckets(buckets []SiteBucket) (tally, error) {
	var t tally
	seen := make(map[string]bool, len(buckets))
	for _, b := range buckets {
		switch {
		case b.Site == "":
			return tally{}, errEmptySite
		case seen[b.Site]:
			// One office counted twice would be two sites towards MinSites.
			return tally{}, errDuplicateSite
		case b.Green < 0 || b.Red < 0:
			return tally{}, errNegative
		}
		seen[b.Site] = true
		if b.Suppressed {
			continue
		}
		total, ok := add(b.Green, b.Red)
		if !ok {
			return tally{}, errOverflow
		}
		if total == 0 {
			continue
		}
		var okG, okR, okT bool
		t.green, okG = add(t.green, b.Green)
		t.red, okR = add(t.red, b.Red)
		t.total, okT = add(t.total, total)
		if !okG || !okR || !okT {
			return tally{}, errOverflow
		}
		t.largest = max(t.largest, total)
		t.sites = append(t.sites, b.Site)
	}
	slices.Sort(t.sites)
	return t, nil
}

// add adds two non-negative int64s and reports whether the sum fits.
func add(a, b int64) (int64, bool) {
	if a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// check applies the thresholds of r to t, in a fixed order so that a cell
// failing several gets the same reason every time: sites, presses, dominance.
func check(r Rules, t tally) (Reason, string) {
	switch {
	case len(t.sites) < r.MinSites:
		return ReasonTooFewSites, fmt.Sprintf("fewer than %d sites contributed to this cell", r.MinSites)
	case t.total < r.MinPresses:
		return ReasonTooFewPresses, fmt.Sprintf("this cell has fewer than %d presses", r.MinPresses)
	case dominates(t.largest, t.total, r.MaxSiteShare):
		return ReasonDominantSite, fmt.Sprintf("one site holds more than %s %% of this cell's presses",
			strconv.FormatFloat(r.MaxSiteShare*100, 'f', -1, 64))
	}
	return "", ""
}

// dominates reports whether a site total exceeds share of the cell total.
// Dividing, rather than multiplying share by total, makes a ratio that
// equals the configured decimal (3 of 10 against 0.3) round to the very
// same float64, so "exactly the share" is allowed as documented. total > 0.
func dominates(site, total int64, share float64) bool {
	return float64(site)/float64(total) > share
}

// greenPermille is green/total in tenths of a percent, rounded half up
// (1/16 = 6.25 % reads 6.3 %). It computes (2000·green + total) / (2·total)
// in 128 bits so that no valid count overflows. 0 ≤ green ≤ total, total > 0.
func greenPermille(green, total int64) int {
	hi, lo := bits.Mul64(2000, uint64(green))
	lo, carry := bits.Add64(lo, uint64(total), 0)
	hi += carry
	// The quotient is at most 1000, so hi < 2·total and Div64 cannot panic.
	q, _ := bits.Div64(hi, lo, 2*uint64(total))
	return int(q)
}
