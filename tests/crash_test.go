package tests

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
	"github.com/pulsegate/pulsegate/gateway/store"
)

// storeTotal opens the (unlocked, since the process is dead) store and reads
// the number of counted presses.
func storeTotal(tb testing.TB, dataDir string) uint64 {
	tb.Helper()
	s, err := store.Open(filepath.Join(dataDir, "counts.db"))
	if err != nil {
		tb.Fatalf("open store after kill: %v", err)
	}
	defer s.Close()
	n, err := s.TotalCounted()
	if err != nil {
		tb.Fatalf("read store after kill: %v", err)
	}
	return n
}

// TestCrashNeverLosesOrDoublesAcknowledgedPresses kills `pulsegate run` with
// SIGKILL at random moments while a board presses. A press the board was told
// is safe must be counted, exactly once, whatever the moment of the kill.
func TestCrashNeverLosesOrDoublesAcknowledgedPresses(t *testing.T) {
	kills := 24
	if testing.Short() {
		kills = 5
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	board, err := fakeboard.New(fakeboard.Config{
		BoardID:           "crash-1",
		Link:              filepath.Join(dir, "board"),
		ResendInterval:    100 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond,
		MaxPending:        1 << 20, // never discard: every press must end up counted
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { board.Close() })

	args := []string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--board", board.Path(),
		"--sim", "off", "--no-abuse-limit", "--auto-approve-boards", "--log-level", "warn"}

	// Press continuously, from before the first start to after the last kill.
	ctx, stopPressing := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(1, 2))
		for ctx.Err() == nil {
			c := drivers.Green
			if rnd.IntN(3) == 0 {
				c = drivers.Red
			}
			board.Press(c)
			time.Sleep(time.Duration(1+rnd.IntN(6)) * time.Millisecond)
		}
	}()

	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range kills {
		p := startPulsegate(t, args...)
		// Kill at a random moment: during start-up, mid-batch, between batches.
		time.Sleep(time.Duration(rnd.IntN(400)) * time.Millisecond)
		p.kill()
		st := board.Stats()
		counted := storeTotal(t, dataDir)
		if counted < st.Acked {
			t.Fatalf("kill %d: %d presses acknowledged but only %d counted: an acknowledged press was lost\n%s", i, st.Acked, counted, p.logs)
		}
		if counted > st.Pressed {
			t.Fatalf("kill %d: %d counted but only %d pressed: a press was counted twice", i, counted, st.Pressed)
		}
		t.Logf("kill %d: pressed %d, acknowledged %d, counted %d", i, st.Pressed, st.Acked, counted)
	}
	stopPressing()
	wg.Wait()

	// A last start lets the board hand over everything it still holds.
	p := startPulsegate(t, args...)
	waitCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := board.WaitAcked(waitCtx); err != nil {
		t.Fatalf("board still holds %d presses: %v\n%s", board.Stats().Pending, err, p.logs)
	}
	p.stop(t)
	st := board.Stats()
	counted := storeTotal(t, dataDir)
	if st.Lost != 0 {
		t.Fatalf("the board discarded %d presses", st.Lost)
	}
	if counted != st.Acked || st.Acked != st.Pressed {
		t.Fatalf("after %d kills: pressed %d, acknowledged %d, counted %d; want all equal", kills, st.Pressed, st.Acked, counted)
	}
	if st.Pressed < uint64(kills)*10 {
		t.Fatalf("only %d presses made: the test did not exercise much", st.Pressed)
	}
	t.Logf("after %d kills: pressed = acknowledged = counted = %d", kills, counted)
}
