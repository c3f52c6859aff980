package drivers_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
)

// The Manager is tested on real pseudo-terminals: the fake boards are ptys
// speaking the protocol, opened by path through go.bug.st/serial exactly as
// USB boards are. Nothing of the serial library is mocked.

func TestManagerCountsEveryPressOnce(t *testing.T) {
	noLeaks(t)
	var logs syncBuffer
	b := newBoard(t, fakeboard.Config{BoardID: "hall-1", Firmware: "fw-3"})
	sink := newSink()
	fixed := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := startManager(t, drivers.Config{
		Ports:  []string{b.Path()},
		Now:    func() time.Time { return fixed },
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, sink)

	want := map[uint32]drivers.Colour{}
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		c := drivers.Red
		if rnd.IntN(2) == 0 {
			c = drivers.Green
		}
		_, seq := b.Press(c)
		want[seq] = c
	}
	waitAcked(t, b)

	boot := b.Stats().Boot
	got := sink.presses("hall-1", boot)
	if len(got) != len(want) || sink.unique() != len(want) {
		t.Fatalf("sink has %d presses of this boot, %d in all, want %d", len(got), sink.unique(), len(want))
	}
	for seq, c := range want {
		p := got[seq]
		if p.Colour != c || p.Received != fixed || p.Board != "hall-1" || p.Boot != boot {
			t.Fatalf("press %d = %+v, want colour %v, received %v", seq, p, c, fixed)
		}
	}
	if s := b.Stats(); s.Acked != 50 || s.Lost != 0 {
		t.Fatalf("board stats %+v, want 50 acked", s)
	}
	st := boardState(t, m, b.Path())
	if !st.Connected || st.BoardID != "hall-1" || st.Firmware != "fw-3" || st.Boot != boot ||
		st.Presses < 50 || st.FramesOK < 51 || st.LastByte != fixed {
		t.Fatalf("board state = %+v", st)
	}

	// Privacy: no log line may tell which button was pressed.
	if bad := regexp.MustCompile(`(?i)colou?r|green|\bred\b|=G\b|=R\b`).FindString(logs.String()); bad != "" {
		t.Fatalf("logs mention a colour (%q):\n%s", bad, logs.String())
	}
}

func TestManagerDuplicatesCountedOnce(t *testing.T) {
	noLeaks(t)
	b := newBoard(t, fakeboard.Config{})
	sink := newSink()
	sink.hold(true) // the intake is slow: no acks, so the board resends
	startManager(t, drivers.Config{Ports: []string{b.Path()}}, sink)

	for range 5 {
		b.Press(drivers.Green)
	}
	waitFor(t, 5*time.Second, "resends", func() bool { return sink.submitted() >= 15 })
	if n := sink.unique(); n != 5 {
		t.Fatalf("sink counted %d presses after %d submissions, want 5", n, sink.submitted())
	}
	sink.hold(false)
	waitAcked(t, b)
	if n, s := sink.unique(), b.Stats(); n != 5 || s.Acked != 5 {
		t.Fatalf("sink counted %d, board acked %d, want 5 and 5", n, s.Acked)
	}
}

