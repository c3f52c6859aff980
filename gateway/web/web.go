// Package web serves the appliance's local page, its JSON status, /healthz and
// /metrics. Everything is server-rendered from embedded templates: no script,
// font or style from any other origin.
//
// It only ever receives what may be shown: the Status it renders carries
// per-colour figures for closed days alone, and cells under MinShown are
// rendered as "< 5".
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// MinShown is the smallest count shown as a number; smaller cells read "< 5"
// so that a quiet day cannot be traced to the one or two people who pressed.
const MinShown = 5

//go:embed templates/*.html
var templatesFS embed.FS

// Status is everything the page and API show. Build it with per-colour
// figures for closed days only.
type Status struct {
	Site       string         `json:"site"`
	TimeZone   string         `json:"time_zone"`
	Today      string         `json:"today"`
	TodayTotal uint64         `json:"today_total"` // colour-blind
	ClosedDays []ClosedDay    `json:"closed_days"` // oldest first
	Boards     []Board        `json:"boards"`
	Simulated  bool           `json:"simulated"` // a simulated board is running
	Clock      Clock          `json:"clock"`
	Healthy    bool           `json:"healthy"`
	Problems   []string       `json:"problems,omitempty"`
	Cluster    *ClusterStatus `json:"cluster,omitempty"` // nil while not paired
	Index      *IndexStatus   `json:"index,omitempty"`   // nil while not paired
}

// IndexStatus is the cluster's link to the central index and its
// privacy-loss ledger: numbers of releases and ε, never counts.
type IndexStatus struct {
	Enrolled        bool        `json:"enrolled"`
	Customer        string      `json:"customer,omitempty"`
	URL             string      `json:"url,omitempty"`
	Released        int         `json:"released"`   // closed periods released, all offices
	Suppressed      int         `json:"suppressed"` // of which suppressed
	Pending         int         `json:"pending"`    // not yet acknowledged by the index
	BudgetExhausted int         `json:"budget_exhausted"`
	Uploads         int         `json:"uploads"` // by this office, since it started
	LastUpload      string      `json:"last_upload,omitempty"`
	LastError       string      `json:"last_error,omitempty"`
	Ledger          []LedgerRow `json:"ledger"`
}

// LedgerRow is one office's privacy loss in one calendar year.
type LedgerRow struct {
	Site     string `json:"site_id"`
	Name     string `json:"name"`
	Year     int    `json:"year"`
	Releases int    `json:"releases"`
	Epsilon  string `json:"epsilon"`
}

// ClusterStatus is this box's view of the customer's cluster.
type ClusterStatus struct {
	SiteID       string   `json:"site_id"`
	Role         string   `json:"role"`
	LeaderID     string   `json:"leader_id"`
	LeaderKnown  bool     `json:"leader_known"`
	LastContact  string   `json:"last_contact,omitempty"` // with the leader, ago
	AppliedIndex uint64   `json:"applied_index"`
	Voters       int      `json:"voters"`
	Offices      []Office `json:"offices"`
}

// Office is one office as replicated: its closed days' colours summed over
// the last 7 closed days, and colour-blind totals.
type Office struct {
	SiteID      string `json:"site_id"`
	Name        string `json:"name"`
	Region      string `json:"region"`
	Self        bool   `json:"self"`
	Member      bool   `json:"member"` // in the raft configuration
	Voter       bool   `json:"voter"`
	Alive       bool   `json:"alive"`
	Lag         string `json:"lag,omitempty"` // since its latest update arrived here
	OpenTotal   uint64 `json:"open_total"`    // presses on days still open there
	Total       uint64 `json:"total"`         // all days, colour-blind
	ClosedGreen Cell   `json:"closed_green_7d"`
	ClosedRed   Cell   `json:"closed_red_7d"`
	ClosedTotal Cell   `json:"closed_total_7d"`
}

// ClosedDay is one closed day's counts.
type ClosedDay struct {
	Day   string `json:"day"`
	Green Cell   `json:"green"`
	Red   Cell   `json:"red"`
	Total Cell   `json:"total"`
}

// Cell is a count as shown: the number, or "< 5" below MinShown.
type Cell uint64

func (c Cell) String() string {
	if c < MinShown {
		return "< " + strconv.Itoa(MinShown)
	}
	return strconv.FormatUint(uint64(c), 10)
}

// MarshalJSON writes a number, or the string "< 5" below MinShown.
func (c Cell) MarshalJSON() ([]byte, error) {
	if c < MinShown {
		return []byte(`"` + c.String() + `"`), nil
	}
	return strconv.AppendUint(nil, uint64(c), 10), nil
}

