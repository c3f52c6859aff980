package intake

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/gateway/store"
)

// pressN submits seqs from..to of board (boot 1), made at the clock's now,
// and waits until the board is acknowledged up to to.
func pressN(tb testing.TB, in *Intake, clk *clock, a *acks, board string, from, to uint32) {
	tb.Helper()
	for seq := from; seq <= to; seq++ {
		c := drivers.Green
		if seq%2 == 0 {
			c = drivers.Red
		}
		in.SubmitPress(drivers.Press{Board: board, Boot: 1, Seq: seq, Colour: c, Received: clk.now()}, a.fn(board))
	}
	waitFor(tb, 5*time.Second, func() bool { return a.get(board) >= to })
}

func setAdmin(tb testing.TB, s *store.Store, board string, fn func(*store.BoardAdmin)) {
	tb.Helper()
	if err := s.SetBoardAdmin(board, func(a *store.BoardAdmin) error { fn(a); return nil }); err != nil {
		tb.Fatal(err)
	}
}

func wantTotal(tb testing.TB, s *store.Store, want uint64) {
	tb.Helper()
	if n, err := s.TotalCounted(); err != nil || n != want {
		tb.Fatalf("TotalCounted = %d, %v; want %d", n, err, want)
	}
}

func TestUnapprovedBoardIsAcknowledgedNotCounted(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, Limits: noLimits})
	in.Start(context.Background())
	var a acks
	pressN(t, in, clk, &a, "b1", 1, 3)
	wantTotal(t, s, 0)
	if st := in.Stats(); st.Unapproved != 3 || st.Counted != 0 {
		t.Fatalf("stats = %+v, want 3 unapproved, none counted", st)
	}
	if bs := in.BoardStats("b1"); bs != (BoardStats{Unapproved: 3}) {
		t.Fatalf("BoardStats(b1) = %+v, want 3 unapproved", bs)
	}
	admins, _ := s.BoardAdmins()
	if got := admins["b1"]; got.Approved || !got.FirstSeen.Equal(clk.now()) {
		t.Fatalf("admin record of b1 = %+v, want unapproved, first seen %v", got, clk.now())
	}

	// An admin approves the board. The board, which missed the acks,
	// resends 1..3: they were settled, so they are duplicates, not counted
	// now. Its next press counts.
	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.Approved = true })
	pressN(t, in, clk, &a, "b1", 1, 3)
	wantTotal(t, s, 0)
	pressN(t, in, clk, &a, "b1", 4, 4)
	wantTotal(t, s, 1)
	if st := in.Stats(); st.Duplicates != 3 || st.Counted != 1 || st.Unapproved != 3 {
		t.Fatalf("stats = %+v, want 3 duplicates, 1 counted, 3 unapproved", st)
	}

	// Approval withdrawn: the next batch no longer counts.
	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.Approved = false })
	pressN(t, in, clk, &a, "b1", 5, 5)
	wantTotal(t, s, 1)
	if bs := in.BoardStats("b1"); bs.Unapproved != 4 {
		t.Fatalf("BoardStats(b1) = %+v, want 4 unapproved", bs)
	}
}

func TestDisabledBoardIsNotCounted(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, Limits: noLimits, AutoApprove: true})
	in.Start(context.Background())
	var a acks
	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.Approved, a.Disabled = true, true })
	pressN(t, in, clk, &a, "b1", 1, 2)
	wantTotal(t, s, 0)
	if st := in.Stats(); st.Unapproved != 2 {
		t.Fatalf("stats = %+v, want a disabled board's 2 presses as unapproved, even with AutoApprove", st)
	}
	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.Disabled = false })
	pressN(t, in, clk, &a, "b1", 3, 3)
	wantTotal(t, s, 1)
}