func TestManagerBoardReboot(t *testing.T) {
	noLeaks(t)
	b := newBoard(t, fakeboard.Config{BoardID: "door"})
	sink := newSink()
	m := startManager(t, drivers.Config{Ports: []string{b.Path()}}, sink)

	for range 5 {
		b.Press(drivers.Green)
	}
	waitAcked(t, b)
	first := b.Stats().Boot

	// Reboot with presses in flight: the board loses them, and the new
	// boot's seqs restart at 1 without being taken for resends.
	sink.hold(true)
	b.Press(drivers.Red)
	b.Press(drivers.Red)
	waitFor(t, 5*time.Second, "the two presses", func() bool { return sink.unique() == 7 })
	b.Reboot()
	sink.hold(false)
	second := b.Stats().Boot
	for range 3 {
		b.Press(drivers.Red)
	}
	waitAcked(t, b)

	if n1, n2 := len(sink.presses("door", first)), len(sink.presses("door", second)); n1 != 7 || n2 != 3 {
		t.Fatalf("sink has %d presses of the first boot and %d of the second, want 7 and 3", n1, n2)
	}
	for seq := uint32(1); seq <= 3; seq++ {
		if p, ok := sink.presses("door", second)[seq]; !ok || p.Colour != drivers.Red {
			t.Fatalf("second boot seq %d = %+v, %v", seq, p, ok)
		}
	}
	if s := b.Stats(); s.Lost != 2 || s.Acked != 8 {
		t.Fatalf("board stats %+v, want 2 lost (in flight at reboot), 8 acked", s)
	}
	waitFor(t, 5*time.Second, "state of the new boot", func() bool {
		st := boardState(t, m, b.Path())
		return st.Boot == second && st.LastSeq == 3 && st.Unacked == 0
	})
}

func TestManagerNoisyLine(t *testing.T) {
	noLeaks(t)
	b := newBoard(t, fakeboard.Config{NoiseRate: 0.5})
	sink := newSink()
	m := startManager(t, drivers.Config{Ports: []string{b.Path()}}, sink)

	for i := range 100 {
		b.Press(drivers.Green)
		if i%10 == 9 {
			time.Sleep(10 * time.Millisecond) // let the line breathe, like people do
		}
	}
	waitAcked(t, b)
	if n := sink.unique(); n != 100 {
		t.Fatalf("sink counted %d presses, want 100", n)
	}
	st := boardState(t, m, b.Path())
	if st.FramesDropped == 0 || st.BadCRC == 0 || st.NoiseBytes == 0 {
		t.Fatalf("board state %+v, want dropped frames, CRC errors and noise bytes", st)
	}
}

func TestManagerUnplugReplug(t *testing.T) {
	noLeaks(t)
	link := filepath.Join(t.TempDir(), "usb-pulsegate_board-if00")
	b := newBoard(t, fakeboard.Config{Link: link})
	sink := newSink()
	m := startManager(t, drivers.Config{Ports: []string{link}}, sink)

	for range 5 {
		b.Press(drivers.Green)
	}
	waitAcked(t, b)

	if err := b.Unplug(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "disconnect", func() bool { return !boardState(t, m, link).Connected })
	for range 5 {
		b.Press(drivers.Red) // the board keeps them while unplugged
	}
	time.Sleep(100 * time.Millisecond) // the manager retries a missing path
	if err := b.Replug(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b.Press(drivers.Green)
	}
	waitAcked(t, b)

	if n := sink.unique(); n != 15 {
		t.Fatalf("sink counted %d presses, want 15", n)
	}
	st := boardState(t, m, link)
	if !st.Connected || st.Reopens == 0 || st.LastError == "" {
		t.Fatalf("board state %+v, want connected after a reopen, with the error", st)
	}
}

func TestManagerReopensHungBoard(t *testing.T) {
	noLeaks(t)
	b := newBoard(t, fakeboard.Config{})
	sink := newSink()
	m := startManager(t, drivers.Config{Ports: []string{b.Path()}, HungTimeout: 500 * time.Millisecond}, sink)

	b.Press(drivers.Green)
	waitAcked(t, b)
	b.SetHung(true)
	b.Press(drivers.Red)
	waitFor(t, 5*time.Second, "a reopen", func() bool { return boardState(t, m, b.Path()).Reopens > 0 })
	if st := boardState(t, m, b.Path()); !strings.Contains(st.LastError, drivers.ErrSilent.Error()) {
		t.Fatalf("last error %q, want %q", st.LastError, drivers.ErrSilent)
	}
	b.Press(drivers.Red)
	b.SetHung(false)
	waitAcked(t, b)
	if n := sink.unique(); n != 3 {
		t.Fatalf("sink counted %d presses, want 3", n)
	}
}

