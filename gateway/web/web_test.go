package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/gateway/accounts"
)

// fakeBackend stands in for the gateway: the server renders what its
// Backend says and passes on what people do; the gateway's own tests and
// the browser tests drive the real one end to end.
type fakeBackend struct {
	st       Status
	site     SiteSettings
	paired   bool
	boards   []BoardRow
	changes  []string
	enrolled string
}

func (f *fakeBackend) Status(context.Context) (Status, error) { return f.st, nil }
func (f *fakeBackend) Site() SiteSettings                     { return f.site }
func (f *fakeBackend) SetSite(_ context.Context, s SiteSettings) error {
	if s.Name == "" {
		return errors.New("site.name must be set")
	}
	f.site = s
	return nil
}
func (f *fakeBackend) Paired() bool { return f.paired }
func (f *fakeBackend) InitCluster(_ context.Context, customer string) error {
	f.paired = true
	return nil
}
func (f *fakeBackend) JoinCluster(_ context.Context, token string) error {
	if token != "good" {
		return errors.New("join token unknown")
	}
	f.paired = true
	return nil
}
func (f *fakeBackend) CreateJoinToken(context.Context) (string, time.Time, error) {
	return "pgj1.join-token-text", time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC), nil
}
func (f *fakeBackend) EnrolIndex(_ context.Context, token string) (string, error) {
	if token != "pgi1.ok" {
		return "", errors.New("token: not a Pulsegate enrolment token")
	}
	f.enrolled = token
	return "acme", nil
}
func (f *fakeBackend) Boards() ([]BoardRow, error) { return f.boards, nil }
func (f *fakeBackend) SetBoard(id string, c BoardChange) error {
	if id != "hall-1" {
		return errors.New("unknown board")
	}
	if c.Approve != nil {
		f.changes = append(f.changes, "approve")
		f.boards[0].Approved = *c.Approve
	}
	return nil
}
func (f *fakeBackend) Trend(int) ([]TrendPoint, error) {
	return []TrendPoint{{"2026-W08", 30, 10}, {"2026-W09", 2, 1}}, nil
}
func (f *fakeBackend) ExportLocal(_ context.Context, create func(string) (io.Writer, error)) error {
	w, err := create("office/export.json")
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, `{"closed_days":[]}`)
	return err
}
func (f *fakeBackend) EraseLocal(context.Context) error { return nil }
func (f *fakeBackend) TLSFingerprint() string           { return "AB:CD" }
func (f *fakeBackend) Egress() Egress {
	return Egress{Active: true, State: "enforce",
		Flows:   []Flow{{Dest: "10.0.0.2", Name: "paired office", Bytes: 12345, Packets: 20}},
		Denied:  []Denial{{Dest: "203.0.113.9:443", Proto: "tcp", Count: 3}},
		Allowed: []Allowed{{Dest: "10.0.0.2:7400", Name: "paired office"}}}
}

type fakeMetrics struct{}

func (fakeMetrics) WritePrometheus(w io.Writer) { io.WriteString(w, "pulsegate_up 1\n") }

// testUI is a server over a fake backend and real accounts.
type testUI struct {
	s   *Server
	b   *fakeBackend
	acc *accounts.DB
	h   http.Handler
}

var fastArgon = accounts.ArgonParams{Time: 1, MemoryKiB: 64, Threads: 1, KeyLen: 32}

