//go:build linux

package guard

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// bpffsRoot is where Open mounts bpffs when a PinDir under it is not on
// bpffs yet.
const bpffsRoot = "/sys/fs/bpf"

// attachment is one program and the cgroup hook it runs on. Its link is
// pinned at PinDir/link_<name>.
type attachment struct {
	name   string
	attach ebpf.AttachType
	prog   func(*guardObjects) *ebpf.Program
}

var attachments = []attachment{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(o *guardObjects) *ebpf.Program { return o.GuardConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(o *guardObjects) *ebpf.Program { return o.GuardConnect6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(o *guardObjects) *ebpf.Program { return o.GuardSendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(o *guardObjects) *ebpf.Program { return o.GuardSendmsg6 }},
	{"egress", ebpf.AttachCGroupInetEgress, func(o *guardObjects) *ebpf.Program { return o.CountEgress }},
}

// mapNames are the maps pinned by name (LIBBPF_PIN_BY_NAME) in PinDir.
var mapNames = []string{guardMapAllow, guardMapConfig, guardMapDenied, guardMapLedger}

func linkPath(pinDir, name string) string { return filepath.Join(pinDir, "link_"+name) }

// Guard is the loaded egress guard of one cgroup. Its methods are safe for
// concurrent use.
type Guard struct {
	cfg Config
	log *slog.Logger

	mu     sync.RWMutex // write-held by SetAllowlist, SetMode, Close
	closed bool
	mode   Mode
	objs   guardObjects
	links  []link.Link
}

// Open loads the guard's programs, attaches them to cfg.Cgroup and pins
// links and maps under cfg.PinDir, then sets cfg.Mode.
//
// If a previous run left pins in PinDir, Open reuses them: the pinned maps
// (allowlist, ledger, denials) keep their contents, and each pinned link is
// switched to the freshly loaded program in one atomic update, so a
// restarted or upgraded daemon never leaves the cgroup unguarded. Pinned
// maps whose layout differs from this version's are refused: Remove them
// first.
//
// In enforce mode with an empty allowlist only loopback is reachable: call
// SetAllowlist right after Open.
func Open(cfg Config) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "guard")

	if err := makeCgroup(cfg.Cgroup); err != nil {
		return nil, err
	}
	if err := makePinDir(cfg.PinDir); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		// Kernels since 5.11 account BPF memory to the cgroup instead.
		log.Debug("raise memlock limit", "err", err)
	}

	g := &Guard{cfg: cfg, log: log}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}}
	if err := loadGuardObjects(&g.objs, opts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load guard: maps pinned in %s are from an incompatible version, remove them (--guard off) and start again: %w", cfg.PinDir, err)
		}
		return nil, unavailable("load guard programs", err)
	}
	// The mode goes in before any program is attached, so a first attach
	// starts in the asked mode rather than in whatever the map held.
	if err := g.writeMode(cfg.Mode); err != nil {
		g.objs.Close()
		return nil, err
	}
	if err := g.attach(); err != nil {
		g.objs.Close()
		return nil, err
	}
	log.Info("egress guard on", "mode", cfg.Mode, "cgroup", cfg.Cgroup, "pins", cfg.PinDir)
	return g, nil
}

// attach attaches every program, reusing pinned links.
func (g *Guard) attach() error {
	cgID, err := cgroupID(g.cfg.Cgroup)
	if err != nil {
		return err
	}
	var created []link.Link // unpinned again if a later one fails
	fail := func(err error) error {
		for _, l := range created {
			_ = l.Unpin()
		}
		for _, l := range g.links {
			l.Close()
		}
		g.links = nil
		return err
	}
	for _, a := range attachments {
		prog := a.prog(&g.objs)
		path := linkPath(g.cfg.PinDir, a.name)
		old, err := link.LoadPinnedLink(path, nil)
		switch {
		case err == nil:
			l, err := g.reuse(old, cgID, a, prog, path)
			if err != nil {
				return fail(err)
			}
			g.links = append(g.links, l)
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return fail(fmt.Errorf("load pinned link %s: %w", path, err))
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: g.cfg.Cgroup, Attach: a.attach, Program: prog})
		if err != nil {
			return fail(unavailable("attach "+a.name+" to "+g.cfg.Cgroup, err))
		}
		if err := l.Pin(path); err != nil {
			// A kernel without bpf_link (before 5.7) attaches but cannot pin:
			// enforcement would end with this process.
			l.Close()
			return fail(unavailable("pin link "+a.name, err))
		}
		created = append(created, l)
		g.links = append(g.links, l)
	}
	return nil
}

