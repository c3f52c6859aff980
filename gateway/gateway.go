// Package gateway is the appliance: it wires the boards (drivers), the
// durable intake and count store, the simulated board and the local web page
// into one process, and owns their start and shutdown order.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
	"github.com/pulsegate/pulsegate/gateway/accounts"
	"github.com/pulsegate/pulsegate/gateway/intake"
	"github.com/pulsegate/pulsegate/gateway/store"
	"github.com/pulsegate/pulsegate/gateway/web"
	"github.com/pulsegate/pulsegate/gateway/webtls"
	"github.com/pulsegate/pulsegate/sync/upload"
)

// Options are the parts of wiring that are not configuration: tests inject a
// clock, a listener or a logger here.
type Options struct {
	Logger   *slog.Logger
	Now      func() time.Time // nil: time.Now
	Listener net.Listener     // nil: listen on Config.Listen
	// Discover lists USB serial ports; nil: drivers.DiscoverUSB. Used to
	// decide whether to start a simulated board in sim mode "auto".
	Discover func() ([]string, error)
}

// Local names for the types the metrics read.
type (
	intakeStats   = intake.Stats
	boardState    = drivers.BoardState
	clusterStatus = cluster.Status
)

// Gateway is a running appliance.
type Gateway struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	loc  *time.Location

	store    *store.Store
	intake   *intake.Intake
	boards   *drivers.Manager
	sim      *fakeboard.Board
	cluster  *cluster.Cluster // nil until paired
	releaser *upload.Releaser // with the cluster
	web      *web.Server
	acc      *accounts.DB
	tlsID    *webtls.Identity
	ln       net.Listener // plain HTTP: loopback served, the rest redirected
	tlsLn    net.Listener // HTTPS; nil when https_listen is "off"
	sockLn   net.Listener // the admin socket for the command line
	egress   *egress      // the egress guard and its allowlist

	// mu guards what changes while running: the site settings (cfg.Site,
	// loc), and the cluster and releaser, which start when the box is
	// paired from the browser.
	mu  sync.RWMutex
	ctx context.Context // the gateway's lifetime, for what starts later

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open validates cfg, opens the store and starts everything. The caller must
// Close the gateway.
func Open(ctx context.Context, cfg Config, opts Options) (_ *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Discover == nil {
		opts.Discover = drivers.DiscoverUSB
	}
	if err := cfg.ensureDataDir(); err != nil {
		return nil, err
	}
	// What IT set in the browser wins over the file and the flags.
	if err := loadSiteFile(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid site settings in %s:\n%w", cfg.sitePath(), err)
	}
	loc, _ := cfg.Location()
	notBefore, _ := cfg.NotBefore()
	g := &Gateway{cfg: cfg, opts: opts, log: opts.Logger, loc: loc}
	ctx, g.cancel = context.WithCancel(ctx)
	g.ctx = ctx
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	// The guard comes before any socket: a socket belongs to the cgroup its
	// process was in when it was made.
	g.openGuard()

	// The store comes first: without it nothing may be acknowledged.
	if g.store, err = store.Open(cfg.StorePath()); err != nil {
		return nil, err
	}
	g.intake, err = intake.New(intake.Config{
		Store:       g.store,
		Location:    loc,
		Now:         opts.Now,
		NotBefore:   notBefore,
		Limits:      cfg.LimitConfig(),
		AutoApprove: cfg.Serial.AutoApprove,
		Logger:      g.log,
	})
	if err != nil {
		return nil, err
	}
	g.intake.Start(ctx)
	if cfg.Serial.AutoApprove {
		g.log.Warn("every board is treated as approved (serial.auto_approve): presses count without an admin approving the board")
	}
	if !g.intake.ClockSet() {
		g.log.Warn("the clock is not set: presses stay on the boards, unacknowledged, until it is",
			"now", opts.Now().Format(time.RFC3339), "not_before", cfg.Clock.NotBefore)
	}

	// Boards: configured ports, else USB discovery; and a simulated board
	// when asked, or when there is nothing else to count from.
	g.boards = drivers.NewManager(drivers.Config{
		Ports:       cfg.Serial.Boards,
		BaudRate:    cfg.Serial.BaudRate,
		HungTimeout: cfg.Serial.HungTimeout.Duration,
		Now:         opts.Now,
		Logger:      g.log,
	}, g.intake)
	if err := g.boards.Start(ctx); err != nil {
		return nil, err
	}
	if g.wantSim() {
		if err := g.startSim(ctx); err != nil {
			return nil, err
		}
	}
	if err := g.openCluster(ctx); err != nil {
		return nil, err
	}
	if err := g.startWeb(); err != nil {
		return nil, err
	}
	if g.egress.g != nil {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.allowLoop(ctx)
		}()
	}
	g.log.Info("pulsegate is running", "url", g.URL(), "https", g.HTTPSURL(), "site", cfg.Site.Name, "time_zone", loc.String(), "store", g.store.Path())
	return g, nil
}

