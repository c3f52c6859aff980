package index

import (
	"fmt"
	"strconv"
	"time"
)

// Period kinds, as stored in releases.period_kind.
const (
	kindMonth = "M" // "2026-03"
	kindWeek  = "W" // "2026-W09", ISO 8601 week
)

// periodBounds parses a period as wire validates it and returns its kind and
// the half-open interval [start, end) it covers, in UTC. Offices close their
// periods in their own time zone; a few hours do not matter to retention.
func periodBounds(p string) (kind string, start, end time.Time, err error) {
	bad := func() (string, time.Time, time.Time, error) {
		return "", time.Time{}, time.Time{}, fmt.Errorf("%w %q (want YYYY-MM or YYYY-Www)", ErrBadPeriod, p)
	}
	if len(p) < 7 || p[4] != '-' {
		return bad()
	}
	year, err := strconv.Atoi(p[:4])
	if err != nil || p[0] == '+' || p[0] == '-' {
		return bad()
	}
	switch {
	case len(p) == 7:
		m, err := strconv.Atoi(p[5:])
		if err != nil || m < 1 || m > 12 || p[5] == '+' || p[5] == '-' {
			return bad()
		}
		start = time.Date(year, time.Month(m), 1, 0, 0, 0, 0, time.UTC)
		return kindMonth, start, start.AddDate(0, 1, 0), nil
	case len(p) == 8 && p[5] == 'W':
		w, err := strconv.Atoi(p[6:])
		if err != nil || w < 1 || w > 53 || p[6] == '+' || p[6] == '-' {
			return bad()
		}
		// Week 1 is the week with 4 January in it; weeks start on Monday.
		jan4 := time.Date(year, time.January, 4, 0, 0, 0, 0, time.UTC)
		monday := jan4.AddDate(0, 0, -((int(jan4.Weekday()) + 6) % 7))
		start = monday.AddDate(0, 0, 7*(w-1))
		return kindWeek, start, start.AddDate(0, 0, 7), nil
	}
	return bad()
}
