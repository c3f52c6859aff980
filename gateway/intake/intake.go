// Package intake turns presses from the boards into durable counts. It is the
// gateway's drivers.Sink: presses queue here, one committer goroutine books
// whatever has queued in one store transaction (group commit: many presses,
// one fsync), and only then are the boards acknowledged.
//
// It refuses to book while the clock is not set: a Pi has no real-time clock,
// and a press booked on a day of 1970 would be wrong forever. Such presses
// are left unacknowledged, so the boards keep them and resend.
//
// Only presses from boards an admin approved are counted. A press from a
// board that is not approved, is disabled or is in test mode is booked
// without counting it (its seq is settled, so a resend after approval is a
// duplicate) and acknowledged; the intake counts such presses, per board
// and without their colour, so the page can show that they arrive.
package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/gateway/store"
)

// DefaultNotBefore is the earliest time the clock may show and count as
// set: a year before 2025 means it never was.
var DefaultNotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Config wires an Intake. Zero values are documented per field.
type Config struct {
	Store    *store.Store
	Location *time.Location   // the office's time zone; nil means UTC
	Now      func() time.Time // nil means time.Now
	// NotBefore: a clock showing an earlier time is not set. Zero means
	// DefaultNotBefore; a stricter deployment sets its build date.
	NotBefore time.Time
	Limits    LimitConfig
	// MaxBatch caps presses per transaction; zero means 8192.
	MaxBatch int
	// QueueLen bounds presses waiting for the committer; zero means 16384.
	// When full, presses are dropped unacknowledged and the board resends.
	QueueLen int
	// AutoApprove treats every board as approved (development, tests, the
	// demo). Disabled boards and boards in test mode are still not counted.
	AutoApprove bool
	Logger      *slog.Logger
}

// Intake books presses. Start starts its committer; Close stops it.
type Intake struct {
	cfg     Config
	log     *slog.Logger
	reqs    chan request
	limiter *Limiter

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	loc    atomic.Pointer[time.Location] // the office's zone: a press's day

	// The committer's copy of the store's board admin state, current as of
	// store.AdminVersion() == adminVer. Only the committer touches them.
	admins       map[string]store.BoardAdmin
	adminVer     uint64
	adminsLoaded bool

	stats counters

	boardMu    sync.Mutex
	boardStats map[string]*BoardStats
}

// BoardStats are one board's presses that were acknowledged and not counted
// because of its admin state, since start. Colour-blind by construction.
type BoardStats struct {
	Unapproved    uint64    // not approved, or disabled
	TestPresses   uint64    // in test mode
	LastTestPress time.Time // when the last test press was made
}

type request struct {
	press   store.Press
	pressed time.Time
	settle  *store.Settle
	ack     func(uint32)
}

type counters struct {
	counted, suppressed, duplicates, deferred atomic.Uint64
	unapproved, testPresses                   atomic.Uint64
	clockRefused, queueFull, commits          atomic.Uint64
	commitErrors, batched                     atomic.Uint64
	clockUnset                                atomic.Bool
	lastErr                                   atomic.Pointer[string]
}

// Stats are the intake's counters since start; none is per colour.
type Stats struct {
	Counted, Suppressed, Duplicates, Deferred uint64
	// Unapproved counts presses acknowledged but not counted because their
	// board is not approved or is disabled; TestPresses those from boards
	// in test mode.
	Unapproved, TestPresses uint64
	// ClockRefused counts presses left unacknowledged because the clock
	// was not set; ClockUnset says whether it is unset now.
	ClockRefused uint64
	ClockUnset   bool
	QueueFull    uint64
	Commits      uint64 // transactions, i.e. fsyncs
	CommitErrors uint64
	Batched      uint64 // presses and settles booked in all commits
	LastError    string // last failed commit, "" after a success
}

// New returns an Intake; it starts nothing.
func New(cfg Config) (*Intake, error) {
	if cfg.Store == nil {
		return nil, errors.New("intake: no store")
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NotBefore.IsZero() {
		cfg.NotBefore = DefaultNotBefore
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 8192
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 16384
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	in := &Intake{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "intake"),
		reqs:       make(chan request, cfg.QueueLen),
		limiter:    NewLimiter(cfg.Limits),
		boardStats: map[string]*BoardStats{},
	}
	in.stats.clockUnset.Store(cfg.Now().Before(cfg.NotBefore))
	in.loc.Store(cfg.Location)
	return in, nil
}

// Start starts the committer.
func (in *Intake) Start(ctx context.Context) {
	ctx, in.cancel = context.WithCancel(ctx)
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		in.run(ctx)
	}()
}

