package drivers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.bug.st/serial"
)

// Config configures a Manager. The zero value manages every USB serial port
// it discovers, with the defaults below.
type Config struct {
	// Ports are device paths to manage, preferably stable names such as
	// /dev/serial/by-id/...; a path may be missing now and appear later.
	// Empty: discover USB serial ports every RescanInterval.
	Ports []string

	BaudRate       int           // default 115200
	HungTimeout    time.Duration // no byte for this long: close and reopen; default 15s
	ReopenMin      time.Duration // first reopen delay, doubling up to ReopenMax, jittered; default 250ms
	ReopenMax      time.Duration // default 10s
	RescanInterval time.Duration // discovery interval; default 5s

	// Now stamps Press.Received and the times in BoardState; default
	// time.Now. Timeouts and backoff use the real monotonic clock.
	Now func() time.Time

	Logger *slog.Logger // nil discards
}

// Defaults of Config's zero values.
const (
	DefaultBaudRate       = 115200
	DefaultHungTimeout    = 15 * time.Second
	DefaultReopenMin      = 250 * time.Millisecond
	DefaultReopenMax      = 10 * time.Second
	DefaultRescanInterval = 5 * time.Second
)

const (
	// queryInterval limits the queries a port sends when presses arrive
	// from a board whose hello it has not seen; the board answers one, and
	// until then its resends would each ask again.
	queryInterval = time.Second
	// Reads time out this often, at most, so a reader notices Close and
	// silence without anyone closing the port under it.
	maxReadTimeout = 250 * time.Millisecond
	minReadTimeout = 10 * time.Millisecond
	// writerWait is how long Close waits for a write the kernel is holding.
	writerWait = 2 * time.Second
	// maxAckBoots bounds the acks waiting for the writer (one per boot).
	maxAckBoots = 8
	// go.bug.st/serial's Read selects on the port's fd and its close pipe
	// with a fixed-size fd_set; see fdHeadroom.
	fdSetSize = 1024
	fdMargin  = 16
)

// Errors of the serial manager.
var (
	ErrManagerClosed = errors.New("serial manager closed")
	ErrSilent        = errors.New("board silent")
	ErrTooManyFiles  = errors.New("too many open files for a serial port")
	ErrWriteStuck    = errors.New("serial write stuck in the kernel")
)

func (c Config) withDefaults() Config {
	if c.BaudRate == 0 {
		c.BaudRate = DefaultBaudRate
	}
	if c.HungTimeout == 0 {
		c.HungTimeout = DefaultHungTimeout
	}
	if c.ReopenMin == 0 {
		c.ReopenMin = DefaultReopenMin
	}
	if c.ReopenMax == 0 {
		c.ReopenMax = max(DefaultReopenMax, c.ReopenMin)
	}
	if c.RescanInterval == 0 {
		c.RescanInterval = DefaultRescanInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a configuration the Manager cannot run with. Zero values
// are valid (they take the defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.BaudRate < 0:
		return fmt.Errorf("baud rate %d is negative", c.BaudRate)
	case c.HungTimeout < 0, c.ReopenMin < 0, c.ReopenMax < 0, c.RescanInterval < 0:
		return errors.New("durations must not be negative")
	case c.ReopenMin > c.ReopenMax:
		return fmt.Errorf("reopen min %v exceeds reopen max %v", c.ReopenMin, c.ReopenMax)
	}
	for _, p := range c.Ports {
		if p == "" {
			return errors.New("empty port path")
		}
	}
	return nil
}

// Manager owns the serial ports: one reading goroutine and one writing
// goroutine per port, plus discovery when no ports are configured. It is the
// only code that touches a tty.
//
// File descriptors: go.bug.st/serial v1.8.0 panics in Read when the port's
// fd, or the fd of the pipe it opens beside it, is 1024 or more (upstream
// issue #128). The Go runtime raises the soft open-file limit, so a process
// with many sockets or files can get there: keep the process's open files
// well under 1024. The Manager refuses to open a port (ErrTooManyFiles)
// rather than panic when the next fd would be too close.
type Manager struct {
	cfg  Config
	sink Sink
	log  *slog.Logger

	mu     sync.Mutex
	ports  map[string]*port
	ctx    context.Context // nil until Start
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup // readers and discovery
}

// NewManager returns a Manager that hands presses to sink. It starts nothing.
func NewManager(cfg Config, sink Sink) *Manager {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg:   cfg,
		sink:  sink,
		log:   log.With("component", "serial"),
		ports: make(map[string]*port),
	}
}

