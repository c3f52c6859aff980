package regional

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// even returns buckets of 30 green and 20 red for each site: any five of
// them meet the default rules, and none dominates.
func even(sites ...string) []SiteBucket {
	bs := make([]SiteBucket, len(sites))
	for i, s := range sites {
		bs[i] = SiteBucket{Site: s, Green: 30, Red: 20}
	}
	return bs
}

// names returns prefix+"1" … prefix+n.
func names(prefix string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	return s
}

// totals returns one bucket per total, all green, named after offices.
func totals(ts ...int64) []SiteBucket {
	bs := make([]SiteBucket, len(ts))
	for i, n := range ts {
		bs[i] = SiteBucket{Site: fmt.Sprintf("office-%d", i+1), Green: n}
	}
	return bs
}

func TestCellReasons(t *testing.T) {
	d := DefaultRules()
	five := names("office-", 5)
	tests := []struct {
		name           string
		rules          Rules
		region, period string
		buckets        []SiteBucket
		want           Reason // "" means published
	}{
		{"published", d, "eu", "2026-03", even(five...), ""},
		{"invalid rules: zero value", Rules{}, "eu", "2026-03", even(five...), ReasonInvalidRules},
		{"invalid rules: four sites", Rules{MinSites: 4, MinPresses: 100, MaxSiteShare: 0.5}, "eu", "2026-03", even(five...), ReasonInvalidRules},
		{"invalid input: no region", d, "", "2026-03", even(five...), ReasonInvalidInput},
		{"invalid input: no period", d, "eu", "", even(five...), ReasonInvalidInput},
		{"invalid input: site twice", d, "eu", "2026-03", even(append(five, "office-1")...), ReasonInvalidInput},
		{"invalid input: site twice, once suppressed", d, "eu", "2026-03",
			append(even(five...), SiteBucket{Site: "office-2", Suppressed: true}), ReasonInvalidInput},
		{"invalid input: unnamed site", d, "eu", "2026-03", even(append(five, "")...), ReasonInvalidInput},
		{"invalid input: negative count", d, "eu", "2026-03",
			append(even(five...), SiteBucket{Site: "office-9", Red: -1}), ReasonInvalidInput},
		{"invalid input: total overflows", d, "eu", "2026-03",
			append(even(five...), SiteBucket{Site: "office-9", Green: math.MaxInt64}), ReasonInvalidInput},
		{"too few sites: none", d, "eu", "2026-03", nil, ReasonTooFewSites},
		{"too few sites: four", d, "eu", "2026-03", totals(40, 40, 40, 40), ReasonTooFewSites},
		{"too few sites: suppressed ones do not count", d, "eu", "2026-03",
			append(even(names("office-", 4)...), SiteBucket{Site: "office-5", Suppressed: true, Green: 1000}), ReasonTooFewSites},
		{"too few sites: silent ones do not count", d, "eu", "2026-03", totals(50, 50, 50, 50, 0), ReasonTooFewSites},
		{"too few sites: raised", Rules{MinSites: 6, MinPresses: 100, MaxSiteShare: 0.5}, "eu", "2026-03", even(five...), ReasonTooFewSites},
		{"too few presses: 99", d, "eu", "2026-03", totals(20, 20, 20, 20, 19), ReasonTooFewPresses},
		{"too few presses: exactly 100 passes", d, "eu", "2026-03", totals(20, 20, 20, 20, 20), ""},
		{"too few presses: raised", Rules{MinSites: 5, MinPresses: 300, MaxSiteShare: 0.5}, "eu", "2026-03", even(five...), ReasonTooFewPresses},
		{"dominant site: 51 of 100", d, "eu", "2026-03", totals(51, 13, 12, 12, 12), ReasonDominantSite},
		{"dominant site: exactly half passes", d, "eu", "2026-03", totals(50, 14, 12, 12, 12), ""},
		{"dominant site: 0.3, 31 of 100", Rules{MinSites: 5, MinPresses: 100, MaxSiteShare: 0.3}, "eu", "2026-03",
			totals(31, 18, 17, 17, 17), ReasonDominantSite},
		{"dominant site: 0.3, exactly 30 of 100 passes", Rules{MinSites: 5, MinPresses: 100, MaxSiteShare: 0.3}, "eu", "2026-03",
			totals(30, 20, 20, 15, 15), ""},
		{"dominant site: a suppressed giant is ignored", d, "eu", "2026-03",
			append(even(five...), SiteBucket{Site: "office-9", Suppressed: true, Green: 1e6}), ""},
		{"order: sites before presses and dominance", d, "eu", "2026-03", totals(9, 1, 1, 1), ReasonTooFewSites},
		{"order: presses before dominance", d, "eu", "2026-03", totals(40, 1, 1, 1, 1), ReasonTooFewPresses},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewPublisher("acme").Cell(tt.rules, tt.region, tt.period, tt.buckets)
			if c.Reason != tt.want || c.Published != (tt.want == "") {
				t.Fatalf("Cell(%+v) = published %v, reason %q (%s); want reason %q", tt.buckets, c.Published, c.Reason, c.Message, tt.want)
			}
			if c.Region != tt.region || c.Period != tt.period {
				t.Errorf("Cell names %q/%q, want %q/%q", c.Region, c.Period, tt.region, tt.period)
			}
			if !c.Published {
				checkWithheld(t, c, tt.buckets)
			}
		})
	}
}

