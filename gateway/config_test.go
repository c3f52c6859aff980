package gateway

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validConfig is DefaultConfig with a fixed time zone, so the tests do not
// depend on the machine's.
func validConfig() Config {
	c := DefaultConfig()
	c.Site.TimeZone = "Europe/Berlin"
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // substrings of the error; nil: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"local time zone", func(c *Config) { c.Site.TimeZone = "Local" }, nil},
		{"absolute boards", func(c *Config) { c.Serial.Boards = []string{"/dev/ttyACM0", "/dev/serial/by-id/usb-x"} }, nil},
		{"limits off", func(c *Config) { c.Limits = LimitsConfig{} }, nil},
		{"stricter not_before", func(c *Config) { c.Clock.NotBefore = "2026-01-01" }, nil},
		{"64-byte site name", func(c *Config) { c.Site.Name = strings.Repeat("n", 64) }, nil},
		{"sim off ignores nothing else", func(c *Config) { c.Sim.Mode = "off" }, nil},

		{"no data_dir", func(c *Config) { c.DataDir = "" }, []string{"data_dir"}},
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, []string{"listen", `"localhost"`}},
		{"log_level", func(c *Config) { c.LogLevel = "verbose" }, []string{"log_level", `"verbose"`}},
		{"empty site.name", func(c *Config) { c.Site.Name = "" }, []string{"site.name"}},
		{"blank site.name", func(c *Config) { c.Site.Name = "   " }, []string{"site.name"}},
		{"long site.name", func(c *Config) { c.Site.Name = strings.Repeat("n", 65) }, []string{"site.name"}},
		{"no site.time_zone", func(c *Config) { c.Site.TimeZone = "" }, []string{"site.time_zone"}},
		{"unknown site.time_zone", func(c *Config) { c.Site.TimeZone = "Mars/Olympus_Mons" }, []string{"site.time_zone", "Mars/Olympus_Mons"}},
		{"relative serial.boards", func(c *Config) { c.Serial.Boards = []string{"/dev/ttyACM0", "ttyACM1"} }, []string{"serial.boards", `"ttyACM1"`}},
		{"short serial.hung_timeout", func(c *Config) { c.Serial.HungTimeout = Duration{500 * time.Millisecond} }, []string{"serial.hung_timeout"}},
		{"zero serial.baud_rate", func(c *Config) { c.Serial.BaudRate = 0 }, []string{"serial.baud_rate"}},
		{"negative serial.baud_rate", func(c *Config) { c.Serial.BaudRate = -9600 }, []string{"serial.baud_rate"}},
		{"clock.not_before not a date", func(c *Config) { c.Clock.NotBefore = "last tuesday" }, []string{"clock.not_before"}},
		{"clock.not_before too early", func(c *Config) { c.Clock.NotBefore = "2024-12-31" }, []string{"clock.not_before", "stricter"}},
		// The limits' errors come from intake.LimitConfig.Validate, which
		// knows the settings but not their keys.
		{"negative limits.button_burst", func(c *Config) { c.Limits.ButtonBurst = -1 }, []string{"limits", "burst"}},
		{"zero limits.button_interval", func(c *Config) { c.Limits.ButtonInterval = Duration{} }, []string{"limits", "button interval"}},
		{"zero limits.board_interval", func(c *Config) { c.Limits.BoardInterval = Duration{} }, []string{"limits", "board interval"}},
		{"sim.mode", func(c *Config) { c.Sim.Mode = "sometimes" }, []string{"sim.mode", `"sometimes"`}},
		{"zero sim.rate", func(c *Config) { c.Sim.Rate = 0 }, []string{"sim.rate"}},
		{"huge sim.rate", func(c *Config) { c.Sim.Rate = 1001 }, []string{"sim.rate"}},
		{"infinite sim.rate", func(c *Config) { c.Sim.Rate = math.Inf(1) }, []string{"sim.rate"}},
		{"NaN sim.rate", func(c *Config) { c.Sim.Rate = math.NaN() }, []string{"sim.rate"}},
		{"negative sim.green_share", func(c *Config) { c.Sim.GreenShare = -0.1 }, []string{"sim.green_share"}},
		{"sim.green_share over 1", func(c *Config) { c.Sim.GreenShare = 1.1 }, []string{"sim.green_share"}},
		{"NaN sim.green_share", func(c *Config) { c.Sim.GreenShare = math.NaN() }, []string{"sim.green_share"}},
		{"weekly releases at a smaller ε", func(c *Config) { c.Release.Period, c.Release.Epsilon = "week", "0.2" }, nil},
		{"stricter release rules", func(c *Config) {
			c.Release.K, c.Release.Sensitivity, c.Release.YearCap = 20, 40, "6"
		}, nil},
		{"daily releases", func(c *Config) { c.Release.Period = "day" }, []string{"release.period", `"day"`}},
		{"ε over 1", func(c *Config) { c.Release.Epsilon = "1.5" }, []string{"release.epsilon", "may not exceed"}},
		{"ε as a word", func(c *Config) { c.Release.Epsilon = "lots" }, []string{"release.epsilon"}},
		{"zero ε", func(c *Config) { c.Release.Epsilon = "0" }, []string{"epsilon", "positive"}},
		{"year cap over 12", func(c *Config) { c.Release.YearCap = "13" }, []string{"release.year_cap", "may not exceed"}},
		{"k below 10", func(c *Config) { c.Release.K = 5 }, []string{"K 5 below the minimum 10"}},
		{"release.interval too short", func(c *Config) { c.Release.Interval = Duration{time.Millisecond} }, []string{"release.interval"}},
		{"region with a space", func(c *Config) { c.Site.Region = "eu west" }, []string{"site.region", `"eu west"`}},
		{"empty region", func(c *Config) { c.Site.Region = "" }, []string{"site.region"}},
		{"every problem at once", func(c *Config) {
			c.DataDir, c.LogLevel, c.Site.Name, c.Serial.BaudRate, c.Sim.Mode = "", "loud", "", 0, "maybe"
		}, []string{"data_dir", "log_level", "site.name", "serial.baud_rate", "sim.mode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to name %q", err, w)
				}
			}
		})
	}
}

