package upload

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/sync/anon"
)

func day(d string, g, r uint64) cluster.DayCounts {
	return cluster.DayCounts{Day: d, Closed: true, Green: g, Red: r, Total: g + r}
}

func site(id, tz string, lastUpdate string, days ...cluster.DayCounts) cluster.SiteCounts {
	t, err := time.Parse(time.RFC3339, lastUpdate)
	if err != nil {
		panic(err)
	}
	return cluster.SiteCounts{Info: cluster.SiteInfo{ID: id, TimeZone: tz}, Days: days, LastUpdate: t.Unix()}
}

func dueKeys(bs []Bucket) []string {
	var out []string
	for _, b := range bs {
		out = append(out, fmt.Sprintf("%s %s %d/%d", b.Site, b.Period, b.Green, b.Red))
	}
	return out
}

func TestDue(t *testing.T) {
	none := func(string, string) bool { return false }
	now := time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		sites    []cluster.SiteCounts
		released func(site, period string) bool
		kind     anon.PeriodKind
		now      time.Time
		want     []string
	}{{
		name: "closed months are due, the current one is not, empty months are released too",
		sites: []cluster.SiteCounts{site("a", "UTC", "2026-04-01T00:05:00Z",
			day("2026-01-05", 3, 1), day("2026-01-30", 2, 2), day("2026-03-31", 7, 0), day("2026-04-01", 1, 1))},
		now:  now,
		want: []string{"a 2026-01 5/3", "a 2026-02 0/0", "a 2026-03 7/0"},
	}, {
		name: "released periods are skipped",
		sites: []cluster.SiteCounts{site("a", "UTC", "2026-04-01T00:05:00Z",
			day("2026-02-05", 3, 1), day("2026-03-31", 7, 0))},
		released: func(s, p string) bool { return p == "2026-02" },
		now:      now,
		want:     []string{"a 2026-03 7/0"},
	}, {
		name: "an office that has not published since the month ended waits",
		sites: []cluster.SiteCounts{site("a", "UTC", "2026-03-31T23:59:00Z",
			day("2026-02-05", 3, 1), day("2026-03-31", 7, 0))},
		now:  now,
		want: []string{"a 2026-02 3/1"},
	}, {
		name: "an open day in the period holds it back",
		sites: []cluster.SiteCounts{site("a", "UTC", "2026-04-01T08:00:00Z",
			day("2026-03-02", 3, 1), cluster.DayCounts{Day: "2026-03-31", Total: 9})},
		now:  now,
		want: nil,
	}, {
		name: "the office's own zone decides: Tokyo's April starts 9 hours before UTC's",
		sites: []cluster.SiteCounts{
			site("tokyo", "Asia/Tokyo", "2026-03-31T16:00:00Z", day("2026-03-03", 4, 4)),
			site("lisbon", "Europe/Lisbon", "2026-03-31T16:00:00Z", day("2026-03-03", 4, 4)),
		},
		now:  time.Date(2026, 3, 31, 16, 0, 0, 0, time.UTC),
		want: []string{"tokyo 2026-03 4/4"},
	}, {
		name:  "an office clock ahead of the leader's does not close periods early",
		sites: []cluster.SiteCounts{site("a", "UTC", "2026-05-01T00:00:00Z", day("2026-04-01", 1, 1))},
		now:   now,
		want:  nil,
	}, {
		name:  "an unknown zone keeps the office's data in",
		sites: []cluster.SiteCounts{site("a", "Mars/Olympus", "2026-04-01T00:05:00Z", day("2026-03-01", 1, 1))},
		now:   now,
		want:  nil,
	}, {
		name: "ISO weeks",
		sites: []cluster.SiteCounts{site("a", "UTC", "2026-03-16T00:01:00Z",
			day("2026-03-02", 1, 2), day("2026-03-08", 1, 0), day("2026-03-15", 5, 5))},
		kind: anon.Weekly,
		now:  now,
		want: []string{"a 2026-W10 2/2", "a 2026-W11 5/5"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			released := tt.released
			if released == nil {
				released = none
			}
			got, err := Due(tt.sites, released, tt.kind, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dueKeys(got), tt.want) {
				t.Errorf("Due = %q, want %q", dueKeys(got), tt.want)
			}
		})
	}
}
