//go:build linux

package guard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/pulsegate/pulsegate/tests/privileged"
	"golang.org/x/sys/unix"
)

// The guarded process in these tests is a child: the test binary again,
// running TestHelperProcess, born into the guarded cgroup (CLONE_INTO_CGROUP)
// so that all its sockets belong to it. The parent, outside the cgroup,
// listens on addresses of a veth interface: local, so reachable from this
// host, but not loopback, which the guard always allows. (This kernel has
// no dummy interfaces; a veth pair left in this namespace does the same.)

const helperEnv = "PULSEGATE_GUARD_HELPER"

// TestHelperProcess is the guarded child. It reads one command per line,
// runs it with raw syscalls (so the errno reaches the parent unchanged)
// and answers one line "@@ ok [ns]" or "@@ err ERRNO".
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		fmt.Println("@@ " + helperDo(strings.Fields(sc.Text())))
	}
	os.Exit(0)
}

func helperDo(args []string) string {
	// op proto family addr port [n]
	if len(args) < 5 {
		return "bad command " + strings.Join(args, " ")
	}
	op, proto := args[0], args[1]
	family, err := strconv.Atoi(args[2])
	if err != nil {
		return "bad family"
	}
	addr, err := netip.ParseAddr(args[3])
	if err != nil {
		return "bad addr"
	}
	port, err := strconv.Atoi(args[4])
	if err != nil {
		return "bad port"
	}
	n := 0
	if len(args) > 5 {
		if n, err = strconv.Atoi(args[5]); err != nil {
			return "bad count"
		}
	}
	var sa unix.Sockaddr
	af := unix.AF_INET
	if family == 6 {
		af = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: port, Addr: addr.As16()} // IPv4 as ::ffff:a.b.c.d
	} else {
		sa = &unix.SockaddrInet4{Port: port, Addr: addr.As4()}
	}
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	open := func() (int, error) {
		fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if af == unix.AF_INET6 {
			// Let AF_INET6 sockets reach IPv4-mapped addresses.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				unix.Close(fd)
				return -1, err
			}
		}
		return fd, nil
	}
	result := func(err error, ns int64) string {
		var errno syscall.Errno
		switch {
		case err == nil:
			return "ok " + strconv.FormatInt(ns, 10)
		case errors.As(err, &errno):
			return "err " + unix.ErrnoName(errno)
		}
		return "err " + err.Error()
	}
	start := time.Now()
	switch op {
	case "connect": // connect, close
		fd, err := open()
		if err != nil {
			return result(err, 0)
		}
		defer unix.Close(fd)
		return result(unix.Connect(fd, sa), 0)
	case "sendto": // one datagram on an unconnected socket
		fd, err := open()
		if err != nil {
			return result(err, 0)
		}
		defer unix.Close(fd)
		return result(unix.Sendto(fd, []byte("pulse"), 0, sa), 0)
	case "send", "bench-stream": // n bytes over TCP, then wait for the peer to have read them
		fd, err := open()
		if err != nil {
			return result(err, 0)
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sa); err != nil {
			return result(err, 0)
		}
		buf := make([]byte, 64<<10)
		for sent := 0; sent < n; {
			w, err := unix.Write(fd, buf[:min(len(buf), n-sent)])
			if err != nil {
				return result(err, 0)
			}
			sent += w
		}
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return result(err, 0)
		}
		for {
			r, err := unix.Read(fd, buf)
			if err != nil {
				return result(err, 0)
			}
			if r == 0 {
				return result(nil, time.Since(start).Nanoseconds())
			}
		}
	case "bench-connect": // n times: connect, reset (no TIME_WAIT to run out of ports)
		for range n {
			fd, err := open()
			if err != nil {
				return result(err, 0)
			}
			err = unix.Connect(fd, sa)
			if err == nil {
				err = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			}
			unix.Close(fd)
			if err != nil {
				return result(err, 0)
			}
		}
		return result(nil, time.Since(start).Nanoseconds())
	case "bench-sendto": // n datagrams on one unconnected socket
		fd, err := open()
		if err != nil {
			return result(err, 0)
		}
		defer unix.Close(fd)
		msg := make([]byte, 64)
		for range n {
			if err := unix.Sendto(fd, msg, 0, sa); err != nil {
				return result(err, 0)
			}
		}
		return result(nil, time.Since(start).Nanoseconds())
	}
	return "bad op " + op
}