// checkWithheld checks what every withheld cell promises: a reason, a
// message, no figures, and neither a site name nor a count in the message.
func checkWithheld(tb interface {
	Helper()
	Errorf(string, ...any)
}, c Cell, buckets []SiteBucket) {
	tb.Helper()
	if c.Reason == "" || c.Message == "" {
		tb.Errorf("withheld cell %+v has no reason or no message", c)
	}
	if c.Green != 0 || c.Red != 0 || c.Total != 0 || c.Sites != 0 || c.GreenPermille != 0 || c.Version != 0 {
		tb.Errorf("withheld cell %+v carries figures", c)
	}
	for _, b := range buckets {
		if b.Site != "" && strings.Contains(c.Message, b.Site) {
			tb.Errorf("message %q names site %q", c.Message, b.Site)
		}
	}
}

func TestCellFigures(t *testing.T) {
	bs := []SiteBucket{
		{Site: "lisbon", Green: 40, Red: 10},
		{Site: "berlin", Green: 20, Red: 30},
		{Site: "warsaw", Green: 25, Red: 25},
		{Site: "paris", Green: 0, Red: 30},
		{Site: "madrid", Green: 37, Red: 0},
		{Site: "rome", Suppressed: true, Green: 3, Red: 1},
		{Site: "oslo", Green: 0, Red: 0},
	}
	got := NewPublisher("acme").Cell(DefaultRules(), "eu", "2026-03", bs)
	want := Cell{Region: "eu", Period: "2026-03", Published: true,
		Green: 122, Red: 95, Total: 217, Sites: 5, GreenPermille: 562, Version: 1}
	if got != want {
		t.Errorf("Cell = %+v, want %+v", got, want)
	}
	if p := got.GreenPercent(); p != 56.2 {
		t.Errorf("GreenPercent() = %v, want 56.2", p)
	}
}

func TestGreenPermille(t *testing.T) {
	tests := []struct {
		name         string
		green, total int64
		want         int
	}{
		{"no green", 0, 100, 0},
		{"all green", 100, 100, 1000},
		{"exact", 5, 8, 625},
		{"third rounds down", 1, 3, 333},
		{"two thirds rounds up", 2, 3, 667},
		{"half a tenth rounds up", 1, 16, 63}, // 6.25 %
		{"just under half a tenth", 1, 2001, 0},
		{"half a tenth of one", 1, 2000, 1}, // 0.05 %
		{"nearly all green reads 100.0", 1999, 2000, 1000},
		{"just under 99.95", 19989, 20000, 999},
		{"huge counts do not overflow", math.MaxInt64 / 3, math.MaxInt64, 333},
		{"huge, all green", math.MaxInt64, math.MaxInt64, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := greenPermille(tt.green, tt.total); got != tt.want {
				t.Errorf("greenPermille(%d, %d) = %d, want %d", tt.green, tt.total, got, tt.want)
			}
		})
	}
}