// reuse switches a link pinned by a previous run to prog. A link pinned for
// another cgroup (the configured cgroup changed) is replaced: the new one
// is attached before the old one is detached.
func (g *Guard) reuse(old link.Link, cgID uint64, a attachment, prog *ebpf.Program, path string) (link.Link, error) {
	info, err := old.Info()
	if err == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgID {
		if err := old.Update(prog); err != nil {
			old.Close()
			return nil, fmt.Errorf("update pinned link %s: %w", path, err)
		}
		g.log.Debug("reused pinned link", "link", path)
		return old, nil
	}
	defer old.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: g.cfg.Cgroup, Attach: a.attach, Program: prog})
	if err != nil {
		return nil, unavailable("attach "+a.name+" to "+g.cfg.Cgroup, err)
	}
	if err := old.Unpin(); err != nil {
		l.Close()
		return nil, fmt.Errorf("unpin stale link %s: %w", path, err)
	}
	if err := old.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		g.log.Warn("detach stale link", "link", path, "err", err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin link %s: %w", path, err)
	}
	g.log.Info("replaced pinned link of another cgroup", "link", path)
	return l, nil
}

// SetAllowlist makes ds the allowlist. New destinations are added before
// stale ones are deleted, so a destination on both lists is never refused
// during the change.
func (g *Guard) SetAllowlist(ds []Dest) error {
	want := make(map[guardDestKey]bool, len(ds))
	for _, d := range ds {
		k, err := destKey(d)
		if err != nil {
			return fmt.Errorf("set allowlist: %w", err)
		}
		want[k] = true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errClosed
	}
	m := g.objs.Allow
	if len(want) > int(m.MaxEntries()) {
		return fmt.Errorf("set allowlist: %d destinations, at most %d", len(want), m.MaxEntries())
	}
	one := uint8(1)
	for k := range want {
		if err := m.Update(k, one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set allowlist: add %v: %w", k, err)
		}
	}
	var (
		k     guardDestKey
		v     uint8
		stale []guardDestKey
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("set allowlist: list: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set allowlist: delete: %w", err)
		}
	}
	g.log.Debug("allowlist set", "destinations", len(want), "removed", len(stale))
	return nil
}

// SetMode switches the programs' mode; it takes effect at the next connect.
func (g *Guard) SetMode(m Mode) error {
	if m < ModeOff || m > ModeEnforce {
		return fmt.Errorf("set guard mode %v: unknown", m)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errClosed
	}
	if err := g.writeMode(m); err != nil {
		return err
	}
	g.log.Info("egress guard mode", "mode", m)
	return nil
}

func (g *Guard) writeMode(m Mode) error {
	if err := g.objs.Config.Put(uint32(0), guardConfig{Mode: uint32(m)}); err != nil {
		return fmt.Errorf("set guard mode: %w", err)
	}
	g.mode = m
	return nil
}

// Mode is the mode last set through this Guard.
func (g *Guard) Mode() Mode {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.mode
}

// Ledger lists what the cgroup sent to each destination, most bytes first.
// Only outgoing packets are counted, IP headers included; loopback is not.
// Entries survive restarts; the least recently used are evicted beyond 4096
// destinations.
func (g *Guard) Ledger() ([]Flow, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil, errClosed
	}
	boot := bootTime()
	seen := make(map[guardAddrKey]bool)
	var (
		k     guardAddrKey
		v     guardFlow
		flows []Flow
	)
	it := g.objs.Ledger.Iterate()
	for it.Next(&k, &v) {
		// A hash iteration starts over when its current key is evicted.
		if seen[k] {
			continue
		}
		seen[k] = true
		flows = append(flows, Flow{Addr: addrFrom16(k.Addr), Bytes: v.Bytes, Packets: v.Packets, LastSeen: boot.at(v.LastNs)})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	sortFlows(flows)
	return flows, nil
}

// Denied lists the refused destinations (in monitor mode: those that would
// have been), most recent first.
func (g *Guard) Denied() ([]Denial, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil, errClosed
	}
	boot := bootTime()
	seen := make(map[guardDestKey]bool)
	var (
		k  guardDestKey
		v  guardDenial
		ds []Denial
	)
	it := g.objs.Denied.Iterate()
	for it.Next(&k, &v) {
		if seen[k] {
			continue
		}
		seen[k] = true
		ds = append(ds, Denial{
			Dest:     Dest{Addr: addrFrom16(k.Addr), Port: k.Port, Proto: protoName(k.Proto)},
			Count:    v.Count,
			LastSeen: boot.at(v.LastNs),
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read denials: %w", err)
	}
	sortDenials(ds)
	return ds, nil
}

// Active reports whether this Guard is open: its programs are attached to
// the cgroup (in whatever Mode).
func (g *Guard) Active() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return !g.closed
}

