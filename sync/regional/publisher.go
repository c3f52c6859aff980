package regional

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Publisher decides which cells of one customer may be published, and
// remembers what it published: per (region, period), every distinct set of
// sites it published a cell for, with that cell's green and red counts. That
// memory is what makes differencing enforceable, so it must outlive the
// process: the index stores MarshalState and restores it with UnmarshalState,
// and must store it after a Cell call publishes and before the cell leaves
// the index — a cell sent to HQ that the Publisher forgot in a crash is a
// cell a later version may be differenced against.
//
// One Publisher serves one customer; customers never share sites, so their
// cells cannot be differenced against each other. A Publisher is safe for
// concurrent use.
type Publisher struct {
	mu       sync.Mutex
	customer string
	periods  map[string]map[string][]version // period → region → versions, oldest first
}

// version is one distinct set of sites published for a (region, period).
type version struct {
	sites      []string // sorted, unique
	green, red int64
}

// NewPublisher returns a Publisher for customer that has published nothing.
func NewPublisher(customer string) *Publisher {
	return &Publisher{customer: customer, periods: map[string]map[string][]version{}}
}

// Cell decides whether the cell of region and period, made of the sites'
// released buckets, may be published, and returns either its figures or the
// reason it is withheld. The checks run in this order, and the first that
// fails gives the reason: rules (invalid_rules), input (invalid_input),
// sites (too_few_sites), presses (too_few_presses), dominance
// (dominant_site), then differencing (would_isolate) against every cell
// this Publisher published for the same period, in any region:
//
//   - the contributing sites must be the very set of a cell already published
//     for the period, with the same counts (a re-released bucket under an
//     unchanged set would reveal that site's revision), or differ from each
//     such set by at least rules.MinSites sites;
//   - a new set must not let any combination of the period's published cells
//     single out a group of fewer than rules.MinSites sites.
//
// A published cell is recorded before Cell returns; a withheld one changes
// nothing. Callers pass every released bucket of the region: there is
// deliberately no parameter to filter sites, because "the region without
// office X" is exactly the cell that, next to the region, isolates X.
func (p *Publisher) Cell(rules Rules, region, period string, buckets []SiteBucket) Cell {
	if err := rules.Validate(); err != nil {
		return withhold(region, period, ReasonInvalidRules, "the publication rules are looser than the floors allow")
	}
	if region == "" || period == "" {
		return withhold(region, period, ReasonInvalidInput, "the cell has no region or no period")
	}
	t, err := tallyBuckets(buckets)
	if err != nil {
		return withhold(region, period, ReasonInvalidInput, "the buckets are invalid: "+err.Error())
	}
	if reason, msg := check(rules, t); reason != "" {
		return withhold(region, period, reason, msg)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	v, reason, msg := p.admit(rules.MinSites, region, period, t)
	if reason != "" {
		return withhold(region, period, reason, msg)
	}
	return Cell{
		Region: region, Period: period, Published: true,
		Green: t.green, Red: t.red, Total: t.total, Sites: len(t.sites),
		GreenPermille: greenPermille(t.green, t.total),
		Version:       v,
	}
}

// admit applies the differencing rules to t and, when they pass, records it
// and returns its version. p.mu is held.
func (p *Publisher) admit(minSites int, region, period string, t tally) (int, Reason, string) {
	regions := p.periods[period]
	var known [][]string // distinct site sets published for this period
	seen := map[string]bool{}
	var same, revised, near bool
	for _, vs := range regions {
		for _, v := range vs {
			if k := strings.Join(v.sites, "\x00"); !seen[k] {
				seen[k] = true
				known = append(known, v.sites)
			}
			switch d := symDiff(v.sites, t.sites); {
			case d == 0:
				same = true
				revised = revised || v.green != t.green || v.red != t.red
			case d < minSites:
				near = true
			}
		}
	}
	// The flags, not the map order, pick the message, so it is stable.
	switch {
	case revised:
		return 0, ReasonWouldIsolate, "the counts behind this cell changed while its sites did not; publishing would reveal the revision"
	case near:
		return 0, ReasonWouldIsolate, fmt.Sprintf("the sites behind this cell differ from those of a cell already published for this period by fewer than %d sites", minSites)
	case !same:
		// Only a new set can change what combinations reveal. Groups exposed
		// before are not made worse; they can only exist in state written
		// under a smaller MinSites.
		before := exposedGroups(known, minSites)
		for g := range exposedGroups(append(known, t.sites), minSites) {
			if !before[g] {
				return 0, ReasonWouldIsolate, fmt.Sprintf("combined with the cells already published for this period, this cell would single out fewer than %d sites", minSites)
			}
		}
	}

	if p.periods == nil {
		p.periods = map[string]map[string][]version{}
	}
	if regions == nil {
		regions = map[string][]version{}
		p.periods[period] = regions
	}
	vs := regions[region]
	for i, v := range vs {
		if slices.Equal(v.sites, t.sites) {
			return i + 1, "", ""
		}
	}
	regions[region] = append(vs, version{sites: t.sites, green: t.green, red: t.red})
	return len(vs) + 1, "", ""
}
