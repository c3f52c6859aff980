//go:build linux

package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
	"github.com/pulsegate/pulsegate/tests/privileged"
)

// The test network lives only inside namespaces this test creates: nothing
// of it is visible from, or sends to, the host's network.
const (
	netnsSubnet   = "10.213.0"
	netnsHTTPAddr = "127.0.0.1:8080" // each office's page, on its namespace's own loopback
)

// TestOfficeCutOffConverges runs three real offices, each in its own network
// namespace behind a software switch, pairs them through the real CLI
// (init, token create, join), then cuts one office's cable while everyone
// keeps pressing. The cut-off office must keep counting on its own, the two
// others must keep replicating between themselves, and once the cable is
// back every office must show every office's acknowledged presses exactly:
// none lost, none counted twice.
func TestOfficeCutOffConverges(t *testing.T) {
	privileged.RequireRoot(t, "network namespaces")
	// Its offices live in namespaces of their own: it may run beside the
	// index end-to-end test, which is mostly waiting.
	t.Parallel()
	begin := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
	}

	net3 := newTestNet(t, 3)
	logf("network up: switch %s, offices %s", net3.sw, strings.Join(net3.offices, ", "))
	bin := pulsegateBin(t)
	logf("binary built")

	offices := make([]*office, 3)
	for i := range offices {
		offices[i] = newOffice(t, net3, i+1)
	}
	o1, o2, o3 := offices[0], offices[1], offices[2]
	t.Cleanup(func() {
		if t.Failed() {
			for _, o := range offices {
				if o.p != nil {
					t.Logf("---- %s log (last lines) ----\n%s", o.name, tailLines(o.p.logs.String(), 120))
				}
			}
		}
	})

	// Pairing, as an installer would do it.
	if out, err := exec.Command(bin, "init", "--data-dir", o1.dataDir, "--customer", "acme").CombinedOutput(); err != nil {
		t.Fatalf("pulsegate init: %v\n%s", err, out)
	}
	o1.start(t, bin)
	waitForStatus(t, 20*time.Second, "office 1 to know its leader", func() (bool, string) {
		st, err := o1.status()
		if err != nil {
			return false, err.Error()
		}
		return st.Cluster != nil && st.Cluster.LeaderKnown, st.clusterSummary()
	})
	logf("office 1 started and leads")
	for _, o := range []*office{o2, o3} {
		tok := createToken(t, bin, o1.ns, o1.dataDir)
		o.join(t, bin, tok)
		o.start(t, bin)
		logf("%s joined and started", o.name)
	}
	waitForStatus(t, 45*time.Second, "every office to list the 3 offices", func() (bool, string) {
		var desc []string
		ok := true
		for _, o := range offices {
			st, err := o.status()
			if err != nil {
				return false, fmt.Sprintf("%s: %v", o.name, err)
			}
			desc = append(desc, o.name+": "+st.clusterSummary())
			if st.Cluster == nil || len(st.Cluster.Offices) != 3 {
				ok = false
			}
		}
		return ok, strings.Join(desc, "; ")
	})
	logf("every office lists the 3 offices")

	rnd := rand.New(rand.NewPCG(7, 13))
	press := func(n int, every time.Duration) {
		for range n {
			for _, o := range offices {
				c := drivers.Green
				if rnd.IntN(3) == 0 {
					c = drivers.Red
				}
				o.board.Press(c)
			}
			time.Sleep(every) // pacing the presses, not waiting for a state
		}
	}

	// Phase 1: everyone connected.
	press(30, 40*time.Millisecond)
	waitAllAcked(t, offices)
	want := ackedByOffice(offices)
	logf("pressed 30 per board; acknowledged %v", want)
	waitConverged(t, 20*time.Second, "the connected offices to agree", offices, want)
	logf("all offices agree on %v", want)
	before3, err := o3.status()
	if err != nil {
		t.Fatal(err)
	}

	// Phase 2: office 3's cable is pulled at the switch.
	net3.setLink(t, 3, false)
	logf("office 3 cut off (switch port %s down)", net3.port(3))
	// The cut outlasts the push's 15 s timeout, so office 3's pushes fail
	// and are retried (a short cut only stalls TCP and tests less).
	const cutPresses, cutEvery = 180, 100 * time.Millisecond
	press(cutPresses, cutEvery)
	waitAllAcked(t, offices) // office 3's presses too: it counts on its own
	during := ackedByOffice(offices)
	logf("pressed %d more per board while cut off; acknowledged %v", cutPresses, during)
	waitForStatus(t, 10*time.Second, "office 3 to notice it lost the leader", func() (bool, string) {
		st, err := o3.status()
		if err != nil {
			return false, err.Error()
		}
		return st.Cluster != nil && !st.Cluster.LeaderKnown, st.clusterSummary()
	})
	st3, err := o3.status()
	if err != nil {
		t.Fatal(err)
	}
	if st3.TodayTotal <= before3.TodayTotal || st3.TodayTotal != during[o3.name] {
		t.Fatalf("office 3 while cut off: today_total %d (was %d), want its %d acknowledged presses", st3.TodayTotal, before3.TodayTotal, during[o3.name])
	}
	logf("office 3 kept counting alone: today_total %d -> %d; its view: %s", before3.TodayTotal, st3.TodayTotal, st3.clusterSummary())
	// The two connected offices still replicate between themselves, and
	// nothing of office 3's new presses can have reached them.
	partial := map[string]uint64{o1.name: during[o1.name], o2.name: during[o2.name], o3.name: want[o3.name]}
	waitConverged(t, 20*time.Second, "offices 1 and 2 to agree while office 3 is cut off", []*office{o1, o2}, partial)
	logf("offices 1 and 2 agree on %v", partial)

	// Phase 3: the cable is back.
	net3.setLink(t, 3, true)
	healed := time.Now()
	logf("office 3 reconnected")
	waitConverged(t, 60*time.Second, "all offices to agree after the cut", offices, during)
	logf("all offices agree on %v, %.1fs after reconnecting", during, time.Since(healed).Seconds())

	for _, o := range offices {
		st := o.board.Stats()
		if st.Lost != 0 || st.Pressed != st.Acked {
			t.Errorf("%s's board: pressed %d, acknowledged %d, lost %d; want every press acknowledged", o.name, st.Pressed, st.Acked, st.Lost)
		}
		s, err := o.status()
		if err != nil {
			t.Fatal(err)
		}
		if s.TodayTotal != st.Acked {
			t.Errorf("%s: today_total %d, want its %d acknowledged presses", o.name, s.TodayTotal, st.Acked)
		}
	}

	// The guard enforced all along: each office sent only to its peers, and
	// the page's "what left this box" says so.
	peers := map[string]bool{}
	for _, o := range offices {
		peers[o.addr] = true
	}
	for _, o := range offices {
		var eg struct {
			Active bool   `json:"active"`
			State  string `json:"state"`
			Flows  []struct {
				Dest  string `json:"dest"`
				Bytes uint64 `json:"bytes"`
			} `json:"flows"`
		}
		if err := boxGetErr(o.dataDir, "/api/egress", &eg); err != nil {
			t.Fatal(err)
		}
		if !eg.Active || eg.State != "enforce" {
			t.Fatalf("%s: egress guard active=%v state %q, want enforcing", o.name, eg.Active, eg.State)
		}
		var toPeers uint64
		for _, f := range eg.Flows {
			if !peers[f.Dest] {
				t.Errorf("%s sent %d bytes to %s, which is not a paired office", o.name, f.Bytes, f.Dest)
			}
			toPeers += f.Bytes
		}
		if toPeers == 0 {
			t.Errorf("%s: the guard's ledger shows nothing sent to the peers", o.name)
		}
		logf("%s's guard: %d bytes to its peers, %d destinations", o.name, toPeers, len(eg.Flows))
	}

	// Orderly shutdown, the leader last.
	for _, o := range []*office{o3, o2, o1} {
		t0 := time.Now()
		o.p.stop(t)
		logf("%s stopped cleanly in %s", o.name, time.Since(t0).Round(time.Millisecond))
	}
}

