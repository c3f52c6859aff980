package anon

import (
	"errors"
	"fmt"
	"time"
)

// ErrBadPeriod reports a day or period that cannot be parsed or is out of range.
var ErrBadPeriod = errors.New("bad period")

// Date is a civil calendar day with no time zone: the office has already
// decided which local day a press belongs to.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// ParseDate parses "YYYY-MM-DD" strictly (years 0001–9999).
func ParseDate(s string) (Date, error) {
	// time.Parse alone accepts signs and spaces in the year; the digit check
	// keeps exactly one spelling per day so strings compare as dates.
	if len(s) != 10 || s[4] != '-' || s[7] != '-' || !digits(s[:4]) || !digits(s[5:7]) || !digits(s[8:]) {
		return Date{}, fmt.Errorf("%w: day %q: want YYYY-MM-DD", ErrBadPeriod, s)
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || t.Year() < 1 {
		return Date{}, fmt.Errorf("%w: day %q: not a calendar day", ErrBadPeriod, s)
	}
	return dateOf(t), nil
}

// String formats d as "YYYY-MM-DD".
func (d Date) String() string {
	return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day)
}

// Compare returns -1, 0 or +1 as d is before, equal to or after o.
func (d Date) Compare(o Date) int {
	return d.time().Compare(o.time())
}

func (d Date) time() time.Time { return time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, time.UTC) }

func (d Date) addDays(n int) Date { return dateOf(d.time().AddDate(0, 0, n)) }

func (d Date) inRange() bool { return d.Year >= 1 && d.Year <= 9999 }

func dateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// PeriodKind is the length of a reporting period.
type PeriodKind uint8

const (
	// Monthly periods are calendar months. It is the zero value because it is
	// the default: a month hides more than a week.
	Monthly PeriodKind = iota
	// Weekly periods are ISO 8601 weeks, Monday to Sunday, numbered in the
	// ISO week-numbering year (so 2026-W01 starts on 2025-12-29).
	Weekly
)

func (k PeriodKind) String() string {
	switch k {
	case Monthly:
		return "monthly"
	case Weekly:
		return "weekly"
	}
	return fmt.Sprintf("PeriodKind(%d)", uint8(k))
}

// Period is a closed range of whole days, Start to End inclusive, that is one
// calendar month or one ISO week. Build it with PeriodOf or ParsePeriod: Decide
// refuses any other range.
type Period struct {
	Kind       PeriodKind
	Start, End Date
}

// PeriodOf returns the period of the given kind that contains day ("YYYY-MM-DD").
func PeriodOf(kind PeriodKind, day string) (Period, error) {
	d, err := ParseDate(day)
	if err != nil {
		return Period{}, err
	}
	return periodOf(kind, d)
}

func periodOf(kind PeriodKind, d Date) (Period, error) {
	var p Period
	switch kind {
	case Monthly:
		start := Date{d.Year, d.Month, 1}
		p = Period{Kind: Monthly, Start: start, End: dateOf(start.time().AddDate(0, 1, -1))}
	case Weekly:
		// Monday is day 0 of an ISO week; time.Weekday counts from Sunday.
		back := (int(d.time().Weekday()) + 6) % 7
		start := d.addDays(-back)
		p = Period{Kind: Weekly, Start: start, End: start.addDays(6)}
	default:
		return Period{}, fmt.Errorf("%w: unknown kind %d", ErrBadPeriod, uint8(kind))
	}
	// The first and last ISO weeks of the calendar would spill out of the
	// four-digit years that every day string here has.
	if !p.Start.inRange() || !p.End.inRange() {
		return Period{}, fmt.Errorf("%w: %s period of %s is out of range", ErrBadPeriod, kind, d)
	}
	return p, nil
}

// ParsePeriod parses "YYYY-MM" (a calendar month) or "YYYY-Www" (an ISO week),
// exactly as String formats them.
func ParsePeriod(s string) (Period, error) {
	switch {
	case len(s) == 7 && s[4] == '-' && digits(s[:4]) && digits(s[5:]):
		year, month := atoi(s[:4]), atoi(s[5:])
		if year < 1 || month < 1 || month > 12 {
			return Period{}, fmt.Errorf("%w: month %q out of range", ErrBadPeriod, s)
		}
		return periodOf(Monthly, Date{year, time.Month(month), 1})
	case len(s) == 8 && s[4:6] == "-W" && digits(s[:4]) && digits(s[6:]):
		year, week := atoi(s[:4]), atoi(s[6:])
		if year < 1 || week < 1 || week > 53 {
			return Period{}, fmt.Errorf("%w: week %q out of range", ErrBadPeriod, s)
		}
		// Week 1 is the week holding 4 January, so the period of 4 January
		// plus whole weeks lands on the wanted week.
		p, err := periodOf(Weekly, Date{year, time.January, 4})
		if err != nil {
			return Period{}, err
		}
		if week > 1 {
			p, err = periodOf(Weekly, p.Start.addDays(7*(week-1)))
			if err != nil {
				return Period{}, err
			}
		}
		// Only some years have a week 53; in others it would be next year's W01.
		if y, w := p.Start.time().ISOWeek(); y != year || w != week {
			return Period{}, fmt.Errorf("%w: %d has no week %d", ErrBadPeriod, year, week)
		}
		return p, nil
	}
	return Period{}, fmt.Errorf("%w: %q: want YYYY-MM or YYYY-Www", ErrBadPeriod, s)
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

// String formats p as "2026-03" (month) or "2026-W09" (ISO week).
func (p Period) String() string {
	if p.Kind == Weekly {
		y, w := p.Start.time().ISOWeek()
		return fmt.Sprintf("%04d-W%02d", y, w)
	}
	return fmt.Sprintf("%04d-%02d", p.Start.Year, int(p.Start.Month))
}

// valid reports whether p is exactly a period PeriodOf could have returned.
func (p Period) valid() bool {
	q, err := periodOf(p.Kind, p.Start)
	return err == nil && q == p
}

// Contains reports whether day ("YYYY-MM-DD") falls within p. A malformed day
// is in no period.
func (p Period) Contains(day string) bool {
	d, err := ParseDate(day)
	return err == nil && d.Compare(p.Start) >= 0 && d.Compare(p.End) <= 0
}

// WorkingDays counts Monday to Friday in p, public holidays included: the
// default sensitivity must not shrink with a calendar that anon cannot know.
func (p Period) WorkingDays() uint64 {
	var n uint64
	for d := p.Start; d.Compare(p.End) <= 0; d = d.addDays(1) {
		if wd := d.time().Weekday(); wd != time.Saturday && wd != time.Sunday {
			n++
		}
	}
	return n
}

// Closed reports whether today ("YYYY-MM-DD", the office's local day) is after
// p's last day. The current period never leaves: presses can still arrive, and
// a half-period is a finer grain than the period. A malformed today is treated
// as not after anything, so a broken clock keeps data in.
func (p Period) Closed(today string) bool {
	d, err := ParseDate(today)
	return err == nil && d.Compare(p.End) > 0
}
