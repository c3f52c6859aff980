package fakeboard_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests play the gateway by hand on the board's pty slave, a real
// pseudo-terminal, and check the board's side of the protocol frame by frame.

func TestHelloOnPowerUpAndQuery(t *testing.T) {
	b := newBoard(t, fakeboard.Config{BoardID: "test-1", Firmware: "fw-2"})
	g := openGateway(t, b.Path())

	h := g.next(t, drivers.KindHello)
	if h.BoardID != "test-1" || h.Firmware != "fw-2" || h.Boot != b.Stats().Boot {
		t.Fatalf("hello = %+v, want board test-1, firmware fw-2, boot %08X", h, b.Stats().Boot)
	}
	g.send(t, drivers.Frame{Kind: drivers.KindQuery})
	if h2 := g.next(t, drivers.KindHello); h2 != h {
		t.Fatalf("hello after query = %+v, want %+v", h2, h)
	}
	if s := b.Stats(); s.QueriesReceived != 1 || s.HellosSent != 2 {
		t.Fatalf("stats = %+v, want 1 query received, 2 hellos sent", s)
	}
}

func TestPressResendAndAck(t *testing.T) {
	b := newBoard(t, fakeboard.Config{})
	g := openGateway(t, b.Path())
	boot := g.next(t, drivers.KindHello).Boot

	if gotBoot, seq := b.Press(drivers.Green); gotBoot != boot || seq != 1 {
		t.Fatalf("Press = (%08X, %d), want (%08X, 1)", gotBoot, seq, boot)
	}
	b.Press(drivers.Red)
	p1, p2 := g.next(t, drivers.KindPress), g.next(t, drivers.KindPress)
	if p1.Seq != 1 || p1.Colour != drivers.Green || p1.Boot != boot || p2.Seq != 2 || p2.Colour != drivers.Red {
		t.Fatalf("first sends = %+v, %+v, want seq 1 green, seq 2 red of boot %08X", p1, p2, boot)
	}

	// Unacknowledged, both come again, in seq order, older by a resend interval.
	r1, r2 := g.next(t, drivers.KindPress), g.next(t, drivers.KindPress)
	if r1.Seq != 1 || r2.Seq != 2 {
		t.Fatalf("resends = seq %d, %d, want 1, 2", r1.Seq, r2.Seq)
	}
	if r1.AgeMS < uint32(testResend/time.Millisecond) || r1.AgeMS < p1.AgeMS {
		t.Fatalf("resent age %d ms, first age %d ms, want at least %v and growing", r1.AgeMS, p1.AgeMS, testResend)
	}

	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 1})
	waitFor(t, "seq 1 acked", func() bool { return b.Stats().Pending == 1 })
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot ^ 1, Seq: 2}) // another boot's ack
	waitFor(t, "second ack read", func() bool { return b.Stats().AcksReceived == 2 })
	if s := b.Stats(); s.Pending != 1 {
		t.Fatalf("after an ack for another boot: pending %d, want 1", s.Pending)
	}
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 2})
	waitAcked(t, b)
	want := fakeboard.Stats{Pressed: 2, Acked: 2, Boot: boot, LastSeq: 2, LastAck: 2, AcksReceived: 3}
	if s := b.Stats(); s.Pressed != want.Pressed || s.Acked != want.Acked || s.Lost != 0 || s.LastAck != 2 || s.AcksReceived != 3 {
		t.Fatalf("stats = %+v, want %+v", s, want)
	}
}

func TestHeartbeat(t *testing.T) {
	b := newBoard(t, fakeboard.Config{})
	g := openGateway(t, b.Path())
	boot := g.next(t, drivers.KindHello).Boot
	for range 3 {
		b.Press(drivers.Green)
	}
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 1})
	g.until(t, "heartbeat with last_seq 3, unacked 2", func(f drivers.Frame) bool {
		return f.Kind == drivers.KindHeartbeat && f.Boot == boot && f.LastSeq == 3 && f.Unacked == 2
	})
}

func TestRebootLosesPending(t *testing.T) {
	b := newBoard(t, fakeboard.Config{})
	g := openGateway(t, b.Path())
	old := g.next(t, drivers.KindHello).Boot
	b.Press(drivers.Green)
	b.Press(drivers.Green)
	b.SetHung(true)
	b.Reboot() // also clears the hang

	boot := g.next(t, drivers.KindHello).Boot
	if boot == old || boot != b.Stats().Boot {
		t.Fatalf("boot after reboot = %08X, want new (old %08X, board says %08X)", boot, old, b.Stats().Boot)
	}
	if gotBoot, seq := b.Press(drivers.Red); gotBoot != boot || seq != 1 {
		t.Fatalf("Press after reboot = (%08X, %d), want (%08X, 1)", gotBoot, seq, boot)
	}
	g.until(t, "press seq 1 of the new boot", func(f drivers.Frame) bool {
		return f.Kind == drivers.KindPress && f.Boot == boot && f.Seq == 1
	})
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: old, Seq: 2}) // too late: ignored
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 1})
	waitAcked(t, b)
	if s := b.Stats(); s.Pressed != 3 || s.Lost != 2 || s.Acked != 1 {
		t.Fatalf("stats = %+v, want 3 pressed, 2 lost, 1 acked", s)
	}
}