// child is a running TestHelperProcess.
type child struct {
	in  io.WriteCloser
	out *bufio.Reader
	raw *os.File
}

// startChild starts a helper process inside the cgroup dir.
func startChild(tb testing.TB, dir string) *child {
	tb.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	// Under -race, a child would otherwise sleep a second on exit.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start guarded child: %v", err)
	}
	tb.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			tb.Errorf("guarded child: %v", err)
		}
	})
	return &child{in: in, out: bufio.NewReader(out), raw: out.(*os.File)}
}

// do runs one command in the child and returns its answer.
func (c *child) do(tb testing.TB, format string, args ...any) string {
	tb.Helper()
	line := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(c.in, line); err != nil {
		tb.Fatalf("child %q: %v", line, err)
	}
	c.raw.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for {
		resp, err := c.out.ReadString('\n')
		if err != nil {
			tb.Fatalf("child %q: %v", line, err)
		}
		if rest, ok := strings.CutPrefix(resp, "@@ "); ok {
			return strings.TrimSpace(rest)
		}
	}
}

// expect runs a command and checks that its answer starts with want ("ok"
// or "err EPERM").
func (c *child) expect(tb testing.TB, want, format string, args ...any) {
	tb.Helper()
	got := c.do(tb, format, args...)
	if got != want && !strings.HasPrefix(got, want+" ") {
		tb.Errorf("guarded child: %s = %q, want %s", fmt.Sprintf(format, args...), got, want)
	}
}

// testEnv is one test's cgroup, pin dir and network.
type testEnv struct {
	cgroup, pinDir string
	a4, a6         netip.Addr // on the veth: local, not loopback
	p1, p2         int        // TCP listeners on a4
	q1, q2         int        // TCP listeners on a6
	lo, lo2        int        // TCP listeners on 127.0.0.1
	lo6, lo62      int        // TCP listeners on ::1
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// newEnv needs root and makes the test's own cgroup, pin dir name, veth
// addresses and listeners, all removed when it ends.
func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	privileged.RequireRoot(tb, "the eBPF guard")
	if _, err := exec.LookPath("ip"); err != nil {
		privileged.Skip(tb, "iproute2 is not installed")
	}
	name := fmt.Sprintf("pgtest-%s-%d", unsafeName.ReplaceAllString(tb.Name(), "_"), os.Getpid())
	e := &testEnv{
		cgroup: filepath.Join("/sys/fs/cgroup/unified", name),
		pinDir: filepath.Join(bpffsRoot, name),
	}
	if err := os.Mkdir(e.cgroup, 0o755); err != nil {
		privileged.Skip(tb, fmt.Sprintf("no cgroup v2 at /sys/fs/cgroup/unified: %v", err))
	}
	tb.Cleanup(func() {
		// After the children (cleaned up later, so earlier) have exited.
		if err := os.Remove(e.cgroup); err != nil {
			tb.Errorf("remove test cgroup: %v", err)
		}
		if _, err := os.Stat(e.pinDir); err == nil {
			tb.Errorf("pin dir %s left behind", e.pinDir)
			removePins(e.pinDir)
		}
	})

	// Random addresses and interface names: another run of these tests
	// (another checkout, say) may be using the machine at the same time.
	r := rand.N(1 << 16)
	veth := fmt.Sprintf("pgg%04x", r)
	e.a4 = netip.AddrFrom4([4]byte{10, 99, byte(r >> 8), byte(r)})
	e.a6 = netip.MustParseAddr(fmt.Sprintf("fd99::%x", r))
	run := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("link", "add", veth, "type", "veth", "peer", "name", veth+"p")
	tb.Cleanup(func() { run("link", "del", veth) })
	run("addr", "add", e.a4.String()+"/32", "dev", veth)
	run("-6", "addr", "add", e.a6.String()+"/128", "dev", veth, "nodad")
	run("link", "set", veth, "up")
	run("link", "set", veth+"p", "up")

	e.p1, e.p2 = listen(tb, e.a4), listen(tb, e.a4)
	e.q1, e.q2 = listen(tb, e.a6), listen(tb, e.a6)
	e.lo, e.lo2 = listen(tb, netip.MustParseAddr("127.0.0.1")), listen(tb, netip.MustParseAddr("127.0.0.1"))
	e.lo6, e.lo62 = listen(tb, netip.IPv6Loopback()), listen(tb, netip.IPv6Loopback())
	return e
}

