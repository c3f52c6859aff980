package tests

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromium returns the browser the UI tests drive: Debian's chromium, which
// .ci/run installs. Without it the tests skip, unless the run requires every
// test (PULSEGATE_REQUIRE_PRIVILEGED=1, as in CI), where they fail.
func chromium(tb testing.TB) string {
	tb.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("PULSEGATE_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("no chromium: the browser tests need Debian's chromium package (apt-get install chromium)")
	}
	tb.Skip("no chromium: install Debian's chromium package to run the browser tests")
	return ""
}

// browser is a headless Chromium whose every request is recorded, so a test
// can prove the pages load nothing from anywhere but the box.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	urls []string
	dir  string // screenshots
}

func newBrowser(tb testing.TB) *browser {
	tb.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(tb)),
		chromedp.WindowSize(1200, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("ignore-certificate-errors", true), // the box's own certificate
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox as root
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancel()
		cancelA()
	})
	b := &browser{ctx: ctx, dir: artifactDir(tb)}
	if err := chromedp.Do(ctx); err != nil { // start it, so Listen sees everything
		tb.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			b.mu.Lock()
			b.urls = append(b.urls, e.Request.URL)
			b.mu.Unlock()
		}
	}); err != nil {
		tb.Fatal(err)
	}
	return b
}

// artifactDir is where screenshots go: $PULSEGATE_ARTIFACTS, else
// tests/artifacts (ignored by git), one folder per test.
func artifactDir(tb testing.TB) string {
	dir := os.Getenv("PULSEGATE_ARTIFACTS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "artifacts")
	}
	dir = filepath.Join(dir, tb.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// do runs steps with a time limit, failing the test with what the page
// said when they do not work.
func (b *browser) do(tb testing.TB, what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		body, _ := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("body")))
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		tb.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, body)
	}
}

func text[S chromedp.Selectable](tb testing.TB, b *browser, sel S) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		tb.Fatalf("read %v: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (b *browser) location(tb testing.TB) string {
	tb.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

// shot saves a full-page screenshot as an artifact.
func (b *browser) shot(tb testing.TB, name string) {
	tb.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// foreignRequests returns every request to a host that is not one of hosts.
func (b *browser) foreignRequests(hosts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, u := range b.urls {
		p, err := url.Parse(u)
		if err != nil || p.Scheme == "data" || p.Scheme == "about" {
			continue
		}
		ok := false
		for _, h := range hosts {
			ok = ok || p.Host == h
		}
		if !ok {
			out = append(out, u)
		}
	}
	return out
}

// startBox runs `pulsegate run` with a simulated board and its own ports.
func startBox(tb testing.TB, extra ...string) (*proc, string) {
	tb.Helper()
	dataDir := filepath.Join(tb.TempDir(), "data")
	args := append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0",
		"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", freePort(tb)), "--gossip-listen", fmt.Sprintf("127.0.0.1:%d", freePort(tb)),
		"--sim", "on", "--sim-rate", "5", "--no-abuse-limit", "--timezone", "UTC"}, extra...)
	return startPulsegate(tb, args...), dataDir
}

// setUp fills in the first-boot page.
func (b *browser) setUp(tb testing.TB, base, email, site, region string) {
	tb.Helper()
	b.do(tb, "open the first-boot page",
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.ID("password2")),
	)
	b.shot(tb, site+"-1-first-boot")
	b.do(tb, "fill in first boot",
		chromedp.SendKeys(chromedp.ID("email"), email),
		chromedp.SendKeys(chromedp.ID("password"), "a long test password"),
		chromedp.SendKeys(chromedp.ID("password2"), "a long test password"),
		chromedp.SendKeys(chromedp.ID("domains"), "example.com"),
		chromedp.SetValue(chromedp.ID("site"), site),
		chromedp.SetValue(chromedp.ID("region"), region),
		chromedp.SetValue(chromedp.ID("tz"), "Europe/Berlin"),
		chromedp.Click(chromedp.CSS("button.primary")),
		chromedp.WaitVisible(chromedp.ID("customer")),
	)
	b.shot(tb, site+"-2-pair")
}