func TestOverflowDropsOldest(t *testing.T) {
	b := newBoard(t, fakeboard.Config{MaxPending: 4})
	g := openGateway(t, b.Path())
	boot := g.next(t, drivers.KindHello).Boot
	for range 6 {
		b.Press(drivers.Red)
	}
	if s := b.Stats(); s.Pending != 4 || s.Lost != 2 {
		t.Fatalf("stats = %+v, want 4 pending, 2 lost", s)
	}
	g.until(t, "heartbeat with last_seq 6, unacked 4", func(f drivers.Frame) bool {
		return f.Kind == drivers.KindHeartbeat && f.LastSeq == 6 && f.Unacked == 4
	})
	// From now on only 3..6 are resent.
	seen := map[uint32]int{}
	g.until(t, "two resend rounds", func(f drivers.Frame) bool {
		if f.Kind == drivers.KindPress {
			seen[f.Seq]++
		}
		return seen[3] >= 2 && seen[6] >= 2
	})
	if seen[1]+seen[2] > 0 {
		t.Fatalf("resent seqs %v, want 3..6 only", seen)
	}
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 6})
	waitAcked(t, b)
}

func TestHungBoardIsSilent(t *testing.T) {
	b := newBoard(t, fakeboard.Config{})
	g := openGateway(t, b.Path())
	boot := g.next(t, drivers.KindHello).Boot

	b.SetHung(true)
	g.drain(100 * time.Millisecond) // bytes already on the line
	g.send(t, drivers.Frame{Kind: drivers.KindQuery})
	b.Press(drivers.Green)
	if f, ok := g.within(5 * testHeartbeat); ok {
		t.Fatalf("hung board sent %+v", f)
	}
	if s := b.Stats(); s.QueriesReceived != 0 {
		t.Fatalf("hung board read a query: %+v", s)
	}

	b.SetHung(false)
	g.until(t, "press after unhang", func(f drivers.Frame) bool {
		return f.Kind == drivers.KindPress && f.Seq == 1
	})
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 1})
	waitAcked(t, b)
}

func TestUnplugReplugRepointsLink(t *testing.T) {
	link := filepath.Join(t.TempDir(), "usb-pulsegate-board")
	b := newBoard(t, fakeboard.Config{Link: link})
	if b.Path() != link {
		t.Fatalf("Path() = %q, want %q", b.Path(), link)
	}
	first, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	g := openGateway(t, link)
	boot := g.next(t, drivers.KindHello).Boot

	if err := b.Unplug(); err != nil {
		t.Fatalf("Unplug: %v", err)
	}
	select {
	case <-g.done:
	case <-time.After(testTimeout):
		t.Fatal("the gateway's read did not fail after Unplug")
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link while unplugged: %v, want it gone", err)
	}
	b.Press(drivers.Green) // kept in RAM while unplugged

	if err := b.Replug(); err != nil {
		t.Fatalf("Replug: %v", err)
	}
	if _, err := os.Readlink(link); err != nil {
		t.Fatalf("link after Replug: %v", err)
	}
	t.Logf("slave was %s", first)
	g2 := openGateway(t, link)
	if h := g2.next(t, drivers.KindHello); h.Boot != boot {
		t.Fatalf("hello after replug has boot %08X, want unchanged %08X", h.Boot, boot)
	}
	g2.until(t, "resent press", func(f drivers.Frame) bool { return f.Kind == drivers.KindPress && f.Seq == 1 })
	g2.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: 1})
	waitAcked(t, b)
}

func TestNoiseNeverHidesAFrame(t *testing.T) {
	b := newBoard(t, fakeboard.Config{NoiseRate: 1})
	g := openGateway(t, b.Path())
	boot := g.next(t, drivers.KindHello).Boot
	const n = 30
	for range n {
		b.Press(drivers.Green)
	}
	// Noise comes before a frame, and a frame's '$' resynchronises the
	// decoder, so every first send arrives intact.
	seen := map[uint32]bool{}
	g.until(t, "all presses", func(f drivers.Frame) bool {
		if f.Kind == drivers.KindPress && f.Boot == boot {
			seen[f.Seq] = true
		}
		return len(seen) == n
	})
	if s := g.stats(); s.Dropped == 0 {
		t.Fatalf("decoder stats %+v, want dropped frames from noise", s)
	}
	g.send(t, drivers.Frame{Kind: drivers.KindAck, Boot: boot, Seq: n})
	waitAcked(t, b)
}

