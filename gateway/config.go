package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/pulsegate/pulsegate/gateway/intake"
	"github.com/pulsegate/pulsegate/sync/anon"
)

// Duration is a time.Duration that TOML reads from strings such as "15s".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Config is the appliance's configuration: a TOML file, then flags on top.
// DefaultConfig documents every default.
type Config struct {
	// DataDir holds the count store and everything else the box keeps.
	DataDir string `toml:"data_dir"`
	// Listen is the address of the page, /healthz and /metrics. The default
	// is loopback: nothing is served to the network unless asked.
	Listen string `toml:"listen"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`

	Site    SiteConfig    `toml:"site"`
	Serial  SerialConfig  `toml:"serial"`
	Clock   ClockConfig   `toml:"clock"`
	Limits  LimitsConfig  `toml:"limits"`
	Sim     SimConfig     `toml:"sim"`
	Cluster ClusterConfig `toml:"cluster"`
	Release ReleaseConfig `toml:"release"`
	Web     WebConfig     `toml:"web"`
	Guard   GuardConfig   `toml:"guard"`
}

// GuardConfig is the egress guard: with it on, this box can only reach its
// paired offices, the enrolled index and the DNS and NTP servers below.
type GuardConfig struct {
	// Mode is off, monitor (count and show, never refuse) or enforce (the
	// appliance image's setting). Without BPF the box runs with the guard
	// off and says so.
	Mode string `toml:"mode"`
	// Cgroup is the cgroup v2 directory the daemon moves into and guards;
	// "self" guards the cgroup the daemon was started in (systemd with
	// Delegate=yes).
	Cgroup string `toml:"cgroup"`
	// PinDir is the bpffs directory where the guard's maps and links are
	// pinned, so that a restart leaves no gap.
	PinDir string `toml:"pin_dir"`
	// DNS servers the box may ask; empty: the nameservers of
	// /etc/resolv.conf.
	DNS []string `toml:"dns"`
	// NTP servers (names or addresses) the box may ask the time.
	NTP []string `toml:"ntp"`
}

// WebConfig is how the UI is served. Plain HTTP (Config.Listen) serves
// loopback clients and redirects everyone else to HTTPS.
type WebConfig struct {
	// HTTPSListen is the HTTPS address. Empty: Listen's host with port 443
	// when Listen's port is 80, 8443 otherwise (0 stays 0, for tests);
	// "off": no HTTPS (loopback development only).
	HTTPSListen string `toml:"https_listen"`
	// Hosts are extra names or addresses for the certificate (it always
	// covers localhost, the hostname and the box's addresses when made).
	Hosts []string `toml:"hosts"`
	// MetricsToken lets scrapers outside the box read /metrics with
	// "Authorization: Bearer <token>"; loopback needs none.
	MetricsToken string `toml:"metrics_token"`
}

// ReleaseConfig says what leaves the cluster for the central index, and how
// often. The leader applies its own settings to every office's releases;
// keep them the same on every box. Every value may only be made stricter
// than its default, except the period, which may be a week.
type ReleaseConfig struct {
	// Period is "month" (default) or "week" (ISO weeks). Never finer.
	Period string `toml:"period"`
	// K: a bucket whose noisy total is below K is released as suppressed.
	K uint64 `toml:"k"`
	// Epsilon is the privacy budget one release spends, a decimal ("1.0").
	Epsilon string `toml:"epsilon"`
	// Sensitivity is the most presses one person can add to a bucket; 0 is
	// one per working day of the period.
	Sensitivity uint64 `toml:"sensitivity"`
	// YearCap bounds the ε an office spends per calendar year; releasing
	// stops (fails closed) when the next release would pass it.
	YearCap string `toml:"year_cap"`
	// Interval between release and upload rounds on the leader.
	Interval Duration `toml:"interval"`
}

