package regional

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// record is a cell the property test saw published, with the sites the test
// itself worked out were behind it.
type record struct {
	region, period string
	sites          []string
	cell           Cell
}

// Over random sites (random totals, suppressed and silent buckets), two
// periods, two drawn regions and their union, and joins, leaves, erasures,
// suppressions and revisions between publications:
//  1. no published cell breaks a threshold, and its figures are the sums;
//  2. any two cells published for the same period — the same region across
//     versions, nested regions, any regions — have identical site sets (and
//     then identical counts) or sets that differ by at least MinSites sites;
//  3. every withheld cell carries a reason, a message and no figures;
//  4. no combination of a period's published cells isolates one site.
func TestPublisherProperties(t *testing.T) {
	var published, isolating int
	rapid.Check(t, func(t *rapid.T) {
		rules := Rules{
			MinSites:     rapid.IntRange(5, 7).Draw(t, "min_sites"),
			MinPresses:   rapid.Int64Range(100, 400).Draw(t, "min_presses"),
			MaxSiteShare: rapid.SampledFrom([]float64{0.5, 0.4, 0.3}).Draw(t, "max_share"),
		}
		sites := names("site-", rapid.IntRange(1, 24).Draw(t, "sites"))
		periods := []string{"2026-03", "2026-04"}
		pickSite := rapid.SampledFrom(sites)
		pickPeriod := rapid.SampledFrom(periods)
		pickDrawn := rapid.SampledFrom([]string{"north", "south"})

		member := map[string]map[string]bool{"north": {}, "south": {}}
		for _, s := range sites {
			for _, r := range []string{"north", "south"} {
				member[r][s] = rapid.IntRange(0, 3).Draw(t, "member") > 0
			}
		}
		count := func() int64 {
			if rapid.IntRange(0, 9).Draw(t, "whale") == 0 {
				return rapid.Int64Range(0, 2000).Draw(t, "big")
			}
			return rapid.Int64Range(0, 80).Draw(t, "count")
		}
		bucket := map[string]map[string]*SiteBucket{} // period → site → released bucket
		for _, period := range periods {
			bucket[period] = map[string]*SiteBucket{}
			for _, s := range sites {
				bucket[period][s] = &SiteBucket{Site: s, Suppressed: rapid.IntRange(0, 9).Draw(t, "suppressed") == 0, Green: count(), Red: count()}
			}
		}

		p := NewPublisher("acme")
		var seen []record
		for range rapid.IntRange(1, 40).Draw(t, "steps") {
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0: // one site joins or leaves a region
				member[pickDrawn.Draw(t, "region")][pickSite.Draw(t, "site")] = rapid.Bool().Draw(t, "in")
			case 1: // several sites join or leave at once
				r, in := pickDrawn.Draw(t, "region"), rapid.Bool().Draw(t, "in")
				// Groups of about MinSites are the ones that pass pairwise
				// and make combinations of three or more cells matter.
				group := rapid.Permutation(sites).Draw(t, "group")
				for _, s := range group[:min(len(group), rapid.IntRange(1, 10).Draw(t, "size"))] {
					member[r][s] = in
				}
			case 2: // a site is erased: its buckets and memberships go
				s := pickSite.Draw(t, "site")
				for _, period := range periods {
					delete(bucket[period], s)
				}
				delete(member["north"], s)
				delete(member["south"], s)
			case 3: // a bucket is re-released suppressed, or unsuppressed
				if b := bucket[pickPeriod.Draw(t, "period")][pickSite.Draw(t, "site")]; b != nil {
					b.Suppressed = !b.Suppressed
				}
			case 4: // a bucket is re-released with other noise
				if b := bucket[pickPeriod.Draw(t, "period")][pickSite.Draw(t, "site")]; b != nil {
					b.Green = count()
				}
			case 5: // the index restarts from its stored state
				b, err := p.MarshalState()
				if err != nil {
					t.Fatalf("MarshalState: %v", err)
				}
				q := NewPublisher("acme")
				if err := q.UnmarshalState(b); err != nil {
					t.Fatalf("UnmarshalState(%s): %v", b, err)
				}
				if b2, _ := q.MarshalState(); !bytes.Equal(b, b2) {
					t.Fatalf("state changed across a round trip:\n%s\n%s", b, b2)
				}
				p = q
			default:
				region := rapid.SampledFrom([]string{"north", "south", "all"}).Draw(t, "region")
				period := pickPeriod.Draw(t, "period")
				var bs []SiteBucket
				var want []string
				var green, red, largest int64
				for _, s := range sites {
					b := bucket[period][s]
					in := member["north"][s] || member["south"][s]
					if region != "all" {
						in = member[region][s]
					}
					if b == nil || !in {
						continue
					}
					bs = append(bs, *b)
					if !b.Suppressed && b.Green+b.Red > 0 {
						want = append(want, s)
						green, red = green+b.Green, red+b.Red
						largest = max(largest, b.Green+b.Red)
					}
				}
				bs = rapid.Permutation(bs).Draw(t, "order")
				c := p.Cell(rules, region, period, bs)
				if !c.Published {
					// Property 3.
					switch c.Reason {
					case ReasonTooFewSites, ReasonTooFewPresses, ReasonDominantSite:
					case ReasonWouldIsolate:
						isolating++
					default:
						t.Fatalf("Cell withheld with reason %q (%s)", c.Reason, c.Message)
					}
					checkWithheld(t, c, bs)
					continue
				}
				// Property 1.
				published++
				total := green + red
				if c.Sites != len(want) || c.Green != green || c.Red != red || c.Total != total {
					t.Fatalf("Cell = %+v, want %d sites, %d green, %d red", c, len(want), green, red)
				}
				if c.Sites < rules.MinSites || c.Total < rules.MinPresses || float64(largest) > rules.MaxSiteShare*float64(total) {
					t.Fatalf("Cell %+v breaks %+v (largest site %d)", c, rules, largest)
				}
				if share := int(math.Floor(1000*float64(green)/float64(total) + 0.5)); c.GreenPermille != share {
					t.Fatalf("GreenPermille = %d, want %d", c.GreenPermille, share)
				}
				// Property 2, against every cell published so far.
				for _, o := range seen {
					if o.period != period {
						continue
					}
					d := symDiff(o.sites, want)
					if d > 0 && d < rules.MinSites {
						t.Fatalf("%s/%s %v and %s/%s %v differ by %d sites", o.region, period, o.sites, region, period, want, d)
					}
					if d == 0 && (o.cell.Green != c.Green || o.cell.Red != c.Red) {
						t.Fatalf("the same sites %v published as %+v and %+v", want, o.cell, c)
					}
					if o.region == region && (d == 0) != (o.cell.Version == c.Version) {
						t.Fatalf("versions %d and %d for site sets %v and %v", o.cell.Version, c.Version, o.sites, want)
					}
				}
				seen = append(seen, record{region, period, want, c})
			}
		}
		// Property 4.
		for _, period := range periods {
			var cells [][]string
			for _, r := range seen {
				if r.period == period {
					cells = append(cells, r.sites)
				}
			}
			if s := isolated(cells, sites); s != nil {
				t.Fatalf("period %s: sites %v are each a combination of the published cells %v", period, s, cells)
			}
		}
	})
	t.Logf("%d cells published, %d withheld as would_isolate", published, isolating)
	// Guard against a generator that never exercises the interesting paths.
	if published == 0 || isolating == 0 {
		t.Errorf("%d cells published and %d withheld as would_isolate; want both > 0", published, isolating)
	}
}