// Start starts managing the configured ports, the ones added so far, and,
// if Config.Ports is empty, discovery. The goroutines stop when ctx is done
// or on Close, which must be called either way.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.cfg.Validate(); err != nil {
		return fmt.Errorf("start serial manager: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrManagerClosed
	case m.ctx != nil:
		return errors.New("start serial manager: already started")
	}
	m.ctx, m.cancel = context.WithCancel(ctx)
	for _, p := range m.ports {
		m.startLocked(p)
	}
	for _, path := range m.cfg.Ports {
		m.addLocked(path)
	}
	if len(m.cfg.Ports) == 0 {
		m.wg.Add(1)
		go m.discover(m.ctx)
	}
	return nil
}

// AddPort starts managing another port, such as a simulated board created
// after Start. Adding a managed path, or adding after Close, does nothing.
// Before Start, the port waits for Start.
func (m *Manager) AddPort(path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || path == "" {
		return
	}
	m.addLocked(path)
}

func (m *Manager) addLocked(path string) {
	if _, ok := m.ports[path]; ok {
		return
	}
	p := newPort(path, &m.cfg, m.sink, m.log)
	m.ports[path] = p
	if m.ctx != nil {
		m.startLocked(p)
	}
}

func (m *Manager) startLocked(p *port) {
	if p.started {
		return
	}
	p.started = true
	p.log.Info("managing serial port")
	ctx := m.ctx
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		p.run(ctx)
	}()
	go p.writeLoop(ctx) // Close waits for it through p.writerDone
}

// Boards returns a snapshot of every managed port, sorted by path.
func (m *Manager) Boards() []BoardState {
	m.mu.Lock()
	ports := slices.Collect(maps.Values(m.ports))
	m.mu.Unlock()
	out := make([]BoardState, 0, len(ports))
	for _, p := range ports {
		out = append(out, p.state())
	}
	slices.SortFunc(out, func(a, b BoardState) int { return cmp.Compare(a.Path, b.Path) })
	return out
}

// Close stops every goroutine and waits for it; ports close as their
// readers stop (within a read timeout). A write the kernel keeps blocked (a
// board that stopped reading, still plugged in) cannot be interrupted:
// Close waits for it up to writerWait and then returns ErrWriteStuck, and
// that goroutine ends when the board drains or goes away. Close is safe to
// call more than once.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	cancel := m.cancel
	var started []*port
	for _, p := range m.ports {
		if p.started {
			started = append(started, p)
		}
	}
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()

	timeout := time.NewTimer(writerWait)
	defer timeout.Stop()
	expired := false
	var stuck []string
	for _, p := range started {
		if !expired {
			select {
			case <-p.writerDone:
				continue
			case <-timeout.C:
				expired = true
			}
		}
		select {
		case <-p.writerDone:
		default:
			stuck = append(stuck, p.path)
		}
	}
	if len(stuck) > 0 {
		slices.Sort(stuck)
		return fmt.Errorf("close serial manager: %w on %v", ErrWriteStuck, stuck)
	}
	return nil
}

// port is one managed device path. Its reader (run) opens the path, reads
// and decodes, and reopens after errors; its writer sends what the reader
// and the sink queue: queries and coalesced acks.
type port struct {
	path    string
	cfg     *Config
	sink    Sink
	log     *slog.Logger
	started bool // guarded by Manager.mu

	mu        sync.Mutex
	st        BoardState
	cur       *session     // the open session, nil while closed
	opened    bool         // the port has been opened at least once
	helloSeen bool         // a hello arrived during the current session
	decBase   DecoderStats // decoder counters of earlier sessions

	outMu sync.Mutex
	query bool              // send a Q
	lastQ time.Time         // last unsolicited Q, for queryInterval
	acks  map[uint32]uint32 // boot -> highest seq to ack

	wake       chan struct{} // capacity 1: the writer has something to do
	writerDone chan struct{}
}

func newPort(path string, cfg *Config, sink Sink, log *slog.Logger) *port {
	return &port{
		path:       path,
		cfg:        cfg,
		sink:       sink,
		log:        log.With("port", path),
		st:         BoardState{Path: path},
		acks:       make(map[uint32]uint32),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
	}
}

func (p *port) state() BoardState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// session is one open of a port. The reader owns it and closes it, never
// while a Read or Write is in flight: go.bug.st/serial closes the fd before
// waking its readers and writes to the raw fd number, which after a close
// may already name another file. A write in flight holds a reference, and
// whoever drops the last one closes.
type session struct {
	sp serial.Port

	mu   sync.Mutex
	refs int  // the reader's, plus one per write in flight
	done bool // the reader has let go
	stop error
}

func (s *session) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.stop != nil {
		return false
	}
	s.refs++
	return true
}

func (s *session) release() {
	s.mu.Lock()
	s.refs--
	last := s.refs == 0
	s.mu.Unlock()
	if last {
		_ = s.sp.Close()
	}
}

// end is the reader letting go.
func (s *session) end() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.release()
}

// stopWith asks the reader to end the session; it notices within a read
// timeout.
func (s *session) stopWith(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop == nil {
		s.stop = err
	}
}