// A board that overflowed while nobody listened: its heartbeat tells the
// sink that seqs below its window are gone, so the acks can move past them.
func TestManagerOverflowSettledByHeartbeat(t *testing.T) {
	noLeaks(t)
	b := newBoard(t, fakeboard.Config{MaxPending: 4})
	sink := newSink()
	startManager(t, drivers.Config{Ports: []string{b.Path()}}, sink)

	b.SetHung(true) // the presses pile up on the board
	for range 10 {
		b.Press(drivers.Green)
	}
	b.SetHung(false)
	waitAcked(t, b)
	if s := b.Stats(); s.Lost != 6 || s.Acked != 4 || sink.unique() != 4 || sink.heartbeats() == 0 {
		t.Fatalf("board %+v, sink %d presses %d heartbeats; want 6 lost, 4 acked and counted", s, sink.unique(), sink.heartbeats())
	}
}

func TestManagerManyBoards(t *testing.T) {
	noLeaks(t)
	sink := newSink()
	boards := []*fakeboard.Board{
		newBoard(t, fakeboard.Config{BoardID: "b-1"}),
		newBoard(t, fakeboard.Config{BoardID: "b-2"}),
		newBoard(t, fakeboard.Config{BoardID: "b-3"}),
	}
	m := startManager(t, drivers.Config{Ports: []string{boards[0].Path()}}, sink)
	for _, b := range boards[1:] {
		m.AddPort(b.Path()) // as the simulator adds boards later
		m.AddPort(b.Path())
	}
	for _, b := range boards {
		for range 4 {
			b.Press(drivers.Green)
		}
	}
	for _, b := range boards {
		waitAcked(t, b)
		if n := len(sink.presses(b.BoardID(), b.Stats().Boot)); n != 4 {
			t.Fatalf("sink has %d presses of %s, want 4", n, b.BoardID())
		}
	}
	states := m.Boards()
	if len(states) != 3 {
		t.Fatalf("Boards() has %d entries, want 3", len(states))
	}
	for i := 1; i < len(states); i++ {
		if states[i-1].Path >= states[i].Path {
			t.Fatalf("Boards() not sorted by path: %q before %q", states[i-1].Path, states[i].Path)
		}
	}
}

// The protocol rules, with the test as the board, byte by byte on a raw pty.
func TestManagerProtocolRules(t *testing.T) {
	noLeaks(t)
	line := openRawPTY(t)
	sink := newSink()
	m := startManager(t, drivers.Config{Ports: []string{line.path}}, sink)
	const boot = 0xB0071234

	line.expect(t, "query on open", func(f drivers.Frame) bool { return f.Kind == drivers.KindQuery })

	// A press before any hello is not booked: the manager asks who is there.
	line.send(t, drivers.Frame{Kind: drivers.KindPress, Boot: boot, Seq: 1, Colour: drivers.Green, AgeMS: 7})
	line.expect(t, "query for a press before hello", func(f drivers.Frame) bool { return f.Kind == drivers.KindQuery })

	line.send(t,
		drivers.Frame{Kind: drivers.KindHello, BoardID: "raw-1", Firmware: "fw-1", Boot: boot},
		drivers.Frame{Kind: drivers.KindPress, Boot: boot, Seq: 1, Colour: drivers.Green, AgeMS: 1234},
		drivers.Frame{Kind: drivers.KindPress, Boot: boot, Seq: 2, Colour: drivers.Red, AgeMS: 5},
		drivers.Frame{Kind: drivers.KindPress, Boot: boot + 1, Seq: 9, Colour: drivers.Red, AgeMS: 5}, // not this hello's boot
	)
	line.expect(t, "ack of seq 2", func(f drivers.Frame) bool {
		return f.Kind == drivers.KindAck && f.Boot == boot && f.Seq == 2
	})
	line.send(t, drivers.Frame{Kind: drivers.KindHeartbeat, Boot: boot, UptimeS: 3, LastSeq: 2, Unacked: 0})
	waitFor(t, 5*time.Second, "heartbeat", func() bool { return sink.heartbeats() == 1 })

	got := sink.presses("raw-1", boot)
	if p := got[1]; len(got) != 2 || sink.unique() != 2 || p.AgeMS != 1234 || p.Colour != drivers.Green {
		t.Fatalf("sink has %v (%d in all), want seq 1 (green, age 1234) and 2 of boot %08X only", got, sink.unique(), boot)
	}
	st := boardState(t, m, line.path)
	if st.BoardID != "raw-1" || st.Boot != boot || st.UptimeS != 3 || st.LastSeq != 2 || st.Presses != 4 {
		t.Fatalf("board state %+v", st)
	}
}