// Site sets only, drawn as unions of blocks of sites — single sites, pairs
// and blocks of MinSites — so that sets passing the pairwise rule while a
// combination of three or more cells isolates a block come up often. Whatever
// the index asks for, no published pair differs by fewer than MinSites sites
// and no combination of published cells isolates one site.
func TestDifferencingProperties(t *testing.T) {
	var published, combined int
	rapid.Check(t, func(t *rapid.T) {
		rules := DefaultRules()
		rules.MinSites = rapid.IntRange(5, 6).Draw(t, "min_sites")
		var blocks [][]string
		var sites []string
		for i := range rapid.IntRange(2, 6).Draw(t, "blocks") {
			size := rapid.SampledFrom([]int{1, 2, rules.MinSites, rules.MinSites + 1}).Draw(t, "size")
			b := names(fmt.Sprintf("site-%d-", i), size)
			blocks = append(blocks, b)
			sites = append(sites, b...)
		}
		regions := []string{"a", "b", "c"}
		p := NewPublisher("acme")
		var cells [][]string
		for range rapid.IntRange(1, 30).Draw(t, "steps") {
			var set []string
			for _, b := range blocks {
				if rapid.Bool().Draw(t, "in") {
					set = append(set, b...)
				}
			}
			slices.Sort(set)
			c := p.Cell(rules, rapid.SampledFrom(regions).Draw(t, "region"), "2026-03", even(set...))
			if !c.Published {
				if strings.Contains(c.Message, "combined with") {
					combined++
				}
				continue
			}
			published++
			for _, o := range cells {
				if d := symDiff(o, set); d > 0 && d < rules.MinSites {
					t.Fatalf("published %v and %v differ by %d sites", o, set, d)
				}
			}
			cells = append(cells, set)
		}
		// The span only grows as cells are published, so checking the end
		// checks every step.
		if s := isolated(cells, sites); s != nil {
			t.Fatalf("sites %v are each a combination of the published cells %v", s, cells)
		}
	})
	t.Logf("%d cells published, %d withheld because a combination would isolate sites", published, combined)
	if published == 0 || combined == 0 {
		t.Errorf("the combination check was never exercised")
	}
}

// isolated returns the sites whose indicator vector is a rational
// combination of the cells' indicator vectors, found by comparing ranks with
// and without it: deliberately not the algorithm of exposedGroups.
func isolated(cells [][]string, sites []string) []string {
	row := func(in []string) []*big.Rat {
		r := make([]*big.Rat, len(sites))
		for i, s := range sites {
			r[i] = new(big.Rat)
			if slices.Contains(in, s) {
				r[i].SetInt64(1)
			}
		}
		return r
	}
	matrix := func(extra ...[]string) [][]*big.Rat {
		var m [][]*big.Rat
		for _, c := range append(slices.Clone(cells), extra...) {
			m = append(m, row(c))
		}
		return m
	}
	base := rank(matrix())
	var out []string
	for _, s := range sites {
		if rank(matrix([]string{s})) == base {
			out = append(out, s)
		}
	}
	return out
}

// rank is the rank of m over the rationals, by forward elimination.
func rank(m [][]*big.Rat) int {
	r := 0
	for c := 0; len(m) > 0 && c < len(m[0]); c++ {
		p := slices.IndexFunc(m[r:], func(row []*big.Rat) bool { return row[c].Sign() != 0 })
		if p < 0 {
			continue
		}
		m[r], m[r+p] = m[r+p], m[r]
		for i := r + 1; i < len(m); i++ {
			f := new(big.Rat).Quo(m[i][c], m[r][c])
			for k := c; k < len(m[i]); k++ {
				m[i][k].Sub(m[i][k], new(big.Rat).Mul(f, m[r][k]))
			}
		}
		r++
		if r == len(m) {
			break
		}
	}
	return r
}
