package intake

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/gateway/store"
)

// clock is a settable clock for tests.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()) }

// acks records the highest ack per board.
type acks struct {
	mu sync.Mutex
	m  map[string]uint32
}

func (a *acks) fn(board string) func(uint32) {
	return func(seq uint32) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.m == nil {
			a.m = map[string]uint32{}
		}
		a.m[board] = max(a.m[board], seq)
	}
}

func (a *acks) get(board string) uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[board]
}

func newIntake(tb testing.TB, cfg Config) (*Intake, *store.Store) {
	tb.Helper()
	s, err := store.Open(filepath.Join(tb.TempDir(), "counts.db"))
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Store = s
	in, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		in.Close()
		s.Close()
	})
	return in, s
}

func waitFor(tb testing.TB, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var noLimits = LimitConfig{}

func TestClockNotSetLeavesPressesUnacknowledged(t *testing.T) {
	clk := newClock(time.Date(1970, 1, 1, 0, 5, 0, 0, time.UTC)) // a Pi after power-up, no RTC
	in, s := newIntake(t, Config{Now: clk.now, AutoApprove: true, Limits: noLimits})
	in.Start(context.Background())
	var a acks
	p := drivers.Press{Board: "b1", Boot: 1, Seq: 1, Colour: drivers.Green, Received: clk.now()}
	in.SubmitPress(p, a.fn("b1"))
	if st := in.Stats(); st.ClockRefused != 1 || !st.ClockUnset {
		t.Fatalf("stats = %+v, want one press refused and the clock unset", st)
	}
	time.Sleep(50 * time.Millisecond) // give a wrong ack time to appear
	if a.get("b1") != 0 {
		t.Fatal("a press was acknowledged while the clock was not set")
	}
	if n, _ := s.TotalCounted(); n != 0 {
		t.Fatalf("counted %d presses with the clock unset, want 0", n)
	}

	// NTP sets the clock; the board resends and the press is booked.
	clk.set(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	p.Received = clk.now()
	in.SubmitPress(p, a.fn("b1"))
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 1 })
	if in.Stats().ClockUnset {
		t.Fatal("clock still reported unset")
	}
	days, _ := s.ClosedDays("2026-03-02", "2026-03-03")
	if days[0].Green != 1 {
		t.Fatalf("booked %+v, want one green on 2026-03-02", days)
	}
}

func TestStricterNotBefore(t *testing.T) {
	clk := newClock(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	in, _ := newIntake(t, Config{Now: clk.now, NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
	if in.ClockSet() {
		t.Fatal("ClockSet() = true for a clock before the configured not-before")
	}
}

func TestGroupCommitBooksManyPressesPerFsync(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, AutoApprove: true, Limits: noLimits})
	var a acks
	const n = 2000
	for seq := uint32(1); seq <= n; seq++ {
		in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: seq, Colour: drivers.Red, Received: clk.now()}, a.fn("b1"))
	}
	in.Start(context.Background()) // everything is queued: the first batches are full
	waitFor(t, 10*time.Second, func() bool { return a.get("b1") == n })
	st := in.Stats()
	if st.Counted != n || st.Commits == 0 || st.Batched/st.Commits < 100 {
		t.Fatalf("stats = %+v: want %d counted with ≥ 100 presses per commit", st, n)
	}
	if total, _ := s.TotalCounted(); total != n {
		t.Fatalf("stored %d, want %d", total, n)
	}
}

func TestAbuseLimitAcksButDoesNotCount(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, AutoApprove: true, Limits: DefaultLimits()})
	in.Start(context.Background())
	var a acks
	// Ten presses of one button within a second: burst 3 counts.
	for seq := uint32(1); seq <= 10; seq++ {
		in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: seq, Colour: drivers.Green, Received: clk.now(), AgeMS: 1000 - seq*100}, a.fn("b1"))
	}
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 10 })
	if n, _ := s.TotalCounted(); n != 3 {
		t.Fatalf("counted %d of a burst of 10, want 3", n)
	}
	boards, _ := s.Boards()
	if boards["b1"].Suppressed != 7 {
		t.Fatalf("suppressed %d, want 7", boards["b1"].Suppressed)
	}
}

func TestAbuseLimitJudgesBacklogByPressTime(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, AutoApprove: true, Limits: DefaultLimits()})
	in.Start(context.Background())
	var a acks
	// After an outage a board replays 10 presses made 4 s apart over the
	// last 40 s; they arrive in one burst but were pressed slowly.
	for seq := uint32(1); seq <= 10; seq++ {
		c := drivers.Green
		if seq%2 == 0 {
			c = drivers.Red
		}
		in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: seq, Colour: c, Received: clk.now(), AgeMS: (10 - seq) * 4000}, a.fn("b1"))
	}
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 10 })
	if n, _ := s.TotalCounted(); n != 10 {
		t.Fatalf("counted %d of a slow backlog of 10, want 10", n)
	}
}

func TestPressBookedOnDayItWasPressed(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 3, 0, 0, 2, 0, time.UTC)) // two seconds after midnight
	in, s := newIntake(t, Config{Now: clk.now, AutoApprove: true, Limits: noLimits})
	in.Start(context.Background())
	var a acks
	in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: 1, Colour: drivers.Red, Received: clk.now(), AgeMS: 5000}, a.fn("b1"))
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 1 })
	days, _ := s.ClosedDays("2026-03-02", "2026-03-03")
	if days[0].Red != 1 {
		t.Fatalf("a press made 5 s before midnight was booked as %+v, want on 2026-03-02", days)
	}
}

func TestHeartbeatSettles(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, _ := newIntake(t, Config{Now: clk.now})
	in.Start(context.Background())
	var a acks
	in.SubmitHeartbeat("b1", 5, 40, a.fn("b1"))
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 40 })
}

func TestCloseTwiceAndSubmitAfterClose(t *testing.T) {
	in, _ := newIntake(t, Config{})
	in.Start(context.Background())
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	// With the committer gone, a press must not queue: nothing would ever
	// book or acknowledge it, and the board must keep it.
	in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: 1, Colour: drivers.Red, Received: time.Now()}, func(uint32) {})
	if n := len(in.reqs); n != 0 {
		t.Fatalf("%d presses queued after Close, want 0", n)
	}
}