// startWeb opens the accounts, the UI's TLS identity and the listeners: plain
// HTTP (loopback served, everyone else redirected to HTTPS), HTTPS, and the
// admin socket for the command line.
func (g *Gateway) startWeb() (err error) {
	cfg := g.cfg
	if g.acc, err = accounts.Open(cfg.AccountsPath(), accounts.Options{Now: g.opts.Now}); err != nil {
		return err
	}
	var created bool
	if g.tlsID, created, err = webtls.LoadOrCreate(cfg.WebTLSDir(), cfg.Web.Hosts, g.opts.Now()); err != nil {
		return err
	}
	if created {
		g.log.Warn("created this box's HTTPS certificate: compare its fingerprint with what the browser shows", "fingerprint", g.tlsID.Fingerprint())
	}
	g.web, err = web.New(web.Config{Backend: g, Accounts: g.acc, Metrics: g, MetricsToken: cfg.Web.MetricsToken, Logger: g.log})
	if err != nil {
		return err
	}
	h := g.web.Handler()
	if https := cfg.HTTPSListen(); https != "" {
		if g.tlsLn, err = net.Listen("tcp", https); err != nil {
			return fmt.Errorf("listen on %s (https): %w", https, err)
		}
		tlsLn := tls.NewListener(g.tlsLn, g.tlsID.TLSConfig())
		g.serve(tlsLn, h)
	}
	g.ln = g.opts.Listener
	if g.ln == nil {
		if g.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
	}
	plain := h
	if g.tlsLn != nil {
		_, port, _ := net.SplitHostPort(g.tlsLn.Addr().String())
		plain = webtls.PlainHandler(h, port)
	}
	g.serve(g.ln, plain)
	sock := cfg.AdminSocket()
	os.Remove(sock) // a socket left by a crash; the store's lock already keeps a second daemon out
	if g.sockLn, err = net.Listen("unix", sock); err != nil {
		return fmt.Errorf("listen on the admin socket %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		return fmt.Errorf("admin socket %s: %w", sock, err)
	}
	g.serve(g.sockLn, g.web.SocketHandler())
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.pruneLoop(g.ctx)
	}()
	return nil
}

// pruneLoop forgets expired sessions, spent invitations and stale sign-in
// failures every hour.
func (g *Gateway) pruneLoop(ctx context.Context) {
	for {
		t := time.NewTimer(time.Hour)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n, err := g.acc.PruneSessions(); err != nil {
			g.log.Warn("prune sessions", "err", err)
		} else if n > 0 {
			g.log.Debug("pruned expired sessions and sign-in records", "n", n)
		}
	}
}

func (g *Gateway) serve(ln net.Listener, h http.Handler) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := g.web.Serve(ln, h); err != nil {
			g.log.Error("web server stopped", "err", err)
		}
	}()
}

// HTTPSURL is where the UI is served over HTTPS, "" when it is not.
func (g *Gateway) HTTPSURL() string {
	if g.tlsLn == nil {
		return ""
	}
	return "https://" + g.tlsLn.Addr().String() + "/"
}

func (g *Gateway) wantSim() bool {
	switch g.cfg.Sim.Mode {
	case "on":
		return true
	case "off":
		return false
	}
	if len(g.cfg.Serial.Boards) > 0 {
		return false
	}
	found, err := g.opts.Discover()
	if err != nil {
		g.log.Warn("cannot list USB serial ports", "err", err)
	}
	return len(found) == 0
}

func (g *Gateway) startSim(ctx context.Context) error {
	dataDir, err := filepath.Abs(g.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("start simulated board: %w", err)
	}
	b, err := fakeboard.New(fakeboard.Config{
		BoardID: "simulated-1",
		Link:    filepath.Join(dataDir, "sim-board"),
		Logger:  g.log.With("component", "sim"),
	})
	if err != nil {
		return fmt.Errorf("start simulated board: %w", err)
	}
	g.sim = b
	g.boards.AddPort(b.Path())
	g.log.Warn("no board configured or found: started a simulated board; its presses are counted like real ones",
		"device", b.Path(), "rate", g.cfg.Sim.Rate)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := b.Run(ctx, g.cfg.Sim.Rate, g.cfg.Sim.GreenShare, nil); err != nil && !errors.Is(err, fakeboard.ErrClosed) {
			g.log.Error("simulated board stopped", "err", err)
		}
	}()
	return nil
}

// URL is where the page is served.
func (g *Gateway) URL() string {
	return "http://" + g.ln.Addr().String() + "/"
}

// SimDevice is the simulated board's device path, "" without one.
func (g *Gateway) SimDevice() string {
	if g.sim == nil {
		return ""
	}
	return g.sim.Path()
}

// WritePrometheus writes the metrics (for tests and the web server). They
// are gathered afresh each time: the cluster's join when the box is paired.
func (g *Gateway) WritePrometheus(w io.Writer) { g.newMetrics().WritePrometheus(w) }