func TestTestModeCountsTestPressesOnly(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, Limits: noLimits})
	in.Start(context.Background())
	var a acks
	// Test mode works before approval: IT tries the buttons, then approves.
	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.TestMode = true })
	in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: 1, Colour: drivers.Green, Received: clk.now(), AgeMS: 2000}, a.fn("b1"))
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 1 })
	pressN(t, in, clk, &a, "b1", 2, 3)
	wantTotal(t, s, 0)
	want := BoardStats{TestPresses: 3, LastTestPress: clk.now()}
	if bs := in.BoardStats("b1"); bs != want {
		t.Fatalf("BoardStats(b1) = %+v, want %+v", bs, want)
	}
	if st := in.Stats(); st.TestPresses != 3 || st.Unapproved != 0 || st.Counted != 0 {
		t.Fatalf("stats = %+v, want 3 test presses only", st)
	}
	// The colour of a test press is kept nowhere: not even a closed day
	// shows it later.
	days, err := s.ClosedDays("2026-03-02", "2026-03-03")
	if err != nil || days[0] != (store.DayCount{Day: "2026-03-02"}) {
		t.Fatalf("ClosedDays = %+v, %v; want nothing booked", days, err)
	}

	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.TestMode, a.Approved = false, true })
	pressN(t, in, clk, &a, "b1", 4, 4)
	wantTotal(t, s, 1)
	if bs := in.BoardStats("b1"); bs.TestPresses != 3 {
		t.Fatalf("BoardStats(b1) = %+v after leaving test mode, want still 3 test presses", bs)
	}
}

// TestUncountedPressesDoNotSpendTheAbuseLimit: a board that was pressed
// many times while waiting for approval counts its first presses after.
func TestUncountedPressesDoNotSpendTheAbuseLimit(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, Limits: DefaultLimits()})
	in.Start(context.Background())
	var a acks
	for seq := uint32(1); seq <= 10; seq++ {
		in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: seq, Colour: drivers.Green, Received: clk.now()}, a.fn("b1"))
	}
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 10 })
	setAdmin(t, s, "b1", func(a *store.BoardAdmin) { a.Approved = true })
	for seq := uint32(11); seq <= 13; seq++ {
		in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: seq, Colour: drivers.Green, Received: clk.now()}, a.fn("b1"))
	}
	waitFor(t, 5*time.Second, func() bool { return a.get("b1") == 13 })
	wantTotal(t, s, 3) // the button's burst
	if st := in.Stats(); st.Suppressed != 0 {
		t.Fatalf("stats = %+v, want nothing suppressed", st)
	}
}

// TestApprovalChangesDuringTraffic flips a board's approval while its
// presses stream in (run with -race): every press ends up counted or
// unapproved, exactly once, and the store agrees with the intake.
func TestApprovalChangesDuringTraffic(t *testing.T) {
	clk := newClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	in, s := newIntake(t, Config{Now: clk.now, Limits: noLimits})
	in.Start(context.Background())
	var a acks
	const n = 2000
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for on := true; ctx.Err() == nil; on = !on {
			if err := s.SetBoardAdmin("b1", func(a *store.BoardAdmin) error { a.Approved = on; return nil }); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for seq := uint32(1); seq <= n; seq++ {
		in.SubmitPress(drivers.Press{Board: "b1", Boot: 1, Seq: seq, Colour: drivers.Red, Received: clk.now()}, a.fn("b1"))
		if seq%100 == 0 {
			waitFor(t, 5*time.Second, func() bool { return a.get("b1") == seq })
		}
	}
	cancel()
	wg.Wait()
	st := in.Stats()
	if st.Counted+st.Unapproved != n || st.Counted == 0 || st.Unapproved == 0 {
		t.Fatalf("stats = %+v, want counted + unapproved = %d, both non-zero", st, n)
	}
	wantTotal(t, s, st.Counted)
	if bs := in.BoardStats("b1"); bs.Unapproved != st.Unapproved {
		t.Fatalf("BoardStats(b1) = %+v, want %d unapproved", bs, st.Unapproved)
	}
}
