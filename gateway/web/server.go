package web

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/gateway/accounts"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Backend is everything the UI reads and does; the gateway implements it.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Site() SiteSettings
	SetSite(ctx context.Context, s SiteSettings) error
	Paired() bool
	InitCluster(ctx context.Context, customer string) error
	JoinCluster(ctx context.Context, token string) error
	CreateJoinToken(ctx context.Context) (token string, expires time.Time, err error)
	EnrolIndex(ctx context.Context, token string) (customer string, err error)
	Boards() ([]BoardRow, error)
	SetBoard(id string, c BoardChange) error
	Trend(weeks int) ([]TrendPoint, error)
	// ExportLocal adds the box's own data to an export archive, one file
	// at a time through create.
	ExportLocal(ctx context.Context, create func(name string) (io.Writer, error)) error
	EraseLocal(ctx context.Context) error
	TLSFingerprint() string
	Egress() Egress
}

// Metrics writes Prometheus text.
type Metrics interface {
	WritePrometheus(w io.Writer)
}

// SiteSettings are the office's settings IT sets at first boot.
type SiteSettings struct {
	Name, Region, TimeZone string
}

// BoardRow is one board as the boards page shows it: health and pairing,
// never a colour.
type BoardRow struct {
	ID, Name, Path, Firmware                        string
	Connected, Simulated, Approved, Disabled, Test  bool
	LastHeartbeat, FirstSeen, LastTestPress         time.Time
	Unacked                                         uint32
	FramesDropped, Suppressed, Unapproved, TestSeen uint64
	LastError                                       string
}

// BoardChange is what an admin changes about a board; nil fields stay.
type BoardChange struct {
	Approve, Disable, Test *bool
	Name                   *string
}

// TrendPoint is one closed ISO week of this office.
type TrendPoint struct {
	Week       string // "2026-W09"
	Green, Red uint64
}

// Config wires a Server.
type Config struct {
	Backend  Backend
	Accounts *accounts.DB
	Metrics  Metrics
	// MetricsToken, when set, lets non-loopback scrapers read /metrics with
	// "Authorization: Bearer <token>". Loopback needs none.
	MetricsToken string
	Logger       *slog.Logger
}

// Server serves the UI. New starts nothing; Serve starts; Close waits.
type Server struct {
	cfg   Config
	b     Backend
	acc   *accounts.DB
	log   *slog.Logger
	pages *pages

	mu      sync.Mutex
	servers []*http.Server
	wg      sync.WaitGroup
	closed  bool
}

// New returns a server.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Backend == nil || cfg.Accounts == nil || cfg.Metrics == nil {
		return nil, errors.New("web: backend, accounts and metrics are required")
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, b: cfg.Backend, acc: cfg.Accounts, log: cfg.Logger.With("component", "web"), pages: p}, nil
}

// access says who may use a route.
type access int

const (
	public  access = iota // anyone: login, static assets, /healthz
	setup                 // anyone, and only until the first admin exists
	viewer                // a signed-in viewer or admin
	admin                 // a signed-in admin
	scraper               // loopback, or the metrics bearer token
)

func (a access) String() string {
	return [...]string{"public", "setup", "viewer", "admin", "scraper"}[a]
}

// route is one entry of the route table. Every route of the UI is listed
// here, so a test can walk them all.
type route struct {
	pattern string // a net/http pattern: "GET /boards"
	access  access
	h       http.HandlerFunc
}

// routes is the UI's route table.
func (s *Server) routes() []route {
	return []route{
		{"GET /static/", public, http.StripPrefix("/static/", http.FileServerFS(mustSub(assets, "static"))).ServeHTTP},
		{"GET /healthz", public, s.handleHealthz},
		{"GET /metrics", scraper, s.handleMetrics},
		{"GET /login", public, s.handleLoginForm},
		{"POST /login", public, s.handleLogin},
		{"GET /invite/{token}", public, s.handleInviteForm},
		{"POST /invite/{token}", public, s.handleInviteAccept},

		{"GET /setup", setup, s.handleSetupForm},
		{"POST /setup", setup, s.handleSetup},

		{"POST /logout", viewer, s.handleLogout},
		{"GET /account", viewer, s.handleAccount},
		{"POST /account/password", viewer, s.handlePassword},
		{"GET /{$}", viewer, s.handleDashboard},
		{"GET /api/status", viewer, s.handleStatus},
		{"GET /egress", viewer, s.handleEgress},
		{"GET /api/egress", viewer, s.handleEgressJSON},

		{"GET /pair", admin, s.handlePairForm},
		{"POST /pair/init", admin, s.handlePairInit},
		{"POST /pair/join", admin, s.handlePairJoin},
		{"GET /boards", admin, s.handleBoards},
		{"POST /boards/{id}", admin, s.handleBoardChange},
		{"GET /offices", admin, s.handleOffices},
		{"POST /offices/token", admin, s.handleOfficeToken},
		{"GET /index", admin, s.handleIndexPage},
		{"POST /index/enrol", admin, s.handleIndexEnrol},
		{"GET /users", admin, s.handleUsers},
		{"POST /users/invite", admin, s.handleInvite},
		{"POST /users/{email}", admin, s.handleUserChange},
		{"GET /settings", admin, s.handleSettings},
		{"POST /settings", admin, s.handleSettingsSave},
		{"GET /audit", admin, s.handleAudit},
		{"GET /audit/export", admin, s.handleAuditExport},
		{"GET /rights", admin, s.handleRights},
		{"GET /rights/export", admin, s.handleExport},
		{"POST /rights/erase", admin, s.handleErase},
	}
}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Handler routes every endpoint of the UI. State-changing requests from
// another origin are refused by net/http's CrossOriginProtection.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, s.guard(rt))
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "This request came from another site and was refused.", http.StatusForbidden)
	}))
	return securityHeaders(cop.Handler(mux))
}

