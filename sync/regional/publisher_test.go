package regional

import (
	"slices"
	"strings"
	"testing"
)

// step is one Cell call of a sequence, with the outcome it must have.
type step struct {
	region, period string
	buckets        []SiteBucket
	want           Reason // "" means published
	version        int    // for published steps
	says           string // a part of the message, when it matters which check fired
}

func pub(region, period string, bs []SiteBucket, version int) step {
	return step{region: region, period: period, buckets: bs, version: version}
}

func held(region, period string, bs []SiteBucket, r Reason, says string) step {
	return step{region: region, period: period, buckets: bs, want: r, says: says}
}

func concat(lists ...[]string) []string { return slices.Concat(lists...) }

func TestDifferencing(t *testing.T) {
	const m = "2026-03"
	s6 := names("s", 6)
	s7 := names("s", 7)
	x5 := names("x", 5)
	z5 := names("z", 5)
	t4 := names("t", 4)
	t6 := names("t", 6)
	revised := even(s6...)
	revised[0].Green++

	tests := []struct {
		name  string
		steps []step
	}{
		{"same sites republish the same version", []step{
			pub("eu", m, even(s6...), 1),
			pub("eu", m, even(s6...), 1),
		}},
		{"one site joins", []step{
			pub("eu", m, even(s6...), 1),
			held("eu", m, even(concat(s6, []string{"late"})...), ReasonWouldIsolate, "fewer than 5 sites"),
		}},
		{"one site leaves or is erased", []step{
			pub("eu", m, even(s6...), 1),
			held("eu", m, even(s6[1:]...), ReasonWouldIsolate, ""),
		}},
		{"one site suppressed after the fact", []step{
			pub("eu", m, even(s6...), 1),
			held("eu", m, append(even(s6[1:]...), SiteBucket{Site: s6[0], Suppressed: true}), ReasonWouldIsolate, ""),
		}},
		{"one site goes silent", []step{
			pub("eu", m, even(s6...), 1),
			held("eu", m, append(even(s6[1:]...), SiteBucket{Site: s6[0]}), ReasonWouldIsolate, ""),
		}},
		{"one site's bucket revised under the same sites", []step{
			pub("eu", m, even(s6...), 1),
			held("eu", m, revised, ReasonWouldIsolate, "revision"),
		}},
		{"four join", []step{
			pub("eu", m, even(s6...), 1),
			held("eu", m, even(concat(s6, names("x", 4))...), ReasonWouldIsolate, ""),
		}},
		{"five join, then the first set again", []step{
			pub("eu", m, even(s6...), 1),
			pub("eu", m, even(concat(s6, x5)...), 2),
			pub("eu", m, even(s6...), 1),
			pub("eu", m, even(concat(s6, x5)...), 2),
		}},
		{"first come first served: the smaller set cannot follow", []step{
			pub("eu", m, even(concat(s6, x5)...), 1),
			held("eu", m, even(concat(s6, x5[1:])...), ReasonWouldIsolate, ""),
		}},
		{"withheld cells leave no trace", []step{
			held("eu", m, even(s6[:4]...), ReasonTooFewSites, ""),
			pub("eu", m, even(s6...), 1),
		}},
		{"the region without one office, under another name", []step{
			pub("eu", m, even(s6...), 1),
			held("eu-without-s1", m, even(s6[1:]...), ReasonWouldIsolate, ""),
		}},
		{"a sub-region of four next to its region", []step{
			pub("eu", m, even(concat(s6, t4)...), 1),
			held("eu-west", m, even(s6...), ReasonWouldIsolate, ""),
		}},
		{"disjoint regions and their union", []step{
			pub("eu-west", m, even(s6...), 1),
			pub("eu-east", m, even(t6...), 1),
			pub("eu", m, even(concat(s6, t6)...), 1),
		}},
		{"the same sites under two names", []step{
			pub("eu", m, even(s6...), 1),
			pub("eu-all", m, even(s6...), 1),
			held("eu-all", m, revised, ReasonWouldIsolate, ""),
		}},
		{"another period is another matter", []step{
			pub("eu", m, even(s6...), 1),
			pub("eu", "2026-04", even(s6[1:]...), 1),
		}},
		// Pairwise the three sets differ by 5, 10 and 5 sites, but
		// v3 − (v2 − v1) is s6 + s7 alone.
		{"three versions isolate two sites", []step{
			pub("eu", m, even(s7...), 1),
			pub("eu", m, even(concat(s7, x5)...), 2),
			held("eu", m, even(concat(s7[5:], x5)...), ReasonWouldIsolate, "combined with"),
		}},
		// With S = s1..s5, B = S+X, C = S+Z, D = S+X+Z and A = S plus one
		// site, every two differ by at least 5 sites, yet A − B − C + D is
		// that one site alone.
		{"four cells isolate one site", []step{
			pub("eu", m, even(concat(s6[:5], x5)...), 1),
			pub("eu", m, even(concat(s6[:5], z5)...), 2),
			pub("eu", m, even(concat(s6[:5], x5, z5)...), 3),
			held("eu", m, even(concat(s6[:5], []string{"lonely"})...), ReasonWouldIsolate, "combined with"),
			pub("eu", m, even(concat(s6[:5], names("y", 5))...), 4),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPublisher("acme")
			for i, s := range tt.steps {
				c := p.Cell(DefaultRules(), s.region, s.period, s.buckets)
				if c.Reason != s.want || c.Published != (s.want == "") || c.Version != s.version {
					t.Fatalf("step %d: Cell(%s, %s) = published %v, version %d, reason %q (%s); want version %d, reason %q",
						i+1, s.region, s.period, c.Published, c.Version, c.Reason, c.Message, s.version, s.want)
				}
				if !strings.Contains(c.Message, s.says) {
					t.Errorf("step %d: message %q, want it to say %q", i+1, c.Message, s.says)
				}
				if !c.Published {
					checkWithheld(t, c, s.buckets)
				}
			}
		})
	}
}

// The differencing distance follows the rules in force: with MinSites 7, a
// change of 6 sites is too small, though it would pass the defaults.
func TestDifferencingFollowsMinSites(t *testing.T) {
	strict := Rules{MinSites: 7, MinPresses: 100, MaxSiteShare: 0.5}
	p := NewPublisher("acme")
	base := names("s", 8)
	if c := p.Cell(strict, "eu", "2026-03", even(base...)); !c.Published {
		t.Fatalf("first cell withheld: %s", c.Message)
	}
	c := p.Cell(strict, "eu", "2026-03", even(concat(base, names("x", 6))...))
	if c.Reason != ReasonWouldIsolate {
		t.Errorf("six joins under MinSites 7: reason %q, want %q", c.Reason, ReasonWouldIsolate)
	}
}

// Cell sums and records under a lock; the race detector checks it.
func TestCellConcurrent(t *testing.T) {
	p := NewPublisher("acme")
	done := make(chan Cell)
	for range 8 {
		go func() { done <- p.Cell(DefaultRules(), "eu", "2026-03", even(names("s", 6)...)) }()
	}
	for range 8 {
		if c := <-done; !c.Published || c.Version != 1 {
			t.Errorf("concurrent Cell = %+v, want version 1 published", c)
		}
	}
}
