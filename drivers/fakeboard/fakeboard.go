// Package fakeboard is a button board in software. It speaks the board
// protocol (drivers/PROTOCOL.md) on a pseudo-terminal, so the serial port
// manager talks to it exactly as to a USB board: the `pulsegate sim` command
// and `pulsegate run` without hardware use it, and so do the tests.
//
// Like the firmware, a Board keeps its pending presses in RAM only: they
// survive an unplug (the board stays powered in the test rig) but not a
// Reboot. Besides the protocol it can misbehave on purpose: line noise
// (Config.NoiseRate), unplug/replug (Unplug, Replug) and a firmware hang
// (SetHung).
package fakeboard

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
)

// ErrClosed is returned by the methods of a closed Board.
var ErrClosed = errors.New("fake board closed")

// Config configures a Board. The zero value is a board with a random id and
// the firmware's timings.
type Config struct {
	BoardID  string // default "sim-" + 8 random hex digits; 1 to 32 of [A-Za-z0-9._-]
	Firmware string // default "sim-1.0"; 1 to 16 of [A-Za-z0-9._-]

	// Link, if set, is a symlink kept pointing at the current pty slave, a
	// name that survives Unplug/Replug like /dev/serial/by-id/... does. Its
	// directory must exist. It is removed while the board is unplugged.
	Link string

	ResendInterval    time.Duration // unacknowledged presses are resent this often; default 2s
	HeartbeatInterval time.Duration // default 5s
	HelloInterval     time.Duration // default 60s

	MaxPending int // pending presses kept; the oldest is discarded when full; default 1024

	// NoiseRate is the probability, per frame written, of writing line noise
	// first: random bytes, a corrupted copy of the frame or a truncated one.
	// 0 writes clean frames.
	NoiseRate float64

	Logger *slog.Logger // nil discards

	// OnAck, if set, is called for every press when its ack arrives, with
	// the time from the press to the ack: how long a person's press took to
	// become durable. It runs with the board's lock held and must not block.
	OnAck func(latency time.Duration)
}

// Defaults of Config's zero values.
const (
	DefaultFirmware          = "sim-1.0"
	DefaultResendInterval    = 2 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultHelloInterval     = 60 * time.Second
	DefaultMaxPending        = 1024
)

const (
	// writeTimeout bounds one write to the pty. A tty whose reader has gone
	// away fills up; the board then loses bytes, as a UART with nobody
	// listening does, instead of stalling.
	writeTimeout = 500 * time.Millisecond
	// outQueue is how many writes may wait for the writer; more are lost.
	outQueue = 256
)

