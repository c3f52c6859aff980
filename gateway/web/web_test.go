package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeSource returns a fixed Status. A fake is enough here: the server is a
// pure renderer of whatever its Source says, and the gateway's own tests
// drive the real Source end to end.
type fakeSource struct {
	st  Status
	err error
}

func (f fakeSource) Status(context.Context) (Status, error) { return f.st, f.err }

type fakeMetrics struct{}

func (fakeMetrics) WritePrometheus(w io.Writer) { io.WriteString(w, "pulsegate_up 1\n") }

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

func newServer(tb testing.TB, src Source) *Server {
	tb.Helper()
	s := New(src, fakeMetrics{}, nil)
	tb.Cleanup(func() { s.Close() })
	return s
}

// do runs one request through the handler.
func do(tb testing.TB, s *Server, method, target string) *httptest.ResponseRecorder {
	tb.Helper()
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
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

// TestStatusJSON: the API writes "< 5" as it reads, not as "\u003c 5".
func TestStatusJSON(t *testing.T) {
	s := newServer(t, fakeSource{st: busyStatus()})
	w := do(t, s, "GET", "/api/status")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/status = %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	body := w.Body.String()
	for _, want := range []string{`"green": "< 5"`, `"red": 17`, `"red": "< 5"`, `"today_total": 1234`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /api/status lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, `\u003c`) {
		t.Errorf("GET /api/status escapes '<':\n%s", body)
	}
	var back struct {
		ClosedDays []map[string]any `json:"closed_days"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &back); err != nil {
		t.Fatalf("GET /api/status is not JSON: %v", err)
	}
	if got := back.ClosedDays[1]["green"]; got != 5.0 {
		t.Errorf("closed_days[1].green = %v, want the number 5", got)
	}
}

func TestIndexRendersStatus(t *testing.T) {
	s := newServer(t, fakeSource{st: busyStatus()})
	w := do(t, s, "GET", "/")
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	page := w.Body.String()
	for _, want := range []string{
		"<title>Pulsegate · Berlin office</title>",
		"Berlin office · Europe/Berlin",
		`<div class="total" id="today-total">1234</div>`,
		"Today · 2026-03-03",
		`<tr><td>2026-03-01</td><td class="num g">&lt; 5</td><td class="num r">17</td><td class="num">20</td></tr>`,
		`<tr><td>2026-03-02</td><td class="num g">5</td><td class="num r">&lt; 5</td><td class="num">9</td></tr>`,
		"The clock is not set",
		"7 press frames are waiting",
		"Simulated board.",
		"hall-1",
		"09:15:00",
		"open /dev/ttyACM1: no such device",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("GET / lacks %q", want)
		}
	}

	w = do(t, newServer(t, fakeSource{st: Status{Site: "Quiet", Today: "2026-03-03", Clock: Clock{Set: true}, Healthy: true}}), "GET", "/")
	for _, want := range []string{"No closed days yet.", "No board connected.", `id="today-total">0<`} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET / of an empty status lacks %q", want)
		}
	}
	if strings.Contains(w.Body.String(), "The clock is not set") {
		t.Error("GET / says the clock is not set although it is")
	}
}

var (
	tagRE = regexp.MustCompile(`<[a-zA-Z][^>]*>`)
	// Attributes that load or navigate to a URL.
	urlAttrRE = regexp.MustCompile(`(?i)\s(src|href|action|formaction|srcset|poster|background|ping|data|manifest|xmlns)\s*=`)
)

// TestPageLoadsNothingFromAnywhere: the page has no URL attribute at all,
// so it can reference no other origin, whatever the status says.
func TestPageLoadsNothingFromAnywhere(t *testing.T) {
	for name, st := range map[string]Status{"busy": busyStatus(), "hostile": hostileStatus()} {
		t.Run(name, func(t *testing.T) {
			page := do(t, newServer(t, fakeSource{st: st}), "GET", "/").Body.String()
			tags := tagRE.FindAllString(page, -1)
			if len(tags) < 20 {
				t.Fatalf("found only %d tags in the page:\n%s", len(tags), page)
			}
			for _, tag := range tags {
				if m := urlAttrRE.FindString(tag); m != "" {
					t.Errorf("tag %s has a URL attribute (%s)", tag, strings.TrimSpace(m))
				}
				if strings.HasPrefix(strings.ToLower(tag), "<script") || strings.HasPrefix(strings.ToLower(tag), "<link") {
					t.Errorf("the page has %s", tag)
				}
			}
			if name == "hostile" {
				return // the hostile strings show, escaped, as text
			}
			for _, bad := range []string{"//", "url(", "url=", "@import"} {
				if i := strings.Index(strings.ToLower(page), bad); i >= 0 {
					t.Errorf("the page contains %q: …%s…", bad, page[max(0, i-40):min(len(page), i+40)])
				}
			}
		})
	}
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	tests := []struct {
		method, target string
		src            Source
		code           int
	}{
		{"GET", "/", fakeSource{st: busyStatus()}, http.StatusOK},
		{"GET", "/api/status", fakeSource{st: busyStatus()}, http.StatusOK},
		{"GET", "/healthz", fakeSource{st: Status{Healthy: true}}, http.StatusOK},
		{"GET", "/metrics", fakeSource{}, http.StatusOK},
		{"GET", "/nope", fakeSource{}, http.StatusNotFound},
		{"POST", "/", fakeSource{}, http.StatusMethodNotAllowed},
		{"GET", "/", fakeSource{err: errors.New("store closed")}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %d", tt.method, tt.target, tt.code), func(t *testing.T) {
			w := do(t, newServer(t, tt.src), tt.method, tt.target)
			if w.Code != tt.code {
				t.Fatalf("%s %s = %d, want %d", tt.method, tt.target, w.Code, tt.code)
			}
			csp := w.Header().Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("Content-Security-Policy = %q, want %s", csp, want)
				}
			}
			for _, src := range strings.Split(csp, ";") {
				if strings.Contains(src, "http") || strings.Contains(src, "*") {
					t.Errorf("Content-Security-Policy allows another origin: %q", src)
				}
			}
			if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := w.Header().Get("Referrer-Policy"); got != "no-referrer" {
				t.Errorf("Referrer-Policy = %q, want no-referrer", got)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name string
		st   Status
		code int
		want string
	}{
		{"healthy", Status{Healthy: true}, http.StatusOK, `{"healthy":true}`},
		{"problems", Status{Problems: []string{"Presses cannot be stored: disk full."}}, http.StatusServiceUnavailable,
			`{"healthy":false,"problems":["Presses cannot be stored: disk full."]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, newServer(t, fakeSource{st: tt.st}), "GET", "/healthz")
			if w.Code != tt.code || strings.TrimSpace(w.Body.String()) != tt.want {
				t.Fatalf("GET /healthz = %d %s, want %d %s", w.Code, w.Body, tt.code, tt.want)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	s := newServer(t, fakeSource{st: Status{Healthy: true}})
	tests := []struct {
		method, target string
		code           int
	}{
		{"GET", "/nope", http.StatusNotFound},
		{"GET", "/index.html", http.StatusNotFound},
		{"GET", "/api", http.StatusNotFound},
		{"GET", "/api/status/x", http.StatusNotFound},
		{"GET", "/healthz/", http.StatusNotFound},
		{"GET", "/etc/passwd", http.StatusNotFound},
		{"GET", "/templates/index.html", http.StatusNotFound},
		{"POST", "/", http.StatusMethodNotAllowed},
		{"PUT", "/api/status", http.StatusMethodNotAllowed},
		{"DELETE", "/healthz", http.StatusMethodNotAllowed},
		{"HEAD", "/", http.StatusOK},
		{"GET", "/metrics", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			if w := do(t, s, tt.method, tt.target); w.Code != tt.code {
				t.Fatalf("%s %s = %d, want %d", tt.method, tt.target, w.Code, tt.code)
			}
		})
	}
}

func TestSourceErrorIs503(t *testing.T) {
	s := newServer(t, fakeSource{err: errors.New("read store: database not open")})
	for _, path := range []string{"/", "/api/status", "/healthz"} {
		w := do(t, s, "GET", path)
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "status unavailable: read store: database not open") {
			t.Errorf("GET %s = %d %q, want 503 with the cause", path, w.Code, w.Body)
		}
	}
}

// serve runs s on a loopback listener until the test ends, and checks that
// Serve then returns nil. It returns once s answers.
func serve(tb testing.TB, s *Server) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	// An answer proves Serve has the listener: a Close before that returns
	// at once, and the listener is closed only when Serve starts.
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		tb.Fatalf("server not answering: %v", err)
	}
	resp.Body.Close()
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				tb.Errorf("Serve after Close = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			tb.Error("Serve did not return after Close")
		}
	})
	return ln.Addr().String()
}