// Board is one board's health, without anything about its presses' colours.
type Board struct {
	Path          string    `json:"path"`
	BoardID       string    `json:"board_id"`
	Firmware      string    `json:"firmware"`
	Connected     bool      `json:"connected"`
	Simulated     bool      `json:"simulated"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	Unacked       uint32    `json:"unacked"`
	FramesDropped uint64    `json:"frames_dropped"`
	Suppressed    uint64    `json:"suppressed"`
	Reopens       uint64    `json:"reopens"`
	LastError     string    `json:"last_error,omitempty"`
	// Admin state: presses count only from an approved board that is
	// neither disabled nor in test mode. Unapproved counts presses since
	// start that were acknowledged but not counted for it.
	Name       string `json:"name,omitempty"`
	Approved   bool   `json:"approved"`
	TestMode   bool   `json:"test_mode"`
	Unapproved uint64 `json:"unapproved"`
}

// Clock says whether presses can be booked.
type Clock struct {
	Set       bool   `json:"set"`
	Now       string `json:"now"`
	NotBefore string `json:"not_before"`
	Refused   uint64 `json:"refused"` // presses left unacknowledged for it
}

// Source is what the server reads: the gateway implements it.
type Source interface {
	Status(ctx context.Context) (Status, error)
}

// Pairing creates join tokens for new offices; the gateway implements it.
type Pairing interface {
	CreateJoinToken(ctx context.Context) (token string, expires time.Time, err error)
}

// Enrolment enrols the cluster with the central index; the gateway
// implements it.
type Enrolment interface {
	EnrolIndex(ctx context.Context, token string) (customer string, err error)
}

// Metrics writes Prometheus text.
type Metrics interface {
	WritePrometheus(w io.Writer)
}

// Server serves the page. New starts nothing; Serve starts; Close waits.
type Server struct {
	src     Source
	metrics Metrics
	log     *slog.Logger
	page    *template.Template
	srv     *http.Server

	mu     sync.Mutex
	ln     net.Listener
	done   chan struct{}
	closed bool
}

// New returns a server over src.
func New(src Source, m Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		src:     src,
		metrics: m,
		log:     log.With("component", "web"),
		page:    template.Must(template.New("index.html").ParseFS(templatesFS, "templates/index.html")),
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler routes every endpoint.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleIndex)
	mux.HandleFunc("GET /api/status", s.handleStatus)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	mux.HandleFunc("POST /api/cluster/tokens", s.handleCreateToken)
	mux.HandleFunc("POST /api/index/enrol", s.handleEnrol)
	return securityHeaders(http.NewCrossOriginProtection().Handler(mux))
}

// securityHeaders forbids every other origin: the page loads nothing but
// itself, and nothing may frame it.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// Serve accepts on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln, s.done = ln, make(chan struct{})
	s.mu.Unlock()
	defer close(s.done)
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve http: %w", err)
}

// Close stops accepting, lets requests in flight finish for a moment, and
// waits for Serve to return. Safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	done := s.done
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if done != nil {
		<-done
	}
	if err != nil {
		return fmt.Errorf("close http: %w", err)
	}
	return nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) (Status, bool) {
	st, err := s.src.Status(r.Context())
	if err != nil {
		s.log.Error("read status", "err", err)
		http.Error(w, "status unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return Status{}, false
	}
	return st, true
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	st, ok := s.status(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.page.Execute(w, st); err != nil {
		s.log.Error("render page", "err", err)
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, ok := s.status(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(st); err != nil {
		s.log.Debug("write status", "err", err)
	}
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	st, ok := s.status(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	code := http.StatusOK
	if !st.Healthy {
		code = http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	body := struct {
		Healthy  bool     `json:"healthy"`
		Problems []string `json:"problems,omitempty"`
	}{st.Healthy, st.Problems}
	_ = json.NewEncoder(w).Encode(body)
}

// handleCreateToken serves `pulsegate token create`. Until the web UI has
// accounts, only a process on this box may ask: the request must come from
// loopback.
func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r) {
		http.Error(w, "join tokens can only be created from the box itself", http.StatusForbidden)
		return
	}
	p, ok := s.src.(Pairing)
	if !ok {
		http.Error(w, "pairing is not available", http.StatusNotImplemented)
		return
	}
	tok, exp, err := p.CreateJoinToken(r.Context())
	if err != nil {
		http.Error(w, "create join token: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	s.log.Info("join token created", "expires", exp.Format(time.RFC3339))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}{tok, exp})
}

// handleEnrol serves `pulsegate enrol`: the body is the enrolment token HQ
// gave. Loopback only, like join tokens, until the web UI has accounts.
func (s *Server) handleEnrol(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r) {
		http.Error(w, "the index can only be enrolled from the box itself", http.StatusForbidden)
		return
	}
	e, ok := s.src.(Enrolment)
	if !ok {
		http.Error(w, "enrolment is not available", http.StatusNotImplemented)
		return
	}
	var in struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&in); err != nil || in.Token == "" {
		http.Error(w, "want a JSON body {\"token\": \"pgi1....\"}", http.StatusBadRequest)
		return
	}
	customer, err := e.EnrolIndex(r.Context(), in.Token)
	if err != nil {
		http.Error(w, "enrol with the index: "+err.Error(), http.StatusBadGateway)
		return
	}
	s.log.Info("enrolled with the index", "customer", customer)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Customer string `json:"customer"`
	}{customer})
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.metrics.WritePrometheus(w)
}
