package cluster

// Benchmarks of replication between offices: throughput of counts updates,
// the time until a new total is visible at every office over a slow WAN,
// and what an idle office costs. All run three real offices in this
// process, paired through init/token/join, on loopback with real raft and
// mutual TLS. BENCHMARKS.md has the figures and the command lines.

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// benchToday is the open day of benchDays.
const benchToday = "2026-03-07"

// benchDays is an office's cumulative counts as its push loop sends them:
// six closed days with their colours, and today, open and colour-blind,
// with today's total so far.
func benchDays(today uint64) []DayCounts {
	days := make([]DayCounts, 0, 7)
	for d := 1; d <= 6; d++ {
		days = append(days, DayCounts{Day: fmt.Sprintf("2026-03-%02d", d), Closed: true, Green: 61, Red: 39, Total: 100})
	}
	return append(days, DayCounts{Day: benchToday, Total: today})
}

// todayAt is site's total of benchToday as c's local replica shows it.
func todayAt(c *Cluster, site string) uint64 {
	for _, sc := range c.Sites() {
		if sc.Info.ID != site {
			continue
		}
		for _, d := range sc.Days {
			if d.Day == benchToday {
				return d.Total
			}
		}
	}
	return 0
}

// benchLeader is the office that leads now.
func benchLeader(tb testing.TB, cs []*Cluster) *Cluster {
	tb.Helper()
	for _, c := range cs {
		if c.Node().IsLeader() {
			return c
		}
	}
	tb.Fatal("no leader")
	return nil
}

