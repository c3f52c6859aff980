// Package regional holds the publication rules of the central index: which
// regional cells — one customer, one region, one period — may leave the index
// for HQ, and which must be withheld, and why.
//
// It is pure: no I/O, no clock. The index hands it the buckets its offices
// released (already noised at the office) and stores the Publisher's state
// between runs; this package decides.
//
// A cell is published only when enough sites with enough presses stand
// behind it, no site dominates it, and no difference between it and the cells
// already published for the same period can single out a site or a handful
// of sites. DESIGN.md gives the argument and its limits.
package regional

import (
	"errors"
	"fmt"
)

// The floors below are the privacy promise made to the offices: a deployment
// may make the rules stricter, never looser, so Validate refuses any Rules
// that falls short of them.
const (
	floorMinSites    = 5
	floorMinPresses  = 100
	ceilMaxSiteShare = 0.5
)

// Rules are the thresholds a cell must meet to be published. The zero value
// is not valid: start from DefaultRules and raise what you need.
type Rules struct {
	// MinSites is the least number of contributing sites behind a published
	// cell, and also the least number of sites by which two cells published
	// for the same period may differ. At least 5.
	MinSites int
	// MinPresses is the least total (green + red) of a published cell.
	// At least 100.
	MinPresses int64
	// MaxSiteShare is the largest fraction of a cell's total that one site
	// may hold; a site holding exactly this fraction is allowed. Above 0 and
	// at most 0.5.
	MaxSiteShare float64
}

// DefaultRules returns the floors: 5 sites, 100 presses, no site above 50 %.
func DefaultRules() Rules {
	return Rules{MinSites: floorMinSites, MinPresses: floorMinPresses, MaxSiteShare: ceilMaxSiteShare}
}

// Validate reports every threshold of r that is looser than its floor.
func (r Rules) Validate() error {
	var errs []error
	if r.MinSites < floorMinSites {
		errs = append(errs, fmt.Errorf("regional rules: min sites %d is below the floor of %d", r.MinSites, floorMinSites))
	}
	if r.MinPresses < floorMinPresses {
		errs = append(errs, fmt.Errorf("regional rules: min presses %d is below the floor of %d", r.MinPresses, floorMinPresses))
	}
	// Written so that NaN fails too: every comparison with NaN is false.
	if !(r.MaxSiteShare > 0 && r.MaxSiteShare <= ceilMaxSiteShare) {
		errs = append(errs, fmt.Errorf("regional rules: max site share %v is outside (0, %v]", r.MaxSiteShare, ceilMaxSiteShare))
	}
	return errors.Join(errs...)
}
