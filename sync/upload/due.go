// Package upload is what carries a cluster's anonymised releases to the
// central index. On the raft leader it releases every office's closed
// periods (noise drawn once, stored in the replicated state before anything
// leaves) and uploads the releases the index has not acknowledged yet: the
// replicated state is the outbox, so a crash or a new leader resends the very
// same values, and the index's idempotent upserts make resending harmless.
package upload

import (
	"fmt"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/sync/anon"
)

// Bucket is one office's exact counts over one closed period: the input of
// a release. It never leaves the process that draws the noise.
type Bucket struct {
	Site       string
	Period     anon.Period
	Green, Red uint64
}

// Due returns the buckets ready for release, oldest period first per site:
// every period of kind from the one holding the office's first counted day
// up to the last one that has closed, that released does not know yet.
//
// A period has closed for an office when both the office's own clock at its
// latest update and now, read in the office's time zone, are past the
// period's last day: the office has then published that day with colours
// (it republishes a day as it closes). A period with a day still open in the
// replica waits. Periods without presses are released too: a missing release
// would tell the index the exact count, zero.
func Due(sites []cluster.SiteCounts, released func(site, period string) bool, kind anon.PeriodKind, now time.Time) ([]Bucket, error) {
	var out []Bucket
	for _, sc := range sites {
		if len(sc.Days) == 0 || sc.LastUpdate == 0 {
			continue
		}
		loc, err := time.LoadLocation(sc.Info.TimeZone)
		if err != nil || sc.Info.TimeZone == "" {
			// An office whose zone is unknown here cannot be told closed
			// from open: keep its data in.
			continue
		}
		today := time.Unix(sc.LastUpdate, 0).In(loc).Format(time.DateOnly)
		if leader := now.In(loc).Format(time.DateOnly); leader < today {
			today = leader // an office clock ahead of ours does not close periods early
		}
		days := map[string]cluster.DayCounts{}
		for _, d := range sc.Days {
			days[d.Day] = d
		}
		p, err := anon.PeriodOf(kind, sc.Days[0].Day)
		if err != nil {
			return nil, fmt.Errorf("due %s: %w", sc.Info.ID, err)
		}
		for p.Closed(today) {
			if !released(sc.Info.ID, p.String()) {
				if b, ok := bucketOf(sc.Info.ID, p, days); ok {
					out = append(out, b)
				}
			}
			if p, err = next(p); err != nil {
				return nil, fmt.Errorf("due %s: %w", sc.Info.ID, err)
			}
		}
	}
	return out, nil
}

// bucketOf sums the period's days; ok is false while one of them is open.
func bucketOf(site string, p anon.Period, days map[string]cluster.DayCounts) (Bucket, bool) {
	b := Bucket{Site: site, Period: p}
	for d := p.Start.String(); d <= p.End.String(); d = nextDay(d) {
		dc, ok := days[d]
		if !ok {
			continue
		}
		if !dc.Closed {
			return Bucket{}, false
		}
		b.Green += dc.Green
		b.Red += dc.Red
	}
	return b, true
}

func next(p anon.Period) (anon.Period, error) {
	return anon.PeriodOf(p.Kind, nextDay(p.End.String()))
}

func nextDay(d string) string {
	t, err := time.Parse(time.DateOnly, d)
	if err != nil {
		return "9999-12-31~" // sorts after every day: ends any loop
	}
	return t.AddDate(0, 0, 1).Format(time.DateOnly)
}