// testNet is a switch (a bridge in its own namespace) and one namespace per
// office, each plugged into the switch with a veth pair.
type testNet struct {
	sw      string   // the switch's namespace
	offices []string // the offices' namespaces, office i+1 at index i
}

// newTestNet creates the namespaces and links, named uniquely for this run
// so a leftover of a crashed run cannot collide, and removes them when the
// test ends, failed or not.
func newTestNet(tb testing.TB, n int) *testNet {
	tb.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		privileged.Skip(tb, "iproute2's ip command is not installed: "+err.Error())
	}
	prefix := fmt.Sprintf("pg-%06x", rand.Uint32()&0xffffff) // math/rand/v2 is seeded per process
	tn := &testNet{sw: prefix + "-sw"}
	for i := 1; i <= n; i++ {
		tn.offices = append(tn.offices, fmt.Sprintf("%s-%d", prefix, i))
	}

	for _, ns := range append([]string{tn.sw}, tn.offices...) {
		out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "Operation not permitted") || strings.Contains(string(out), "Permission denied") {
				privileged.Skip(tb, fmt.Sprintf("ip netns add %s: %s", ns, strings.TrimSpace(string(out))))
			}
			tb.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
		}
		tb.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				tb.Errorf("remove namespace %s: %v\n%s", ns, err, out)
			}
		})
		ipRun(tb, "-n", ns, "link", "set", "lo", "up")
	}

	ipRun(tb, "-n", tn.sw, "link", "add", "br0", "type", "bridge")
	ipRun(tb, "-n", tn.sw, "link", "set", "br0", "up")
	for i, ns := range tn.offices {
		port := tn.port(i + 1)
		// Created inside the switch's namespace with its peer straight in
		// the office's: no link ever appears in the host's namespace.
		ipRun(tb, "-n", tn.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		tb.Cleanup(func() {
			// Deleting the namespaces would take the pair with them; do it
			// explicitly so a namespace kept alive by a straggler holds no link.
			exec.Command("ip", "-n", tn.sw, "link", "del", port).Run()
		})
		ipRun(tb, "-n", tn.sw, "link", "set", port, "master", "br0", "up")
		ipRun(tb, "-n", ns, "addr", "add", tn.addr(i+1)+"/24", "dev", "eth0")
		ipRun(tb, "-n", ns, "link", "set", "eth0", "up")
	}
	return tn
}

