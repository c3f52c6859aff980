// Package guard owns the appliance's eBPF egress guard: BPF programs on the
// appliance's cgroup that refuse, with EPERM, every connection and datagram
// to a destination that is not on the allowlist (the office's peers and the
// central index), count the bytes and packets sent to each destination, and
// record every refused attempt.
//
// The programs and their maps are pinned in bpffs, so they keep enforcing
// while the daemon restarts; see DESIGN.md. Where there is no BPF (not
// Linux, no privileges, no cgroup v2) Open returns an error wrapping
// ErrUnavailable and the appliance runs without the guard.
package guard

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// ErrUnavailable says the guard cannot run here: not Linux, no CAP_BPF and
// CAP_NET_ADMIN, no cgroup v2 or no bpffs. Callers log a warning and run
// without the guard.
var ErrUnavailable = errors.New("egress guard unavailable")

// Mode is what the programs do with a destination that is not allowed.
// Its values are those of the BPF `config` map.
type Mode int

const (
	// ModeOff lets everything through and records nothing.
	ModeOff Mode = iota
	// ModeMonitor lets everything through but records denials and flows:
	// for trying an allowlist before enforcing it.
	ModeMonitor
	// ModeEnforce refuses destinations not on the allowlist with EPERM.
	ModeEnforce
)

var modeNames = [...]string{ModeOff: "off", ModeMonitor: "monitor", ModeEnforce: "enforce"}

// ParseMode parses "off", "monitor" or "enforce".
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("parse guard mode %q: want off, monitor or enforce", s)
}

func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
	return modeNames[m]
}

// Dest is a destination the appliance may reach, or tried to.
type Dest struct {
	Addr netip.Addr
	// Port 0 means any port.
	Port uint16
	// Proto is "tcp", "udp" or "" for any.
	Proto string
}

func (d Dest) String() string {
	port := "*"
	if d.Port != 0 {
		port = strconv.Itoa(int(d.Port))
	}
	proto := d.Proto
	if proto == "" {
		proto = "any"
	}
	host := d.Addr.String()
	if d.Addr.Is6() {
		host = "[" + host + "]"
	}
	return proto + " " + host + ":" + port
}

// Flow is what the appliance sent to one destination address.
type Flow struct {
	Addr     netip.Addr
	Bytes    uint64 // IP packet lengths, headers included
	Packets  uint64
	LastSeen time.Time
}

// Denial is a destination the guard refused (or, in monitor mode, would
// have refused).
type Denial struct {
	Dest     Dest
	Count    uint64
	LastSeen time.Time
}

// Config says where the guard lives. Mode's zero value is ModeOff.
type Config struct {
	Mode Mode
	// Cgroup is the cgroup v2 directory to guard, created if missing,
	// e.g. /sys/fs/cgroup/unified/pulsegate.
	Cgroup string
	// PinDir is the bpffs directory for the pinned maps and links, e.g.
	// /sys/fs/bpf/pulsegate. bpffs is mounted at /sys/fs/bpf if PinDir is
	// under it and it is not mounted yet.
	PinDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports a Config that Open cannot use.
func (c Config) Validate() error {
	if c.Mode < ModeOff || c.Mode > ModeEnforce {
		return fmt.Errorf("guard mode %v: unknown", c.Mode)
	}
	if c.Cgroup == "" {
		return errors.New("guard cgroup: empty")
	}
	if c.PinDir == "" {
		return errors.New("guard pin dir: empty")
	}
	return nil
}

const (
	protoAny = 0
	protoTCP = 6
	protoUDP = 17
)

func protoNumber(s string) (uint8, error) {
	switch s {
	case "":
		return protoAny, nil
	case "tcp":
		return protoTCP, nil
	case "udp":
		return protoUDP, nil
	}
	return 0, fmt.Errorf("protocol %q: want tcp, udp or empty", s)
}

func protoName(n uint8) string {
	switch n {
	case protoAny:
		return ""
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	}
	return strconv.Itoa(int(n))
}

// addr16 is the key form of an address: IPv4 as IPv4-mapped IPv6, so one
// entry covers AF_INET sockets and AF_INET6 sockets dialling ::ffff:a.b.c.d.
func addr16(a netip.Addr) [16]byte {
	return a.As16()
}

// addrFrom16 is the inverse of addr16, showing IPv4 as IPv4.
func addrFrom16(b [16]byte) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}

func sortFlows(fs []Flow) {
	slices.SortFunc(fs, func(a, b Flow) int {
		if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
}

func sortDenials(ds []Denial) {
	slices.SortFunc(ds, func(a, b Denial) int {
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		if c := a.Dest.Addr.Compare(b.Dest.Addr); c != 0 {
			return c
		}
		return cmp.Compare(a.Dest.Port, b.Dest.Port)
	})
}