func TestManagerCloseWaits(t *testing.T) {
	noLeaks(t)
	b := newBoard(t, fakeboard.Config{})
	b.SetHung(true) // a silent board: the reader sits in Read
	sink := newSink()
	m := drivers.NewManager(drivers.Config{Ports: []string{b.Path()}}, sink)
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "open", func() bool { return boardState(t, m, b.Path()).Connected })
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.Start(context.Background()); !errors.Is(err, drivers.ErrManagerClosed) {
		t.Fatalf("Start after Close = %v, want ErrManagerClosed", err)
	}
	m.AddPort("/dev/null") // ignored after Close
	if n := len(m.Boards()); n != 1 {
		t.Fatalf("Boards() after Close has %d entries, want 1", n)
	}

	unstarted := drivers.NewManager(drivers.Config{}, sink)
	if err := unstarted.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  drivers.Config
		ok   bool
	}{
		{"zero", drivers.Config{}, true},
		{"negative hung timeout", drivers.Config{HungTimeout: -1}, false},
		{"min above max", drivers.Config{ReopenMin: time.Second, ReopenMax: time.Millisecond}, false},
		{"min above default max", drivers.Config{ReopenMin: time.Minute}, true},
		{"empty path", drivers.Config{Ports: []string{""}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v, want ok %v", tt.cfg, err, tt.ok)
			}
		})
	}
}

// sink is the gateway's intake in memory: it books each (board, boot, seq)
// once and acks the cumulative seq it holds, as the durable intake does.
type sink struct {
	mu       sync.Mutex
	boots    map[bootKey]*bootLog
	submits  int
	beats    int
	holdAcks bool
}

type bootKey struct {
	board string
	boot  uint32
}

type bootLog struct {
	presses map[uint32]drivers.Press
	floor   uint32 // the board holds nothing at or below
	mark    uint32 // every seq up to here is booked or gone for good
}

func newSink() *sink { return &sink{boots: map[bootKey]*bootLog{}} }

func (s *sink) logLocked(board string, boot uint32) *bootLog {
	k := bootKey{board, boot}
	l := s.boots[k]
	if l == nil {
		l = &bootLog{presses: map[uint32]drivers.Press{}}
		s.boots[k] = l
	}
	return l
}

func (l *bootLog) advance() {
	l.mark = max(l.mark, l.floor)
	for {
		if _, ok := l.presses[l.mark+1]; !ok {
			return
		}
		l.mark++
	}
}

func (s *sink) SubmitPress(p drivers.Press, ack func(seq uint32)) {
	s.mu.Lock()
	s.submits++
	l := s.logLocked(p.Board, p.Boot)
	if _, dup := l.presses[p.Seq]; !dup {
		l.presses[p.Seq] = p
	}
	l.advance()
	mark, hold := l.mark, s.holdAcks
	s.mu.Unlock()
	if !hold && mark > 0 {
		ack(mark)
	}
}

func (s *sink) SubmitHeartbeat(board string, boot, boardAcked uint32, ack func(seq uint32)) {
	s.mu.Lock()
	s.beats++
	l := s.logLocked(board, boot)
	l.floor = max(l.floor, boardAcked)
	l.advance()
	mark, hold := l.mark, s.holdAcks
	s.mu.Unlock()
	if !hold && mark > 0 {
		ack(mark)
	}
}

func (s *sink) hold(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdAcks = on
}