// port is office i's port on the switch.
func (tn *testNet) port(i int) string { return fmt.Sprintf("sw%d", i) }

// addr is office i's address.
func (tn *testNet) addr(i int) string { return fmt.Sprintf("%s.%d", netnsSubnet, 10+i) }

// setLink plugs office i's cable in or pulls it out at the switch.
func (tn *testNet) setLink(tb testing.TB, i int, up bool) {
	tb.Helper()
	state := "down"
	if up {
		state = "up"
	}
	ipRun(tb, "-n", tn.sw, "link", "set", tn.port(i), state)
}

func ipRun(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// office is one office of the test: its namespace, board, data and process.
type office struct {
	n       int
	name    string // its site name, "OfficeN"
	ns      string
	addr    string
	dataDir string
	cgroup  string // the guarded cgroup v2 directory
	pinDir  string // the guard's bpffs pins
	config  string
	board   *fakeboard.Board
	p       *proc
}

func newOffice(tb testing.TB, tn *testNet, n int) *office {
	tb.Helper()
	dir := tb.TempDir()
	o := &office{
		n: n, name: fmt.Sprintf("Office%d", n), ns: tn.offices[n-1], addr: tn.addr(n),
		dataDir: filepath.Join(dir, "data"), config: filepath.Join(dir, "pulsegate.toml"),
	}
	// Its own guarded cgroup and bpffs pins, removed after its process
	// (cleanups run last-registered first, and the process is registered
	// later).
	o.cgroup = filepath.Join(cgroup2Root(tb), tn.offices[n-1])
	o.pinDir = filepath.Join("/sys/fs/bpf", tn.offices[n-1])
	tb.Cleanup(func() {
		os.RemoveAll(o.pinDir)
		os.Remove(o.cgroup)
	})
	// WAN timings would make the test minutes long; flags set the rest.
	cfg := `[cluster]
heartbeat_timeout = "500ms"
election_timeout = "500ms"
leader_lease_timeout = "250ms"
commit_timeout = "20ms"
push_interval = "300ms"
`
	if err := os.WriteFile(o.config, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	b, err := fakeboard.New(fakeboard.Config{
		BoardID:        fmt.Sprintf("board-%d", n),
		Link:           filepath.Join(dir, "board"),
		ResendInterval: 200 * time.Millisecond,
		MaxPending:     1 << 20, // never discard: every press must end up counted
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	o.board = b
	return o
}

// start runs `pulsegate run` inside the office's network namespace.
// nsenter execs in place, so the process it starts is pulsegate itself and
// SIGTERM reaches it directly.
func (o *office) start(tb testing.TB, bin string) {
	tb.Helper()
	// nsenter, not `ip netns exec`: the latter remounts /sys, which would
	// hide the cgroup and bpffs mounts the egress guard needs.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+o.ns, bin, "run",
		"--config", o.config,
		"--data-dir", o.dataDir,
		"--listen", netnsHTTPAddr,
		"--site-name", o.name,
		"--region", fmt.Sprintf("r%d", o.n),
		"--cluster-listen", o.addr+":7400",
		"--gossip-listen", o.addr+":7401",
		"--sim", "off",
		"--no-abuse-limit",
		"--auto-approve-boards",
		"--board", o.board.Path(),
		"--log-level", "info",
		// Every office runs with the egress guard enforcing: paired peers
		// must be reachable through it, and nothing else.
		"--guard", "enforce", "--guard-cgroup", o.cgroup, "--guard-pin-dir", o.pinDir,
	)
	o.p = startProc(tb, cmd)
}

// join pairs the office with the cluster from inside its namespace: the
// token names office 1's peer address, reachable only over the switch.
func (o *office) join(tb testing.TB, bin, token string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", o.ns, bin, "join", token, "--data-dir", o.dataDir).CombinedOutput()
	if err != nil {
		tb.Fatalf("pulsegate join in %s: %v\n%s", o.ns, err, out)
	}
}

// createToken asks the running office in ns for a join token.
func createToken(tb testing.TB, bin, ns, dataDir string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "token", "create", "--data-dir", dataDir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("pulsegate token create in %s: %v\n%s", ns, err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if tok == "" || strings.ContainsAny(tok, " \n") {
		tb.Fatalf("pulsegate token create printed %q, want one token", out)
	}
	return tok
}

// officeStatus is the part of /api/status (gateway/web.Status) this test
// reads. Closed-day cells ("< 5" below the threshold) are left out.
type officeStatus struct {
	Site       string `json:"site"`
	TodayTotal uint64 `json:"today_total"`
	Cluster    *struct {
		Role        string `json:"role"`
		LeaderKnown bool   `json:"leader_known"`
		Voters      int    `json:"voters"`
		Offices     []struct {
			Name   string `json:"name"`
			Self   bool   `json:"self"`
			Member bool   `json:"member"`
			Voter  bool   `json:"voter"`
			Alive  bool   `json:"alive"`
			Total  uint64 `json:"total"`
		} `json:"offices"`
	} `json:"cluster"`
}

// totals maps office name to its replicated total, as this office sees it.
func (s officeStatus) totals() map[string]uint64 {
	m := map[string]uint64{}
	if s.Cluster != nil {
		for _, o := range s.Cluster.Offices {
			m[o.Name] = o.Total
		}
	}
	return m
}

func (s officeStatus) clusterSummary() string {
	if s.Cluster == nil {
		return "not paired"
	}
	c := s.Cluster
	var offices []string
	for _, o := range c.Offices {
		flags := ""
		if o.Member {
			flags += "m"
		}
		if o.Voter {
			flags += "v"
		}
		if o.Alive {
			flags += "a"
		}
		offices = append(offices, fmt.Sprintf("%s=%d[%s]", o.Name, o.Total, flags))
	}
	return fmt.Sprintf("role %s leader_known %v voters %d today %d offices {%s}", c.Role, c.LeaderKnown, c.Voters, s.TodayTotal, strings.Join(offices, " "))
}

// status reads the office's /api/status from inside its namespace.
func (o *office) status() (officeStatus, error) {
	var st officeStatus
	if err := boxStatusErr(o.dataDir, &st); err != nil {
		return st, fmt.Errorf("%s: %w", o.name, err)
	}
	return st, nil
}

// waitForStatus is waitFor whose condition also describes what it saw, so
// that a timeout says how far things got.
func waitForStatus(tb testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitConverged waits until every office in offices shows exactly want for
// every office named in want (and no other office).
func waitConverged(tb testing.TB, timeout time.Duration, what string, offices []*office, want map[string]uint64) {
	tb.Helper()
	waitForStatus(tb, timeout, what, func() (bool, string) {
		ok := true
		var desc []string
		for _, o := range offices {
			st, err := o.status()
			if err != nil {
				return false, err.Error()
			}
			got := st.totals()
			desc = append(desc, fmt.Sprintf("%s sees %v", o.name, got))
			if len(got) != len(want) {
				ok = false
			}
			for name, n := range want {
				if g, found := got[name]; !found || g != n {
					ok = false
				}
				if got[name] > want[name] {
					tb.Fatalf("%s shows %s at %d, more than its %d acknowledged presses: counted twice", o.name, name, got[name], want[name])
				}
			}
		}
		return ok, strings.Join(desc, "; ") + fmt.Sprintf("; want %v", want)
	})
}

// waitAllAcked waits until no board holds an unacknowledged press.
func waitAllAcked(tb testing.TB, offices []*office) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, o := range offices {
		if err := o.board.WaitAcked(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				tb.Fatalf("%s's board still holds %d unacknowledged presses: %v", o.name, o.board.Stats().Pending, err)
			}
			tb.Fatalf("%s's board: %v", o.name, err)
		}
	}
}

// ackedByOffice maps office name to its board's acknowledged presses.
func ackedByOffice(offices []*office) map[string]uint64 {
	m := map[string]uint64{}
	for _, o := range offices {
		m[o.name] = o.board.Stats().Acked
	}
	return m
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cgroup2Root is where the cgroup v2 hierarchy is mounted.
func cgroup2Root(tb testing.TB) string {
	tb.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 {
			return f[4]
		}
	}
	privileged.Skip(tb, "no cgroup v2 hierarchy is mounted: the egress guard cannot run")
	return ""
}
