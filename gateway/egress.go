package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/gateway/guard"
	"github.com/pulsegate/pulsegate/gateway/web"
)

// The egress guard (gateway/guard) makes this box unable to reach anyone
// but its paired peers, the enrolled index and the configured DNS and NTP
// servers. This file keeps its allowlist in step with the pairing: a loop
// recomputes it every allowInterval and hands a changed list to the guard,
// so pairing a new office opens the way to it within a second.

const allowInterval = 500 * time.Millisecond

// egress is the gateway's side of the guard.
type egress struct {
	g     *guard.Guard // nil when the guard is off or unavailable
	state string       // why it is off, for the page and the log

	mu    sync.Mutex
	extra map[string]time.Time // host:port allowed for a while (a join, an enrolment)
	last  []guard.Dest

	// Names are looked up at most once a resolveTTL: the allowlist is
	// recomputed every allowInterval, and the page names every address.
	resolveMu sync.Mutex
	resolved  map[string]resolvedHost
}

type resolvedHost struct {
	addrs []netip.Addr
	until time.Time
}

const resolveTTL = time.Minute

// resolve turns a host into addresses: an IP as is, a name through the
// resolver (which the DNS servers on the allowlist make possible), cached
// for resolveTTL. A failed lookup is cached too, so an unreachable resolver
// is not asked twice a second.
func (e *egress) resolve(host string) []netip.Addr {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	e.resolveMu.Lock()
	defer e.resolveMu.Unlock()
	if r, ok := e.resolved[host]; ok && time.Now().Before(r.until) {
		return r.addrs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	if e.resolved == nil {
		e.resolved = map[string]resolvedHost{}
	}
	e.resolved[host] = resolvedHost{addrs, time.Now().Add(resolveTTL)}
	return addrs
}

// openGuard moves this process into the guarded cgroup and loads the guard.
// It runs before the gateway opens any socket: a socket belongs to the
// cgroup its process was in when it was made. Without BPF the box runs and
// says the guard is off.
func (g *Gateway) openGuard() {
	cfg := g.cfg.Guard
	mode, _ := guard.ParseMode(cfg.Mode) // Validate checked it
	g.egress = &egress{extra: map[string]time.Time{}}
	if mode == guard.ModeOff {
		g.egress.state = "off (guard.mode = off)"
		return
	}
	cgroup, err := g.guardCgroup()
	if err != nil {
		g.egress.state = "unavailable: " + err.Error()
		g.log.Warn("the egress guard is off: this box can reach any host", "reason", err)
		return
	}
	gd, err := guard.Open(guard.Config{Mode: mode, Cgroup: cgroup, PinDir: cfg.PinDir, Logger: g.log})
	if err != nil {
		g.egress.state = "unavailable: " + err.Error()
		g.log.Warn("the egress guard is off: this box can reach any host", "reason", err)
		return
	}
	g.egress.g = gd
	g.egress.state = mode.String()
	// The first list goes in before anything dials out.
	g.updateAllowlist()
	g.log.Info("egress guard active", "mode", mode.String(), "cgroup", cfg.Cgroup)
}

// guardCgroup puts this process in the cgroup to guard and returns it. With
// "self" the process stays where it was started (systemd gave it a cgroup of
// its own with Delegate=yes).
func (g *Gateway) guardCgroup() (string, error) {
	if dir := g.cfg.Guard.Cgroup; dir != "self" {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		return dir, guard.JoinCgroup(dir)
	}
	return ownCgroup()
}

// ownCgroup finds this process's cgroup v2 directory: the cgroup2 mount
// (from /proc/self/mountinfo) joined with the path /proc/self/cgroup gives.
func ownCgroup() (string, error) {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var rel string
	for _, line := range strings.Split(string(cg), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		return "", errors.New("this process is in no cgroup v2 hierarchy")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return filepath.Join(f[4], rel), nil
		}
	}
	return "", errors.New("no cgroup v2 file system is mounted")
}

// indexURL is the enrolled index's URL, if the cluster is enrolled.
func indexURL(c *cluster.Cluster) (string, bool) {
	var u string
	var ok bool
	c.Read(func(s *cluster.State) {
		var e cluster.IndexEnrolment
		if e, ok = s.Index(); ok {
			u = e.URL
		}
	})
	return u, ok
}

// allowLoop keeps the allowlist in step with the pairing and enrolment.
func (g *Gateway) allowLoop(ctx context.Context) {
	t := time.NewTicker(allowInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.updateAllowlist()
	}
}

// allowFor lets this box reach host:port addresses for a while: the peers
// of a join token, or the index of an enrolment token, before the pairing
// or enrolment that will list them for good.
func (g *Gateway) allowFor(addrs []string, d time.Duration) {
	if g.egress == nil || g.egress.g == nil {
		return
	}
	until := g.opts.Now().Add(d)
	g.egress.mu.Lock()
	for _, a := range addrs {
		g.egress.extra[a] = until
	}
	g.egress.mu.Unlock()
	g.updateAllowlist()
}

