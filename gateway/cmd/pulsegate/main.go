// Command pulsegate is the appliance's one binary.
//
//	pulsegate run    run the gateway (boards, durable counts, local page)
//	pulsegate sim    run a simulated button board on a pty
//
// main only maps run's error to an exit code.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // the appliance image has no zoneinfo: embed it

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
	"github.com/pulsegate/pulsegate/gateway"
)

const usage = `usage: pulsegate <command> [flags]

commands:
  run           run the gateway: read the boards, keep durable counts, serve the page
  sim           run a simulated button board on a pty and print its device path
  init          make this box the first office of a new cluster (creates its CA)
  token create  print a one-time join token for a new office (asks the running box)
  join <token>  pair this box with an existing cluster
  enrol <token> enrol the cluster with the central index (asks the running box)
  index         run the central index, and its operator commands (pulsegate index -h)
  demo          run three offices on this machine, paired, each with a simulated board

Run "pulsegate <command> -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "pulsegate:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "run":
		return runGateway(ctx, args[1:], stdout, stderr)
	case "sim":
		return runSim(ctx, args[1:], stdout, stderr)
	case "init":
		return runInit(args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "join":
		return runJoin(ctx, args[1:], stdout, stderr)
	case "enrol":
		return runEnrol(ctx, args[1:], stdout, stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			return errors.New(`usage: pulsegate token create [--data-dir data]`)
		}
		return runTokenCreate(ctx, args[2:], stdout, stderr)
	case "index":
		return runIndex(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := gateway.DefaultConfig()
	var (
		configPath = fs.String("config", "", "TOML configuration `file` (flags override it)")
		dataDir    = fs.String("data-dir", def.DataDir, "`directory` for the count store")
		listen     = fs.String("listen", def.Listen, "`address` of the page, /healthz and /metrics")
		siteName   = fs.String("site-name", def.Site.Name, "the office's `name`")
		timeZone   = fs.String("timezone", def.Site.TimeZone, "the office's IANA time `zone`, e.g. Europe/Berlin")
		simMode    = fs.String("sim", def.Sim.Mode, "simulated board: auto (when no board is configured or found), on, off")
		simRate    = fs.Float64("sim-rate", def.Sim.Rate, "simulated presses per second")
		logLevel   = fs.String("log-level", def.LogLevel, "debug, info, warn or error")
		notBefore  = fs.String("clock-not-before", def.Clock.NotBefore, "a clock before this `date` is not set (presses wait)")
		noLimits   = fs.Bool("no-abuse-limit", false, "count every press (disables the abuse limit; for tests and benchmarks)")
		approveAll = fs.Bool("auto-approve-boards", def.Serial.AutoApprove, "count every board's presses without an admin approving the board on the page (development, tests, demos)")
		region     = fs.String("region", def.Site.Region, "the office's `region` (voters are spread over regions)")
		peerListen = fs.String("cluster-listen", def.Cluster.Listen, "`address` of the peer port (raft and RPC over mutual TLS)")
		peerAdv    = fs.String("cluster-advertise", "", "`address` other offices dial for the peer port (default: derived from --cluster-listen)")
		gossip     = fs.String("gossip-listen", def.Cluster.GossipListen, "`address` of the gossip (membership) port")
		guardMode  = fs.String("guard", def.Guard.Mode, "egress guard: off, monitor or enforce")
		guardCg    = fs.String("guard-cgroup", def.Guard.Cgroup, "cgroup v2 `directory` the guard confines this process to (self: the one it was started in)")
		guardPins  = fs.String("guard-pin-dir", def.Guard.PinDir, "bpffs `directory` for the guard's pinned maps and links")
		httpsAddr  = fs.String("https-listen", def.Web.HTTPSListen, "`address` of the HTTPS UI (default: derived from --listen; off: none)")
		relEvery   = fs.Duration("release-interval", def.Release.Interval.Duration, "how often the cluster's leader releases closed periods and uploads them to the index")
		boards     stringList
	)
	fs.Var(&boards, "board", "serial `device` of a board, repeatable (default: discover USB serial ports)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}

	cfg := def
	if *configPath != "" {
		if err := gateway.LoadConfigFile(*configPath, &cfg); err != nil {
			return err
		}
	}
	// Flags given on the command line win over the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data-dir":
			cfg.DataDir = *dataDir
		case "listen":
			cfg.Listen = *listen
		case "site-name":
			cfg.Site.Name = *siteName
		case "timezone":
			cfg.Site.TimeZone = *timeZone
		case "sim":
			cfg.Sim.Mode = *simMode
		case "sim-rate":
			cfg.Sim.Rate = *simRate
		case "log-level":
			cfg.LogLevel = *logLevel
		case "clock-not-before":
			cfg.Clock.NotBefore = *notBefore
		case "board":
			cfg.Serial.Boards = boards
		case "region":
			cfg.Site.Region = *region
		case "cluster-listen":
			cfg.Cluster.Listen = *peerListen
		case "cluster-advertise":
			cfg.Cluster.Advertise = *peerAdv
		case "gossip-listen":
			cfg.Cluster.GossipListen = *gossip
		case "guard":
			cfg.Guard.Mode = *guardMode
		case "guard-cgroup":
			cfg.Guard.Cgroup = *guardCg
		case "guard-pin-dir":
			cfg.Guard.PinDir = *guardPins
		case "https-listen":
			cfg.Web.HTTPSListen = *httpsAddr
		case "release-interval":
			cfg.Release.Interval.Duration = *relEvery
		case "auto-approve-boards":
			cfg.Serial.AutoApprove = *approveAll
		case "no-abuse-limit":
			if *noLimits {
				cfg.Limits.ButtonBurst, cfg.Limits.BoardBurst = 0, 0
			}
		}
	})

	log := newLogger(stderr, cfg.LogLevel)
	now, err := testClock(log)
	if err != nil {
		return err
	}
	g, err := gateway.Open(ctx, cfg, gateway.Options{Logger: log, Now: now})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Pulsegate is running. Open %s\n", g.URL())
	if u := g.HTTPSURL(); u != "" {
		fmt.Fprintf(stdout, "From other machines: %s (certificate fingerprint SHA-256 %s)\n", u, g.TLSFingerprint())
	}
	if dev := g.SimDevice(); dev != "" {
		fmt.Fprintf(stdout, "No board found: counting presses from a simulated board at %s\n", dev)
	}
	<-ctx.Done()
	log.Info("shutting down")
	return g.Close()
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the config
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		rate        = fs.Float64("rate", 1, "presses per second (Poisson)")
		greenShare  = fs.Float64("green-share", 0.6, "share of green presses, 0 to 1")
		noise       = fs.Float64("noise", 0, "probability of line noise before each frame, 0 to 1")
		link        = fs.String("link", "", "keep a symlink at this `path` pointing at the board's pty (a stable name across replugs)")
		boardID     = fs.String("board-id", "", "the board's id (default: random)")
		unplugEvery = fs.Duration("unplug-every", 0, "unplug the board this often and replug it 2s later (0: never)")
		rebootEvery = fs.Duration("reboot-every", 0, "power-cycle the board this often (0: never); presses it still holds are lost, as on real hardware")
		duration    = fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate < 0 || *greenShare < 0 || *greenShare > 1 || *noise < 0 || *noise > 1 {
		return errors.New("sim: rate must be ≥ 0, green-share and noise in [0, 1]")
	}
	log := newLogger(stderr, "info")
	b, err := fakeboard.New(fakeboard.Config{BoardID: *boardID, Link: *link, NoiseRate: *noise, Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stdout, "Simulated board at %s\nRun: pulsegate run --board %s\n", b.Path(), b.Path())
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if *rate == 0 {
			<-ctx.Done() // a silent board: presses only from its resends
			return
		}
		if err := b.Run(ctx, *rate, *greenShare, nil); err != nil {
			log.Error("simulated presses stopped", "err", err)
		}
	}()
	unplug, stopUnplug := ticker(*unplugEvery)
	defer stopUnplug()
	reboot, stopReboot := ticker(*rebootEvery)
	defer stopReboot()
	status := time.NewTicker(10 * time.Second)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			st := b.Stats()
			fmt.Fprintf(stdout, "pressed %d, acknowledged %d, lost %d, pending %d\n", st.Pressed, st.Acked, st.Lost, st.Pending)
			return nil
		case <-unplug:
			log.Info("unplugging the board")
			if err := b.Unplug(); err != nil {
				return err
			}
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				continue
			}
			if err := b.Replug(); err != nil {
				return err
			}
			log.Info("replugged the board", "device", b.Path())
		case <-reboot:
			log.Info("power-cycling the board")
			b.Reboot()
		case <-status.C:
			st := b.Stats()
			log.Info("board", "pressed", st.Pressed, "acknowledged", st.Acked, "pending", st.Pending)
		}
	}
}

// ticker returns a channel that ticks every d, or never for d ≤ 0, and
// its stop function.
func ticker(d time.Duration) (<-chan time.Time, func()) {
	if d <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// dataDirFlag reads --data-dir as run does.
func dataDirFlag(fs *flag.FlagSet) *string {
	return fs.String("data-dir", gateway.DefaultConfig().DataDir, "`directory` of the box's data (as for run)")
}

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := dataDirFlag(fs)
	customer := fs.String("customer", "", "the customer's `name`: it labels the cluster")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := gateway.DefaultConfig()
	cfg.DataDir = *dataDir
	p, err := cluster.Init(cfg.ClusterDir(), *customer, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Initialised a new cluster for %q. This office is site %s.\n", p.Customer, p.SiteID)
	fmt.Fprintf(stdout, "Start it with: pulsegate run --data-dir %s\nThen add offices with: pulsegate token create\n", *dataDir)
	return nil
}

func runJoin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := dataDirFlag(fs)
	// The token comes first on the command line; flags may follow it.
	var token string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		token, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if token == "" && fs.NArg() == 1 {
		token = fs.Arg(0)
	}
	if token == "" {
		return errors.New("usage: pulsegate join <token> [--data-dir DIR]")
	}
	cfg := gateway.DefaultConfig()
	cfg.DataDir = *dataDir
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	p, err := cluster.Join(ctx, cfg.ClusterDir(), token, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Joined the cluster of %q as site %s.\nStart it with: pulsegate run --data-dir %s\n", p.Customer, p.SiteID, *dataDir)
	return nil
}

func runTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := dataDirFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok, exp, err := createToken(ctx, *dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", tok)
	fmt.Fprintf(stderr, "One-time join token, valid until %s. On the new office: pulsegate join <token>, or paste it in its browser setup.\n", exp.Local().Format(time.RFC1123))
	return nil
}

// adminClient talks to the running box through its admin socket in
// dataDir: only the daemon's user can open it.
func adminClient(dataDir string) (*http.Client, string) {
	cfg := gateway.DefaultConfig()
	cfg.DataDir = dataDir
	sock := cfg.AdminSocket()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	return &http.Client{Transport: tr}, sock
}

// askBox sends a request to the running box's admin socket and decodes its
// JSON answer into out.
func askBox(ctx context.Context, dataDir, method, path string, body io.Reader, out any) error {
	client, sock := adminClient(dataDir)
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://box"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("ask the box through %s: %w (is pulsegate run running with this --data-dir?)", sock, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("bad answer from the box: %w", err)
	}
	return nil
}

// createToken asks the running box in dataDir for a join token.
func createToken(ctx context.Context, dataDir string) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	var out struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := askBox(ctx, dataDir, http.MethodPost, "/api/cluster/tokens", nil, &out); err != nil {
		return "", time.Time{}, fmt.Errorf("create token: %w", err)
	}
	return out.Token, out.Expires, nil
}