func newUI(tb testing.TB, setup bool) *testUI {
	tb.Helper()
	acc, err := accounts.Open(filepath.Join(tb.TempDir(), "accounts.db"), accounts.Options{Argon: fastArgon})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { acc.Close() })
	b := &fakeBackend{st: busyStatus(), site: SiteSettings{Name: "Berlin", Region: "eu-central", TimeZone: "Europe/Berlin"},
		boards: []BoardRow{{ID: "hall-1", Connected: true}}}
	s, err := New(Config{Backend: b, Accounts: acc, Metrics: fakeMetrics{}, MetricsToken: "metrics-token-0123456789"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	ui := &testUI{s: s, b: b, acc: acc, h: s.Handler()}
	if setup {
		if _, err := acc.CreateFirstAdmin("admin@example.com", "correct horse battery", []string{"example.com"}); err != nil {
			tb.Fatal(err)
		}
		tok, err := acc.Invite("admin@example.com", "viewer@example.com", accounts.RoleViewer, time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := acc.AcceptInvite(tok, "viewer password 1"); err != nil {
			tb.Fatal(err)
		}
	}
	return ui
}

func (ui *testUI) session(tb testing.TB, email, password string) string {
	tb.Helper()
	sess, err := ui.acc.Login(email, password, "127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	return sess.ID
}

// req runs one request; form is a POST body, cookie a session id.
func (ui *testUI) req(method, target string, form url.Values, cookie string, hdr ...string) *httptest.ResponseRecorder {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "RemoteAddr" {
			r.RemoteAddr = hdr[i+1]
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	ui.h.ServeHTTP(w, r)
	return w
}

// concrete fills a route pattern's wildcards.
func concrete(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.ReplaceAll(path, "{$}", "")
	path = regexp.MustCompile(`\{[a-z]+\}`).ReplaceAllString(path, "x")
	if strings.HasSuffix(path, "/static/") {
		path += "app.css"
	}
	return method, path
}

// TestRouteTable walks every registered route: only login, first boot,
// static assets, /healthz and loopback /metrics answer without a session;
// admin routes refuse viewers; every state-changing route refuses a
// cross-origin request.
func TestRouteTable(t *testing.T) {
	ui := newUI(t, true)
	viewerID := ui.session(t, "viewer@example.com", "viewer password 1")
	adminID := ui.session(t, "admin@example.com", "correct horse battery")
	open := map[access]bool{public: true, setup: true}
	seen := map[access]int{}
	for _, rt := range ui.s.routes() {
		seen[rt.access]++
		method, path := concrete(rt.pattern)
		t.Run(rt.pattern, func(t *testing.T) {
			w := ui.req(method, path, url.Values{}, "", "RemoteAddr", "192.0.2.10:5555")
			switch {
			case rt.access == scraper:
				if w.Code != http.StatusUnauthorized {
					t.Errorf("from the LAN without a token: %d, want 401", w.Code)
				}
				if w := ui.req(method, path, nil, "", "RemoteAddr", "127.0.0.1:5555"); w.Code != http.StatusOK {
					t.Errorf("from loopback: %d, want 200", w.Code)
				}
			case open[rt.access]:
				if strings.Contains(w.Body.String(), "sign in first") || (w.Code == http.StatusSeeOther && strings.HasPrefix(w.Header().Get("Location"), "/login?")) {
					t.Errorf("an open route asked for a session: %d %s", w.Code, w.Header().Get("Location"))
				}
			default:
				loc := w.Header().Get("Location")
				if !(w.Code == http.StatusUnauthorized || w.Code == http.StatusSeeOther && strings.HasPrefix(loc, "/login")) {
					t.Errorf("without a session: %d %q, want 401 or a redirect to /login", w.Code, loc)
				}
			}
			if rt.access == admin {
				if w := ui.req(method, path, url.Values{}, viewerID); w.Code != http.StatusForbidden {
					t.Errorf("as a viewer: %d, want 403", w.Code)
				}
			}
			if method == http.MethodPost {
				w := ui.req(method, path, url.Values{}, adminID, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
				if w.Code != http.StatusForbidden {
					t.Errorf("cross-origin POST: %d, want 403", w.Code)
				}
			}
		})
	}
	for _, a := range []access{public, setup, viewer, admin, scraper} {
		if seen[a] == 0 {
			t.Errorf("no route with access %s: the table changed shape", a)
		}
	}
}

func TestFirstBootCreatesAdminAndSignsIn(t *testing.T) {
	ui := newUI(t, false)
	if w := ui.req("GET", "/", nil, ""); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/setup" {
		t.Fatalf("GET / before setup: %d %q, want a redirect to /setup", w.Code, w.Header().Get("Location"))
	}
	if w := ui.req("GET", "/setup", nil, ""); w.Code != 200 || !strings.Contains(w.Body.String(), "Set up this box") {
		t.Fatalf("GET /setup: %d", w.Code)
	}
	form := url.Values{"email": {"it@gmail.com"}, "password": {"a long enough pass"}, "password2": {"a long enough pass"},
		"domains": {"example.com"}, "site": {"Lisbon"}, "region": {"eu-west"}, "tz": {"Europe/Lisbon"}}
	w := ui.req("POST", "/setup", form, "")
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "free-mail") {
		t.Fatalf("setup with a gmail address: %d, want 400 saying free-mail:\n%s", w.Code, w.Body)
	}
	form.Set("email", "it@other.org")
	if w := ui.req("POST", "/setup", form, ""); w.Code != http.StatusBadRequest {
		t.Fatalf("setup with an address outside the domains: %d, want 400", w.Code)
	}
	form.Set("email", "it@example.com")
	form.Set("password2", "something else entirely")
	if w := ui.req("POST", "/setup", form, ""); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "not the same") {
		t.Fatalf("setup with mismatched passwords: %d", w.Code)
	}
	form.Set("password2", "a long enough pass")
	w = ui.req("POST", "/setup", form, "")
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/pair") {
		t.Fatalf("setup: %d %q, want a redirect to /pair", w.Code, w.Header().Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("session cookie = %+v", cookie)
	}
	if ui.b.site.Name != "Lisbon" || ui.b.site.TimeZone != "Europe/Lisbon" {
		t.Fatalf("site = %+v", ui.b.site)
	}
	if w := ui.req("GET", "/setup", nil, ""); w.Code != http.StatusSeeOther {
		t.Fatalf("setup a second time: %d, want a redirect", w.Code)
	}
	// Start the organisation from the browser.
	if w := ui.req("POST", "/pair/init", url.Values{"customer": {"acme"}}, cookie.Value); w.Code != http.StatusSeeOther || !ui.b.paired {
		t.Fatalf("pair/init: %d paired=%v", w.Code, ui.b.paired)
	}
}

func TestLoginLockoutAndLogout(t *testing.T) {
	ui := newUI(t, true)
	for i := range 5 {
		w := ui.req("POST", "/login", url.Values{"email": {"admin@example.com"}, "password": {"wrong password!"}}, "", "RemoteAddr", "192.0.2.7:1000")
		if i < 4 && w.Code != http.StatusUnauthorized {
			t.Fatalf("failed login %d: %d, want 401", i, w.Code)
		}
	}
	w := ui.req("POST", "/login", url.Values{"email": {"admin@example.com"}, "password": {"correct horse battery"}}, "", "RemoteAddr", "192.0.2.7:1000")
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "Too many failed sign-ins") {
		t.Fatalf("right password while locked out: %d, want 429", w.Code)
	}
	entries, _ := ui.acc.AuditLog(0)
	var failed int
	for _, e := range entries {
		if e.Action == "login-failed" {
			failed++
		}
		if strings.Contains(e.Detail, "wrong password!") || strings.Contains(e.Detail, "correct horse") {
			t.Fatalf("a password reached the audit log: %+v", e)
		}
	}
	if failed == 0 {
		t.Fatal("failed logins are not in the audit log")
	}

	ui2 := newUI(t, true)
	w = ui2.req("POST", "/login", url.Values{"email": {"viewer@example.com"}, "password": {"viewer password 1"}, "next": {"//evil.example/x"}}, "")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("login with an off-site next: %d %q, want a redirect to /", w.Code, w.Header().Get("Location"))
	}
	cookie := w.Result().Cookies()[0].Value
	if w := ui2.req("GET", "/", nil, cookie); w.Code != 200 {
		t.Fatalf("dashboard after login: %d", w.Code)
	}
	if w := ui2.req("POST", "/logout", url.Values{}, cookie); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	if w := ui2.req("GET", "/", nil, cookie); w.Code != http.StatusSeeOther {
		t.Fatalf("dashboard after logout: %d, want a redirect to /login", w.Code)
	}
}