// ClusterConfig says how this office talks to the customer's other offices.
// The cluster starts only once the box is paired (`pulsegate init` or
// `pulsegate join`); until then the office counts on its own.
type ClusterConfig struct {
	// Listen is the peer port (raft and forwarding RPC over mutual TLS);
	// Advertise is the address other offices dial (default: Listen's).
	Listen    string `toml:"listen"`
	Advertise string `toml:"advertise"`
	// GossipListen and GossipAdvertise are the membership (gossip) port.
	GossipListen    string `toml:"gossip_listen"`
	GossipAdvertise string `toml:"gossip_advertise"`
	// PushInterval: this office's counts are pushed at most this often.
	PushInterval Duration `toml:"push_interval"`
	// MaxVoters is 3 or 5: the other offices are non-voters.
	MaxVoters int `toml:"max_voters"`
	// DeadTimeout: an office silent this long is removed from the cluster.
	DeadTimeout Duration `toml:"dead_timeout"`
	// Raft timing; WAN defaults.
	HeartbeatTimeout   Duration `toml:"heartbeat_timeout"`
	ElectionTimeout    Duration `toml:"election_timeout"`
	LeaderLeaseTimeout Duration `toml:"leader_lease_timeout"`
	CommitTimeout      Duration `toml:"commit_timeout"`
}

// SiteConfig names the office.
type SiteConfig struct {
	Name     string `toml:"name"`
	TimeZone string `toml:"time_zone"` // IANA name, e.g. "Europe/Berlin"
	Region   string `toml:"region"`    // e.g. "eu-west": voters spread over regions
}

// SerialConfig says where the boards are.
type SerialConfig struct {
	// Boards are device paths, preferably stable ones such as
	// /dev/serial/by-id/usb-…. Empty: discover USB serial ports.
	Boards []string `toml:"boards"`
	// HungTimeout: a board silent this long is reopened.
	HungTimeout Duration `toml:"hung_timeout"`
	BaudRate    int      `toml:"baud_rate"`
	// AutoApprove counts every board's presses without an admin approving
	// the board first (development, tests, demos). Default false: presses
	// of a board not approved on the page are acknowledged, not counted.
	AutoApprove bool `toml:"auto_approve"`
}

// ClockConfig says when the clock counts as set.
type ClockConfig struct {
	// NotBefore (YYYY-MM-DD): a clock showing an earlier date is not set and
	// presses are left unacknowledged. Default 2025-01-01.
	NotBefore string `toml:"not_before"`
}

// LimitsConfig is the abuse limit. A burst of 0 disables that bucket.
type LimitsConfig struct {
	ButtonBurst    int      `toml:"button_burst"`
	ButtonInterval Duration `toml:"button_interval"`
	BoardBurst     int      `toml:"board_burst"`
	BoardInterval  Duration `toml:"board_interval"`
}

