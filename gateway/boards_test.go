package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
	"github.com/pulsegate/pulsegate/gateway/store"
)

// pressAndWait presses the board n times, alternating colours, and waits
// until the gateway has acknowledged everything it holds.
func pressAndWait(tb testing.TB, board *fakeboard.Board, n int) {
	tb.Helper()
	for i := range n {
		c := drivers.Green
		if i%2 == 1 {
			c = drivers.Red
		}
		board.Press(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := board.WaitAcked(ctx); err != nil {
		tb.Fatalf("presses not acknowledged: %v (board %+v)", err, board.Stats())
	}
}

func todayTotal(tb testing.TB, g *Gateway) uint64 {
	tb.Helper()
	st, err := g.Status(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return st.TodayTotal
}

func boardView(tb testing.TB, g *Gateway, id string) BoardView {
	tb.Helper()
	views, err := g.BoardViews()
	if err != nil {
		tb.Fatal(err)
	}
	for _, v := range views {
		if v.ID == id {
			return v
		}
	}
	tb.Fatalf("BoardViews() = %+v, want board %s", views, id)
	return BoardView{}
}

func wantMetric(tb testing.TB, g *Gateway, line string) {
	tb.Helper()
	var b strings.Builder
	g.WritePrometheus(&b)
	if !strings.Contains(b.String(), "\n"+line+"\n") {
		tb.Errorf("/metrics lacks %q:\n%s", line, b.String())
	}
}

// TestBoardCountsOnlyOnceApproved runs a real pty board through the
// gateway: its presses are acknowledged but not counted until an admin
// approves it; the approval, a name and test mode survive a restart.
func TestBoardCountsOnlyOnceApproved(t *testing.T) {
	const id = "approve-1"
	board := newBoard(t, id)
	dataDir := filepath.Join(t.TempDir(), "data")
	var logs syncBuffer
	g := openGatewayWith(t, board, time.Now, &logs, func(c *Config) { c.DataDir = dataDir })

	if err := g.ApproveBoard("no-such-board", true); !errors.Is(err, ErrUnknownBoard) {
		t.Fatalf("ApproveBoard(unknown) = %v, want ErrUnknownBoard", err)
	}
	pressAndWait(t, board, 5)
	if n := todayTotal(t, g); n != 0 {
		t.Fatalf("today_total = %d before approval, want 0", n)
	}
	v := boardView(t, g, id)
	if v.Approved || v.Unapproved != 5 || !v.Connected || v.Path != board.Path() || v.FirstSeen.IsZero() {
		t.Fatalf("view before approval = %+v, want unapproved with 5 uncounted presses, connected, first seen", v)
	}
	wantMetric(t, g, "pulsegate_presses_unapproved_total 5")

	if err := g.ApproveBoard(id, true); err != nil {
		t.Fatal(err)
	}
	pressAndWait(t, board, 3)
	if n := todayTotal(t, g); n != 3 {
		t.Fatalf("today_total = %d after approval, want the 3 new presses", n)
	}
	if v := boardView(t, g, id); !v.Approved {
		t.Fatalf("view after approval = %+v, want approved", v)
	}

	// Test mode: the presses show up, colour-blind, and do not count.
	if err := g.SetBoardTestMode(id, true); err != nil {
		t.Fatal(err)
	}
	pressAndWait(t, board, 2)
	if n := todayTotal(t, g); n != 3 {
		t.Fatalf("today_total = %d after test presses, want still 3", n)
	}
	if v := boardView(t, g, id); v.TestPresses != 2 || v.LastTestPress.IsZero() || !v.TestMode {
		t.Fatalf("view in test mode = %+v, want 2 test presses", v)
	}
	wantMetric(t, g, "pulsegate_presses_test_total 2")
	if err := g.SetBoardTestMode(id, false); err != nil {
		t.Fatal(err)
	}

	// Disabled: acknowledged, not counted, whatever its approval.
	if err := g.DisableBoard(id, true); err != nil {
		t.Fatal(err)
	}
	pressAndWait(t, board, 1)
	if n := todayTotal(t, g); n != 3 {
		t.Fatalf("today_total = %d after a press on a disabled board, want still 3", n)
	}
	if err := g.DisableBoard(id, false); err != nil {
		t.Fatal(err)
	}

	// Names, and the order of the list: by name, then id. A board only the
	// store knows is listed too.
	if err := g.NameBoard(id, "bad\x00name"); !errors.Is(err, store.ErrBadBoardName) {
		t.Fatalf("NameBoard(bad) = %v, want ErrBadBoardName", err)
	}
	if err := g.store.SetBoardAdmin("old-board", func(a *store.BoardAdmin) error { a.Name = "Atrium"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := g.NameBoard(id, "  Lobby, by the lifts "); err != nil {
		t.Fatal(err)
	}
	views, err := g.BoardViews()
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 2 || views[0].ID != "old-board" || views[0].Connected || views[1].Name != "Lobby, by the lifts" {
		t.Fatalf("BoardViews() = %+v, want old-board (Atrium), then %s (Lobby, by the lifts)", views, id)
	}
	_, body := getAuth(t, g, "api/status")
	var st struct {
		Boards []struct {
			BoardID    string `json:"board_id"`
			Name       string `json:"name"`
			Approved   bool   `json:"approved"`
			TestMode   bool   `json:"test_mode"`
			Unapproved uint64 `json:"unapproved"`
		} `json:"boards"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Boards) != 1 || st.Boards[0].Name != "Lobby, by the lifts" || !st.Boards[0].Approved || st.Boards[0].Unapproved != 6 {
		t.Fatalf("/api/status boards = %+v, want the named, approved board with 6 uncounted presses", st.Boards)
	}
	if code, _ := getAuth(t, g, ""); code != 200 {
		t.Fatalf("GET / = %d", code)
	}

	// The admin state is in the store: a restart keeps it.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g = openGatewayWith(t, board, time.Now, &logs, func(c *Config) { c.DataDir = dataDir })
	if v := boardView(t, g, id); !v.Approved || v.Name != "Lobby, by the lifts" || v.Disabled || v.TestMode {
		t.Fatalf("view after restart = %+v, want approved and named", v)
	}
	pressAndWait(t, board, 2)
	if n := todayTotal(t, g); n != 5 {
		t.Fatalf("today_total = %d after restart, want 5", n)
	}
	if m := regexp.MustCompile(`(?i)\b(green|red|colou?r)\b`).FindString(logs.String()); m != "" {
		t.Errorf("the log mentions %q:\n%s", m, logs.String())
	}
}