func TestRunPoisson(t *testing.T) {
	b := newBoard(t, fakeboard.Config{})
	g := openGateway(t, b.Path())
	g.next(t, drivers.KindHello)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := b.Run(ctx, 200, 1, rand.New(rand.NewPCG(1, 2))); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// 60 expected; the bounds only catch a broken rate, not bad luck.
	if s := b.Stats(); s.Pressed < 10 || s.Pressed > 200 {
		t.Fatalf("Run at 200/s for 300ms pressed %d times", s.Pressed)
	}
	g.until(t, "a press", func(f drivers.Frame) bool {
		if f.Kind == drivers.KindPress && f.Colour != drivers.Green {
			t.Fatalf("green share 1 pressed %v", f.Colour)
		}
		return f.Kind == drivers.KindPress
	})

	for _, rate := range []float64{0, -1} {
		if err := b.Run(context.Background(), rate, 0.5, nil); err == nil {
			t.Errorf("Run(rate %v) = nil, want an error", rate)
		}
	}
	if err := b.Run(context.Background(), 1, 1.5, nil); err == nil {
		t.Error("Run(green share 1.5) = nil, want an error")
	}
}

func TestCloseTwiceAndAfter(t *testing.T) {
	b, err := fakeboard.New(fakeboard.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b.Press(drivers.Red)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Replug(); !errors.Is(err, fakeboard.ErrClosed) {
		t.Fatalf("Replug after Close = %v, want ErrClosed", err)
	}
	if err := b.WaitAcked(context.Background()); !errors.Is(err, fakeboard.ErrClosed) {
		t.Fatalf("WaitAcked after Close with a press pending = %v, want ErrClosed", err)
	}
	if err := b.Run(context.Background(), 1000, 0.5, nil); !errors.Is(err, fakeboard.ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  fakeboard.Config
		ok   bool
	}{
		{"zero", fakeboard.Config{}, true},
		{"board id with space", fakeboard.Config{BoardID: "a b"}, false},
		{"board id too long", fakeboard.Config{BoardID: "0123456789abcdef0123456789abcdef0"}, false},
		{"firmware with comma", fakeboard.Config{Firmware: "1,2"}, false},
		{"noise above 1", fakeboard.Config{NoiseRate: 1.5}, false},
		{"negative resend", fakeboard.Config{ResendInterval: -time.Second}, false},
		{"negative max pending", fakeboard.Config{MaxPending: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v, want ok %v", tt.cfg, err, tt.ok)
			}
		})
	}
}

// Test timings: fast enough for a quick test, slow enough for -race on a
// loaded machine.
const (
	testResend    = 50 * time.Millisecond
	testHeartbeat = 50 * time.Millisecond
	testTimeout   = 5 * time.Second
)

func newBoard(tb testing.TB, cfg fakeboard.Config) *fakeboard.Board {
	tb.Helper()
	if cfg.ResendInterval == 0 {
		cfg.ResendInterval = testResend
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = testHeartbeat
	}
	b, err := fakeboard.New(cfg)
	if err != nil {
		tb.Fatalf("fakeboard.New: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return b
}

func waitAcked(tb testing.TB, b *fakeboard.Board) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := b.WaitAcked(ctx); err != nil {
		tb.Fatalf("WaitAcked: %v (stats %+v)", err, b.Stats())
	}
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", testTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gateway is the test's side of the line: the pty slave, opened by path as
// the real gateway does, decoded with the real Decoder.
type gateway struct {
	f      *os.File
	frames chan drivers.Frame
	done   chan struct{}

	mu  sync.Mutex
	dec drivers.DecoderStats
}

func openGateway(tb testing.TB, path string) *gateway {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	g := &gateway{f: f, frames: make(chan drivers.Frame, 4096), done: make(chan struct{})}
	go g.read()
	tb.Cleanup(func() {
		_ = g.f.Close()
		<-g.done
	})
	return g
}

func (g *gateway) read() {
	defer close(g.done)
	var dec drivers.Decoder
	buf := make([]byte, 256)
	for {
		n, err := g.f.Read(buf)
		dec.Feed(buf[:n], func(f drivers.Frame) {
			select {
			case g.frames <- f:
			default: // the test stopped listening
			}
		})
		g.mu.Lock()
		g.dec = dec.Stats()
		g.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (g *gateway) stats() drivers.DecoderStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dec
}

func (g *gateway) send(tb testing.TB, f drivers.Frame) {
	tb.Helper()
	if _, err := g.f.Write(f.Encode()); err != nil {
		tb.Fatalf("send %v: %v", f.Kind, err)
	}
}

// until reads frames until match returns true.
func (g *gateway) until(tb testing.TB, what string, match func(drivers.Frame) bool) drivers.Frame {
	tb.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case f := <-g.frames:
			if match(f) {
				return f
			}
		case <-timeout:
			tb.Fatalf("timed out after %v waiting for %s", testTimeout, what)
		}
	}
}

// next skips to the next frame of kind k.
func (g *gateway) next(tb testing.TB, k drivers.Kind) drivers.Frame {
	tb.Helper()
	return g.until(tb, k.String(), func(f drivers.Frame) bool { return f.Kind == k })
}

// within returns the first frame to arrive within d, if any.
func (g *gateway) within(d time.Duration) (drivers.Frame, bool) {
	select {
	case f := <-g.frames:
		return f, true
	case <-time.After(d):
		return drivers.Frame{}, false
	}
}

// drain discards frames for d.
func (g *gateway) drain(d time.Duration) {
	end := time.After(d)
	for {
		select {
		case <-g.frames:
		case <-end:
			return
		}
	}
}