// Close stops the committer and waits for it. Presses still queued are not
// acknowledged; their boards resend them. Safe to call twice.
func (in *Intake) Close() error {
	if in.closed.Swap(true) {
		return nil
	}
	if in.cancel != nil {
		in.cancel()
	}
	in.wg.Wait()
	return nil
}

// ClockSet reports whether the clock may be trusted to book presses.
func (in *Intake) ClockSet() bool {
	ok := !in.cfg.Now().Before(in.cfg.NotBefore)
	in.stats.clockUnset.Store(!ok)
	return ok
}

// NotBefore is the earliest time the clock must show to count as set.
func (in *Intake) NotBefore() time.Time { return in.cfg.NotBefore }

// SubmitPress queues a press; ack is called once it is durable.
func (in *Intake) SubmitPress(p drivers.Press, ack func(seq uint32)) {
	if p.Received.Before(in.cfg.NotBefore) || !in.ClockSet() {
		in.stats.clockRefused.Add(1)
		in.stats.clockUnset.Store(true)
		return
	}
	pressed := p.Received.Add(-time.Duration(p.AgeMS) * time.Millisecond)
	in.enqueue(request{
		press: store.Press{
			Board:  p.Board,
			Boot:   p.Boot,
			Seq:    p.Seq,
			Colour: p.Colour,
			Day:    store.DayOf(pressed, in.loc.Load()),
		},
		pressed: pressed,
		ack:     ack,
	})
}

// SetLocation changes the office's time zone for presses submitted from now
// on; days already booked keep the zone they were booked in.
func (in *Intake) SetLocation(loc *time.Location) {
	if loc != nil {
		in.loc.Store(loc)
	}
}

// SubmitHeartbeat records that the board holds nothing at or below
// boardAcked any more, and acks the board with what the store has.
func (in *Intake) SubmitHeartbeat(board string, boot, boardAcked uint32, ack func(seq uint32)) {
	in.enqueue(request{settle: &store.Settle{Board: board, Boot: boot, Upto: boardAcked}, ack: ack})
}

func (in *Intake) enqueue(r request) {
	if in.closed.Load() {
		return
	}
	select {
	case in.reqs <- r:
	default:
		in.stats.queueFull.Add(1)
	}
}

func (in *Intake) run(ctx context.Context) {
	batch := make([]request, 0, 64)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-in.reqs:
			batch = append(batch[:0], r)
		drain:
			for len(batch) < in.cfg.MaxBatch {
				select {
				case r := <-in.reqs:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			in.commit(batch)
		}
	}
}

func (in *Intake) commit(batch []request) {
	var presses []store.Press
	var pressedAt []time.Time
	var pressAcks []func(uint32)
	var settles []store.Settle
	var settleAcks []func(uint32)
	for _, r := range batch {
		if r.settle != nil {
			settles = append(settles, *r.settle)
			settleAcks = append(settleAcks, r.ack)
			continue
		}
		presses = append(presses, r.press)
		pressedAt = append(pressedAt, r.pressed)
		pressAcks = append(pressAcks, r.ack)
	}
	if err := in.refreshAdmins(); err != nil {
		// Without the admin state no press can be judged: book nothing,
		// ack nothing, the boards resend.
		in.failed(len(presses), err)
		return
	}
	// The limiter decides on a copy that is kept only if the batch commits.
	// Only presses that would count spend its tokens.
	limiter := in.limiter.Clone()
	decide := func(i int, p store.Press) store.Outcome {
		a := in.admins[p.Board]
		switch {
		case a.Disabled:
			return store.Unapproved
		case a.TestMode:
			return store.Tested
		case !a.Approved && !in.cfg.AutoApprove:
			return store.Unapproved
		case limiter.Allow(p.Board, p.Colour, pressedAt[i]):
			return store.Counted
		}
		return store.Suppressed
	}
	results, settled, st, err := in.cfg.Store.Book(in.cfg.Now(), presses, settles, decide)
	if err != nil {
		// Nothing was written: no ack goes out, the boards resend.
		in.failed(len(presses), err)
		return
	}
	in.limiter = limiter
	in.stats.lastErr.Store(nil)
	in.stats.commits.Add(1)
	in.stats.batched.Add(uint64(len(batch)))
	in.stats.counted.Add(uint64(st.Counted))
	in.stats.suppressed.Add(uint64(st.Suppressed))
	in.stats.duplicates.Add(uint64(st.Duplicate))
	in.stats.deferred.Add(uint64(st.Deferred))
	in.stats.unapproved.Add(uint64(st.Unapproved))
	in.stats.testPresses.Add(uint64(st.Tested))
	if st.Unapproved+st.Tested > 0 {
		in.recordUncounted(presses, pressedAt, results)
	}
	for i, res := range results {
		if res.Ack > 0 && pressAcks[i] != nil {
			pressAcks[i](res.Ack)
		}
	}
	for i, w := range settled {
		if w > 0 && settleAcks[i] != nil {
			settleAcks[i](w)
		}
	}
}

