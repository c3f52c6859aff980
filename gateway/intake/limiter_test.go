package intake

import (
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
)

func TestLimiter(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		board string
		c     drivers.Colour
		ms    int
		want  bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"button burst of 3 then refill every 3s", []step{
			{"b", 'G', 0, true}, {"b", 'G', 0, true}, {"b", 'G', 0, true}, {"b", 'G', 0, false},
			{"b", 'G', 2900, false}, {"b", 'G', 3100, true}, {"b", 'G', 3200, false},
		}},
		{"buttons have separate buckets, the board caps both at 6", []step{
			{"b", 'G', 0, true}, {"b", 'G', 0, true}, {"b", 'G', 0, true},
			{"b", 'R', 0, true}, {"b", 'R', 0, true}, {"b", 'R', 0, true},
			{"b", 'R', 10, false},
			// 1.5 s later the board has one token again, the red button not.
			{"b", 'R', 1600, false}, {"b", 'G', 3100, true},
		}},
		{"boards are independent", []step{
			{"a", 'G', 0, true}, {"a", 'G', 0, true}, {"a", 'G', 0, true}, {"a", 'G', 0, false},
			{"b", 'G', 0, true},
		}},
		{"time running backwards refills nothing", []step{
			{"b", 'G', 10000, true}, {"b", 'G', 10000, true}, {"b", 'G', 10000, true},
			{"b", 'G', 0, false}, {"b", 'G', 5000, false},
		}},
		{"a denied press takes no token", []step{
			{"b", 'G', 0, true}, {"b", 'G', 0, true}, {"b", 'G', 0, true},
			{"b", 'G', 1000, false}, {"b", 'G', 2000, false}, {"b", 'G', 3000, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(DefaultLimits())
			for i, s := range tt.steps {
				if got := l.Allow(s.board, s.c, at(s.ms)); got != s.want {
					t.Fatalf("step %d: Allow(%s, %c, +%dms) = %v, want %v", i, s.board, s.c, s.ms, got, s.want)
				}
			}
		})
	}
}

func TestLimiterDisabled(t *testing.T) {
	l := NewLimiter(LimitConfig{})
	for range 1000 {
		if !l.Allow("b", drivers.Green, time.Unix(1, 0)) {
			t.Fatal("a disabled limiter denied a press")
		}
	}
}

func TestLimiterPruneKeepsState(t *testing.T) {
	l := NewLimiter(DefaultLimits())
	t0 := time.Unix(1_800_000_000, 0)
	for range 3 {
		l.Allow("busy", drivers.Green, t0)
	}
	l.prune(t0) // the busy bucket is empty, it must survive
	if l.Allow("busy", drivers.Green, t0) {
		t.Fatal("prune forgot an empty bucket")
	}
	l.prune(t0.Add(time.Hour))
	if len(l.buckets) != 0 {
		t.Fatalf("prune kept %d full buckets", len(l.buckets))
	}
}