// listen accepts TCP on addr, reads every connection to its end and closes
// it, and returns the port.
func listen(tb testing.TB, addr netip.Addr) int {
	tb.Helper()
	var ln net.Listener
	var err error
	// The address may need a moment after the link comes up.
	for range 50 {
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		tb.Fatal(err)
	}
	// A UDP socket on the same port, so datagrams to it do not draw ICMP
	// port-unreachable replies; it is never read.
	port := ln.Addr().(*net.TCPAddr).Port
	pc, err := net.ListenPacket("udp", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				io.Copy(io.Discard, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		pc.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return port
}

func (e *testEnv) config(m Mode) Config {
	return Config{Mode: m, Cgroup: e.cgroup, PinDir: e.pinDir, Logger: slog.New(slog.DiscardHandler)}
}

// open opens the guard and removes it when the test ends.
func (e *testEnv) open(tb testing.TB, m Mode) *Guard {
	tb.Helper()
	g, err := Open(e.config(m))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := g.Remove(); err != nil {
			tb.Errorf("Remove: %v", err)
		}
	})
	return g
}

func mustSetAllowlist(tb testing.TB, g *Guard, ds ...Dest) {
	tb.Helper()
	if err := g.SetAllowlist(ds); err != nil {
		tb.Fatalf("SetAllowlist: %v", err)
	}
}

func findDenial(ds []Denial, d Dest) (Denial, bool) {
	for _, x := range ds {
		if x.Dest == d {
			return x, true
		}
	}
	return Denial{}, false
}

func TestEnforce(t *testing.T) {
	e := newEnv(t)
	g := e.open(t, ModeEnforce)
	if !g.Active() || g.Mode() != ModeEnforce {
		t.Fatalf("Active() = %v, Mode() = %v after Open(enforce)", g.Active(), g.Mode())
	}
	mustSetAllowlist(t, g,
		Dest{e.a4, uint16(e.p1), "tcp"},
		Dest{e.a4, uint16(e.p1), "udp"},
		Dest{e.a6, uint16(e.q1), ""},
		Dest{netip.MustParseAddr("127.0.0.1"), uint16(e.lo), "tcp"},
		Dest{netip.IPv6Loopback(), uint16(e.lo6), ""},
	)
	c := startChild(t, e.cgroup)
	a4, a6, p1, p2, q1, q2 := e.a4, e.a6, e.p1, e.p2, e.q1, e.q2
	tests := []struct {
		name, want, cmd string
	}{
		{"tcp4 allowed", "ok", fmt.Sprintf("connect tcp 4 %s %d", a4, p1)},
		{"tcp4 other port", "err EPERM", fmt.Sprintf("connect tcp 4 %s %d", a4, p2)},
		{"tcp6 allowed", "ok", fmt.Sprintf("connect tcp 6 %s %d", a6, q1)},
		{"tcp6 other port", "err EPERM", fmt.Sprintf("connect tcp 6 %s %d", a6, q2)},
		{"tcp4-mapped allowed", "ok", fmt.Sprintf("connect tcp 6 %s %d", a4, p1)},
		{"tcp4-mapped other port", "err EPERM", fmt.Sprintf("connect tcp 6 %s %d", a4, p2)},
		{"udp4 connect allowed", "ok", fmt.Sprintf("connect udp 4 %s %d", a4, p1)},
		{"udp4 connect other port", "err EPERM", fmt.Sprintf("connect udp 4 %s %d", a4, p2)},
		{"udp4 sendto allowed", "ok", fmt.Sprintf("sendto udp 4 %s %d", a4, p1)},
		{"udp4 sendto other port", "err EPERM", fmt.Sprintf("sendto udp 4 %s %d", a4, p2)},
		{"udp6 sendto allowed (any protocol)", "ok", fmt.Sprintf("sendto udp 6 %s %d", a6, q1)},
		{"udp6 sendto other port", "err EPERM", fmt.Sprintf("sendto udp 6 %s %d", a6, q2)},
		{"udp4-mapped connect other port", "err EPERM", fmt.Sprintf("connect udp 6 %s %d", a4, p2)},
		{"udp4-mapped sendto other port", "err EPERM", fmt.Sprintf("sendto udp 6 %s %d", a4, p2)},
		{"loopback allowed", "ok", fmt.Sprintf("connect tcp 4 127.0.0.1 %d", e.lo)},
		{"loopback other port", "err EPERM", fmt.Sprintf("connect tcp 4 127.0.0.1 %d", e.lo2)},
		{"loopback mapped allowed", "ok", fmt.Sprintf("connect tcp 6 127.0.0.1 %d", e.lo)},
		{"loopback mapped other port", "err EPERM", fmt.Sprintf("connect tcp 6 127.0.0.1 %d", e.lo2)},
		{"udp loopback other port", "err EPERM", fmt.Sprintf("sendto udp 4 127.0.0.1 %d", e.lo2)},
		{"loopback6 allowed", "ok", fmt.Sprintf("connect tcp 6 ::1 %d", e.lo6)},
		{"loopback6 other port", "err EPERM", fmt.Sprintf("connect tcp 6 ::1 %d", e.lo62)},
		{"udp loopback6 allowed", "ok", fmt.Sprintf("sendto udp 6 ::1 %d", e.lo6)},
		{"udp loopback6 other port", "err EPERM", fmt.Sprintf("sendto udp 6 ::1 %d", e.lo62)},
		{"unspecified", "err EPERM", fmt.Sprintf("connect tcp 4 0.0.0.0 %d", e.lo)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.expect(t, tt.want, "%s", tt.cmd)
		})
	}

	ds, err := g.Denied()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Dest{
		{a4, uint16(p2), "tcp"}, {a4, uint16(p2), "udp"},
		{a6, uint16(q2), "tcp"}, {a6, uint16(q2), "udp"},
	} {
		d, ok := findDenial(ds, want)
		if !ok {
			t.Errorf("Denied() lacks %v: %+v", want, ds)
			continue
		}
		if d.Count < 1 || time.Since(d.LastSeen).Abs() > time.Minute {
			t.Errorf("Denied() entry %v: count %d, last seen %v (now %v)", want, d.Count, d.LastSeen, time.Now())
		}
	}
	// TCP to a4:p2 was refused twice: once over AF_INET, once over AF_INET6.
	if d, _ := findDenial(ds, Dest{a4, uint16(p2), "tcp"}); d.Count != 2 {
		t.Errorf("denials of tcp %s:%d = %d, want 2 (AF_INET and IPv4-mapped AF_INET6)", a4, p2, d.Count)
	}
	if _, ok := findDenial(ds, Dest{netip.MustParseAddr("127.0.0.1"), uint16(e.lo2), "tcp"}); !ok {
		t.Errorf("Denied() lacks the loopback port: %+v", ds)
	}
}