func TestStaticAssets(t *testing.T) {
	ui := newUI(t, false)
	w := ui.req("GET", "/static/app.css", nil, "")
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/css") || !strings.Contains(w.Body.String(), "--green") {
		t.Fatalf("GET /static/app.css: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if w := ui.req("GET", "/static/nope.css", nil, ""); w.Code != http.StatusNotFound {
		t.Fatalf("GET /static/nope.css: %d", w.Code)
	}
	if w := ui.req("GET", "/static/../templates/layout.html", nil, ""); w.Code == 200 {
		t.Fatal("a template was served as a static file")
	}
}

func TestMetricsNeedTheTokenFromOutside(t *testing.T) {
	ui := newUI(t, true)
	if w := ui.req("GET", "/metrics", nil, "", "RemoteAddr", "192.0.2.9:9", "Authorization", "Bearer wrong"); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", w.Code)
	}
	if w := ui.req("GET", "/metrics", nil, "", "RemoteAddr", "192.0.2.9:9", "Authorization", "Bearer metrics-token-0123456789"); w.Code != 200 || !strings.Contains(w.Body.String(), "pulsegate_up") {
		t.Fatalf("right token: %d", w.Code)
	}
}

func TestBoardApprovalAndEnrolmentFromTheBrowser(t *testing.T) {
	ui := newUI(t, true)
	ui.b.paired = true
	admin := ui.session(t, "admin@example.com", "correct horse battery")
	w := ui.req("GET", "/boards", nil, admin)
	if w.Code != 200 || !strings.Contains(w.Body.String(), "not approved") {
		t.Fatalf("boards page: %d", w.Code)
	}
	w = ui.req("POST", "/boards/hall-1", url.Values{"action": {"approve"}}, admin)
	if w.Code != http.StatusSeeOther || !ui.b.boards[0].Approved {
		t.Fatalf("approve: %d approved=%v", w.Code, ui.b.boards[0].Approved)
	}
	if w := ui.req("POST", "/boards/nope", url.Values{"action": {"approve"}}, admin); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "unknown board") {
		t.Fatalf("approve an unknown board: %d", w.Code)
	}
	if w := ui.req("POST", "/index/enrol", url.Values{"token": {"junk"}}, admin); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "Enrolment failed") {
		t.Fatalf("enrol with junk: %d", w.Code)
	}
	if w := ui.req("POST", "/index/enrol", url.Values{"token": {"pgi1.ok"}}, admin); w.Code != http.StatusSeeOther || ui.b.enrolled != "pgi1.ok" {
		t.Fatalf("enrol: %d", w.Code)
	}
	w = ui.req("POST", "/offices/token", url.Values{}, admin)
	if w.Code != 200 || !strings.Contains(w.Body.String(), "pgj1.join-token-text") || !strings.Contains(w.Body.String(), "<svg") {
		t.Fatalf("join token page: %d, want the token and its QR code", w.Code)
	}
	entries, _ := ui.acc.AuditLog(0)
	actions := map[string]bool{}
	for _, e := range entries {
		actions[e.Action] = true
	}
	for _, a := range []string{"board-approved", "index-enrol", "office-token"} {
		if !actions[a] {
			t.Errorf("audit log lacks %q: %v", a, actions)
		}
	}
}