func (s *session) stopped() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop
}

// run opens the port, reads it until it fails, and reopens it with
// jittered exponential backoff, until ctx is done.
func (p *port) run(ctx context.Context) {
	backoff := p.cfg.ReopenMin
	quiet := false // a failure was logged at Warn; repeats go to Debug
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		healthy, err := p.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if healthy {
			backoff, quiet = p.cfg.ReopenMin, false
		}
		if err != nil {
			p.mu.Lock()
			p.st.LastError = err.Error()
			p.mu.Unlock()
		}
		wait := jitter(backoff)
		if quiet {
			p.log.Debug("serial port down", "err", err, "retry_in", wait)
		} else {
			p.log.Warn("serial port down", "err", err, "retry_in", wait)
			quiet = true
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !healthy {
			backoff = min(2*backoff, p.cfg.ReopenMax)
		}
	}
}

// jitter returns a duration in [d/2, d], so that ports which failed together
// do not retry together.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

func (p *port) readTimeout() time.Duration {
	return min(max(p.cfg.HungTimeout/4, minReadTimeout), maxReadTimeout)
}

// session opens the port once and reads it until an error, silence for
// HungTimeout, a write failure or ctx. healthy reports whether it decoded at
// least one frame, which resets the backoff.
func (p *port) session(ctx context.Context) (healthy bool, err error) {
	if err := fdHeadroom(); err != nil {
		return false, fmt.Errorf("open serial %s: %w", p.path, err)
	}
	// No InitialStatusBits: setting modem bits fails with ENOTTY on a pty.
	sp, err := serial.Open(p.path, &serial.Mode{BaudRate: p.cfg.BaudRate})
	if err != nil {
		return false, fmt.Errorf("open serial %s: %w", p.path, err)
	}
	if err := sp.SetReadTimeout(p.readTimeout()); err != nil {
		_ = sp.Close()
		return false, fmt.Errorf("set read timeout on %s: %w", p.path, err)
	}
	s := &session{sp: sp, refs: 1}
	var dec Decoder
	p.attach(s)
	defer p.detach(s, &dec)

	buf := make([]byte, 512)
	last := time.Now()
	for {
		n, err := sp.Read(buf)
		if n > 0 {
			last = time.Now()
			before := dec.Stats().Frames
			dec.Feed(buf[:n], p.handle)
			healthy = healthy || dec.Stats().Frames > before
			p.recordBytes(dec.Stats())
		}
		if ctx.Err() != nil {
			return healthy, nil
		}
		if err := s.stopped(); err != nil {
			return healthy, err
		}
		if err != nil {
			// Nobody closes the port under this Read (see session), so
			// PortClosed here means the device went away.
			return healthy, fmt.Errorf("read serial %s: %w", p.path, err)
		}
		if n == 0 { // read timeout
			if silent := time.Since(last); silent >= p.cfg.HungTimeout {
				return healthy, fmt.Errorf("%w for %v on %s", ErrSilent, silent.Round(time.Millisecond), p.path)
			}
		}
	}
}

func (p *port) attach(s *session) {
	p.mu.Lock()
	if p.opened {
		p.st.Reopens++
	}
	p.opened = true
	p.cur = s
	p.helloSeen = false
	p.st.Connected = true
	p.mu.Unlock()
	p.log.Debug("serial port open")
	p.requestQuery(false) // every open asks who is there
}

func (p *port) detach(s *session, dec *Decoder) {
	p.mu.Lock()
	p.cur = nil
	p.st.Connected = false
	p.helloSeen = false
	p.decBase = addStats(p.decBase, dec.Stats())
	p.mu.Unlock()
	s.end()
}

func addStats(a, b DecoderStats) DecoderStats {
	return DecoderStats{
		Frames:     a.Frames + b.Frames,
		Dropped:    a.Dropped + b.Dropped,
		BadCRC:     a.BadCRC + b.BadCRC,
		NoiseBytes: a.NoiseBytes + b.NoiseBytes,
	}
}

func (p *port) recordBytes(ds DecoderStats) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t := addStats(p.decBase, ds)
	p.st.FramesOK, p.st.FramesDropped, p.st.BadCRC, p.st.NoiseBytes = t.Frames, t.Dropped, t.BadCRC, t.NoiseBytes
	p.st.LastByte = now
}