func (c Config) withDefaults() Config {
	if c.BoardID == "" {
		var b [4]byte
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		c.BoardID = "sim-" + hex.EncodeToString(b[:])
	}
	if c.Firmware == "" {
		c.Firmware = DefaultFirmware
	}
	if c.ResendInterval == 0 {
		c.ResendInterval = DefaultResendInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HelloInterval == 0 {
		c.HelloInterval = DefaultHelloInterval
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	return c
}

// Validate reports a configuration the board cannot run with. Zero values
// are valid (they take the defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	// The hello frame is the codec's judge of what a board id and firmware
	// version may look like.
	hello := drivers.Frame{Kind: drivers.KindHello, BoardID: c.BoardID, Firmware: c.Firmware}
	if _, err := drivers.ParseBody(hello.AppendBody(nil)); err != nil {
		return fmt.Errorf("board id %q or firmware %q: %w", c.BoardID, c.Firmware, err)
	}
	switch {
	case c.ResendInterval < 0, c.HeartbeatInterval < 0, c.HelloInterval < 0:
		return errors.New("intervals must not be negative")
	case c.MaxPending < 0:
		return fmt.Errorf("max pending %d is negative", c.MaxPending)
	case !(c.NoiseRate >= 0 && c.NoiseRate <= 1):
		return fmt.Errorf("noise rate %v is not in [0, 1]", c.NoiseRate)
	}
	return nil
}

// Stats are a board's counters. Pressed == Acked + Lost + Pending.
type Stats struct {
	Pressed uint64 // presses made, across boots
	Acked   uint64 // presses acknowledged, across boots
	Lost    uint64 // pending presses dropped by a reboot or by overflow
	Pending int    // presses waiting for an ack
	Boot    uint32 // the current boot value
	LastSeq uint32 // the last seq handed out this boot
	LastAck uint32 // the highest seq acknowledged this boot

	AcksReceived    uint64 // ack frames received, any boot
	QueriesReceived uint64 // query frames received
	HellosSent      uint64 // hello frames queued for the pty while plugged in and not hung
}

// Board is a fake button board. Its methods are safe for concurrent use.
type Board struct {
	cfg Config
	log *slog.Logger

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	out       chan []byte // bytes for the writer
	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	master    *os.File // nil while unplugged
	slave     *os.File // held open so the master never reads EIO between the gateway's opens
	slavePath string
	rnd       *rand.Rand
	boot      uint32
	powerUp   time.Time
	seq       uint32    // last seq handed out this boot
	pending   []pending // in seq order, contiguous
	hung      bool
	closed    bool
	stats     Stats
	changed   chan struct{} // closed and replaced when pending shrinks or the board closes
}

// pending is a press waiting for its ack. pressed lives only here, in the
// board's RAM: the wire carries an age, never a time of day.
type pending struct {
	seq     uint32
	colour  drivers.Colour
	pressed time.Time
	sent    time.Time
}

// New powers up a board: it opens a pty, picks a random boot value, sends a
// hello and starts the board's goroutines. Close stops them.
func New(cfg Config) (*Board, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new fake board: %w", err)
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Board{
		cfg:     cfg,
		log:     log.With("component", "fakeboard", "board", cfg.BoardID),
		ctx:     ctx,
		cancel:  cancel,
		out:     make(chan []byte, outQueue),
		rnd:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		changed: make(chan struct{}),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.powerUpLocked()
	if err := b.plugLocked(); err != nil {
		cancel()
		return nil, fmt.Errorf("new fake board: %w", err)
	}
	b.wg.Add(2)
	go b.writeLoop()
	go b.tickLoop()
	return b, nil
}

// BoardID returns the id the board says in its hello.
func (b *Board) BoardID() string { return b.cfg.BoardID }

// Path returns the device path a gateway opens: Link if set, else the
// current pty slave (which changes on Replug).
func (b *Board) Path() string {
	if b.cfg.Link != "" {
		return b.cfg.Link
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slavePath
}

// Press records a press of button c now and sends it at once. It returns the
// press's boot and seq. c must be drivers.Green or drivers.Red.
func (b *Board) Press(c drivers.Colour) (boot, seq uint32) {
	if !c.Valid() {
		panic(fmt.Sprintf("fakeboard: press of invalid colour %v", c))
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.stats.Pressed++
	if len(b.pending) >= b.cfg.MaxPending {
		// Full: the firmware forgets the oldest press to keep the newest.
		drop := len(b.pending) - b.cfg.MaxPending + 1
		b.pending = slices.Delete(b.pending, 0, drop)
		b.stats.Lost += uint64(drop)
	}
	p := pending{seq: b.seq, colour: c, pressed: now, sent: now}
	b.pending = append(b.pending, p)
	b.sendLocked(b.pressFrame(p, now))
	return b.boot, b.seq
}

// Reboot power-cycles the board: a new random boot value, seq restarts at 1,
// pending presses are lost (they lived in RAM), a hang is cleared, and a
// hello goes out.
func (b *Board) Reboot() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Lost += uint64(len(b.pending))
	b.pending = b.pending[:0]
	b.hung = false
	b.powerUpLocked()
	b.notifyLocked()
	b.sendLocked(b.helloFrame())
	b.log.Debug("rebooted", "boot", fmt.Sprintf("%08X", b.boot))
}

// Unplug closes the pty: the gateway's reads fail, and Link (if any)
// disappears. The board stays powered: presses made while unplugged are kept
// and resent after Replug. Unplugging an unplugged board does nothing.
func (b *Board) Unplug() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.unplugLocked()
}

// Replug opens a fresh pty, points Link at it and sends a hello. Replugging
// a plugged board does nothing.
func (b *Board) Replug() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.master != nil {
		return nil
	}
	return b.plugLocked()
}

// SetHung makes the board hang like stuck firmware: it sends no byte at all
// and ignores what it reads, until SetHung(false) or Reboot. Presses made
// while hung are recorded and sent after.
func (b *Board) SetHung(hung bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hung = hung
}

// Stats returns the board's counters.
func (b *Board) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Pending = len(b.pending)
	s.Boot = b.boot
	s.LastSeq = b.seq
	return s
}

// WaitAcked waits until no press is pending (acknowledged, or lost by a
// reboot), ctx is done or the board is closed.
func (b *Board) WaitAcked(ctx context.Context) error {
	for {
		b.mu.Lock()
		n, changed, closed := len(b.pending), b.changed, b.closed
		b.mu.Unlock()
		switch {
		case n == 0:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for acks, %d pending: %w", n, ctx.Err())
		case <-changed:
		}
	}
}

