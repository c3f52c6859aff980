//go:build linux

package intake

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/gateway/store"
	"github.com/pulsegate/pulsegate/tests/privileged"
)

// fullDisk is an intake whose store lives on a small tmpfs that the test
// fills and frees.
type fullDisk struct {
	in     *Intake
	store  *store.Store
	clk    *clock
	acks   acks
	filler string
	t0     time.Time
}

func newFullDisk(tb testing.TB, limits LimitConfig) *fullDisk {
	tb.Helper()
	dir := privileged.MountTmpfs(tb, "512k")
	s, err := store.Open(filepath.Join(dir, "counts.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	in, err := New(Config{Store: s, Now: clk.now, AutoApprove: true, Limits: limits})
	if err != nil {
		tb.Fatal(err)
	}
	in.Start(context.Background())
	tb.Cleanup(func() { in.Close() })

	// Fill the file system to the last byte.
	f := &fullDisk{in: in, store: s, clk: clk, filler: filepath.Join(dir, "filler"), t0: t0}
	w, err := os.Create(f.filler)
	if err != nil {
		tb.Fatal(err)
	}
	defer w.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := w.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			break
		} else if err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// board is a board ID as long as the store allows, so that every new board
// grows the store and the disk fills after a few commits.
func board(i int) string {
	return fmt.Sprintf("board-%04d-%s", i, strings.Repeat("x", 53))
}

// send submits board's first press, made at t0, as the board sends it
// (again) after resends: it arrives resend seconds later and says how old
// it is, so its press time stays t0. It waits for the intake's commit and
// reports whether it succeeded; one press per commit, so each attempt is
// one transaction.
func (f *fullDisk) send(tb testing.TB, id string, resend int) bool {
	tb.Helper()
	before := f.in.Stats()
	f.clk.set(f.t0.Add(time.Duration(resend) * time.Second))
	f.in.SubmitPress(drivers.Press{
		Board: id, Boot: 1, Seq: 1, Colour: drivers.Green,
		AgeMS: uint32(resend * 1000), Received: f.clk.now(),
	}, f.acks.fn(id))
	var st Stats
	waitFor(tb, 5*time.Second, func() bool {
		st = f.in.Stats()
		return st.Commits > before.Commits || st.CommitErrors > before.CommitErrors
	})
	if st.CommitErrors > before.CommitErrors {
		return false
	}
	// Acks go out just after the commit is counted.
	waitFor(tb, 5*time.Second, func() bool { return f.acks.get(id) == 1 })
	return true
}

// fill books presses of new boards until a commit fails, and returns the
// boards booked and the one refused.
func (f *fullDisk) fill(tb testing.TB) (booked []string, refused string) {
	tb.Helper()
	for i := range 2000 {
		id := board(i)
		if !f.send(tb, id, 0) {
			return booked, id
		}
		booked = append(booked, id)
	}
	tb.Fatalf("booked 2000 presses on a full 512k file system without an error")
	return nil, ""
}

func (f *fullDisk) wantCounted(tb testing.TB, n int, when string) {
	tb.Helper()
	total, err := f.store.TotalCounted()
	if err != nil {
		tb.Fatalf("%s: TotalCounted: %v", when, err)
	}
	if st := f.in.Stats(); total != uint64(n) || st.Counted != uint64(n) {
		tb.Fatalf("%s: store counts %d, intake %d; want %d", when, total, st.Counted, n)
	}
}

// TestFullDiskAcksNothingUntilSpaceIsFreed: while the disk is full no
// press is acknowledged and the failure is visible in Stats; once space is
// freed, the board's resend is acknowledged and counted once, and a resend
// of it is a duplicate.
func TestFullDiskAcksNothingUntilSpaceIsFreed(t *testing.T) {
	f := newFullDisk(t, noLimits)
	booked, refused := f.fill(t)
	t.Logf("disk full after %d commits: %s", len(booked), f.in.Stats().LastError)
	if len(booked) == 0 {
		t.Fatal("the first commit already failed: the test wants some to succeed first")
	}
	for resend := range 3 {
		if resend > 0 && f.send(t, refused, resend) {
			t.Fatalf("resend %d booked with the disk still full", resend)
		}
		st := f.in.Stats()
		if !strings.Contains(st.LastError, "no space left on device") || st.CommitErrors != uint64(resend+1) {
			t.Fatalf("after %d failed commits stats = %+v, want them counted and LastError to say the disk is full", resend+1, st)
		}
		if f.acks.get(refused) != 0 {
			t.Fatal("a press was acknowledged although its commit failed")
		}
	}
	f.wantCounted(t, len(booked), "disk full")

	if err := os.Remove(f.filler); err != nil {
		t.Fatal(err)
	}
	if !f.send(t, refused, 3) {
		t.Fatalf("resend after freeing space failed: %s", f.in.Stats().LastError)
	}
	if st := f.in.Stats(); st.LastError != "" {
		t.Fatalf("LastError = %q after a successful commit, want it cleared", st.LastError)
	}
	// The board missed that ack and resends once more; another board
	// resends a press booked before the disk filled.
	if !f.send(t, refused, 4) || !f.send(t, booked[0], 4) {
		t.Fatalf("duplicate resends failed: %s", f.in.Stats().LastError)
	}
	if st := f.in.Stats(); st.Duplicates != 2 {
		t.Fatalf("stats = %+v, want the two resends counted as duplicates", st)
	}
	f.wantCounted(t, len(booked)+1, "after freeing space")
}

// TestFailedCommitsDoNotSpendTheAbuseLimit: a press whose commit failed was
// not booked, so it must not have used up its button's abuse-limit tokens.
// Otherwise a press resent through a few failed commits (a full disk) is
// acknowledged as over the limit and never counted once space is back.
func TestFailedCommitsDoNotSpendTheAbuseLimit(t *testing.T) {
	limits := DefaultLimits()
	f := newFullDisk(t, limits)
	booked, refused := f.fill(t)
	// The board resends more often than its button's burst: every attempt
	// carries the same press time, so the limiter has no reason to refill.
	for resend := 1; resend <= limits.ButtonBurst+1; resend++ {
		if f.send(t, refused, resend) {
			t.Fatalf("resend %d booked with the disk still full", resend)
		}
	}
	if err := os.Remove(f.filler); err != nil {
		t.Fatal(err)
	}
	if !f.send(t, refused, limits.ButtonBurst+2) {
		t.Fatalf("resend after freeing space failed: %s", f.in.Stats().LastError)
	}
	if st := f.in.Stats(); st.Suppressed != 0 {
		t.Errorf("a single press, resent through %d failed commits, was suppressed as over the abuse limit (stats %+v): failed commits spend limiter tokens", limits.ButtonBurst+1, st)
	}
	f.wantCounted(t, len(booked)+1, "after freeing space")
}