// TestBrowserFirstBootToCountingAndJoiningAnotherOffice drives the UI in
// Chromium: a new box is set up, starts an organisation, approves its
// simulated board and sees the count rise; a second box is set up and joins
// with the token and QR code the first one shows. Every request the browser
// makes goes to one of the two boxes.
func TestBrowserFirstBootToCountingAndJoiningAnotherOffice(t *testing.T) {
	b := newBrowser(t)
	boxA, dirA := startBox(t)
	baseA := strings.TrimSuffix(boxA.url, "/")

	// Before approval the board's presses are acknowledged, not counted.
	b.setUp(t, baseA, "it@example.com", "Lisbon", "eu-west")
	b.do(t, "start the organisation",
		chromedp.SendKeys(chromedp.ID("customer"), "acme"),
		chromedp.Click(chromedp.CSS("button.primary")),
		chromedp.WaitVisible(chromedp.CSS(`button[value="approve"]`)),
	)
	b.shot(t, "Lisbon-3-boards-unapproved")
	var st struct {
		TodayTotal uint64 `json:"today_total"`
		Cluster    *struct {
			Offices []struct {
				Name string `json:"name"`
			} `json:"offices"`
		} `json:"cluster"`
	}
	boxStatus(t, dirA, &st)
	if st.TodayTotal != 0 {
		t.Fatalf("%d presses counted before the board was approved", st.TodayTotal)
	}
	b.do(t, "approve the simulated board",
		chromedp.Click(chromedp.CSS(`button[value="approve"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value="unapprove"]`)),
	)
	b.shot(t, "Lisbon-4-boards-approved")

	// The dashboard's count rises.
	count := func() uint64 {
		b.do(t, "open the dashboard", chromedp.Navigate(baseA+"/"), chromedp.WaitVisible(chromedp.ID("today-total")))
		n, err := strconv.ParseUint(text(t, b, chromedp.ID("today-total")), 10, 64)
		if err != nil {
			t.Fatalf("today's total on the page: %v", err)
		}
		return n
	}
	var first uint64
	waitFor(t, 20*time.Second, "the dashboard to show counted presses", func() bool { first = count(); return first > 0 })
	waitFor(t, 20*time.Second, "the dashboard's count to rise", func() bool { return count() > first })
	b.shot(t, "Lisbon-5-dashboard")

	// Add an office: a join token as text and as a QR code.
	b.do(t, "create a join token",
		chromedp.Navigate(baseA+"/offices"),
		chromedp.Click(chromedp.CSS("button.primary")),
		chromedp.WaitVisible(chromedp.ID("join-token")),
		chromedp.WaitVisible(chromedp.CSS(".qr svg")),
	)
	b.shot(t, "Lisbon-6-join-token")
	token := text(t, b, chromedp.ID("join-token"))

	// The second box, opened as "localhost" so that the two boxes' cookies
	// stay apart (cookies ignore ports).
	boxB, dirB := startBox(t)
	baseB := strings.Replace(strings.TrimSuffix(boxB.url, "/"), "127.0.0.1", "localhost", 1)
	b.setUp(t, baseB, "it@example.com", "Berlin", "eu-central")
	b.do(t, "join with the token",
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`form[action="/pair/join"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value="approve"]`)),
	)
	if loc := b.location(t); !strings.Contains(loc, "/boards") {
		t.Fatalf("after joining the page is %s, want the boards page", loc)
	}
	waitFor(t, 30*time.Second, "both offices in the second box's replica", func() bool {
		boxStatus(t, dirB, &st)
		return st.Cluster != nil && len(st.Cluster.Offices) == 2
	})
	b.do(t, "open the offices page", chromedp.Navigate(baseB+"/offices"), chromedp.WaitVisible(chromedp.CSS("table")))
	b.shot(t, "Berlin-3-offices")
	page := text(t, b, chromedp.CSS("main"))
	for _, want := range []string{"Lisbon", "Berlin", "voter"} {
		if !strings.Contains(page, want) {
			t.Errorf("the offices page lacks %q:\n%s", want, page)
		}
	}
	for _, path := range []string{"/index", "/users", "/audit", "/rights", "/settings", "/account"} {
		b.do(t, "open "+path, chromedp.Navigate(baseB+path), chromedp.WaitVisible(chromedp.CSS("h1")))
		b.shot(t, "Berlin-page"+strings.ReplaceAll(path, "/", "-"))
	}

	// On a phone: the dashboard and the boards page at 390 px.
	b.do(t, "phone-sized dashboard", chromedp.EmulateViewport(390, 844), chromedp.Navigate(baseB+"/"), chromedp.WaitVisible(chromedp.ID("today-total")))
	b.shot(t, "Berlin-phone-dashboard")
	b.do(t, "phone-sized boards", chromedp.Navigate(baseB+"/boards"), chromedp.WaitVisible(chromedp.CSS("h1")))
	b.shot(t, "Berlin-phone-boards")
	wide, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
	if err != nil {
		t.Fatal(err)
	}
	if wide {
		t.Error("the boards page scrolls sideways on a 390 px phone")
	}
	b.do(t, "back to desktop", chromedp.EmulateReset())

	hostA, hostB := strings.TrimPrefix(baseA, "http://"), strings.TrimPrefix(baseB, "http://")
	if foreign := b.foreignRequests(hostA, hostB); len(foreign) > 0 {
		t.Fatalf("the browser contacted hosts other than the boxes: %q", foreign)
	}
	b.mu.Lock()
	n := len(b.urls)
	b.mu.Unlock()
	if n < 10 {
		t.Fatalf("only %d requests recorded: the network log is not being read", n)
	}
}
