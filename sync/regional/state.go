package regional

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// stateFormat is the version of the JSON that MarshalState writes; an index
// that reads a state it does not understand must not guess.
const stateFormat = 1

// ErrWrongCustomer reports a state written by another customer's Publisher.
// Loading it would leave this customer's cells with no memory at all.
var ErrWrongCustomer = errors.New("state belongs to another customer")

type stateJSON struct {
	Format   int             `json:"format"`
	Customer string          `json:"customer"`
	Cells    []stateCellJSON `json:"cells"`
}

type stateCellJSON struct {
	Period   string             `json:"period"`
	Region   string             `json:"region"`
	Versions []stateVersionJSON `json:"versions"` // oldest first: the order gives Cell.Version
}

type stateVersionJSON struct {
	Sites []string `json:"sites"`
	Green int64    `json:"green"`
	Red   int64    `json:"red"`
}

// MarshalState returns everything the Publisher remembers, as JSON: per
// (period, region), the site sets it published with their counts. Site names
// and already-published aggregates only; no site's own counts. The output is
// canonical (sorted by period, then region), so equal states give equal bytes.
func (p *Publisher) MarshalState() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := stateJSON{Format: stateFormat, Customer: p.customer, Cells: []stateCellJSON{}}
	for _, period := range slices.Sorted(maps.Keys(p.periods)) {
		regions := p.periods[period]
		for _, region := range slices.Sorted(maps.Keys(regions)) {
			c := stateCellJSON{Period: period, Region: region}
			for _, v := range regions[region] {
				c.Versions = append(c.Versions, stateVersionJSON{Sites: v.sites, Green: v.green, Red: v.red})
			}
			s.Cells = append(s.Cells, c)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("marshal regional state: %w", err)
	}
	return b, nil
}

// UnmarshalState replaces what p remembers with a state from MarshalState.
// It refuses a state of another customer (ErrWrongCustomer) or one that is
// malformed, and then leaves p unchanged.
func (p *Publisher) UnmarshalState(data []byte) error {
	var s stateJSON
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("unmarshal regional state: %w", err)
	}
	if s.Format != stateFormat {
		return fmt.Errorf("unmarshal regional state: format %d, want %d", s.Format, stateFormat)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Customer != p.customer {
		return fmt.Errorf("unmarshal regional state of %q into %q: %w", s.Customer, p.customer, ErrWrongCustomer)
	}
	periods := map[string]map[string][]version{}
	for _, c := range s.Cells {
		if err := c.validate(); err != nil {
			return fmt.Errorf("unmarshal regional state: %w", err)
		}
		regions := periods[c.Period]
		if regions == nil {
			regions = map[string][]version{}
			periods[c.Period] = regions
		}
		if _, dup := regions[c.Region]; dup {
			return fmt.Errorf("unmarshal regional state: region %q, period %q appears twice", c.Region, c.Period)
		}
		vs := make([]version, 0, len(c.Versions))
		for _, v := range c.Versions {
			vs = append(vs, version{sites: v.Sites, green: v.Green, red: v.Red})
		}
		regions[c.Region] = vs
	}
	p.periods = periods
	return nil
}

// validate checks what admit relies on: sorted, unique, named sites, counts
// that a tally could have produced, and no set recorded twice for a cell.
func (c stateCellJSON) validate() error {
	if c.Period == "" || c.Region == "" {
		return errors.New("a cell has no region or no period")
	}
	if len(c.Versions) == 0 {
		return fmt.Errorf("region %q, period %q has no versions", c.Region, c.Period)
	}
	for i, v := range c.Versions {
		if len(v.Sites) == 0 {
			return fmt.Errorf("region %q, period %q, version %d has no sites", c.Region, c.Period, i+1)
		}
		for j, s := range v.Sites {
			if s == "" || (j > 0 && cmp.Compare(v.Sites[j-1], s) >= 0) {
				return fmt.Errorf("region %q, period %q, version %d: sites are not sorted, unique and named", c.Region, c.Period, i+1)
			}
		}
		if v.Green < 0 || v.Red < 0 || v.Green > math.MaxInt64-v.Red {
			return fmt.Errorf("region %q, period %q, version %d: bad counts", c.Region, c.Period, i+1)
		}
		for _, w := range c.Versions[:i] {
			if slices.Equal(w.Sites, v.Sites) {
				return fmt.Errorf("region %q, period %q: version %d repeats an earlier site set", c.Region, c.Period, i+1)
			}
		}
	}
	return nil
}
