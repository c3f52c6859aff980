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
	Site       string      `json:"site"`
	TimeZone   string      `json:"time_zone"`
	Today      string      `json:"today"`
	TodayTotal uint64      `json:"today_total"` // colour-blind
	ClosedDays []ClosedDay `json:"closed_days"` // oldest first
	Boards     []Board     `json:"boards"`
	Simulated  bool        `json:"simulated"` // a simulated board is running
	Clock      Clock       `json:"clock"`
	Healthy    bool        `json:"healthy"`
	Problems   []string    `json:"problems,omitempty"`
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
	return securityHeaders(mux)
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

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.metrics.WritePrometheus(w)
}
