package intake

import (
	"fmt"
	"maps"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
)

// LimitConfig sets the abuse limit: token buckets per (board, button) and per
// board. A zero Burst disables that bucket.
type LimitConfig struct {
	ButtonBurst    int           // presses a button may take at once (default 3)
	ButtonInterval time.Duration // one token back per interval (default 3s)
	BoardBurst     int           // presses a board may take at once (default 6)
	BoardInterval  time.Duration // one token back per interval (default 1.5s)
}

// DefaultLimits are the limits of the product's defaults.
func DefaultLimits() LimitConfig {
	return LimitConfig{ButtonBurst: 3, ButtonInterval: 3 * time.Second, BoardBurst: 6, BoardInterval: 1500 * time.Millisecond}
}

// Validate reports a limit that cannot work.
func (c LimitConfig) Validate() error {
	if c.ButtonBurst < 0 || c.BoardBurst < 0 {
		return fmt.Errorf("limits: burst must not be negative")
	}
	if c.ButtonBurst > 0 && c.ButtonInterval <= 0 {
		return fmt.Errorf("limits: button interval must be positive when the button burst is set")
	}
	if c.BoardBurst > 0 && c.BoardInterval <= 0 {
		return fmt.Errorf("limits: board interval must be positive when the board burst is set")
	}
	return nil
}

// Limiter decides whether a press counts. It is driven by the time a press
// was made (receive time minus its age), not by when it arrives, so a backlog
// replayed in one burst after an outage is judged by when it was pressed.
//
// It is a pure state machine: no clock, no I/O; not safe for concurrent use.
type Limiter struct {
	cfg     LimitConfig
	buckets map[limitKey]bucket
}

type limitKey struct {
	board  string
	colour drivers.Colour // 0 for the board-wide bucket
}

// A bucket counts its tokens as time credit: one token is one interval of
// credit. Integer arithmetic keeps every decision exact and repeatable.
type bucket struct {
	credit time.Duration
	every  time.Duration
	last   time.Time
}

func (b *bucket) hasToken() bool { return b.credit >= b.every }

// NewLimiter returns a limiter with every bucket full.
func NewLimiter(cfg LimitConfig) *Limiter {
	return &Limiter{cfg: cfg, buckets: map[limitKey]bucket{}}
}

// Clone returns an independent copy. The intake decides a batch on a clone
// and keeps it only if the batch commits: a press whose commit failed will be
// resent, and must not have spent a token.
func (l *Limiter) Clone() *Limiter {
	return &Limiter{cfg: l.cfg, buckets: maps.Clone(l.buckets)}
}

// Allow takes a token from the button's and the board's bucket if both have
// one, and reports whether the press counts.
func (l *Limiter) Allow(board string, c drivers.Colour, pressedAt time.Time) bool {
	if len(l.buckets) > 4096 {
		l.prune(pressedAt)
	}
	btnKey, brdKey := limitKey{board, c}, limitKey{board, 0}
	btnOn, brdOn := l.cfg.ButtonBurst > 0, l.cfg.BoardBurst > 0
	var btn, brd bucket
	if btnOn {
		btn = l.refill(btnKey, pressedAt, l.cfg.ButtonBurst, l.cfg.ButtonInterval)
	}
	if brdOn {
		brd = l.refill(brdKey, pressedAt, l.cfg.BoardBurst, l.cfg.BoardInterval)
	}
	allowed := (!btnOn || btn.hasToken()) && (!brdOn || brd.hasToken())
	if allowed {
		btn.credit -= btn.every
		brd.credit -= brd.every
	}
	if btnOn {
		l.buckets[btnKey] = btn
	}
	if brdOn {
		l.buckets[brdKey] = brd
	}
	return allowed
}

// refill returns k's bucket topped up to time t; the caller stores it back.
func (l *Limiter) refill(k limitKey, t time.Time, burst int, every time.Duration) bucket {
	full := time.Duration(burst) * every
	b, ok := l.buckets[k]
	if !ok {
		return bucket{credit: full, every: every, last: t}
	}
	// Presses can arrive slightly out of press order (resends, two boards'
	// clocks); time never runs backwards for a bucket.
	if t.After(b.last) {
		b.credit = min(full, b.credit+t.Sub(b.last))
		b.last = t
	}
	return b
}

// prune forgets buckets that would be full by now: they hold no information.
func (l *Limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		burst, every := l.cfg.BoardBurst, l.cfg.BoardInterval
		if k.colour != 0 {
			burst, every = l.cfg.ButtonBurst, l.cfg.ButtonInterval
		}
		if now.Sub(b.last) >= time.Duration(burst)*every {
			delete(l.buckets, k)
		}
	}
}
