package tests

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback port nobody listens on right now.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func runCLI(tb testing.TB, args ...string) string {
	tb.Helper()
	cmd := exec.Command(pulsegateBin(tb), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		tb.Fatalf("pulsegate %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestDemoClusterReleasesAClosedMonthToTheIndexAndHQPullsIt runs the whole
// path with real processes: a central index, the three-office demo cluster
// (each office with a simulated board) enrolled with it, the month closing
// (the offices' clocks start a minute before the end of March 2026), the
// leader releasing and uploading, and HQ pulling every region with the CLI.
// Each demo region has one office, so every cell is withheld: the index says
// why and shows no figure.
func TestDemoClusterReleasesAClosedMonthToTheIndexAndHQPullsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four processes and waits for a month to close (about a minute)")
	}
	// Most of the minute is spent waiting for the month to close: let the
	// other end-to-end tests run meanwhile. Its ports are its own.
	t.Parallel()
	bin := pulsegateBin(t)
	dir := t.TempDir()
	indexDir := filepath.Join(dir, "index")
	port := freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	ix, _ := startAndWaitFor(t, exec.Command(bin, "index", "--data-dir", indexDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port)),
		regexp.MustCompile(`Pulsegate index is running at (\S+)`), 30*time.Second)
	token := runCLI(t, "index", "token", "create", "--customer", "demo", "--data-dir", indexDir, "--public-url", url)
	hqKey := runCLI(t, "index", "hq-key", "create", "--customer", "demo", "--data-dir", indexDir, "--public-url", url)

	// A minute before the end of March, in UTC, on every office's clock.
	offset := time.Until(time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC)).Round(time.Second)
	basePort := freePort(t)
	demo := exec.Command(bin, "demo", "--dir", filepath.Join(dir, "demo"), "--base-port", fmt.Sprint(basePort))
	demo.Env = append(os.Environ(), "TZ=UTC", fmt.Sprintf("PULSEGATE_TEST_CLOCK_OFFSET=%s", offset))
	// The demo's offices are its children: kill them with it, whatever happens.
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if demo.Process != nil {
			syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
		}
	})
	dp, _ := startAndWaitFor(t, demo, regexp.MustCompile(`offices of customer "demo" are running`), 2*time.Minute)
	office := fmt.Sprintf("http://127.0.0.1:%d", basePort)
	officeDir := filepath.Join(dir, "demo", "lisbon")

	if out := runCLI(t, "enrol", "--data-dir", officeDir, token); !strings.Contains(out, `customer "demo"`) {
		t.Fatalf("enrol said %q", out)
	}

	type status struct {
		Index *struct {
			Enrolled  bool   `json:"enrolled"`
			Released  int    `json:"released"`
			Pending   int    `json:"pending"`
			LastError string `json:"last_error"`
			Ledger    []struct {
				Year     int    `json:"year"`
				Releases int    `json:"releases"`
				Epsilon  string `json:"epsilon"`
			} `json:"ledger"`
		} `json:"index"`
	}
	var st status
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st = status{}
		boxStatus(t, officeDir, &st)
		if st.Index != nil && st.Index.Enrolled && st.Index.Released == 3 && st.Index.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("March was not released and uploaded for all 3 offices within 3 minutes: %+v\ndemo:\n%s\nindex:\n%s",
				st.Index, tailLines(dp.logs.String(), 30), tailLines(ix.logs.String(), 20))
		}
		time.Sleep(time.Second)
	}
	if len(st.Index.Ledger) != 3 {
		t.Fatalf("ledger = %+v, want one row per office", st.Index.Ledger)
	}
	for _, l := range st.Index.Ledger {
		if l.Year != 2026 || l.Releases != 1 || l.Epsilon != "1" {
			t.Fatalf("ledger row %+v, want 2026: 1 release, ε 1", l)
		}
	}

	// The ledger is on /metrics too: releases and ε, never counts.
	_, metrics := getBody(t, office+"/metrics")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^pulsegate_privacy_releases\{site="[0-9a-f]{16}",year="2026"\} 1$`),
		regexp.MustCompile(`(?m)^pulsegate_privacy_epsilon_spent\{site="[0-9a-f]{16}",year="2026"\} 1$`),
		regexp.MustCompile(`(?m)^pulsegate_releases 3$`),
		regexp.MustCompile(`(?m)^pulsegate_releases_pending_upload 0$`),
		regexp.MustCompile(`(?m)^pulsegate_index_enrolled 1$`),
	} {
		if len(want.FindAllString(metrics, -1)) == 0 {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	for _, region := range []string{"eu-west", "eu-central", "eu-east"} {
		out := runCLI(t, "index", "pull", "--key", hqKey, "--region", region, "--from", "2026-03", "--to", "2026-03", "--format", "json")
		var got struct {
			Region string `json:"region"`
			Cells  []struct {
				Period    string `json:"period"`
				Published bool   `json:"published"`
				Reason    string `json:"reason"`
				Green     *int64 `json:"green"`
			} `json:"cells"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("pull %s: %v\n%s", region, err, out)
		}
		if got.Region != region || len(got.Cells) != 1 || got.Cells[0].Period != "2026-03" ||
			got.Cells[0].Published || got.Cells[0].Reason != "too_few_sites" || got.Cells[0].Green != nil {
			t.Fatalf("pull %s = %s, want March withheld for too few sites, with no figures", region, out)
		}
		csv := runCLI(t, "index", "pull", "--key", hqKey, "--region", region, "--from", "2026-03", "--to", "2026-03", "--format", "csv")
		if lines := strings.Split(csv, "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], region+",2026-03,false,") {
			t.Fatalf("CSV pull %s = %q", region, csv)
		}
	}

	// The index's audit trail for the customer names the enrolment, the
	// uploads and HQ's pulls.
	req, _ := http.NewRequest(http.MethodGet, url+"/api/v1/audit", nil)
	req.Header.Set("Authorization", "Bearer "+hqKey)
	// The test does not pin: index.Pull, which pins, was exercised above.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, action := range []string{`"enrol"`, `"upload"`, `"pull"`} {
		if !strings.Contains(string(body), action) {
			t.Errorf("audit trail lacks %s: %s", action, body)
		}
	}
	dp.stop(t)
	ix.stop(t)
}