func (in *Intake) failed(presses int, err error) {
	in.stats.commitErrors.Add(1)
	msg := err.Error()
	in.stats.lastErr.Store(&msg)
	in.log.Error("booking presses failed; boards will resend", "presses", presses, "err", err)
}

// refreshAdmins reloads the board admin state if it changed since the last
// load. The version is read before the state, so a change committed during
// the load is picked up again by the next batch.
func (in *Intake) refreshAdmins() error {
	v := in.cfg.Store.AdminVersion()
	if in.adminsLoaded && v == in.adminVer {
		return nil
	}
	admins, err := in.cfg.Store.BoardAdmins()
	if err != nil {
		return err
	}
	in.admins, in.adminVer, in.adminsLoaded = admins, v, true
	return nil
}

// recordUncounted keeps the per-board figures of presses booked without
// counting; the first one of a board since start is logged, so that a
// board waiting for approval is visible in the log too.
func (in *Intake) recordUncounted(presses []store.Press, pressedAt []time.Time, results []store.Result) {
	in.boardMu.Lock()
	defer in.boardMu.Unlock()
	for i, res := range results {
		if res.Outcome != store.Unapproved && res.Outcome != store.Tested {
			continue
		}
		board := presses[i].Board
		bs := in.boardStats[board]
		if bs == nil {
			bs = &BoardStats{}
			in.boardStats[board] = bs
		}
		if res.Outcome == store.Tested {
			bs.TestPresses++
			if pressedAt[i].After(bs.LastTestPress) {
				bs.LastTestPress = pressedAt[i]
			}
			continue
		}
		if bs.Unapproved == 0 {
			in.log.Warn("presses from a board that is not approved, or is disabled, are acknowledged but not counted until an admin approves or enables it on the page",
				"board", board)
		}
		bs.Unapproved++
	}
}

// BoardStats returns board's uncounted presses since start.
func (in *Intake) BoardStats(board string) BoardStats {
	in.boardMu.Lock()
	defer in.boardMu.Unlock()
	if bs := in.boardStats[board]; bs != nil {
		return *bs
	}
	return BoardStats{}
}

// Stats returns the counters.
func (in *Intake) Stats() Stats {
	s := Stats{
		Counted:      in.stats.counted.Load(),
		Suppressed:   in.stats.suppressed.Load(),
		Duplicates:   in.stats.duplicates.Load(),
		Deferred:     in.stats.deferred.Load(),
		Unapproved:   in.stats.unapproved.Load(),
		TestPresses:  in.stats.testPresses.Load(),
		ClockRefused: in.stats.clockRefused.Load(),
		ClockUnset:   in.stats.clockUnset.Load(),
		QueueFull:    in.stats.queueFull.Load(),
		Commits:      in.stats.commits.Load(),
		CommitErrors: in.stats.commitErrors.Load(),
		Batched:      in.stats.batched.Load(),
	}
	if p := in.stats.lastErr.Load(); p != nil {
		s.LastError = *p
	}
	return s
}

// String is for logs: figures without colours.
func (s Stats) String() string {
	return fmt.Sprintf("counted=%d suppressed=%d duplicates=%d unapproved=%d test=%d commits=%d",
		s.Counted, s.Suppressed, s.Duplicates, s.Unapproved, s.TestPresses, s.Commits)
}
