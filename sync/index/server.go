package index

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/sync/regional"
)

// ServerConfig configures the index's HTTPS server.
type ServerConfig struct {
	Store    *Store
	Identity *Identity
	// Rules are the regional publication rules; the zero value means
	// regional.DefaultRules(). They must pass Validate.
	Rules regional.Rules
	// RetentionEvery is how often the retention job runs (at start, then
	// every interval ±10 %); 0 means an hour.
	RetentionEvery time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Limits of the server.
const (
	maxEnrolBody      = 16 << 10
	maxBatchBody      = 8 << 20
	maxLoginBody      = 16 << 10
	defaultRetention  = time.Hour
	shutdownGrace     = 10 * time.Second
	hqCookie          = "pg_hq"
	hqCookieMaxAge    = 12 * time.Hour
	defaultAuditLimit = 100
	maxAuditLimit     = 10000
)

// Server is the central index's HTTPS server: clusters enrol and upload
// with client certificates, HQ pulls regional indexes with an HQ key. See
// DESIGN.md for the authentication model.
type Server struct {
	store   *Store
	id      *Identity
	rules   regional.Rules
	every   time.Duration
	now     func() time.Time
	log     *slog.Logger
	handler http.Handler
	tlsCfg  *tls.Config
	pubs    publishers
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	retains bool // a retention loop is running
	closed  bool
}

// NewServer checks cfg and returns a server. It starts nothing: Serve does.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Store == nil || cfg.Identity == nil {
		return nil, errors.New("new index server: Store and Identity are required")
	}
	if cfg.Rules == (regional.Rules{}) {
		cfg.Rules = regional.DefaultRules()
	}
	if err := cfg.Rules.Validate(); err != nil {
		return nil, fmt.Errorf("new index server: %w", err)
	}
	if cfg.RetentionEvery < 0 {
		return nil, fmt.Errorf("new index server: negative retention interval %v", cfg.RetentionEvery)
	}
	if cfg.RetentionEvery == 0 {
		cfg.RetentionEvery = defaultRetention
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		store: cfg.Store, id: cfg.Identity, rules: cfg.Rules, every: cfg.RetentionEvery,
		now: cfg.Now, log: cfg.Logger.With("component", "index"),
		tlsCfg: cfg.Identity.TLSConfig(),
		pubs:   publishers{m: map[string]*publisherEntry{}},
		ctx:    ctx, cancel: cancel,
	}
	s.handler = s.routes()
	return s, nil
}

// routes is the server's one mux. Every state-changing route is guarded
// against cross-origin browser requests; clusters and pull clients send
// neither Origin nor Sec-Fetch-Site and pass.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enrol", s.handleEnrol)
	mux.HandleFunc("POST /api/v1/batches", s.handleBatches)
	mux.HandleFunc("GET /api/v1/ledger", s.handleLedger)
	mux.HandleFunc("GET /api/v1/regions", s.handleRegions)
	mux.HandleFunc("GET /api/v1/regions/{region}/index", s.handleRegionIndex)
	mux.HandleFunc("GET /api/v1/export", s.handleExport)
	mux.HandleFunc("GET /api/v1/audit", s.handleAudit)
	mux.HandleFunc("GET /hq/{$}", s.handleHQ)
	mux.HandleFunc("GET /hq", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/hq/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /hq/login", s.handleLoginForm)
	mux.HandleFunc("POST /hq/login", s.handleLogin)
	mux.HandleFunc("POST /hq/logout", s.handleLogout)
	mux.Handle("GET /hq/static/", hqStatic)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPIDoc) //nolint:errcheck // the client went away
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok")) //nolint:errcheck // the client went away
	})
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return securityHeaders(cop.Handler(mux))
}

// securityHeaders sets the headers every response carries: the HQ pages'
// strict CSP (harmless on JSON), no MIME sniffing, no referrer.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// Handler returns the server's handler, for a listener whose TLS is set up
// with TLSConfig (httptest.NewUnstartedServer, say). The retention job only
// runs under Serve.
func (s *Server) Handler() http.Handler { return s.handler }

// TLSConfig returns the server's TLS configuration (see Identity.TLSConfig).
func (s *Server) TLSConfig() *tls.Config { return s.tlsCfg.Clone() }

// Serve serves HTTPS on ln, which it wraps in TLS, and runs the retention
// job. It returns when ctx is done or the server is closed, after shutting
// down gracefully, or on a listener error; either way ln is closed and every
// goroutine Serve started has ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	unlink := context.AfterFunc(s.ctx, stop)
	defer unlink()

	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	retain := !s.retains
	s.retains = true
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var loop sync.WaitGroup
	if retain {
		loop.Go(func() {
			s.retentionLoop(ctx)
			s.mu.Lock()
			s.retains = false
			s.mu.Unlock()
		})
	}
	defer loop.Wait()

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(ln, s.tlsCfg)) }()
	select {
	case err := <-errc:
		stop()
		return fmt.Errorf("serve index: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		hs.Close() // the grace is over: cut what is left
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("shut down index: %w", err)
	}
	return nil
}