// Run presses the buttons like a stream of passers-by: presses come as a
// Poisson process of rate presses per second, each green with probability
// greenShare. rnd may be nil. Run returns nil when ctx is done, and
// ErrClosed when the board closes.
func (b *Board) Run(ctx context.Context, rate, greenShare float64, rnd *rand.Rand) error {
	if !(rate > 0) || math.IsInf(rate, 0) {
		return fmt.Errorf("run fake board: rate %v is not a positive number", rate)
	}
	if !(greenShare >= 0 && greenShare <= 1) {
		return fmt.Errorf("run fake board: green share %v is not in [0, 1]", greenShare)
	}
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		// Exponential gaps between presses make a Poisson process.
		t.Reset(time.Duration(rnd.ExpFloat64() / rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			return nil
		case <-b.ctx.Done():
			return ErrClosed
		case <-t.C:
		}
		c := drivers.Red
		if rnd.Float64() < greenShare {
			c = drivers.Green
		}
		b.Press(c)
	}
}

// Close stops the board's goroutines, waits for them and closes the pty. It
// is safe to call more than once.
func (b *Board) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		b.mu.Lock()
		b.closed = true
		err := b.unplugLocked()
		b.notifyLocked()
		b.mu.Unlock()
		b.wg.Wait()
		b.closeErr = err
	})
	return b.closeErr
}

// powerUpLocked starts a new boot: a fresh non-zero boot value that differs
// from the last one, and seq from 1.
func (b *Board) powerUpLocked() {
	old := b.boot
	for b.boot == old || b.boot == 0 {
		b.boot = b.rnd.Uint32()
	}
	b.seq = 0
	b.stats.LastAck = 0
	b.powerUp = time.Now()
}

func (b *Board) plugLocked() error {
	master, slave, err := openPTY()
	if err != nil {
		return err
	}
	if b.cfg.Link != "" {
		if err := relink(slave.Name(), b.cfg.Link); err != nil {
			_ = master.Close()
			_ = slave.Close()
			return err
		}
	}
	b.master, b.slave, b.slavePath = master, slave, slave.Name()
	b.wg.Add(1)
	go b.readLoop(master)
	b.sendLocked(b.helloFrame())
	b.log.Debug("plugged", "path", b.slavePath)
	return nil
}

func (b *Board) unplugLocked() error {
	if b.master == nil {
		return nil
	}
	var errs []error
	if b.cfg.Link != "" {
		if err := os.Remove(b.cfg.Link); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, b.master.Close(), b.slave.Close())
	b.master, b.slave = nil, nil
	b.log.Debug("unplugged", "path", b.slavePath)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unplug fake board: %w", err)
	}
	return nil
}

// relink points link at target, replacing it atomically: a gateway opening
// link never finds it missing halfway.
func relink(target, link string) error {
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("link %s: %w", link, err)
	}
	return nil
}