// rawRequest writes b on a new connection and returns the response's status
// code, or 0 if the server closed the connection without one.
func rawRequest(tb testing.TB, addr string, b []byte) int {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The server may answer and close before reading all of b.
	go c.Write(b)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			tb.Fatalf("no answer within 5s: %v", err)
		}
		return 0 // closed without an answer
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestGarbageRequests(t *testing.T) {
	s := New(fakeSource{st: busyStatus()}, fakeMetrics{}, nil)
	addr := serve(t, s)
	// A request line that never ends (a TLS hello, say) is not here: the
	// server waits ReadHeaderTimeout (5s) for it and then closes.
	tests := []struct {
		name string
		req  []byte
		also int // an answer outside 4xx that is right too
	}{
		{"binary junk", []byte("\x00\xff\xfe\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), 0},
		{"binary junk without a line", append([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), make([]byte, 20<<10)...), 0},
		{"oversized header", []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"), 0},
		{"many headers", []byte("GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 4000) + "\r\n"), 0},
		{"bad method", []byte("G@T / HTTP/1.1\r\nHost: x\r\n\r\n"), 0},
		{"unknown method", []byte("BREW / HTTP/1.1\r\nHost: x\r\n\r\n"), 0},
		{"bad version", []byte("GET / HTTP/9.9\r\nHost: x\r\n\r\n"), http.StatusHTTPVersionNotSupported},
		{"no host", []byte("GET / HTTP/1.1\r\n\r\n"), 0},
		{"bad target", []byte("GET \x7f HTTP/1.1\r\nHost: x\r\n\r\n"), 0},
		{"header without colon", []byte("GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := rawRequest(t, addr, tt.req)
			t.Logf("answer: %d (0: closed)", code)
			if code != 0 && code != tt.also && (code < 400 || code > 499) {
				t.Fatalf("answered %d, want a 4xx or a closed connection", code)
			}
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatalf("GET /healthz after %s: %v", tt.name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable { // busyStatus is unhealthy
				t.Fatalf("GET /healthz after %s = %d, want 503", tt.name, resp.StatusCode)
			}
		})
	}
}

func TestCloseAndServe(t *testing.T) {
	t.Run("close twice", func(t *testing.T) {
		s := New(fakeSource{}, fakeMetrics{}, nil)
		addr := serve(t, s) // its cleanup closes once more and checks Serve's nil
		if err := s.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatal("the listener still accepts after Close")
		}
	})
	t.Run("close before serve", func(t *testing.T) {
		s := New(fakeSource{}, fakeMetrics{}, nil)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Serve(ln); err != nil {
			t.Fatalf("Serve after Close = %v, want nil", err)
		}
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Fatal("Serve after Close left the listener open")
		}
	})
}

// enrolSource is a Source that also enrols.
type enrolSource struct {
	fakeSource
	got *string
}

func (e enrolSource) EnrolIndex(_ context.Context, token string) (string, error) {
	*e.got = token
	if token == "bad" {
		return "", errors.New("token: not a Pulsegate enrolment token")
	}
	return "acme", nil
}

func TestEnrolEndpoint(t *testing.T) {
	var got string
	s := newServer(t, enrolSource{fakeSource{st: Status{Healthy: true}}, &got})
	post := func(remote, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/api/index/enrol", strings.NewReader(body))
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		return w
	}
	if w := post("127.0.0.1:5000", `{"token":"pgi1.abc"}`); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"acme"`) || got != "pgi1.abc" {
		t.Fatalf("enrol from loopback: %d %q (token %q)", w.Code, w.Body, got)
	}
	got = ""
	if w := post("192.168.1.20:5000", `{"token":"pgi1.abc"}`); w.Code != http.StatusForbidden || got != "" {
		t.Fatalf("enrol from the LAN: %d, token passed on %q", w.Code, got)
	}
	for _, body := range []string{``, `{}`, `not json`, `{"token":""}`} {
		if w := post("127.0.0.1:5000", body); w.Code != http.StatusBadRequest {
			t.Errorf("enrol with body %q: %d, want 400", body, w.Code)
		}
	}
	if w := post("[::1]:5000", `{"token":"bad"}`); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "not a Pulsegate enrolment token") {
		t.Fatalf("refused enrolment: %d %q", w.Code, w.Body)
	}
}

func TestIndexSectionShowsLedgerNotCounts(t *testing.T) {
	st := busyStatus()
	st.Index = &IndexStatus{Enrolled: true, Customer: "acme", URL: "https://index.example:8443", Released: 1, Pending: 0, BudgetExhausted: 2,
		Ledger: []LedgerRow{{Site: "00000000000000aa", Name: "Lisbon", Year: 2026, Releases: 1, Epsilon: "0.5"}}}
	page := do(t, newServer(t, fakeSource{st: st}), "GET", "/").Body.String()
	for _, want := range []string{"Central index", "acme", "1 period released", "2 periods are held back", "Lisbon", "0.5"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	st.Index = &IndexStatus{}
	page = do(t, newServer(t, fakeSource{st: st}), "GET", "/").Body.String()
	if !strings.Contains(page, "Not enrolled: nothing leaves this cluster") {
		t.Error("an unenrolled cluster does not say that nothing leaves it")
	}
}