func TestMonitor(t *testing.T) {
	e := newEnv(t)
	g := e.open(t, ModeMonitor)
	mustSetAllowlist(t, g, Dest{e.a4, uint16(e.p1), "tcp"})
	c := startChild(t, e.cgroup)
	denied := Dest{e.a4, uint16(e.p2), "tcp"}

	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	ds, err := g.Denied()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := findDenial(ds, denied); !ok || d.Count != 2 {
		t.Fatalf("monitor mode: Denied() = %+v, want %v counted twice", ds, denied)
	}

	if err := g.SetMode(ModeEnforce); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "err EPERM", "connect tcp 4 %s %d", e.a4, e.p2)

	// Off: everything passes and nothing is counted.
	if err := g.SetMode(ModeOff); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	ds, err = g.Denied()
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := findDenial(ds, denied); d.Count != 3 {
		t.Fatalf("after monitor, enforce and off: %v denied %d times, want 3", denied, d.Count)
	}
}

func TestLedger(t *testing.T) {
	e := newEnv(t)
	g := e.open(t, ModeEnforce)
	mustSetAllowlist(t, g, Dest{e.a4, uint16(e.p1), "tcp"}, Dest{netip.MustParseAddr("127.0.0.1"), uint16(e.lo), "tcp"})
	c := startChild(t, e.cgroup)

	const size = 100_000
	c.expect(t, "ok", "send tcp 4 %s %d %d", e.a4, e.p1, size)
	c.expect(t, "ok", "connect tcp 4 127.0.0.1 %d", e.lo)
	flows, err := g.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ledger: %+v", flows)
	var got *Flow
	for i, f := range flows {
		if f.Addr.IsLoopback() {
			t.Errorf("ledger counts loopback: %+v", f)
		}
		if f.Addr == e.a4 {
			got = &flows[i]
		}
	}
	if got == nil {
		t.Fatalf("ledger has no entry for %s: %+v", e.a4, flows)
	}
	// At least the payload, and the SYN, data and FIN packets.
	if got.Bytes < size || got.Packets < 3 {
		t.Errorf("ledger for %s: %d bytes, %d packets; want ≥ %d bytes, ≥ 3 packets", e.a4, got.Bytes, got.Packets, size)
	}
	if time.Since(got.LastSeen).Abs() > time.Minute {
		t.Errorf("ledger last seen %v, now %v", got.LastSeen, time.Now())
	}
}

