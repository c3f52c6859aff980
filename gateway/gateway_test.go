package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newBoard starts a pty fake board with fast timings for tests.
func newBoard(tb testing.TB, id string) *fakeboard.Board {
	tb.Helper()
	b, err := fakeboard.New(fakeboard.Config{
		BoardID:           id,
		ResendInterval:    100 * time.Millisecond,
		HeartbeatInterval: 300 * time.Millisecond,
		MaxPending:        100000,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// openGateway runs a gateway on a loopback port reading board, with the
// abuse limit off and every board approved; it logs at debug level into
// logs.
func openGateway(tb testing.TB, board *fakeboard.Board, now func() time.Time, logs io.Writer) *Gateway {
	tb.Helper()
	return openGatewayWith(tb, board, now, logs, func(c *Config) { c.Serial.AutoApprove = true })
}

// openGatewayWith is openGateway with boards left to approve, and change
// applied to the configuration.
func openGatewayWith(tb testing.TB, board *fakeboard.Board, now func() time.Time, logs io.Writer, change func(*Config)) *Gateway {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(tb.TempDir(), "data")
	cfg.Site.TimeZone = "UTC"
	cfg.Serial.Boards = []string{board.Path()}
	cfg.Sim.Mode = "off"
	cfg.Limits.ButtonBurst, cfg.Limits.BoardBurst = 0, 0
	cfg.Web.HTTPSListen = "127.0.0.1:0"
	if change != nil {
		change(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g, err := Open(context.Background(), cfg, Options{
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      now,
		Listener: ln,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { g.Close() })
	return g
}

// getAuth GETs path from the gateway's page as its admin, setting the box
// up first if nobody has.
func getAuth(tb testing.TB, g *Gateway, path string) (int, string) {
	tb.Helper()
	const email, password = "admin@example.com", "a test password"
	if !g.acc.SetupDone() {
		if _, err := g.acc.CreateFirstAdmin(email, password, []string{"example.com"}); err != nil {
			tb.Fatal(err)
		}
	}
	sess, err := g.acc.Login(email, password, "127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, g.URL()+path, nil)
	req.AddCookie(&http.Cookie{Name: "pg_session", Value: sess.ID})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoEndpointRevealsTodaysColours presses a distinctive number of each
// colour today and reads every endpoint and the debug log: today's split
// must appear nowhere, only the colour-blind total.
func TestNoEndpointRevealsTodaysColours(t *testing.T) {
	const green, red = 173, 281
	board := newBoard(t, "privacy-1")
	var logs syncBuffer
	g := openGateway(t, board, time.Now, &logs)
	for i := range green + red {
		c := drivers.Red
		if i%2 == 0 && i/2 < green {
			c = drivers.Green
		}
		board.Press(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := board.WaitAcked(ctx); err != nil {
		t.Fatalf("presses not acknowledged: %v", err)
	}

	var st struct {
		Today      string                       `json:"today"`
		TodayTotal uint64                       `json:"today_total"`
		ClosedDays []map[string]json.RawMessage `json:"closed_days"`
	}
	_, body := getAuth(t, g, "api/status")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.TodayTotal != green+red {
		t.Fatalf("today_total = %d, want %d", st.TodayTotal, green+red)
	}
	for _, d := range st.ClosedDays {
		if string(d["day"]) == `"`+st.Today+`"` {
			t.Fatalf("closed_days includes today: %s", body)
		}
	}

	// Metrics that count events, not presses, may hold any number.
	eventCounters := regexp.MustCompile(`(?m)^pulsegate_store_commits_total .*$`)
	colourWord := regexp.MustCompile(`(?i)\b(green|red|colou?r)\b`)
	for _, path := range []string{"", "api/status", "healthz", "metrics"} {
		code, body := getAuth(t, g, path)
		if code != http.StatusOK {
			t.Fatalf("GET /%s = %d", path, code)
		}
		body = eventCounters.ReplaceAllString(body, "")
		for _, n := range []string{"173", "281"} {
			if strings.Contains(body, n) {
				t.Errorf("GET /%s shows %s, today's count of one colour:\n%s", path, n, body)
			}
		}
		if path == "metrics" && colourWord.MatchString(body) {
			t.Errorf("/metrics names a colour:\n%s", body)
		}
	}
	if m := colourWord.FindString(logs.String()); m != "" {
		t.Errorf("the log mentions %q:\n%s", m, logs.String())
	}
}

func TestClockNotSetIsShownAndNothingIsAcknowledged(t *testing.T) {
	board := newBoard(t, "clock-1")
	now := func() time.Time { return time.Date(1970, 1, 1, 0, 3, 0, 0, time.UTC) }
	g := openGateway(t, board, now, io.Discard)
	board.Press(drivers.Green)
	waitFor(t, 10*time.Second, "the press to be refused", func() bool {
		st, _ := g.Status(context.Background())
		return st.Clock.Refused > 0
	})
	if st := board.Stats(); st.Acked != 0 || st.Pending != 1 {
		t.Fatalf("board = %+v, want the press still pending", st)
	}
	code, page := getAuth(t, g, "")
	if code != 200 || !strings.Contains(page, "The clock is not set") {
		t.Fatalf("GET / = %d, want it to say the clock is not set:\n%s", code, page)
	}
	if code, _ := getAuth(t, g, "healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("GET /healthz = %d with the clock unset, want 503", code)
	}
}

func TestCellsUnderFiveAreHidden(t *testing.T) {
	board := newBoard(t, "cells-1")
	// Yesterday: 3 green, 6 red. Today is read a day later.
	var day atomicTime
	day.set(time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC))
	g := openGateway(t, board, day.get, io.Discard)
	for i := range 9 {
		c := drivers.Red
		if i < 3 {
			c = drivers.Green
		}
		board.Press(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := board.WaitAcked(ctx); err != nil {
		t.Fatal(err)
	}
	day.set(time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC))
	_, body := getAuth(t, g, "api/status")
	if !strings.Contains(body, `"day": "2026-03-02",
      "green": "< 5",
      "red": 6,
      "total": 9`) {
		t.Fatalf("want yesterday as green < 5, red 6, total 9:\n%s", body)
	}
	_, page := getAuth(t, g, "")
	if !strings.Contains(page, "&lt; 5") {
		t.Fatalf("the page does not show '< 5':\n%s", page)
	}
}

type atomicTime struct {
	mu sync.Mutex
	t  time.Time
}

func (a *atomicTime) set(t time.Time) { a.mu.Lock(); a.t = t; a.mu.Unlock() }
func (a *atomicTime) get() time.Time  { a.mu.Lock(); defer a.mu.Unlock(); return a.t }