// writeConfig writes a config file into a fresh directory.
func writeConfig(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "pulsegate.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestLoadConfigFile(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    func(*Config) // applied to DefaultConfig; nil when an error is wanted
		wantErr []string
	}{
		{
			name: "empty file keeps the defaults",
			file: "",
			want: func(*Config) {},
		},
		{
			name: "every section",
			file: `
data_dir = "/var/lib/pulsegate"
listen = "0.0.0.0:80"
log_level = "debug"

[site]
name = "Berlin office"
time_zone = "Europe/Berlin"

[serial]
boards = ["/dev/serial/by-id/usb-Pulsegate_Board_1"]
hung_timeout = "1m30s"
baud_rate = 57600
auto_approve = true

[clock]
not_before = "2026-02-01"

[limits]
button_burst = 2
button_interval = "2.5s"
board_burst = 0
board_interval = "750ms"

[sim]
mode = "off"
rate = 2.5
green_share = 0.25
`,
			want: func(c *Config) {
				c.DataDir, c.Listen, c.LogLevel = "/var/lib/pulsegate", "0.0.0.0:80", "debug"
				c.Site = SiteConfig{Name: "Berlin office", TimeZone: "Europe/Berlin", Region: "default"}
				c.Serial = SerialConfig{Boards: []string{"/dev/serial/by-id/usb-Pulsegate_Board_1"}, HungTimeout: Duration{90 * time.Second}, BaudRate: 57600, AutoApprove: true}
				c.Clock.NotBefore = "2026-02-01"
				c.Limits = LimitsConfig{ButtonBurst: 2, ButtonInterval: Duration{2500 * time.Millisecond}, BoardInterval: Duration{750 * time.Millisecond}}
				c.Sim = SimConfig{Mode: "off", Rate: 2.5, GreenShare: 0.25}
			},
		},
		{
			name: "a partial file changes only what it names",
			file: "[serial]\nhung_timeout = \"2s\"\n",
			want: func(c *Config) { c.Serial.HungTimeout = Duration{2 * time.Second} },
		},
		{name: "unknown top-level key", file: "lsten = \"127.0.0.1:80\"\n", wantErr: []string{"unknown keys", "lsten"}},
		{name: "unknown key in a section", file: "[site]\nnmae = \"Office\"\n", wantErr: []string{"unknown keys", "site.nmae"}},
		{name: "unknown section", file: "[web]\nport = 80\n", wantErr: []string{"unknown keys", "web.port"}},
		{name: "every unknown key", file: "colour = 1\n[sim]\nspeed = 2\n", wantErr: []string{"colour", "sim.speed"}},
		{name: "bad duration", file: "[serial]\nhung_timeout = \"soon\"\n", wantErr: []string{"hung_timeout", `"soon"`}},
		{name: "duration without unit", file: "[limits]\nbutton_interval = \"3\"\n", wantErr: []string{"button_interval", `"3"`}},
		{name: "wrong type", file: "[serial]\nbaud_rate = \"fast\"\n", wantErr: []string{"baud_rate"}},
		{name: "not TOML", file: "listen = \n", wantErr: []string{"read config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.file)
			got := DefaultConfig()
			err := LoadConfigFile(path, &got)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadConfigFile(%q) = nil, want an error naming %q", tt.file, tt.wantErr)
				}
				for _, w := range append([]string{path}, tt.wantErr...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("LoadConfigFile(%q) = %q, want it to name %q", tt.file, err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfigFile(%q) = %v", tt.file, err)
			}
			want := DefaultConfig()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("LoadConfigFile(%q) =\n%+v\nwant\n%+v", tt.file, got, want)
			}
		})
	}
}

func TestLoadConfigFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.toml")
	cfg := DefaultConfig()
	err := LoadConfigFile(path, &cfg)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadConfigFile(%q) = %v, want an error naming the file", path, err)
	}
}

// FuzzLoadConfig feeds any bytes through the configuration path the daemon
// takes at start: read the file, then validate. Neither may panic, and a
// configuration both accept must be usable.
func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"listen = \"127.0.0.1:8080\"\n[site]\nname = \"Office\"\ntime_zone = \"UTC\"\n",
		"[serial]\nboards = [\"/dev/ttyACM0\"]\nhung_timeout = \"15s\"\n",
		"[limits]\nbutton_burst = 3\nbutton_interval = \"3s\"\n",
		"[sim]\nmode = \"on\"\nrate = nan\ngreen_share = inf\n",
		"[clock]\nnot_before = 2026-01-01\n",
		"serial = 1\n",
		"[[site]]\nname = 1\n",
		"a.b.c = {d = [1, {e = 2}]}\n",
		"[serial]\nhung_timeout = \"9223372036854775807ns\"\n",
		"\xef\xbb\xbf[site]\nname = \"\\u0000\"\n",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "fuzz.toml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		if err := LoadConfigFile(path, &cfg); err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		if _, err := cfg.Location(); err != nil {
			t.Fatalf("valid config without a time zone: %v", err)
		}
		if _, err := cfg.NotBefore(); err != nil {
			t.Fatalf("valid config without not_before: %v", err)
		}
	})
}