func (s *sink) unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.boots {
		n += len(l.presses)
	}
	return n
}

func (s *sink) submitted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.submits
}

func (s *sink) heartbeats() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.beats
}

func (s *sink) presses(board string, boot uint32) map[uint32]drivers.Press {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[uint32]drivers.Press{}
	if l := s.boots[bootKey{board, boot}]; l != nil {
		for seq, p := range l.presses {
			out[seq] = p
		}
	}
	return out
}

// noLeaks fails the test if it leaves goroutines behind. Registered first,
// its cleanup runs last, after every Close.
func noLeaks(tb testing.TB) {
	tb.Helper()
	opt := goleak.IgnoreCurrent()
	tb.Cleanup(func() {
		if err := goleak.Find(opt); err != nil {
			tb.Error(err)
		}
	})
}

// newBoard starts a fake board with fast timings.
func newBoard(tb testing.TB, cfg fakeboard.Config) *fakeboard.Board {
	tb.Helper()
	if cfg.ResendInterval == 0 {
		cfg.ResendInterval = 100 * time.Millisecond
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 200 * time.Millisecond
	}
	b, err := fakeboard.New(cfg)
	if err != nil {
		tb.Fatalf("fakeboard.New: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close board: %v", err)
		}
	})
	return b
}

// startManager starts a Manager with quick reopens and closes it at the end.
func startManager(tb testing.TB, cfg drivers.Config, s drivers.Sink) *drivers.Manager {
	tb.Helper()
	if cfg.ReopenMin == 0 {
		cfg.ReopenMin = 20 * time.Millisecond
	}
	if cfg.ReopenMax == 0 {
		cfg.ReopenMax = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m := drivers.NewManager(cfg, s)
	if err := m.Start(context.Background()); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := m.Close(); err != nil {
			tb.Errorf("close manager: %v", err)
		}
	})
	return m
}

func boardState(tb testing.TB, m *drivers.Manager, path string) drivers.BoardState {
	tb.Helper()
	for _, st := range m.Boards() {
		if st.Path == path {
			return st
		}
	}
	tb.Fatalf("no board state for %s in %+v", path, m.Boards())
	return drivers.BoardState{}
}

func waitAcked(tb testing.TB, b *fakeboard.Board) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitAcked(ctx); err != nil {
		tb.Fatalf("board %s: %v (stats %+v)", b.BoardID(), err, b.Stats())
	}
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawLine is a pty whose master the test drives as if it were a board.
type rawLine struct {
	path   string
	master *os.File
	frames chan drivers.Frame
}

// openRawPTY opens a pty and decodes what the gateway writes to it. The
// test keeps the slave open until its cleanup, so the master reads EIO, and
// the reader ends, only once the manager has closed the port too.
func openRawPTY(tb testing.TB) *rawLine {
	tb.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		tb.Fatalf("open pty: %v", err)
	}
	l := &rawLine{path: slave.Name(), master: master, frames: make(chan drivers.Frame, 256)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var dec drivers.Decoder
		buf := make([]byte, 256)
		for {
			n, err := master.Read(buf)
			dec.Feed(buf[:n], func(f drivers.Frame) {
				select {
				case l.frames <- f:
				default: // the test stopped listening
				}
			})
			if err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() {
		_ = slave.Close()
		<-done
		_ = master.Close()
	})
	return l
}

// send writes frames to the gateway. Call it only after the gateway has
// opened the port (raw mode), or the tty would echo and mangle them.
func (l *rawLine) send(tb testing.TB, frames ...drivers.Frame) {
	tb.Helper()
	var buf []byte
	for _, f := range frames {
		buf = f.AppendFrame(buf)
	}
	if _, err := l.master.Write(buf); err != nil {
		tb.Fatalf("write pty: %v", err)
	}
}

func (l *rawLine) expect(tb testing.TB, what string, match func(drivers.Frame) bool) {
	tb.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f := <-l.frames:
			if match(f) {
				return
			}
		case <-timeout:
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the log handler's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