func TestAllowlistLive(t *testing.T) {
	e := newEnv(t)
	g := e.open(t, ModeEnforce)
	p1 := Dest{e.a4, uint16(e.p1), "tcp"}
	p2 := Dest{e.a4, uint16(e.p2), "tcp"}
	mustSetAllowlist(t, g, p1)
	c := startChild(t, e.cgroup)

	c.expect(t, "err EPERM", "connect tcp 4 %s %d", e.a4, e.p2)
	mustSetAllowlist(t, g, p1, p2)
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p1)

	mustSetAllowlist(t, g, p1)
	c.expect(t, "err EPERM", "connect tcp 4 %s %d", e.a4, e.p2)

	// Port 0 and no protocol: the whole address.
	mustSetAllowlist(t, g, Dest{Addr: e.a4})
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	c.expect(t, "ok", "sendto udp 6 %s %d", e.a4, e.p2)
	c.expect(t, "err EPERM", "connect tcp 6 %s %d", e.a6, e.q1)
	// Port 0 with a protocol.
	mustSetAllowlist(t, g, Dest{Addr: e.a6, Proto: "udp"})
	c.expect(t, "ok", "sendto udp 6 %s %d", e.a6, e.q2)
	c.expect(t, "err EPERM", "connect tcp 6 %s %d", e.a6, e.q2)

	mustSetAllowlist(t, g)
	c.expect(t, "err EPERM", "connect tcp 4 %s %d", e.a4, e.p1)

	if err := g.SetAllowlist([]Dest{{Addr: e.a4, Proto: "icmp"}}); err == nil {
		t.Errorf("SetAllowlist with protocol icmp = nil, want an error")
	}
	if err := g.SetAllowlist([]Dest{{Port: 80}}); err == nil {
		t.Errorf("SetAllowlist without address = nil, want an error")
	}
}

func TestRestartKeepsEnforcing(t *testing.T) {
	e := newEnv(t)
	g1, err := Open(e.config(ModeEnforce))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	mustSetAllowlist(t, g1, Dest{e.a4, uint16(e.p1), "tcp"})
	if err := g1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := g1.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if g1.Active() {
		t.Errorf("Active() after Close = true")
	}
	if err := g1.SetAllowlist(nil); err == nil {
		t.Errorf("SetAllowlist after Close = nil, want an error")
	}
	for _, name := range []string{"link_connect4", "link_connect6", "link_sendmsg4", "link_sendmsg6", "link_egress", "allow", "config", "denied", "ledger"} {
		if _, err := os.Stat(filepath.Join(e.pinDir, name)); err != nil {
			t.Errorf("pin after Close: %v", err)
		}
	}

	// No Guard exists in any process: the pins alone enforce.
	c := startChild(t, e.cgroup)
	c.expect(t, "ok", "send tcp 4 %s %d 5000", e.a4, e.p1)
	c.expect(t, "err EPERM", "connect tcp 4 %s %d", e.a4, e.p2)
	c.expect(t, "err EPERM", "sendto udp 6 %s %d", e.a6, e.q2)

	g2 := e.open(t, ModeEnforce) // reuses the pins
	if !g2.Active() {
		t.Fatal("Active() = false after reopening")
	}
	// What happened while no Guard existed was counted.
	flows, err := g2.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) == 0 || flows[0].Addr != e.a4 || flows[0].Bytes < 5000 {
		t.Errorf("ledger after restart = %+v, want ≥ 5000 bytes to %s", flows, e.a4)
	}
	ds, err := g2.Denied()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findDenial(ds, Dest{e.a4, uint16(e.p2), "tcp"}); !ok {
		t.Errorf("denials after restart = %+v, want tcp %s:%d", ds, e.a4, e.p2)
	}
	// The reopened guard still drives the pinned programs: the allowlist
	// kept its entry, and changes apply to the running child.
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p1)
	mustSetAllowlist(t, g2, Dest{e.a4, uint16(e.p1), "tcp"}, Dest{e.a4, uint16(e.p2), "tcp"})
	c.expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	if err := g2.SetMode(ModeMonitor); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "ok", "connect tcp 6 %s %d", e.a6, e.q2)

	// Remove detaches: the cgroup is no longer guarded.
	if err := g2.SetMode(ModeEnforce); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "err EPERM", "connect tcp 6 %s %d", e.a6, e.q2)
	if err := g2.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after Remove: %v", err)
	}
	c.expect(t, "ok", "connect tcp 6 %s %d", e.a6, e.q2)
}