// Close stops every Serve call, each after its requests in flight had their
// grace (see Serve), and waits for every goroutine the server started. It is safe
// to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// retentionLoop applies retention at once and then every s.every ±10 %,
// until ctx is done. A failed run is logged and retried at the next tick;
// ApplyRetention is idempotent.
func (s *Server) retentionLoop(ctx context.Context) {
	for {
		s.applyRetention(ctx)
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(s.every))
		t := time.NewTimer(s.every + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *Server) applyRetention(ctx context.Context) {
	now := s.now()
	n, err := s.store.ApplyRetention(ctx, now)
	if err != nil && ctx.Err() != nil {
		return
	}
	detail := fmt.Sprintf("deleted %d rows", n)
	if err != nil {
		s.log.Error("retention", "deleted", n, "err", err)
		detail += " before an error"
	} else {
		s.log.Info("retention", "deleted", n)
	}
	if err := s.store.Audit(ctx, "", "index", "retention", detail, now); err != nil && ctx.Err() == nil {
		s.log.Error("audit retention", "err", err)
	}
}

// writeJSON writes v as the JSON body with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n')) //nolint:errcheck // the client went away
}

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Disposition")
	w.WriteHeader(status)
	w.Write(append(b, '\n')) //nolint:errcheck // the client went away
}

// internal logs err and answers 500 without details.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error; the index logged the details")
}

// principal is who a request speaks for: a customer, and the actor the
// audit trail names.
type principal struct {
	customer string
	actor    string
}

// clientPrincipal authenticates a cluster by its client certificate, which
// the handshake verified against the client CA. On failure it has answered.
func (s *Server) clientPrincipal(w http.ResponseWriter, r *http.Request) (principal, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		writeError(w, http.StatusUnauthorized, "a client certificate issued by this index is required; enrol first")
		return principal{}, false
	}
	leaf := r.TLS.VerifiedChains[0][0]
	customer, err := CustomerOf(leaf)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "the client certificate names no customer")
		return principal{}, false
	}
	return principal{customer: customer, actor: "cluster " + leaf.SerialNumber.Text(16)}, true
}

// hqPrincipal authenticates HQ by an HQ key, from "Authorization: Bearer"
// or the login cookie. On failure it has answered.
func (s *Server) hqPrincipal(w http.ResponseWriter, r *http.Request) (principal, bool) {
	p, status, msg := s.checkHQ(r)
	if status != 0 {
		writeError(w, status, msg)
		return principal{}, false
	}
	return p, true
}

// checkHQ is hqPrincipal without the answer: status 0 means authenticated.
func (s *Server) checkHQ(r *http.Request) (principal, int, string) {
	var raw string
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return principal{}, http.StatusUnauthorized, "the Authorization header must be \"Bearer <hq key>\""
		}
		raw = strings.TrimSpace(tok)
	} else if c, err := r.Cookie(hqCookie); err == nil {
		raw = c.Value
	} else {
		return principal{}, http.StatusUnauthorized, "an HQ key is required (Authorization: Bearer pghq1.…)"
	}
	return s.checkHQKey(r.Context(), raw)
}

func (s *Server) checkHQKey(ctx context.Context, raw string) (principal, int, string) {
	key, err := ParseHQKey(raw)
	if err != nil {
		return principal{}, http.StatusUnauthorized, "the HQ key is malformed"
	}
	customer, err := s.store.CheckHQKey(ctx, key.ID, HashSecret(key.Secret))
	switch {
	case errors.Is(err, ErrHQKeyUnknown):
		return principal{}, http.StatusUnauthorized, "the HQ key is unknown or revoked"
	case errors.Is(err, ErrCustomerErased):
		return principal{}, http.StatusForbidden, "the customer of this HQ key has been erased"
	case err != nil:
		s.log.Error("check hq key", "err", err)
		return principal{}, http.StatusInternalServerError, "internal error; the index logged the details"
	}
	return principal{customer: customer, actor: "hq-key " + key.ID}, 0, ""
}

// eitherPrincipal accepts a client certificate or an HQ key.
func (s *Server) eitherPrincipal(w http.ResponseWriter, r *http.Request) (principal, bool) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return s.clientPrincipal(w, r)
	}
	return s.hqPrincipal(w, r)
}

// audit records an action of p; on failure it answers 500 and returns false,
// so nothing is served that the trail does not show.
func (s *Server) audit(w http.ResponseWriter, r *http.Request, p principal, action, detail string) bool {
	if err := s.store.Audit(r.Context(), p.customer, p.actor, action, detail, s.now()); err != nil {
		s.internal(w, r, err)
		return false
	}
	return true
}