// updateAllowlist computes the allowlist and hands it to the guard if it
// changed.
func (g *Gateway) updateAllowlist() {
	e := g.egress
	if e == nil || e.g == nil {
		return
	}
	want := g.allowlist()
	e.mu.Lock()
	defer e.mu.Unlock()
	if slices.Equal(want, e.last) {
		return
	}
	if err := e.g.SetAllowlist(want); err != nil {
		g.log.Error("update the egress allowlist", "err", err)
		return
	}
	e.last = want
	g.log.Debug("egress allowlist updated", "destinations", len(want))
}

// allowlist is every destination this box may reach now, sorted.
func (g *Gateway) allowlist() []guard.Dest {
	var hostports []string
	if c, _ := g.replication(); c != nil {
		hostports = append(hostports, c.PeerAddrs()...)
		if u, ok := indexURL(c); ok {
			if hp, err := urlHostPort(u); err == nil {
				hostports = append(hostports, hp)
			}
		}
	}
	now := g.opts.Now()
	g.egress.mu.Lock()
	for a, until := range g.egress.extra {
		if now.Before(until) {
			hostports = append(hostports, a)
		} else {
			delete(g.egress.extra, a)
		}
	}
	g.egress.mu.Unlock()
	var out []guard.Dest
	add := func(hp, proto string) {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return
		}
		for _, a := range g.egress.resolve(host) {
			out = append(out, guard.Dest{Addr: a, Port: uint16(p), Proto: proto})
		}
	}
	for _, hp := range hostports {
		add(hp, "")
	}
	for _, s := range g.dnsServers() {
		add(net.JoinHostPort(s, "53"), "")
	}
	for _, s := range g.cfg.Guard.NTP {
		add(net.JoinHostPort(s, "123"), "udp")
	}
	slices.SortFunc(out, func(a, b guard.Dest) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return slices.Compact(out)
}

func urlHostPort(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	if p.Port() != "" {
		return p.Host, nil
	}
	if p.Scheme == "http" {
		return net.JoinHostPort(p.Hostname(), "80"), nil
	}
	return net.JoinHostPort(p.Hostname(), "443"), nil
}

// dnsServers are guard.dns, or the nameservers of /etc/resolv.conf.
func (g *Gateway) dnsServers() []string {
	if len(g.cfg.Guard.DNS) > 0 {
		return g.cfg.Guard.DNS
	}
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			out = append(out, fields[1])
		}
	}
	return out
}

// Egress implements web.Backend: what left this box, per destination, and
// every attempt the guard refused.
func (g *Gateway) Egress() web.Egress {
	e := g.egress
	out := web.Egress{State: "off"}
	if e == nil {
		return out
	}
	out.State = e.state
	if e.g == nil {
		return out
	}
	out.Active = true
	names := g.destNames()
	flows, ferr := e.g.Ledger()
	for _, f := range flows {
		out.Flows = append(out.Flows, web.Flow{Dest: f.Addr.String(), Name: names[f.Addr], Bytes: f.Bytes, Packets: f.Packets, LastSeen: f.LastSeen})
	}
	denied, derr := e.g.Denied()
	if err := errors.Join(ferr, derr); err != nil {
		out.Error = err.Error()
	}
	for _, d := range denied {
		out.Denied = append(out.Denied, web.Denial{Dest: netip.AddrPortFrom(d.Dest.Addr, d.Dest.Port).String(), Proto: d.Dest.Proto, Count: d.Count, LastSeen: d.LastSeen})
	}
	e.mu.Lock()
	for _, d := range e.last {
		out.Allowed = append(out.Allowed, web.Allowed{Dest: netip.AddrPortFrom(d.Addr, d.Port).String(), Proto: d.Proto, Name: names[d.Addr]})
	}
	e.mu.Unlock()
	return out
}

// destNames says what an allowed address is, for people.
func (g *Gateway) destNames() map[netip.Addr]string {
	names := map[netip.Addr]string{}
	for _, s := range g.dnsServers() {
		for _, a := range g.egress.resolve(s) {
			names[a] = "DNS server"
		}
	}
	for _, s := range g.cfg.Guard.NTP {
		for _, a := range g.egress.resolve(s) {
			names[a] = "time server " + s
		}
	}
	if c, _ := g.replication(); c != nil {
		for _, hp := range c.PeerAddrs() {
			if host, _, err := net.SplitHostPort(hp); err == nil {
				for _, a := range g.egress.resolve(host) {
					names[a] = "paired office"
				}
			}
		}
		if u, ok := indexURL(c); ok {
			if hp, err := urlHostPort(u); err == nil {
				host, _, _ := net.SplitHostPort(hp)
				for _, a := range g.egress.resolve(host) {
					names[a] = "central index"
				}
			}
		}
	}
	return names
}