// handle acts on one frame from the board. It is called by the reader,
// inside Decoder.Feed; it calls the sink without holding p.mu, because the
// sink may ack at once.
func (p *port) handle(f Frame) {
	now := p.cfg.Now()
	switch f.Kind {
	case KindHello:
		p.mu.Lock()
		news := !p.helloSeen || p.st.BoardID != f.BoardID || p.st.Firmware != f.Firmware || p.st.Boot != f.Boot
		p.helloSeen = true
		p.st.BoardID, p.st.Firmware, p.st.Boot, p.st.LastHello = f.BoardID, f.Firmware, f.Boot, now
		p.mu.Unlock()
		if news {
			p.log.Info("board hello", "board", f.BoardID, "firmware", f.Firmware, "boot", fmt.Sprintf("%08X", f.Boot))
		}

	case KindPress:
		p.mu.Lock()
		p.st.Presses++
		board, known := p.st.BoardID, p.helloSeen && f.Boot == p.st.Boot
		p.mu.Unlock()
		if !known {
			// Without the board's hello this press cannot be named; the
			// board resends it once the hello has been seen.
			p.log.Debug("press from an unknown boot; asking for a hello")
			p.requestQuery(true)
			return
		}
		p.sink.SubmitPress(Press{
			Board:    board,
			Boot:     f.Boot,
			Seq:      f.Seq,
			Colour:   f.Colour,
			Received: now,
			AgeMS:    f.AgeMS,
		}, p.acker(f.Boot))

	case KindHeartbeat:
		p.mu.Lock()
		p.st.LastHeartbeat = now
		board, known := p.st.BoardID, p.helloSeen && f.Boot == p.st.Boot
		if known {
			p.st.UptimeS, p.st.LastSeq, p.st.Unacked = f.UptimeS, f.LastSeq, f.Unacked
		}
		p.mu.Unlock()
		if !known {
			p.requestQuery(true)
			return
		}
		p.sink.SubmitHeartbeat(board, f.Boot, f.LastSeq-f.Unacked, p.acker(f.Boot))

	default: // acks and queries go the other way; an echoing line sends ours back
		p.log.Debug("ignored frame from board", "kind", f.Kind)
	}
}

// acker returns the ack callback for one boot; the sink may call it from
// any goroutine, at any time, even after the port has been reopened.
func (p *port) acker(boot uint32) func(seq uint32) {
	return func(seq uint32) { p.queueAck(boot, seq) }
}

// queueAck records an ack for the writer. Acks are cumulative, so only the
// highest seq per boot is kept.
func (p *port) queueAck(boot, seq uint32) {
	if seq == 0 {
		return
	}
	p.outMu.Lock()
	old, ok := p.acks[boot]
	switch {
	case !ok && len(p.acks) >= maxAckBoots:
		// Boards do not reboot that fast; drop it, the board resends.
	case seq > old:
		p.acks[boot] = seq
	}
	p.outMu.Unlock()
	p.kick()
}

// requestQuery asks the writer to send a Q. Unsolicited queries (the
// board's frames do not match its hello) are rate-limited.
func (p *port) requestQuery(unsolicited bool) {
	p.outMu.Lock()
	if unsolicited {
		if !p.lastQ.IsZero() && time.Since(p.lastQ) < queryInterval {
			p.outMu.Unlock()
			return
		}
		p.lastQ = time.Now()
	}
	p.query = true
	p.outMu.Unlock()
	p.kick()
}

func (p *port) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// takeOutbox appends what the writer owes the board, query first, and
// empties the outbox.
func (p *port) takeOutbox(buf []byte) []byte {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if p.query {
		buf = Frame{Kind: KindQuery}.AppendFrame(buf)
		p.query = false
	}
	for boot, seq := range p.acks {
		buf = Frame{Kind: KindAck, Boot: boot, Seq: seq}.AppendFrame(buf)
	}
	clear(p.acks)
	return buf
}

// writeLoop writes queries and acks to the open session. It lives as long
// as the port, so at most one write per port is ever in flight: a write the
// kernel blocks (a board that stopped reading) stalls only this goroutine,
// never the reader, and never piles up across reopens.
func (p *port) writeLoop(ctx context.Context) {
	defer close(p.writerDone)
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		p.mu.Lock()
		s := p.cur
		p.mu.Unlock()
		if s == nil || !s.acquire() {
			continue // the outbox waits; the next open kicks the writer
		}
		buf = p.takeOutbox(buf[:0])
		if len(buf) > 0 {
			if _, err := s.sp.Write(buf); err != nil {
				s.stopWith(fmt.Errorf("write serial %s: %w", p.path, err))
			}
		}
		s.release()
	}
}

// fdHeadroom refuses to open a port whose fd would crash the process:
// go.bug.st/serial's Read puts the port's fd and its close pipe in a
// fixed-size fd_set and panics when either is 1024 or more (upstream issue
// #128). The kernel hands out the lowest free number, so a probe shows where
// the port would land; the margin covers files opened meanwhile.
func fdHeadroom() error {
	if runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("probe file descriptors: %w", err)
	}
	fd := f.Fd()
	_ = f.Close()
	if fd+fdMargin >= fdSetSize {
		return fmt.Errorf("%w: next fd is %d, must stay below %d", ErrTooManyFiles, fd, fdSetSize-fdMargin)
	}
	return nil
}
