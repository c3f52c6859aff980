package guard

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"off", ModeOff, false},
		{"monitor", ModeMonitor, false},
		{"enforce", ModeEnforce, false},
		{"", 0, true},
		{"Enforce", 0, true},
		{"on", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseMode(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil && got.String() != tt.in {
				t.Fatalf("ParseMode(%q).String() = %q", tt.in, got.String())
			}
		})
	}
	if s := Mode(7).String(); s != "Mode(7)" {
		t.Fatalf("Mode(7).String() = %q", s)
	}
}

func TestDestString(t *testing.T) {
	tests := []struct {
		d    Dest
		want string
	}{
		{Dest{netip.MustParseAddr("10.0.0.1"), 443, "tcp"}, "tcp 10.0.0.1:443"},
		{Dest{netip.MustParseAddr("fd00::1"), 0, ""}, "any [fd00::1]:*"},
		{Dest{netip.MustParseAddr("192.0.2.9"), 53, "udp"}, "udp 192.0.2.9:53"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("Dest%+v.String() = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// The key form puts IPv4 in IPv4-mapped IPv6, and reads back as IPv4.
func TestAddrKeyForm(t *testing.T) {
	for _, s := range []string{"10.99.0.1", "fd99::1", "::1"} {
		a := netip.MustParseAddr(s)
		k := addr16(a)
		if got := addrFrom16(k); got != a {
			t.Errorf("addrFrom16(addr16(%v)) = %v", a, got)
		}
	}
	v4 := addr16(netip.MustParseAddr("10.99.0.1"))
	mapped := addr16(netip.MustParseAddr("::ffff:10.99.0.1"))
	if v4 != mapped {
		t.Errorf("addr16(10.99.0.1) = %x, want the same key as ::ffff:10.99.0.1 (%x)", v4, mapped)
	}
}

func TestSort(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	flows := []Flow{{Addr: a, Bytes: 10}, {Addr: c, Bytes: 30}, {Addr: b, Bytes: 30}}
	sortFlows(flows)
	if got := []netip.Addr{flows[0].Addr, flows[1].Addr, flows[2].Addr}; !slices.Equal(got, []netip.Addr{b, c, a}) {
		t.Errorf("sortFlows order = %v, want most bytes first, then by address", got)
	}
	now := time.Now()
	ds := []Denial{{Dest: Dest{Addr: a}, LastSeen: now.Add(-time.Minute)}, {Dest: Dest{Addr: b}, LastSeen: now}}
	sortDenials(ds)
	if ds[0].Dest.Addr != b {
		t.Errorf("sortDenials put %v first, want the most recent (%v)", ds[0].Dest.Addr, b)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Mode: ModeEnforce, Cgroup: "/sys/fs/cgroup/unified/pulsegate", PinDir: "/sys/fs/bpf/pulsegate"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	for _, bad := range []Config{
		{Mode: ModeEnforce, PinDir: ok.PinDir},
		{Mode: ModeEnforce, Cgroup: ok.Cgroup},
		{Mode: Mode(3), Cgroup: ok.Cgroup, PinDir: ok.PinDir},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}

// A box that cannot guard (here: the cgroup is not on cgroup v2, or the OS
// has no BPF at all) must say so with ErrUnavailable, so the daemon can run
// on without the guard.
func TestOpenUnavailable(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(Config{Mode: ModeEnforce, Cgroup: filepath.Join(dir, "cg"), PinDir: filepath.Join(dir, "pins")})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open outside cgroup v2 = %v, want ErrUnavailable", err)
	}
	t.Logf("Open: %v", err)
}

// Without privileges the guard is unavailable, not an error to stop for.
func TestOpenUnprivileged(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: the privileged tests cover Open")
	}
	_, err := Open(Config{Mode: ModeEnforce, Cgroup: "/sys/fs/cgroup/unified/pulsegate-unprivileged", PinDir: "/sys/fs/bpf/pulsegate-unprivileged"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open without root = %v, want ErrUnavailable", err)
	}
	t.Logf("Open: %v", err)
}