// Status gathers what the page shows. Per-colour figures come only from
// closed days: the store refuses anything else.
func (g *Gateway) Status(ctx context.Context) (web.Status, error) {
	now := g.opts.Now()
	site, loc := g.site()
	today := store.DayOf(now, loc)
	st := web.Status{
		Site:      site.Name,
		TimeZone:  zoneName(loc, now),
		Today:     string(today),
		Simulated: g.sim != nil,
		Clock: web.Clock{
			Set:       g.intake.ClockSet(),
			Now:       now.In(loc).Format("2006-01-02 15:04 MST"),
			NotBefore: g.cfg.Clock.NotBefore,
			Refused:   g.intake.Stats().ClockRefused,
		},
	}
	var err error
	if st.TodayTotal, err = g.store.DayTotal(today); err != nil {
		return st, err
	}
	days, err := g.store.ClosedDays(today.AddDays(-7), today)
	if err != nil {
		return st, err
	}
	for _, d := range slices.Backward(days) {
		st.ClosedDays = append(st.ClosedDays, web.ClosedDay{
			Day: string(d.Day), Green: web.Cell(d.Green), Red: web.Cell(d.Red), Total: web.Cell(d.Total()),
		})
	}
	records, err := g.store.Boards()
	if err != nil {
		return st, err
	}
	admins, err := g.store.BoardAdmins()
	if err != nil {
		return st, err
	}
	simPath := g.SimDevice()
	for _, b := range g.boards.Boards() {
		a := admins[b.BoardID]
		st.Boards = append(st.Boards, web.Board{
			Path:          b.Path,
			BoardID:       b.BoardID,
			Firmware:      b.Firmware,
			Connected:     b.Connected,
			Simulated:     simPath != "" && b.Path == simPath,
			LastHeartbeat: b.LastHeartbeat,
			Unacked:       b.Unacked,
			FramesDropped: b.FramesDropped,
			Suppressed:    records[b.BoardID].Suppressed,
			Reopens:       b.Reopens,
			LastError:     b.LastError,
			Name:          a.Name,
			Approved:      a.Approved || g.cfg.Serial.AutoApprove,
			TestMode:      a.TestMode,
			Unapproved:    g.intake.BoardStats(b.BoardID).Unapproved,
		})
	}
	is := g.intake.Stats()
	if !st.Clock.Set {
		st.Problems = append(st.Problems, "The clock is not set: presses are held on the boards until it is.")
	}
	if is.LastError != "" {
		st.Problems = append(st.Problems, "Presses cannot be stored: "+is.LastError+". They stay on the boards and are retried.")
	}
	if c, r := g.replication(); c != nil {
		st.Cluster = g.clusterStatus(c, now)
		st.Index = g.indexStatus(c, r)
		if st.Index.LastError != "" {
			st.Problems = append(st.Problems, "Uploading to the index failed: "+st.Index.LastError+". Releases wait in the cluster and are retried.")
		}
		// A first election takes a few election timeouts: only then is a
		// missing leader a problem worth a red banner and a failing /healthz.
		if !st.Cluster.LeaderKnown && now.Sub(c.Status().Opened) > 4*g.cfg.Cluster.ElectionTimeout.Duration {
			st.Problems = append(st.Problems, "No cluster leader is reachable: this office keeps counting and catches up when the link is back.")
		}
	}
	st.Healthy = len(st.Problems) == 0
	return st, nil
}

// Close shuts down in order: stop serving, stop reading boards, stop the
// simulated board, let the intake finish its batch, close the store. It
// waits for every goroutine and is safe to call twice.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		var errs []error
		if g.web != nil {
			errs = append(errs, g.web.Close())
		}
		for _, ln := range []net.Listener{g.ln, g.tlsLn, g.sockLn} {
			if ln != nil {
				ln.Close() // a no-op once the server has closed it
			}
		}
		if g.cancel != nil {
			g.cancel()
		}
		if g.boards != nil {
			errs = append(errs, g.boards.Close())
		}
		g.wg.Wait()
		if c, _ := g.replication(); c != nil {
			errs = append(errs, c.Close())
		}
		if g.sim != nil {
			errs = append(errs, g.sim.Close())
		}
		if g.intake != nil {
			errs = append(errs, g.intake.Close())
		}
		if g.store != nil {
			errs = append(errs, g.store.Close())
		}
		if g.acc != nil {
			errs = append(errs, g.acc.Close())
		}
		// The guard's pins stay: enforcement outlives this process.
		if g.egress != nil && g.egress.g != nil {
			errs = append(errs, g.egress.g.Close())
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

// zoneName names loc for people: "Local" says nothing, its abbreviation does.
func zoneName(loc *time.Location, now time.Time) string {
	if loc == time.Local {
		return now.In(loc).Format("MST")
	}
	return loc.String()
}
