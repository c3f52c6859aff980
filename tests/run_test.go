package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRunShowsCountsRisingFromSimulatedBoard is what a newcomer sees after
// `make run ARGS=--auto-approve-boards` on a machine with no board: a
// simulated board starts by itself, the page says so, and today's total
// rises.
func TestRunShowsCountsRisingFromSimulatedBoard(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	// Discovery finds no USB board here, so "auto" must start the simulator.
	p := startPulsegate(t, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--sim-rate", "40", "--no-abuse-limit", "--auto-approve-boards")

	var st struct {
		TodayTotal uint64 `json:"today_total"`
		Simulated  bool   `json:"simulated"`
		Boards     []struct {
			BoardID   string `json:"board_id"`
			Connected bool   `json:"connected"`
			Simulated bool   `json:"simulated"`
		} `json:"boards"`
	}
	var first uint64
	waitFor(t, 20*time.Second, "presses to be counted", func() bool {
		boxStatus(t, dataDir, &st)
		first = st.TodayTotal
		return first > 0
	})
	waitFor(t, 20*time.Second, "the count to rise", func() bool {
		boxStatus(t, dataDir, &st)
		return st.TodayTotal > first
	})
	if !st.Simulated || len(st.Boards) != 1 || !st.Boards[0].Simulated || !st.Boards[0].Connected || st.Boards[0].BoardID == "" {
		t.Fatalf("status = %+v, want one connected simulated board", st)
	}
	// A new box opens on its first-boot page (the browser tests go on from
	// there).
	code, page := getBody(t, p.url)
	if code != 200 || !strings.Contains(page, "Set up this box") {
		t.Fatalf("GET / = %d, want the first-boot page:\n%s", code, page)
	}
	if code, body := getBody(t, p.url+"healthz"); code != 200 {
		t.Fatalf("GET /healthz = %d %s", code, body)
	}
	_, metrics := getBody(t, p.url+"metrics")
	for _, want := range []string{"pulsegate_presses_total ", "pulsegate_presses_suppressed_total ", "pulsegate_frames_dropped_total ", "pulsegate_boards_connected 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
	if !strings.Contains(p.logs.String(), "simulated board") {
		t.Errorf("the log does not say a simulated board was started:\n%s", p.logs)
	}
	p.stop(t)
}

// TestRunDoesNotCountABoardNobodyApproved is plain `make run`: the
// simulated board's presses are acknowledged (the board holds nothing) but
// not counted until an admin approves the board.
func TestRunDoesNotCountABoardNobodyApproved(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startPulsegate(t, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--sim-rate", "40", "--no-abuse-limit")
	unapproved := regexp.MustCompile(`(?m)^pulsegate_presses_unapproved_total ([0-9]+)$`)
	waitFor(t, 20*time.Second, "presses to be acknowledged as unapproved", func() bool {
		_, metrics := getBody(t, p.url+"metrics")
		m := unapproved.FindStringSubmatch(metrics)
		return m != nil && m[1] != "0"
	})
	var st struct {
		TodayTotal uint64 `json:"today_total"`
		Boards     []struct {
			BoardID    string `json:"board_id"`
			Approved   bool   `json:"approved"`
			Unapproved uint64 `json:"unapproved"`
			Unacked    uint32 `json:"unacked"`
		} `json:"boards"`
	}
	boxStatus(t, dataDir, &st)
	if st.TodayTotal != 0 || len(st.Boards) != 1 || st.Boards[0].Approved || st.Boards[0].Unapproved == 0 {
		t.Fatalf("status = %+v, want nothing counted and one unapproved board with uncounted presses", st)
	}
	if !strings.Contains(p.logs.String(), "not approved") {
		t.Errorf("the log does not say the board's presses are not counted:\n%s", p.logs)
	}
	p.stop(t)
}

func TestRunRejectsBadConfigClearly(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "pulsegate.toml")
	os.WriteFile(cfg, []byte("listen = \"127.0.0.1:0\"\n[site]\ntime_zone = \"Mars/Olympus\"\nnmae = \"typo\"\n"), 0o600)
	out, err := exec.Command(pulsegateBin(t), "run", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("run with a bad config succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "unknown keys: site.nmae") {
		t.Fatalf("want the unknown key named, got:\n%s", out)
	}
	os.WriteFile(cfg, []byte("[site]\ntime_zone = \"Mars/Olympus\"\n"), 0o600)
	out, _ = exec.Command(pulsegateBin(t), "run", "--config", cfg, "--listen", "nope").CombinedOutput()
	for _, want := range []string{"site.time_zone \"Mars/Olympus\"", "listen \"nope\""} {
		if !strings.Contains(string(out), want) {
			t.Errorf("want %q in the error, got:\n%s", want, out)
		}
	}
}