func TestPagesLoadNothingFromAnywhere(t *testing.T) {
	ui := newUI(t, true)
	ui.b.paired = true
	admin := ui.session(t, "admin@example.com", "correct horse battery")
	for _, hostile := range []bool{false, true} {
		bad := []string{"<script", "http://", "https://", "style="}
		if hostile {
			// Markup and URLs in every string: they must arrive as text.
			ui.b.st = hostileStatus()
			bad = []string{"<script", "<img", "<a href=//evil", "style="}
		}
		for _, path := range []string{"/", "/boards", "/offices", "/index", "/users", "/audit", "/rights", "/settings", "/account", "/pair", "/egress"} {
			w := ui.req("GET", path, nil, admin)
			if w.Code != 200 {
				t.Errorf("GET %s: %d", path, w.Code)
				continue
			}
			page := w.Body.String()
			for _, bad := range bad {
				if strings.Contains(page, bad) {
					t.Errorf("GET %s contains %q", path, bad)
				}
			}
			csp := w.Header().Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("GET %s: CSP %q", path, csp)
			}
		}
	}
}

func TestDashboardShowsTodayColourBlind(t *testing.T) {
	ui := newUI(t, true)
	viewer := ui.session(t, "viewer@example.com", "viewer password 1")
	page := ui.req("GET", "/", nil, viewer).Body.String()
	for _, want := range []string{"1234", "&lt; 5", "Weekly green share", "75 % green of 40 presses", "fewer than 5 presses"} {
		if !strings.Contains(page, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
}

func TestEgressPage(t *testing.T) {
	ui := newUI(t, true)
	viewer := ui.session(t, "viewer@example.com", "viewer password 1")
	page := ui.req("GET", "/egress", nil, viewer).Body.String()
	for _, want := range []string{"What left this box", "10.0.0.2", "12345", "203.0.113.9:443", "paired office", "guard is on"} {
		if !strings.Contains(page, want) {
			t.Errorf("/egress lacks %q", want)
		}
	}
	if w := ui.req("GET", "/api/egress", nil, viewer); w.Code != 200 || !strings.Contains(w.Body.String(), `"denied"`) {
		t.Fatalf("/api/egress: %d %s", w.Code, w.Body)
	}
}

func TestSocketEnrol(t *testing.T) {
	ui := newUI(t, true)
	h := ui.s.SocketHandler()
	r := httptest.NewRequest("POST", "/api/index/enrol", strings.NewReader(`{"token":"pgi1.ok"}`))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"acme"`) {
		t.Fatalf("enrol over the socket: %d %s", w.Code, w.Body)
	}
	for _, body := range []string{``, `{}`, `not json`} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", "/api/index/enrol", strings.NewReader(body)))
		if w.Code != http.StatusBadRequest {
			t.Errorf("enrol with %q: %d, want 400", body, w.Code)
		}
	}
}

// busyStatus exercises every branch of the page: clock unset, simulated
// board, problems, closed days on both sides of MinShown, boards.
func busyStatus() Status {
	return Status{
		Site:       "Berlin office",
		TimeZone:   "Europe/Berlin",
		Today:      "2026-03-03",
		TodayTotal: 1234,
		ClosedDays: []ClosedDay{
			{Day: "2026-03-01", Green: 3, Red: 17, Total: 20},
			{Day: "2026-03-02", Green: 5, Red: 4, Total: 9},
		},
		Boards: []Board{
			{Path: "/dev/ttyACM0", BoardID: "hall-1", Firmware: "1.2.0", Connected: true, LastHeartbeat: time.Date(2026, 3, 3, 9, 15, 0, 0, time.UTC), Unacked: 2},
			{Path: "/dev/ttyACM1", Simulated: true, LastError: "open /dev/ttyACM1: no such device"},
		},
		Simulated: true,
		Clock:     Clock{Set: false, Now: "1970-01-01 00:03 UTC", NotBefore: "2025-01-01", Refused: 7},
		Healthy:   false,
		Problems:  []string{"The clock is not set: presses are held on the boards until it is."},
	}
}

// hostileStatus puts markup and URLs into every string the page shows.
func hostileStatus() Status {
	const evil = `"><script src="https://evil.example/x.js"></script><a href=//evil.example>x</a><img src=x onerror=alert(1)>`
	st := busyStatus()
	st.Site, st.TimeZone, st.Today = evil, evil, evil
	st.ClosedDays[0].Day = evil
	st.Boards[0] = Board{Path: evil, BoardID: evil, Firmware: evil, LastError: "javascript:alert(1) " + evil}
	st.Clock.Now, st.Clock.NotBefore = evil, evil
	st.Problems = []string{evil}
	return st
}

func TestCell(t *testing.T) {
	tests := []struct {
		c        Cell
		str      string
		jsonText string
	}{
		{0, "< 5", `"< 5"`},
		{1, "< 5", `"< 5"`},
		{4, "< 5", `"< 5"`},
		{5, "5", "5"},
		{6, "6", "6"},
		{12345, "12345", "12345"},
		{Cell(^uint64(0)), "18446744073709551615", "18446744073709551615"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(uint64(tt.c)), func(t *testing.T) {
			if got := tt.c.String(); got != tt.str {
				t.Errorf("Cell(%d).String() = %q, want %q", uint64(tt.c), got, tt.str)
			}
			got, err := tt.c.MarshalJSON()
			if err != nil || string(got) != tt.jsonText {
				t.Errorf("Cell(%d).MarshalJSON() = %s, %v; want %s", uint64(tt.c), got, err, tt.jsonText)
			}
		})
	}
}

// FuzzUIRequests sends arbitrary requests, signed in or not, to the UI:
// nothing panics, nothing answers 500.
func FuzzUIRequests(f *testing.F) {
	f.Add("POST", "/setup", "email=a%40example.com&password=x&password2=x&domains=example.com", false)
	f.Add("POST", "/login", "email=admin%40example.com&password=%00%ff", false)
	f.Add("POST", "/boards/hall-1", "action=name&name=%3Cscript%3E", true)
	f.Add("POST", "/users/viewer%40example.com", "action=disable", true)
	f.Add("POST", "/users/invite", "email=x%40gmail.com&role=admin", true)
	f.Add("POST", "/settings", "site=&region=a+b&tz=Mars%2FBase&domains=gmail.com", true)
	f.Add("POST", "/rights/erase", "confirm=Berlin", true)
	f.Add("GET", "/login?next=%2F%2Fevil.example", "", false)
	f.Add("GET", "/invite/zzz", "", false)
	ui := newUI(f, true)
	ui.b.paired = true
	admin := ui.session(f, "admin@example.com", "correct horse battery")
	f.Fuzz(func(t *testing.T, method, target, body string, signedIn bool) {
		if method != "GET" && method != "POST" {
			return
		}
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") {
			return
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return
		}
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if signedIn {
			r.AddCookie(&http.Cookie{Name: sessionCookie, Value: admin})
		}
		w := httptest.NewRecorder()
		ui.h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, target, body, w.Code, w.Body)
		}
	})
}