func (b *Board) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// readLoop reads the gateway's frames from one plug's master until it is
// closed.
func (b *Board) readLoop(master *os.File) {
	defer b.wg.Done()
	var dec drivers.Decoder
	buf := make([]byte, 256)
	for {
		n, err := master.Read(buf)
		if n > 0 {
			b.mu.Lock()
			if !b.hung {
				dec.Feed(buf[:n], b.handleLocked)
			}
			b.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (b *Board) handleLocked(f drivers.Frame) {
	switch f.Kind {
	case drivers.KindAck:
		b.stats.AcksReceived++
		if f.Boot != b.boot {
			return // for an earlier power-up: those presses are gone
		}
		if f.Seq > b.stats.LastAck {
			b.stats.LastAck = f.Seq
		}
		// Pending seqs are contiguous, so the acked ones are a prefix.
		n := 0
		if len(b.pending) > 0 && f.Seq >= b.pending[0].seq {
			n = int(min(uint64(f.Seq-b.pending[0].seq)+1, uint64(len(b.pending))))
		}
		if n > 0 {
			if b.cfg.OnAck != nil {
				now := time.Now()
				for _, p := range b.pending[:n] {
					b.cfg.OnAck(now.Sub(p.pressed))
				}
			}
			b.pending = slices.Delete(b.pending, 0, n)
			b.stats.Acked += uint64(n)
			b.notifyLocked()
		}
	case drivers.KindQuery:
		b.stats.QueriesReceived++
		b.sendLocked(b.helloFrame())
	default:
		b.log.Debug("ignored frame", "kind", f.Kind)
	}
}

// tickLoop is the firmware's main loop: resends, heartbeats and hellos.
func (b *Board) tickLoop() {
	defer b.wg.Done()
	// Resends are checked at a quarter of their interval, so a press is
	// resent between 1 and 1.25 intervals after it was last sent.
	resend := time.NewTicker(max(b.cfg.ResendInterval/4, time.Millisecond))
	defer resend.Stop()
	heartbeat := time.NewTicker(b.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	hello := time.NewTicker(b.cfg.HelloInterval)
	defer hello.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case now := <-resend.C:
			b.resendDue(now)
		case now := <-heartbeat.C:
			b.mu.Lock()
			b.sendLocked(drivers.Frame{
				Kind:    drivers.KindHeartbeat,
				Boot:    b.boot,
				UptimeS: uint32(min(now.Sub(b.powerUp)/time.Second, math.MaxUint32)),
				LastSeq: b.seq,
				Unacked: uint32(len(b.pending)),
			})
			b.mu.Unlock()
		case <-hello.C:
			b.mu.Lock()
			b.sendLocked(b.helloFrame())
			b.mu.Unlock()
		}
	}
}

// resendDue resends, in seq order, every pending press last sent at least a
// resend interval ago.
func (b *Board) resendDue(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.sendingLocked() {
		return
	}
	var frames []drivers.Frame
	for i := range b.pending {
		p := &b.pending[i]
		if now.Sub(p.sent) >= b.cfg.ResendInterval {
			p.sent = now
			frames = append(frames, b.pressFrame(*p, now))
		}
	}
	if len(frames) > 0 {
		b.sendLocked(frames...)
	}
}

func (b *Board) pressFrame(p pending, now time.Time) drivers.Frame {
	age := now.Sub(p.pressed).Milliseconds()
	return drivers.Frame{
		Kind:   drivers.KindPress,
		Boot:   b.boot,
		Seq:    p.seq,
		Colour: p.colour,
		AgeMS:  uint32(min(max(age, 0), math.MaxUint32)),
	}
}

func (b *Board) helloFrame() drivers.Frame {
	return drivers.Frame{Kind: drivers.KindHello, BoardID: b.cfg.BoardID, Firmware: b.cfg.Firmware, Boot: b.boot}
}

// sendingLocked reports whether bytes can leave the board now.
func (b *Board) sendingLocked() bool { return b.master != nil && !b.hung && !b.closed }

// sendLocked queues frames, with noise if configured, for the writer. It
// never blocks: if the queue is full the bytes are lost, as from an
// overflowing UART FIFO.
func (b *Board) sendLocked(frames ...drivers.Frame) {
	if !b.sendingLocked() {
		return
	}
	var buf []byte
	hellos := 0
	for _, f := range frames {
		if b.cfg.NoiseRate > 0 && b.rnd.Float64() < b.cfg.NoiseRate {
			buf = b.appendNoise(buf, f)
		}
		buf = f.AppendFrame(buf)
		if f.Kind == drivers.KindHello {
			hellos++
		}
	}
	select {
	case b.out <- buf:
		b.stats.HellosSent += uint64(hellos)
	default:
		b.log.Debug("output queue full, bytes lost", "bytes", len(buf))
	}
}

// appendNoise appends one burst of line noise. Whatever it appends, the
// decoder resynchronises on the '$' of the frame that follows, and a CRC-16
// catches every corrupted byte, so noise never becomes a false frame.
func (b *Board) appendNoise(dst []byte, f drivers.Frame) []byte {
	enc := f.Encode()
	switch b.rnd.IntN(3) {
	case 0: // random bytes, the kind a loose connector makes
		for range 1 + b.rnd.IntN(16) {
			dst = append(dst, byte(b.rnd.UintN(256)))
		}
		return dst
	case 1: // the frame with one body byte changed: a CRC mismatch
		body := len(enc) - len("$*XXXX\n")
		i := 1 + b.rnd.IntN(body)
		const printable = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ,"
		c := enc[i]
		for c == enc[i] {
			c = printable[b.rnd.IntN(len(printable))]
		}
		enc[i] = c
		return append(dst, enc...)
	default: // the frame cut short
		return append(dst, enc[:1+b.rnd.IntN(len(enc)-2)]...)
	}
}

// writeLoop writes queued bytes to whichever pty is plugged in when they
// reach the front of the queue.
func (b *Board) writeLoop() {
	defer b.wg.Done()
	for {
		var buf []byte
		select {
		case <-b.ctx.Done():
			return
		case buf = <-b.out:
		}
		b.mu.Lock()
		master := b.master
		ok := b.sendingLocked()
		b.mu.Unlock()
		if !ok {
			continue
		}
		// A deadline keeps a gateway that stopped reading from stalling the
		// board; the bytes are lost instead.
		_ = master.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := master.Write(buf); err != nil {
			b.log.Debug("write failed, bytes lost", "err", err)
		}
	}
}
