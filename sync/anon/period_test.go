package anon

import (
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestPeriodOf(t *testing.T) {
	tests := []struct {
		kind        PeriodKind
		day         string
		name        string
		start, end  string
		workingDays uint64
	}{
		{Monthly, "2026-03-15", "2026-03", "2026-03-01", "2026-03-31", 22},
		{Monthly, "2026-03-01", "2026-03", "2026-03-01", "2026-03-31", 22},
		{Monthly, "2026-02-28", "2026-02", "2026-02-01", "2026-02-28", 20},
		{Monthly, "2024-02-29", "2024-02", "2024-02-01", "2024-02-29", 21},
		{Monthly, "2026-12-31", "2026-12", "2026-12-01", "2026-12-31", 23},
		{Weekly, "2026-03-04", "2026-W10", "2026-03-02", "2026-03-08", 5},
		{Weekly, "2026-02-23", "2026-W09", "2026-02-23", "2026-03-01", 5},
		// ISO week-numbering years straddle New Year.
		{Weekly, "2026-01-01", "2026-W01", "2025-12-29", "2026-01-04", 5},
		{Weekly, "2021-01-01", "2020-W53", "2020-12-28", "2021-01-03", 5},
		{Weekly, "2024-12-30", "2025-W01", "2024-12-30", "2025-01-05", 5},
		{Weekly, "2026-12-31", "2026-W53", "2026-12-28", "2027-01-03", 5},
		{Weekly, "0001-01-01", "0001-W01", "0001-01-01", "0001-01-07", 5},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String()+" "+tt.day, func(t *testing.T) {
			p, err := PeriodOf(tt.kind, tt.day)
			if err != nil {
				t.Fatalf("PeriodOf(%v, %q) = %v", tt.kind, tt.day, err)
			}
			if p.String() != tt.name || p.Start.String() != tt.start || p.End.String() != tt.end {
				t.Errorf("PeriodOf(%v, %q) = %s [%s, %s], want %s [%s, %s]", tt.kind, tt.day, p, p.Start, p.End, tt.name, tt.start, tt.end)
			}
			if got := p.WorkingDays(); got != tt.workingDays {
				t.Errorf("%s.WorkingDays() = %d, want %d", p, got, tt.workingDays)
			}
			q, err := ParsePeriod(tt.name)
			if err != nil || q != p {
				t.Errorf("ParsePeriod(%q) = %+v, %v; want %+v", tt.name, q, err, p)
			}
		})
	}
}

func TestPeriodOfRejects(t *testing.T) {
	for _, tt := range []struct {
		kind PeriodKind
		day  string
	}{
		{Monthly, "2026-02-30"},
		{Monthly, "2026-3-01"},
		{Monthly, "+026-03-01"},
		{Monthly, " 2026-03-01"},
		{Monthly, "0000-03-01"},
		{Monthly, "2026-03-01T00:00"},
		{Monthly, ""},
		{Weekly, "9999-12-31"}, // its ISO week ends in year 10000
		{PeriodKind(7), "2026-03-01"},
	} {
		if p, err := PeriodOf(tt.kind, tt.day); !errors.Is(err, ErrBadPeriod) {
			t.Errorf("PeriodOf(%v, %q) = %v, %v; want ErrBadPeriod", tt.kind, tt.day, p, err)
		}
	}
}

func TestParsePeriodRejects(t *testing.T) {
	for _, s := range []string{
		"", "2026", "2026-3", "2026-00", "2026-13", "2026-03-01", "26-03", "+026-03", "0000-01",
		"2026-W00", "2026-W54", "2025-W53", "2026-w09", "2026-W9", "2026W09", "2026-W09 ", "9999-W52",
	} {
		if p, err := ParsePeriod(s); !errors.Is(err, ErrBadPeriod) {
			t.Errorf("ParsePeriod(%q) = %v, %v; want ErrBadPeriod", s, p, err)
		}
	}
}

func TestPeriodContainsAndClosed(t *testing.T) {
	march, _ := ParsePeriod("2026-03")
	tests := []struct {
		day              string
		contains, closed bool
	}{
		{"2026-02-28", false, false},
		{"2026-03-01", true, false},
		{"2026-03-31", true, false}, // the current period never leaves
		{"2026-04-01", false, true},
		{"2027-01-01", false, true},
		{"2026-04-31", false, false}, // not a day: a broken clock keeps data in
		{"garbage", false, false},
	}
	for _, tt := range tests {
		if got := march.Contains(tt.day); got != tt.contains {
			t.Errorf("%s.Contains(%q) = %v, want %v", march, tt.day, got, tt.contains)
		}
		if got := march.Closed(tt.day); got != tt.closed {
			t.Errorf("%s.Closed(%q) = %v, want %v", march, tt.day, got, tt.closed)
		}
	}
}

// TestPeriodsTile: for any day and kind, the period holds the day, reads back
// from its name, and the next period starts the day after it ends.
func TestPeriodsTile(t *testing.T) {
	epoch := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	rapid.Check(t, func(t *rapid.T) {
		day := dateOf(epoch.AddDate(0, 0, rapid.IntRange(0, 200*366).Draw(t, "day")))
		kind := rapid.SampledFrom([]PeriodKind{Monthly, Weekly}).Draw(t, "kind")
		p, err := PeriodOf(kind, day.String())
		if err != nil {
			t.Fatal(err)
		}
		if !p.Contains(day.String()) {
			t.Fatalf("%s does not contain %s", p, day)
		}
		if q, err := ParsePeriod(p.String()); err != nil || q != p {
			t.Fatalf("ParsePeriod(%q) = %+v, %v; want %+v", p, q, err, p)
		}
		next, err := periodOf(kind, p.End.addDays(1))
		if err != nil || next.Start != p.End.addDays(1) || next.String() == p.String() {
			t.Fatalf("period after %s [%s, %s] is %s [%s, %s], %v", p, p.Start, p.End, next, next.Start, next.End, err)
		}
		if wd := p.WorkingDays(); kind == Weekly && wd != 5 || kind == Monthly && (wd < 20 || wd > 23) {
			t.Fatalf("%s has %d working days", p, wd)
		}
	})
}

// Period names arrive from config and from other offices: anything that
// parses must be a whole period that prints back to the same string.
func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"2026-03", "2026-W09", "2020-W53", "2025-W53", "0001-W01", "9999-12", "2026-13", "2026-W", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeriod(s)
		if err != nil {
			if !errors.Is(err, ErrBadPeriod) {
				t.Fatalf("ParsePeriod(%q) error %v does not wrap ErrBadPeriod", s, err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePeriod(%q).String() = %q", s, p)
		}
		if !p.valid() || !p.Contains(p.Start.String()) || !p.Contains(p.End.String()) || p.Start.Compare(p.End) > 0 {
			t.Fatalf("ParsePeriod(%q) = %+v is not a whole period", s, p)
		}
		if q, err := PeriodOf(p.Kind, p.End.String()); err != nil || q != p {
			t.Fatalf("PeriodOf(%v, %s) = %+v, %v; want %+v", p.Kind, p.End, q, err, p)
		}
	})
}