// Close releases this process's handles. The pinned links and maps stay,
// so the cgroup stays guarded until the next Open or a Remove. Safe to call
// twice.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	for _, l := range g.links {
		errs = append(errs, l.Close())
	}
	g.links = nil
	errs = append(errs, g.objs.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close guard: %w", err)
	}
	return nil
}

// Remove detaches the programs and deletes the pins: the cgroup is no
// longer guarded and the ledger and denials are gone. It closes the Guard.
func (g *Guard) Remove() error {
	err := g.Close()
	if rerr := removePins(g.cfg.PinDir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err == nil {
		g.log.Info("egress guard removed", "cgroup", g.cfg.Cgroup)
	}
	return err
}

// removePins detaches the links pinned in dir and deletes every pin.
func removePins(dir string) error {
	var errs []error
	for _, a := range attachments {
		path := linkPath(dir, a.name)
		l, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", path, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
		}
		// Detach even if another process still holds the link open.
		if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
			errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
		}
		l.Close()
	}
	for _, name := range mapNames {
		// Unlinking a pin releases the kernel's reference to the map.
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin map: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove pin dir: %w", err))
	}
	return errors.Join(errs...)
}

var errClosed = errors.New("guard closed")

// JoinCgroup moves the calling process (all its threads) into the cgroup
// v2 directory dir. Sockets keep the cgroup they were created in, so call
// it before the process opens any socket.
func JoinCgroup(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return unavailable("join cgroup "+dir, err)
	}
	defer f.Close()
	if _, err := f.WriteString(strconv.Itoa(os.Getpid())); err != nil {
		return unavailable("join cgroup "+dir, err)
	}
	return nil
}

// unavailable wraps err, and ErrUnavailable too when err means this system
// cannot run BPF here rather than that something went wrong.
func unavailable(what string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// makeCgroup creates the cgroup dir inside an existing cgroup v2 hierarchy.
func makeCgroup(dir string) error {
	var st unix.Statfs_t
	parent := filepath.Dir(dir)
	if err := unix.Statfs(parent, &st); err != nil {
		return unavailable("cgroup v2", fmt.Errorf("statfs %s: %w", parent, err))
	}
	if uint32(st.Type) != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%w: %s is not a cgroup v2 file system", ErrUnavailable, parent)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return unavailable("create cgroup", err)
	}
	return nil
}

// cgroupID is the kernel's id of a cgroup v2 directory: its inode number.
func cgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup: %w", err)
	}
	return st.Ino, nil
}

// makePinDir creates dir on bpffs, mounting bpffs at /sys/fs/bpf if dir is
// under it and nothing is mounted there yet.
func makePinDir(dir string) error {
	parent := filepath.Dir(dir)
	isBPFFS := func(p string) bool {
		var st unix.Statfs_t
		return unix.Statfs(p, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
	}
	if !isBPFFS(parent) {
		if parent != bpffsRoot && !strings.HasPrefix(parent, bpffsRoot+"/") {
			return fmt.Errorf("%w: pin dir %s is not on bpffs", ErrUnavailable, dir)
		}
		if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
			return unavailable("mount bpffs on "+bpffsRoot, err)
		}
		if !isBPFFS(parent) {
			return fmt.Errorf("%w: pin dir %s is not on bpffs", ErrUnavailable, dir)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return unavailable("create pin dir", err)
	}
	return nil
}

// destKey is a Dest in the form of the allow and denied maps' keys.
func destKey(d Dest) (guardDestKey, error) {
	if !d.Addr.IsValid() {
		return guardDestKey{}, errors.New("destination without address")
	}
	proto, err := protoNumber(d.Proto)
	if err != nil {
		return guardDestKey{}, err
	}
	return guardDestKey{Addr: addr16(d.Addr), Port: d.Port, Proto: proto}, nil
}

// clockOrigin is the wall time at which CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns, was zero.
type clockOrigin time.Time

func bootTime() clockOrigin {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return clockOrigin(now) // cannot happen on Linux
	}
	return clockOrigin(now.Add(-time.Duration(ts.Nano())))
}

// at converts a bpf_ktime_get_ns value; 0 (never) stays the zero Time. The
// conversion drifts by the time the machine spent suspended.
func (o clockOrigin) at(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Time(o).Add(time.Duration(ns)).Round(0)
}