// BenchmarkApplyUpdates measures how many counts updates the cluster
// commits per second. Updates come from 24 publishers at once, spread over
// the offices: a follower's updates are forwarded to the leader (one TLS
// connection per update), the leader batches them into its log. An office
// pushes once per push interval (default 2 s), so offices/cluster =
// updates/s × 2 is how many offices one cluster could carry.
//
// Raft runs with fastTiming: it changes elections and how soon followers
// learn of commits, not how fast the leader commits under load.
func BenchmarkApplyUpdates(b *testing.B) {
	cs := newTestClusters(b, 3, nil)
	versions := map[*Cluster]*atomic.Uint64{}
	for _, c := range cs {
		versions[c] = new(atomic.Uint64)
	}
	run := func(b *testing.B, from []*Cluster) {
		const inflight = 24 // publishers in all, split evenly over from
		var next atomic.Int64
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		b.ResetTimer()
		for i := range inflight {
			c := from[i%len(from)]
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					v := versions[c].Add(1)
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					err := c.Publish(ctx, v, benchDays(v))
					cancel()
					if err != nil {
						mu.Lock()
						firstErr = cmp.Or(firstErr, fmt.Errorf("publish from %s: %w", c.cfg.Name, err))
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		perSec := float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(perSec, "updates/s")
		b.ReportMetric(perSec*2, "offices/cluster")
	}
	b.Run("from=all", func(b *testing.B) { run(b, cs) })
	b.Run("from=leader", func(b *testing.B) {
		leader := benchLeader(b, cs)
		run(b, []*Cluster{leader})
		if !leader.Node().IsLeader() {
			b.Logf("leadership moved away from %s during the run: some updates were forwarded", leader.cfg.Name)
		}
	})
}

// openBenchCluster is openTestCluster with raft's WAN timing (zero Timing),
// WAN gossip and the default reconcile interval; edit may change the rest.
// Only Stabilization stays short, so a new office becomes a voter half a
// second after gossip sees it, not thirty.
func openBenchCluster(tb testing.TB, dir, name string, edit func(*Config)) *Cluster {
	tb.Helper()
	cfg := Config{
		Dir:          dir,
		Name:         name,
		Region:       "region-" + name,
		TimeZone:     "UTC",
		Listen:       "127.0.0.1:0",
		GossipListen: "127.0.0.1:0",
		Reconcile:    ReconcileConfig{MaxVoters: 5, Stabilization: 500 * time.Millisecond, DeadTimeout: time.Hour},
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open cluster %s: %v", name, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// newWANClusters pairs n offices like newTestClusters, at WAN settings
// (openBenchCluster); edit(i, cfg) adjusts office i. Formation waits out
// WAN timeouts: the first office elects itself after 5 to 10 s, and each
// later one is promoted at a reconcile round (every 2.5 to 5 s).
func newWANClusters(tb testing.TB, n int, edit func(int, *Config)) []*Cluster {
	tb.Helper()
	start := time.Now()
	root := tb.TempDir()
	open := func(i int) *Cluster {
		return openBenchCluster(tb, filepath.Join(root, strconv.Itoa(i)), "office"+strconv.Itoa(i), func(c *Config) {
			if edit != nil {
				edit(i, c)
			}
		})
	}
	if _, err := Init(filepath.Join(root, "0"), "acme", time.Now()); err != nil {
		tb.Fatal(err)
	}
	cs := []*Cluster{open(0)}
	waitUntil(tb, 30*time.Second, "the first office to lead", cs[0].Node().IsLeader)
	for i := 1; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		tok, _, err := cs[0].CreateToken(ctx)
		if err == nil {
			_, err = Join(ctx, filepath.Join(root, strconv.Itoa(i)), tok.String(), time.Now())
		}
		cancel()
		if err != nil {
			tb.Fatalf("pair office %d: %v", i, err)
		}
		cs = append(cs, open(i))
	}
	voters := min(n, 5)
	if voters%2 == 0 {
		voters--
	}
	waitUntil(tb, 60*time.Second, "the voters to settle", func() bool {
		st := cs[0].Status()
		return st.Voters == voters && len(st.Servers) == n
	})
	// Every office has published its site info: no formation traffic left
	// in raft.
	waitUntil(tb, 30*time.Second, "every office to know every office", func() bool {
		for _, c := range cs {
			named := 0
			for _, sc := range c.Sites() {
				if sc.Info.Name != "" {
					named++
				}
			}
			if named != n {
				return false
			}
		}
		return true
	})
	tb.Logf("%d offices formed at WAN settings in %v", n, time.Since(start).Round(100*time.Millisecond))
	return cs
}

// BenchmarkPressVisibleEverywhere measures, per iteration, the time from an
// office calling Publish with a new total until every office's local
// replica (what Sites reads) holds it, with 50 ms added to every write on
// every peer connection (about 100 ms round trip) and raft at its WAN
// defaults. Offices take turns, so two thirds of the publishes are
// forwarded by a follower.
//
// The cluster is formed at WAN timing rather than with fastTiming and then
// switched: raft cannot change CommitTimeout after start, and CommitTimeout
// (100 ms by default) is what paces how soon followers learn that an entry
// committed, the largest part of the figure. Forming at WAN timing costs
// about 15 s; the delay is switched on after formation.
//
// The delay applies to writes only: the TCP and TLS handshake of the
// forwarding RPC (one connection per update) are not delayed, so on a real
// 100 ms link a forwarded publish takes about two round trips more.
func BenchmarkPressVisibleEverywhere(b *testing.B) {
	faults := NewFaults()
	cs := newWANClusters(b, 3, func(_ int, c *Config) { c.Faults = faults })
	faults.SetDelay(50 * time.Millisecond)

	var version uint64
	visible := func(b *testing.B, c *Cluster) (time.Duration, bool) {
		version++
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done <- c.Publish(ctx, version, benchDays(version))
		}()
		leader := c.Node().IsLeader()
		site := c.SiteID()
		seen := make([]bool, len(cs))
		var last time.Duration
		deadline := start.Add(30 * time.Second)
		for n := 0; n < len(cs); {
			for i, o := range cs {
				if !seen[i] && todayAt(o, site) == version {
					seen[i] = true
					last = time.Since(start)
					n++
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("publish %d from %s: visible at %d of %d offices after 30s", version, c.cfg.Name, n, len(cs))
			}
			time.Sleep(time.Millisecond)
		}
		if err := <-done; err != nil {
			b.Fatalf("publish %d from %s: %v", version, c.cfg.Name, err)
		}
		return last, leader
	}
	// Warm up: connections open, replication pipelined.
	for _, c := range cs {
		visible(b, c)
	}
	// A sub-benchmark, so the cluster is formed once however often the
	// benchmark framework calls it.
	b.Run("rtt=100ms", func(b *testing.B) {
		var all, byLeader, byFollower []time.Duration
		for i := range b.N {
			d, leader := visible(b, cs[i%len(cs)])
			all = append(all, d)
			if leader {
				byLeader = append(byLeader, d)
			} else {
				byFollower = append(byFollower, d)
			}
		}
		b.StopTimer()
		b.ReportMetric(quantileMs(all, 0.50), "p50-ms")
		b.ReportMetric(quantileMs(all, 0.99), "p99-ms")
		b.ReportMetric(quantileMs(all, 1), "max-ms")
		if len(byLeader) > 0 {
			b.ReportMetric(quantileMs(byLeader, 0.50), "leader-p50-ms")
		}
		if len(byFollower) > 0 {
			b.ReportMetric(quantileMs(byFollower, 0.50), "follower-p50-ms")
		}
		b.ReportMetric(0, "ns/op") // the polling makes ns/op meaningless
	})
}

// quantileMs is the q quantile of ds in milliseconds; it sorts ds.
func quantileMs(ds []time.Duration, q float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
}

// BenchmarkIdleOffice measures what an office costs while nobody presses:
// three offices at WAN settings (raft DefaultTiming, memberlist
// DefaultWANConfig, reconcile every 5 s) sit idle for one 20 s window per
// iteration; run it with -benchtime 1x (the default also runs one window).
//
// Bytes are TCP or UDP payload: the peer transport's from the Mux
// counters (raft and RPCs, TLS included), gossip's from a counting wrapper
// around memberlist's NetTransport (encrypted packets and push/pull
// streams). CPU (utime+stime) and RSS (VmRSS) are the whole test
// process's, divided by three: an in-process approximation that includes
// the Go runtime and the test binary. rss-MiB/office is the growth from
// before the offices opened to the end, rss-growth the growth over a window;
// both are read after a forced GC and scavenge. The leader sends to every
// follower, so per-office averages hide its larger share, reported apart.
func BenchmarkIdleOffice(b *testing.B) {
	const window = 20 * time.Second
	rss0 := settledRSS(b)
	const n = 3
	gossip := make([]*countingTransport, n)
	gossipErr := make([]error, n)
	cs := newWANClusters(b, n, func(i int, c *Config) {
		// Only the transport changes: the timing stays DefaultWANConfig's.
		c.TuneGossip = func(mc *memberlist.Config) {
			t, err := newCountingTransport(mc)
			if err != nil {
				gossipErr[i] = err
				return
			}
			mc.Transport = t
			gossip[i] = t
		}
	})
	for i, err := range gossipErr {
		if err != nil || gossip[i] == nil {
			b.Fatalf("office %d: counting gossip transport: %v", i, err)
		}
	}
	// Let the gossip of the joins die down.
	time.Sleep(5 * time.Second)

	type sample struct {
		peerSent, peerRecv, gossipSent, gossipRecv [n]uint64
		cpu                                        time.Duration
		rss                                        int64
	}
	// RSS is read after a forced GC that returns free memory to the OS,
	// so its growth shows memory kept, not where the GC pacer happened to
	// be; that GC runs outside the CPU sample.
	take := func(first bool) sample {
		var s sample
		if first {
			s.rss = settledRSS(b)
		}
		for i, c := range cs {
			s.peerSent[i], s.peerRecv[i] = c.mux.BytesSent(), c.mux.BytesReceived()
			s.gossipSent[i], s.gossipRecv[i] = gossip[i].sent.Load(), gossip[i].received.Load()
		}
		s.cpu = procCPU(b)
		if !first {
			s.rss = settledRSS(b)
		}
		return s
	}
	// A sub-benchmark, so the cluster is formed once however often the
	// benchmark framework calls it.
	b.Run("window=20s", func(b *testing.B) {
		var elapsed time.Duration
		var sum sample
		var leaderSent uint64
		for range b.N {
			before, start := take(true), time.Now()
			leader := benchLeader(b, cs)
			time.Sleep(window)
			after := take(false)
			elapsed += time.Since(start)
			for i := range n {
				sum.peerSent[i] += after.peerSent[i] - before.peerSent[i]
				sum.peerRecv[i] += after.peerRecv[i] - before.peerRecv[i]
				sum.gossipSent[i] += after.gossipSent[i] - before.gossipSent[i]
				sum.gossipRecv[i] += after.gossipRecv[i] - before.gossipRecv[i]
				if cs[i] == leader {
					leaderSent += after.peerSent[i] - before.peerSent[i]
				}
			}
			sum.cpu += after.cpu - before.cpu
			sum.rss += after.rss - before.rss
		}
		b.StopTimer()
		secs := elapsed.Seconds()
		perOffice := func(v [n]uint64) float64 {
			var t uint64
			for _, x := range v {
				t += x
			}
			return float64(t) / n / secs
		}
		for i, c := range cs {
			role := "follower"
			if c.Node().IsLeader() {
				role = "leader"
			}
			b.Logf("%s (%s): peer sent %.0f B/s, received %.0f B/s; gossip sent %.0f B/s, received %.0f B/s", c.cfg.Name, role,
				float64(sum.peerSent[i])/secs, float64(sum.peerRecv[i])/secs, float64(sum.gossipSent[i])/secs, float64(sum.gossipRecv[i])/secs)
		}
		b.ReportMetric(perOffice(sum.peerSent), "peer-sent-B/s/office")
		b.ReportMetric(perOffice(sum.peerRecv), "peer-recv-B/s/office")
		b.ReportMetric(float64(leaderSent)/secs, "leader-peer-sent-B/s")
		b.ReportMetric(perOffice(sum.gossipSent), "gossip-sent-B/s/office")
		b.ReportMetric(perOffice(sum.gossipRecv), "gossip-recv-B/s/office")
		b.ReportMetric(float64(sum.cpu.Microseconds())/1000/n/secs, "cpu-ms/s/office")
		b.ReportMetric(float64(sum.rss)/1024/n/float64(b.N), "rss-growth-KiB/window/office")
		b.ReportMetric(float64(settledRSS(b)-rss0)/1024/1024/n, "rss-MiB/office")
		b.ReportMetric(0, "ns/op") // a fixed window: ns/op is the window
	})
}

// countingTransport is memberlist's NetTransport with byte counters: it
// counts the payload of packets and streams, both ways. It hides
// NetTransport's NodeAwareTransport methods, which memberlist then shims
// with WriteTo and DialTimeout, as NetTransport itself does.
type countingTransport struct {
	memberlist.Transport
	sent, received atomic.Uint64
	packets        chan *memberlist.Packet
	streams        chan net.Conn
	done           chan struct{}
	wg             sync.WaitGroup
}

func newCountingTransport(mc *memberlist.Config) (*countingTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr},
		BindPort:  mc.BindPort,
		Logger:    mc.Logger,
	})
	if err != nil {
		return nil, err
	}
	t := &countingTransport{
		Transport: nt,
		packets:   make(chan *memberlist.Packet),
		streams:   make(chan net.Conn),
		done:      make(chan struct{}),
	}
	t.wg.Add(2)
	go func() {
		defer t.wg.Done()
		for {
			select {
			case p := <-nt.PacketCh():
				t.received.Add(uint64(len(p.Buf)))
				select {
				case t.packets <- p:
				case <-t.done:
					return
				}
			case <-t.done:
				return
			}
		}
	}()
	go func() {
		defer t.wg.Done()
		for {
			select {
			case c := <-nt.StreamCh():
				select {
				case t.streams <- &gossipConn{Conn: c, t: t}:
				case <-t.done:
					c.Close()
					return
				}
			case <-t.done:
				return
			}
		}
	}()
	return t, nil
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ts, err := t.Transport.WriteTo(b, addr)
	if err == nil {
		t.sent.Add(uint64(len(b)))
	}
	return ts, err
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.Transport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &gossipConn{Conn: c, t: t}, nil
}

func (t *countingTransport) Shutdown() error {
	err := t.Transport.Shutdown()
	close(t.done)
	t.wg.Wait()
	return err
}

// gossipConn counts a gossip stream's bytes.
type gossipConn struct {
	net.Conn
	t *countingTransport
}

func (c *gossipConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.t.received.Add(uint64(n))
	return n, err
}

func (c *gossipConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.t.sent.Add(uint64(n))
	return n, err
}

// procCPU is the process's user plus system CPU time from /proc/self/stat,
// in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func procCPU(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// The command name may hold spaces: fields start after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		tb.Fatalf("/proc/self/stat: %d fields after the name", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/self/stat: utime %q, stime %q", f[11], f[12])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// settledRSS is procRSS after a GC that returns all the free memory it can
// to the OS.
func settledRSS(tb testing.TB) int64 {
	tb.Helper()
	debug.FreeOSMemory()
	return procRSS(tb)
}

// procRSS is VmRSS from /proc/self/status, in bytes.
func procRSS(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb * 1024
		}
	}
	tb.Fatal("/proc/self/status has no VmRSS")
	return 0
}