// SimConfig controls the simulated board.
type SimConfig struct {
	// Mode: "auto" starts one simulated board when no board is configured
	// and none is found at start; "on" always starts one; "off" never.
	Mode string `toml:"mode"`
	// Rate is presses per second; GreenShare the share of green presses.
	Rate       float64 `toml:"rate"`
	GreenShare float64 `toml:"green_share"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	l := intake.DefaultLimits()
	return Config{
		DataDir:  "data",
		Listen:   "127.0.0.1:8080",
		LogLevel: "info",
		Site:     SiteConfig{Name: "Office", TimeZone: "Local", Region: "default"},
		Serial:   SerialConfig{HungTimeout: Duration{15 * time.Second}, BaudRate: 115200},
		Clock:    ClockConfig{NotBefore: intake.DefaultNotBefore.Format(time.DateOnly)},
		Limits: LimitsConfig{
			ButtonBurst: l.ButtonBurst, ButtonInterval: Duration{l.ButtonInterval},
			BoardBurst: l.BoardBurst, BoardInterval: Duration{l.BoardInterval},
		},
		Sim: SimConfig{Mode: "auto", Rate: 0.5, GreenShare: 0.6},
		Cluster: ClusterConfig{
			Listen:             ":7400",
			GossipListen:       ":7401",
			PushInterval:       Duration{2 * time.Second},
			MaxVoters:          5,
			DeadTimeout:        Duration{72 * time.Hour},
			HeartbeatTimeout:   Duration{5 * time.Second},
			ElectionTimeout:    Duration{5 * time.Second},
			LeaderLeaseTimeout: Duration{2500 * time.Millisecond},
			CommitTimeout:      Duration{100 * time.Millisecond},
		},
		Release: ReleaseConfig{Period: "month", K: anon.MinK, Epsilon: "1", YearCap: "12", Interval: Duration{30 * time.Second}},
		Guard:   GuardConfig{Mode: "off", Cgroup: "/sys/fs/cgroup/unified/pulsegate", PinDir: "/sys/fs/bpf/pulsegate"},
	}
}

// LoadConfigFile reads a TOML file over cfg. Unknown keys are errors: a
// misspelt key silently ignored is a setting the customer thinks they made.
func LoadConfigFile(path string, cfg *Config) error {
	md, err := toml.DecodeFile(path, cfg)
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return fmt.Errorf("read config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: must be set"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: want host:port: %w", c.Listen, err))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	if n := strings.TrimSpace(c.Site.Name); n == "" || len(n) > 64 {
		errs = append(errs, fmt.Errorf("site.name %q: must be 1 to 64 characters", c.Site.Name))
	}
	if _, err := c.Location(); err != nil {
		errs = append(errs, err)
	}
	for _, b := range c.Serial.Boards {
		if !filepath.IsAbs(b) {
			errs = append(errs, fmt.Errorf("serial.boards: %q is not an absolute device path", b))
		}
	}
	if c.Serial.HungTimeout.Duration < time.Second {
		errs = append(errs, fmt.Errorf("serial.hung_timeout %s: must be at least 1s (boards send a heartbeat every 5s)", c.Serial.HungTimeout))
	}
	if c.Serial.BaudRate <= 0 {
		errs = append(errs, fmt.Errorf("serial.baud_rate %d: must be positive", c.Serial.BaudRate))
	}
	if _, err := c.NotBefore(); err != nil {
		errs = append(errs, err)
	}
	if err := c.LimitConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Cluster.MaxVoters != 3 && c.Cluster.MaxVoters != 5 {
		errs = append(errs, fmt.Errorf("cluster.max_voters %d: want 3 or 5", c.Cluster.MaxVoters))
	}
	if c.Cluster.PushInterval.Duration < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("cluster.push_interval %s: must be at least 100ms", c.Cluster.PushInterval))
	}
	for _, a := range []struct{ key, v string }{{"cluster.listen", c.Cluster.Listen}, {"cluster.gossip_listen", c.Cluster.GossipListen}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port: %w", a.key, a.v, err))
		}
	}
	if !regionRE.MatchString(c.Site.Region) {
		errs = append(errs, fmt.Errorf("site.region %q: want 1 to 64 letters, digits, '.', '_' or '-'", c.Site.Region))
	}
	if _, _, err := c.ReleaseRules(); err != nil {
		errs = append(errs, err)
	}
	if h := c.Web.HTTPSListen; h != "" && h != "off" {
		if _, _, err := net.SplitHostPort(h); err != nil {
			errs = append(errs, fmt.Errorf("web.https_listen %q: want host:port or off: %w", h, err))
		}
	}
	if t := c.Web.MetricsToken; t != "" && len(t) < 16 {
		errs = append(errs, errors.New("web.metrics_token: use at least 16 characters"))
	}
	switch c.Guard.Mode {
	case "off", "monitor", "enforce":
	default:
		errs = append(errs, fmt.Errorf("guard.mode %q: want off, monitor or enforce", c.Guard.Mode))
	}
	if c.Guard.Cgroup != "self" && !filepath.IsAbs(c.Guard.Cgroup) {
		errs = append(errs, fmt.Errorf("guard.cgroup %q: want an absolute cgroup v2 directory or self", c.Guard.Cgroup))
	}
	if !filepath.IsAbs(c.Guard.PinDir) {
		errs = append(errs, fmt.Errorf("guard.pin_dir %q: want an absolute bpffs directory", c.Guard.PinDir))
	}
	for _, s := range append(slices.Clone(c.Guard.DNS), c.Guard.NTP...) {
		if s == "" || strings.ContainsAny(s, " /:") && net.ParseIP(s) == nil {
			errs = append(errs, fmt.Errorf("guard: server %q: want a host name or an IP address", s))
		}
	}
	if c.Release.Interval.Duration < time.Second {
		errs = append(errs, fmt.Errorf("release.interval %s: must be at least 1s", c.Release.Interval))
	}
	switch c.Sim.Mode {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("sim.mode %q: want auto, on or off", c.Sim.Mode))
	}
	if !(c.Sim.Rate > 0 && c.Sim.Rate <= 1000) { // written so that NaN fails too
		errs = append(errs, fmt.Errorf("sim.rate %g: want presses per second in (0, 1000]", c.Sim.Rate))
	}
	if !(c.Sim.GreenShare >= 0 && c.Sim.GreenShare <= 1) {
		errs = append(errs, fmt.Errorf("sim.green_share %g: want a share in [0, 1]", c.Sim.GreenShare))
	}
	return errors.Join(errs...)
}

var regionRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ReleaseRules converts the release section; it refuses anything looser
// than the defaults.
func (c Config) ReleaseRules() (anon.Rules, anon.PeriodKind, error) {
	r := c.Release
	var kind anon.PeriodKind
	switch r.Period {
	case "month":
		kind = anon.Monthly
	case "week":
		kind = anon.Weekly
	default:
		return anon.Rules{}, 0, fmt.Errorf("release.period %q: want month or week", r.Period)
	}
	eps, err := anon.ParseEpsilon(r.Epsilon)
	if err != nil {
		return anon.Rules{}, 0, fmt.Errorf("release.epsilon: %w", err)
	}
	capEps, err := anon.ParseEpsilon(r.YearCap)
	if err != nil {
		return anon.Rules{}, 0, fmt.Errorf("release.year_cap: %w", err)
	}
	def := anon.DefaultRules()
	rules := anon.Rules{K: r.K, Epsilon: eps, Sensitivity: r.Sensitivity, YearCap: capEps}
	switch {
	case eps.Cmp(def.Epsilon) > 0:
		return anon.Rules{}, 0, fmt.Errorf("release.epsilon %s: may not exceed %s per release", eps, def.Epsilon)
	case capEps.Cmp(def.YearCap) > 0:
		return anon.Rules{}, 0, fmt.Errorf("release.year_cap %s: may not exceed %s per year", capEps, def.YearCap)
	}
	if err := rules.Validate(); err != nil {
		return anon.Rules{}, 0, fmt.Errorf("release: %w", err)
	}
	return rules, kind, nil
}

// Location loads the office's time zone.
func (c Config) Location() (*time.Location, error) {
	if c.Site.TimeZone == "" {
		return nil, errors.New("site.time_zone: must be set (an IANA name such as Europe/Berlin, or Local)")
	}
	loc, err := time.LoadLocation(c.Site.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("site.time_zone %q: %w", c.Site.TimeZone, err)
	}
	return loc, nil
}

// NotBefore parses clock.not_before.
func (c Config) NotBefore() (time.Time, error) {
	t, err := time.Parse(time.DateOnly, c.Clock.NotBefore)
	if err != nil {
		return time.Time{}, fmt.Errorf("clock.not_before %q: want YYYY-MM-DD", c.Clock.NotBefore)
	}
	if t.Before(intake.DefaultNotBefore) {
		return time.Time{}, fmt.Errorf("clock.not_before %s: may only be stricter than %s", c.Clock.NotBefore, intake.DefaultNotBefore.Format(time.DateOnly))
	}
	return t, nil
}

// LimitConfig converts the abuse limit.
func (c Config) LimitConfig() intake.LimitConfig {
	return intake.LimitConfig{
		ButtonBurst: c.Limits.ButtonBurst, ButtonInterval: c.Limits.ButtonInterval.Duration,
		BoardBurst: c.Limits.BoardBurst, BoardInterval: c.Limits.BoardInterval.Duration,
	}
}

// ClusterDir holds the pairing, the PKI and raft's data.
func (c Config) ClusterDir() string { return filepath.Join(c.DataDir, "cluster") }

// HTTPSListen resolves web.https_listen ("" when HTTPS is off).
func (c Config) HTTPSListen() string {
	switch c.Web.HTTPSListen {
	case "off":
		return ""
	case "":
		host, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return ""
		}
		switch port {
		case "0":
		case "80":
			port = "443"
		default:
			port = "8443"
		}
		return net.JoinHostPort(host, port)
	}
	return c.Web.HTTPSListen
}

// AccountsPath is where the UI's accounts, sessions and audit log live.
func (c Config) AccountsPath() string { return filepath.Join(c.DataDir, "accounts.db") }

// WebTLSDir holds the UI's certificate and key.
func (c Config) WebTLSDir() string { return filepath.Join(c.DataDir, "web") }

// AdminSocket is the command line's way in: a unix socket only the daemon's
// user can open.
func (c Config) AdminSocket() string { return filepath.Join(c.DataDir, "admin.sock") }

// StorePath is where the count store lives.
func (c Config) StorePath() string { return filepath.Join(c.DataDir, "counts.db") }

// ensureDataDir creates the data directory, private to the daemon's user.
func (c Config) ensureDataDir() error {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	return nil
}
