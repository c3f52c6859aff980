package index

import (
	"errors"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/sync/wire"
)

func TestPeriodBounds(t *testing.T) {
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		in         string
		kind       string
		start, end time.Time
	}{
		{"2026-01", kindMonth, day(2026, 1, 1), day(2026, 2, 1)},
		{"2026-12", kindMonth, day(2026, 12, 1), day(2027, 1, 1)},
		{"2024-02", kindMonth, day(2024, 2, 1), day(2024, 3, 1)},
		{"2026-W01", kindWeek, day(2025, 12, 29), day(2026, 1, 5)}, // 1 Jan 2026 is a Thursday
		{"2026-W09", kindWeek, day(2026, 2, 23), day(2026, 3, 2)},
		{"2020-W53", kindWeek, day(2020, 12, 28), day(2021, 1, 4)},
		{"2021-W01", kindWeek, day(2021, 1, 4), day(2021, 1, 11)}, // 1 Jan 2021 is a Friday
		{"2024-W01", kindWeek, day(2024, 1, 1), day(2024, 1, 8)},  // a Monday
	}
	for _, tt := range tests {
		kind, start, end, err := periodBounds(tt.in)
		if err != nil || kind != tt.kind || !start.Equal(tt.start) || !end.Equal(tt.end) {
			t.Errorf("periodBounds(%q) = %s, %v, %v, %v; want %s, %v, %v", tt.in, kind, start, end, err, tt.kind, tt.start, tt.end)
		}
	}
	for _, bad := range []string{"", "2026", "2026-00", "2026-13", "2026-1", "2026-W00", "2026-W54", "2026-W5", "2026/01",
		"-026-01", "+026-01", "2026-+1", "2026-W+1", "2026-w01", "2026-01-01", "２０２６-01"} {
		if _, _, _, err := periodBounds(bad); !errors.Is(err, ErrBadPeriod) {
			t.Errorf("periodBounds(%q) error = %v, want ErrBadPeriod", bad, err)
		}
	}
}

// FuzzPeriodBounds checks the parser of HQ's query bounds against wire's
// validation: they accept the same periods, and a period is never empty.
func FuzzPeriodBounds(f *testing.F) {
	for _, s := range []string{"2026-01", "2026-W09", "2026-13", "2026-W54", "", "0000-01", "9999-W53"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		_, start, end, err := periodBounds(p)
		r := wire.Release{Site: "0123456789abcdef", Region: "r", Period: p, Colour: "G", Version: 1, Epsilon: "1", Sensitivity: 1}
		werr := (&wire.Batch{Version: wire.Version, Releases: []wire.Release{r}}).Validate()
		if (err == nil) != (werr == nil) {
			t.Fatalf("periodBounds(%q) error %v, wire says %v", p, err, werr)
		}
		if err == nil && !start.Before(end) {
			t.Fatalf("periodBounds(%q) = [%v, %v)", p, start, end)
		}
	})
}