// Opening with another cgroup than the pinned links' moves the guard.
func TestOpenMovesToNewCgroup(t *testing.T) {
	e := newEnv(t)
	g1, err := Open(e.config(ModeEnforce))
	if err != nil {
		t.Fatal(err)
	}
	g1.Close()
	other := e.cgroup + "-moved"
	t.Cleanup(func() { os.Remove(other) })
	cfg := e.config(ModeEnforce)
	cfg.Cgroup = other
	g2, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open with a new cgroup: %v", err)
	}
	t.Cleanup(func() { g2.Remove() })
	startChild(t, e.cgroup).expect(t, "ok", "connect tcp 4 %s %d", e.a4, e.p2)
	startChild(t, other).expect(t, "err EPERM", "connect tcp 4 %s %d", e.a4, e.p2)
}

// benchSetup is a guarded cgroup and an unguarded one, each with a child.
type benchSetup struct {
	e              *testEnv
	g              *Guard
	guarded, plain *child
}

func newBench(b *testing.B) *benchSetup {
	e := newEnv(b)
	g := e.open(b, ModeEnforce)
	mustSetAllowlist(b, g, Dest{e.a4, uint16(e.p1), "tcp"}, Dest{e.a4, uint16(e.p1), "udp"})
	plain := e.cgroup + "-plain"
	if err := os.Mkdir(plain, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove(plain) })
	return &benchSetup{e: e, g: g, guarded: startChild(b, e.cgroup), plain: startChild(b, plain)}
}

// run runs a child benchmark command in each setting: "none" (a cgroup
// without programs), then the guard's cgroup in off, monitor and enforce.
func (s *benchSetup) run(b *testing.B, bytesPerOp int64, format string) {
	for _, mode := range []string{"none", "off", "monitor", "enforce"} {
		b.Run(mode, func(b *testing.B) {
			c := s.guarded
			if mode == "none" {
				c = s.plain
			} else {
				m, _ := ParseMode(mode)
				if err := s.g.SetMode(m); err != nil {
					b.Fatal(err)
				}
			}
			// The kernel's own accounting of the programs' run time is the
			// overhead figure that the noise of a shared machine cannot
			// hide; collecting it costs two clock reads per program run.
			var before time.Duration
			if mode != "none" {
				stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
				if err != nil {
					b.Fatalf("enable BPF run-time stats: %v", err)
				}
				defer stats.Close()
				before = s.bpfRuntime(b)
			}
			b.SetBytes(bytesPerOp)
			b.ResetTimer()
			c.expect(b, "ok", format, s.e.a4, s.e.p1, b.N*max(1, int(bytesPerOp)))
			b.StopTimer()
			if mode != "none" {
				b.ReportMetric(float64(s.bpfRuntime(b)-before)/float64(b.N), "bpf-ns/op")
			}
		})
	}
}

// bpfRuntime is the run time the kernel has accounted to the guard's
// programs while stats were enabled.
func (s *benchSetup) bpfRuntime(b *testing.B) time.Duration {
	var total time.Duration
	for _, a := range attachments {
		st, err := a.prog(&s.g.objs).Stats()
		if err != nil {
			b.Fatalf("program stats: %v", err)
		}
		total += st.Runtime
	}
	return total
}

// BenchmarkConnect is one TCP connect (and reset) to an allowed address.
func BenchmarkConnect(b *testing.B) {
	newBench(b).run(b, 0, "bench-connect tcp 4 %s %d %d")
}

// BenchmarkSendto is one UDP datagram to an allowed address: the cheapest
// operation the guard checks, so its overhead shows most here.
func BenchmarkSendto(b *testing.B) {
	newBench(b).run(b, 0, "bench-sendto udp 4 %s %d %d")
}

// BenchmarkThroughput streams over one TCP connection to an allowed
// address; every packet passes the egress counter.
func BenchmarkThroughput(b *testing.B) {
	newBench(b).run(b, 1<<20, "bench-stream tcp 4 %s %d %d")
}