type ctxKey struct{}

// who is the signed-in user of a request.
type who struct {
	session accounts.Session
	user    accounts.User
}

func userOf(r *http.Request) (who, bool) {
	w, ok := r.Context().Value(ctxKey{}).(who)
	return w, ok
}

const sessionCookie = "pg_session"

// guard enforces a route's access rule before its handler runs.
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch rt.access {
		case public:
			rt.h(w, r)
			return
		case scraper:
			if fromLoopback(r) || s.metricsTokenOK(r) {
				rt.h(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="pulsegate metrics"`)
			http.Error(w, "metrics need a bearer token from outside this box", http.StatusUnauthorized)
			return
		case setup:
			if s.acc.SetupDone() {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			rt.h(w, r)
			return
		}
		if !s.acc.SetupDone() {
			if wantsHTML(r) {
				http.Redirect(w, r, "/setup", http.StatusSeeOther)
				return
			}
			http.Error(w, "this box is not set up yet: open it in a browser", http.StatusServiceUnavailable)
			return
		}
		c, err := r.Cookie(sessionCookie)
		var u who
		if err == nil {
			u.session, u.user, err = s.acc.Session(c.Value)
		}
		if err != nil {
			if wantsHTML(r) && r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+safeNext(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		if rt.access == admin && u.user.Role != accounts.RoleAdmin {
			s.renderError(w, r, http.StatusForbidden, "Only an admin can do this. Ask an admin of this box to change your role.")
			return
		}
		rt.h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, u)))
	})
}

func (s *Server) metricsTokenOK(r *http.Request) bool {
	if s.cfg.MetricsToken == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.MetricsToken)) == 1
}

// wantsHTML tells a browser's navigation from an API client.
func wantsHTML(r *http.Request) bool {
	return !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/metrics"
}

// safeNext keeps a post-login redirect on this box: a path, never a URL.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

// securityHeaders forbids every other origin: the UI loads nothing but
// itself, runs no script, and nothing may frame it.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// SocketHandler serves the command line on the box's admin socket, a unix
// socket in the data directory that only the daemon's user can open: being
// able to open it is the authentication, as it is for the data itself.
func (s *Server) SocketHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", s.handleStatus)
	mux.HandleFunc("GET /api/egress", s.handleEgressJSON)
	mux.HandleFunc("POST /api/cluster/tokens", func(w http.ResponseWriter, r *http.Request) {
		tok, exp, err := s.b.CreateJoinToken(r.Context())
		if err != nil {
			http.Error(w, "create join token: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := s.acc.Audit("cli", "office-token", "join token created, valid until "+exp.UTC().Format(time.RFC3339)); err != nil {
			s.log.Error("audit", "err", err)
		}
		writeJSON(w, http.StatusOK, struct {
			Token   string    `json:"token"`
			Expires time.Time `json:"expires"`
		}{tok, exp})
	})
	mux.HandleFunc("POST /api/index/enrol", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Token string `json:"token"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&in); err != nil || in.Token == "" {
			http.Error(w, `want a JSON body {"token": "pgi1...."}`, http.StatusBadRequest)
			return
		}
		customer, err := s.b.EnrolIndex(r.Context(), in.Token)
		if err != nil {
			http.Error(w, "enrol with the index: "+err.Error(), http.StatusBadGateway)
			return
		}
		if err := s.acc.Audit("cli", "index-enrol", "enrolled as customer "+customer); err != nil {
			s.log.Error("audit", "err", err)
		}
		writeJSON(w, http.StatusOK, struct {
			Customer string `json:"customer"`
		}{customer})
	})
	return mux
}

// Serve accepts on ln with h until Close. Serve may be called for several
// listeners (plain HTTP, HTTPS, the admin socket).
func (s *Server) Serve(ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.servers = append(s.servers, srv)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Close stops accepting, lets requests in flight finish for a moment, and
// waits for every Serve to return. Safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.Status(r.Context())
	code := http.StatusOK
	body := struct {
		Healthy  bool     `json:"healthy"`
		Problems []string `json:"problems,omitempty"`
	}{st.Healthy, st.Problems}
	if err != nil {
		body.Healthy, body.Problems = false, []string{"status unavailable: " + err.Error()}
	}
	if !body.Healthy {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.Status(r.Context())
	if err != nil {
		s.log.Error("read status", "err", err)
		http.Error(w, "status unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.cfg.Metrics.WritePrometheus(w)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
