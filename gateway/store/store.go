// Package store keeps the office's own per-day press counts, durably, in a
// bbolt file. It is the source of truth for this office's counts.
//
// What it holds is the minimum that exact, crash-safe counting needs:
//   - per (local day, colour) a count: no per-press record, no timestamp;
//   - per board and power-up (boot) the acknowledgement watermark, so a
//     resent press is recognised and never counted twice;
//   - per board a suppressed counter (presses over the abuse limit);
//   - per board its admin state: approved, disabled, named, in test mode,
//     and when it was first seen (see BoardAdmin).
//
// Book applies a whole batch in one transaction, so one fsync covers many
// presses (group commit), and counts and watermarks can never disagree after a
// crash.
//
// Per-colour figures of the current day never leave this package: ClosedDays
// returns colours only for days before the one given as today, and DayTotal
// is colour-blind.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	keyVersion   = []byte("replication_version")
	bucketCounts = []byte("counts")
	bucketBoards = []byte("boards")
	bucketMeta   = []byte("meta")
	bucketAdmin  = []byte("board_admin")
	keySchema    = []byte("schema")
)

const schemaVersion = 1

// Limits on the dedupe state kept per board: a handful of recent power-ups
// and, per power-up, a small window of presses booked out of order (a noisy
// line drops seq 5 but delivers 6; 6 is booked and acked once 5 arrives).
const (
	keepBoots   = 4
	maxOutOfSeq = 64
	maxAhead    = 1024
)

// ErrBadDay reports a day that is not YYYY-MM-DD.
var ErrBadDay = errors.New("bad day")

// Day is a local calendar day, "YYYY-MM-DD". Its string order is its time
// order, which the store's keys rely on.
type Day string

// DayOf returns the calendar day of t in loc.
func DayOf(t time.Time, loc *time.Location) Day {
	return Day(t.In(loc).Format(time.DateOnly))
}

// ParseDay validates s as a day.
func ParseDay(s string) (Day, error) {
	if _, err := time.Parse(time.DateOnly, s); err != nil || len(s) != len(time.DateOnly) {
		return "", fmt.Errorf("%w: %q", ErrBadDay, s)
	}
	return Day(s), nil
}

// AddDays returns the day n days after d (n may be negative).
func (d Day) AddDays(n int) Day {
	t, err := time.Parse(time.DateOnly, string(d))
	if err != nil {
		return d
	}
	return Day(t.AddDate(0, 0, n).Format(time.DateOnly))
}

// Store is an open count store. It is safe for concurrent use, but Book
// should be called from one goroutine (the intake's committer) so batches
// stay large.
type Store struct {
	db   *bolt.DB
	path string

	mu    sync.Mutex
	dirty map[Day]bool // days booked since the last TakeDirty

	adminVersion atomic.Uint64 // bumped after every committed SetBoardAdmin
}

// Open opens or creates the store at path. A file that is not a valid store
// is reported and left untouched.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := create(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, boltOptions())
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("open store %s: locked by another process", path)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
			return nil, fmt.Errorf("open store %s: the file is damaged or not a Pulsegate store (left untouched): %w", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, dirty: map[Day]bool{}}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:        2 * time.Second,
		NoFreelistSync: true, // less to write per commit; rebuilt on open
		FreelistType:   bolt.FreelistMapType,
	}
}

// create makes an empty store at path if nothing is there. It builds the
// store under a temporary name and links it into place only once it is
// complete: bbolt writes a new file's first pages in place, and a disk that
// fills part-way through leaves a file whose meta pages point past its end,
// which bbolt then reads through its mmap and the process dies of SIGBUS on
// every later start.
func create(path string) error {
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil // there is a file (or we cannot tell): bolt.Open judges it
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, boltOptions())
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	err = (&Store{db: db, path: path}).init()
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("create store %s: %w", path, cerr)
	}
	if err != nil {
		return err
	}
	// Link, unlike rename, never replaces a store another process created
	// meanwhile; rename is the fallback where hard links are not supported.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("create store %s: %w", path, err)
		}
	}
	// The new name must be as durable as the counts booked under it.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("create store %s: sync directory: %w", path, err)
	}
	return nil
}

func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		// A store written before a bucket existed gains it here, empty: the
		// schema version only changes when old data would be misread.
		for _, b := range [][]byte{bucketCounts, bucketBoards, bucketMeta, bucketAdmin} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 4 || binary.BigEndian.Uint32(v) != schemaVersion {
				return fmt.Errorf("unknown schema %x (this build reads version %d)", v, schemaVersion)
			}
			return nil
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion))
	})
	if err != nil {
		return fmt.Errorf("init store %s: %w", s.path, err)
	}
	return nil
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// Close closes the file. Safe to call twice.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Press is a press to book: who sent it (a board, never a person), its place
// in that board's sequence, its colour and the local day it was pressed on.
type Press struct {
	Board  string
	Boot   uint32
	Seq    uint32
	Colour drivers.Colour
	Day    Day
}

// Settle says that board (at boot) holds nothing at or below Upto any more:
// those presses were acknowledged before (perhaps by an earlier life of this
// store) or discarded by the board.
type Settle struct {
	Board string
	Boot  uint32
	Upto  uint32
}

// Outcome says what Book did with one press.
type Outcome uint8

// Outcomes of booking a press.
const (
	Counted    Outcome = iota + 1 // new, counted
	Suppressed                    // new, over the abuse limit: acknowledged, not counted
	Duplicate                     // booked before: acknowledged again, not counted
	Deferred                      // too far ahead of the watermark: not booked, the board will resend
	Unapproved                    // new, from a board not approved or disabled: acknowledged, not counted
	Tested                        // new, from a board in test mode: acknowledged, not counted
)

func (o Outcome) String() string {
	names := [...]string{"?", "counted", "suppressed", "duplicate", "deferred", "unapproved", "tested"}
	if int(o) >= len(names) {
		return "?"
	}
	return names[o]
}

// Result is the fate of one press and the cumulative ack its board may be
// sent afterwards for its boot (every seq ≤ Ack is durable).
type Result struct {
	Outcome Outcome
	Ack     uint32
}

// BatchStats summarise one Book call.
type BatchStats struct {
	Counted, Suppressed, Duplicate, Deferred, Unapproved, Tested int
}

// Book applies presses and settles in one transaction and one fsync.
//
// decide says, for each press not booked before and in order, what becomes
// of presses[i]: Counted, or one of the outcomes that settle its seq without
// counting it (Suppressed, Unapproved, Tested); nil counts every press. It is
// called inside the transaction and must not block. Whatever it decides, the
// seq is booked, so a resend is a Duplicate and is never counted later.
//
// A board that Book meets for the first time (press or settle) and that has
// no admin record gets one, unapproved, with FirstSeen = now (unless now is
// zero).
//
// If Book returns an error nothing was written and no press may be
// acknowledged.
func (s *Store) Book(now time.Time, presses []Press, settles []Settle, decide func(i int, p Press) Outcome) ([]Result, []uint32, BatchStats, error) {
	results := make([]Result, len(presses))
	settled := make([]uint32, len(settles))
	var st BatchStats
	err := s.db.Update(func(tx *bolt.Tx) error {
		counts := tx.Bucket(bucketCounts)
		boards := newBoardCache(tx.Bucket(bucketBoards))
		for i, p := range presses {
			if _, err := ParseDay(string(p.Day)); err != nil {
				return fmt.Errorf("book press: %w", err)
			}
			if !p.Colour.Valid() || p.Seq == 0 {
				return fmt.Errorf("book press: invalid press %+v", p)
			}
			rec, err := boards.get(p.Board)
			if err != nil {
				return err
			}
			b := rec.boot(p.Boot)
			switch {
			case b.has(p.Seq):
				results[i].Outcome = Duplicate
				st.Duplicate++
			case !b.canAdd(p.Seq):
				results[i].Outcome = Deferred
				st.Deferred++
			default:
				o := Counted
				if decide != nil {
					o = decide(i, p)
				}
				switch o {
				case Counted:
					if err := addCount(counts, p.Day, p.Colour, 1); err != nil {
						return err
					}
					st.Counted++
				case Suppressed:
					rec.Suppressed++
					st.Suppressed++
				case Unapproved:
					st.Unapproved++
				case Tested:
					st.Tested++
				default:
					return fmt.Errorf("book press: decided %v for a new press", o)
				}
				b.add(p.Seq)
				results[i].Outcome = o
			}
		}
		for _, se := range settles {
			rec, err := boards.get(se.Board)
			if err != nil {
				return err
			}
			rec.boot(se.Boot).settle(se.Upto)
		}
		// Acks reflect the state after the whole batch, so a press early in
		// the batch is acknowledged together with later ones.
		for i, p := range presses {
			rec, _ := boards.get(p.Board)
			results[i].Ack = rec.boot(p.Boot).Watermark
		}
		for i, se := range settles {
			rec, _ := boards.get(se.Board)
			settled[i] = rec.boot(se.Boot).Watermark
		}
		if !now.IsZero() {
			if err := markSeen(tx.Bucket(bucketAdmin), slices.Collect(maps.Keys(boards.recs)), now); err != nil {
				return err
			}
		}
		return boards.flush()
	})
	if err != nil {
		return nil, nil, BatchStats{}, fmt.Errorf("book %d presses: %w", len(presses), err)
	}
	s.mu.Lock()
	for i, p := range presses {
		if results[i].Outcome == Counted {
			s.dirty[p.Day] = true
		}
	}
	s.mu.Unlock()
	return results, settled, st, nil
}

func countKey(day Day, c drivers.Colour) []byte {
	return append([]byte(day), byte(c))
}

func addCount(b *bolt.Bucket, day Day, c drivers.Colour, n uint64) error {
	k := countKey(day, c)
	var v uint64
	if old := b.Get(k); old != nil {
		if len(old) != 8 {
			return fmt.Errorf("count %s/%s: corrupt value of %d bytes", day, c, len(old))
		}
		v = binary.BigEndian.Uint64(old)
	}
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v+n))
}

// DayCount is one closed day's counts per colour.
type DayCount struct {
	Day        Day
	Green, Red uint64
}

// Total is the colour-blind sum.
func (d DayCount) Total() uint64 { return d.Green + d.Red }

// ClosedDays returns per-colour counts for days in [from, today), oldest
// first, including days with no presses. Days at or after today are refused:
// a per-colour figure of a day still open would tell who pressed what.
func (s *Store) ClosedDays(from, today Day) ([]DayCount, error) {
	if _, err := ParseDay(string(from)); err != nil {
		return nil, err
	}
	if _, err := ParseDay(string(today)); err != nil {
		return nil, err
	}
	var out []DayCount
	for d := from; d < today; d = d.AddDays(1) {
		out = append(out, DayCount{Day: d})
		if len(out) > 3660 {
			return nil, fmt.Errorf("closed days from %s to %s: range too long", from, today)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCounts).Cursor()
		for k, v := c.Seek([]byte(from)); k != nil && string(k[:len(k)-1]) < string(today); k, v = c.Next() {
			if len(k) != len(time.DateOnly)+1 || len(v) != 8 {
				return fmt.Errorf("closed days: corrupt entry %q", k)
			}
			day := Day(k[:len(k)-1])
			i := slices.IndexFunc(out, func(dc DayCount) bool { return dc.Day == day })
			if i < 0 {
				continue
			}
			switch drivers.Colour(k[len(k)-1]) {
			case drivers.Green:
				out[i].Green = binary.BigEndian.Uint64(v)
			case drivers.Red:
				out[i].Red = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DayTotal returns the colour-blind number of presses counted on day.
func (s *Store) DayTotal(day Day) (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounts)
		for _, c := range []drivers.Colour{drivers.Green, drivers.Red} {
			if v := b.Get(countKey(day, c)); len(v) == 8 {
				n += binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	return n, err
}

// TotalCounted returns the colour-blind number of presses counted on all days.
func (s *Store) TotalCounted() (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("total: corrupt entry %q", k)
			}
			n += binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return n, err
}

// BoardRecord is what the store keeps about one board.
type BoardRecord struct {
	Suppressed uint64
	Boots      []BootState // most recent first
}

// BootState is the dedupe state of one power-up of a board.
type BootState struct {
	Boot      uint32
	Watermark uint32   // every seq ≤ Watermark is booked
	Ahead     []uint32 // booked seqs above Watermark+1, sorted
}

func (b *BootState) has(seq uint32) bool {
	if seq <= b.Watermark {
		return true
	}
	_, found := slices.BinarySearch(b.Ahead, seq)
	return found
}

func (b *BootState) canAdd(seq uint32) bool {
	if seq == b.Watermark+1 {
		return true
	}
	return uint64(seq) <= uint64(b.Watermark)+maxAhead && len(b.Ahead) < maxOutOfSeq
}

func (b *BootState) add(seq uint32) {
	if seq == b.Watermark+1 {
		b.Watermark = seq
	} else {
		i, _ := slices.BinarySearch(b.Ahead, seq)
		b.Ahead = slices.Insert(b.Ahead, i, seq)
	}
	b.compact()
}

func (b *BootState) settle(upto uint32) {
	if upto > b.Watermark {
		b.Watermark = upto
	}
	b.compact()
}

// compact folds seqs that now follow the watermark into it and drops those
// at or below it.
func (b *BootState) compact() {
	i := 0
	for ; i < len(b.Ahead); i++ {
		switch s := b.Ahead[i]; {
		case s <= b.Watermark:
		case s == b.Watermark+1:
			b.Watermark = s
		default:
			b.Ahead = slices.Delete(b.Ahead, 0, i)
			return
		}
	}
	b.Ahead = b.Ahead[:0]
}

func (r *BoardRecord) boot(boot uint32) *BootState {
	for i := range r.Boots {
		if r.Boots[i].Boot == boot {
			if i > 0 { // most recently used first
				b := r.Boots[i]
				copy(r.Boots[1:i+1], r.Boots[:i])
				r.Boots[0] = b
			}
			return &r.Boots[0]
		}
	}
	r.Boots = slices.Insert(r.Boots, 0, BootState{Boot: boot})
	if len(r.Boots) > keepBoots {
		r.Boots = r.Boots[:keepBoots]
	}
	return &r.Boots[0]
}

// Boards returns the record of every board the store knows.
func (s *Store) Boards() (map[string]BoardRecord, error) {
	out := map[string]BoardRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBoards).ForEach(func(k, v []byte) error {
			r, err := decodeBoard(v)
			if err != nil {
				return fmt.Errorf("board %q: %w", k, err)
			}
			out[string(k)] = r
			return nil
		})
	})
	return out, err
}

// Watermark returns the cumulative ack for (board, boot), 0 if unknown.
func (s *Store) Watermark(board string, boot uint32) (uint32, error) {
	var w uint32
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBoards).Get([]byte(board))
		if v == nil {
			return nil
		}
		r, err := decodeBoard(v)
		if err != nil {
			return fmt.Errorf("board %q: %w", board, err)
		}
		for _, b := range r.Boots {
			if b.Boot == boot {
				w = b.Watermark
			}
		}
		return nil
	})
	return w, err
}

// boardCache decodes each board record once per transaction and writes the
// changed ones back at the end.
type boardCache struct {
	b    *bolt.Bucket
	recs map[string]*BoardRecord
}

func newBoardCache(b *bolt.Bucket) *boardCache {
	return &boardCache{b: b, recs: map[string]*BoardRecord{}}
}

func (c *boardCache) get(board string) (*BoardRecord, error) {
	if r, ok := c.recs[board]; ok {
		return r, nil
	}
	if err := validBoardID(board); err != nil {
		return nil, err
	}
	r := &BoardRecord{}
	if v := c.b.Get([]byte(board)); v != nil {
		dec, err := decodeBoard(v)
		if err != nil {
			return nil, fmt.Errorf("board %q: %w", board, err)
		}
		*r = dec
	}
	c.recs[board] = r
	return r, nil
}

func (c *boardCache) flush() error {
	for k, r := range c.recs {
		if err := c.b.Put([]byte(k), encodeBoard(*r)); err != nil {
			return fmt.Errorf("save board %q: %w", k, err)
		}
	}
	return nil
}

// Board records are: suppressed u64, nboots u8, then per boot: boot u32,
// watermark u32, nahead u8, ahead u32 × nahead. Big endian throughout.
func encodeBoard(r BoardRecord) []byte {
	out := binary.BigEndian.AppendUint64(nil, r.Suppressed)
	out = append(out, byte(len(r.Boots)))
	for _, b := range r.Boots {
		out = binary.BigEndian.AppendUint32(out, b.Boot)
		out = binary.BigEndian.AppendUint32(out, b.Watermark)
		out = append(out, byte(len(b.Ahead)))
		for _, s := range b.Ahead {
			out = binary.BigEndian.AppendUint32(out, s)
		}
	}
	return out
}

var errCorruptBoard = errors.New("corrupt board record")

func decodeBoard(v []byte) (BoardRecord, error) {
	var r BoardRecord
	if len(v) < 9 {
		return r, errCorruptBoard
	}
	r.Suppressed = binary.BigEndian.Uint64(v)
	n := int(v[8])
	v = v[9:]
	if n > keepBoots {
		return r, errCorruptBoard
	}
	for range n {
		if len(v) < 9 {
			return r, errCorruptBoard
		}
		b := BootState{Boot: binary.BigEndian.Uint32(v), Watermark: binary.BigEndian.Uint32(v[4:])}
		na := int(v[8])
		v = v[9:]
		if na > maxOutOfSeq || len(v) < 4*na {
			return r, errCorruptBoard
		}
		for range na {
			b.Ahead = append(b.Ahead, binary.BigEndian.Uint32(v))
			v = v[4:]
		}
		r.Boots = append(r.Boots, b)
	}
	if len(v) != 0 {
		return r, errCorruptBoard
	}
	return r, nil
}

// TakeDirty returns the days that counted presses since the last call (in
// this process) and forgets them. A caller that fails to use them gives them
// back with MarkDirty.
func (s *Store) TakeDirty() []Day {
	s.mu.Lock()
	defer s.mu.Unlock()
	days := slices.Sorted(maps.Keys(s.dirty))
	clear(s.dirty)
	return days
}

// MarkDirty marks days as changed.
func (s *Store) MarkDirty(days ...Day) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range days {
		s.dirty[d] = true
	}
}

// DaySummary is a day's counts as they may leave the office: per colour only
// once the day has closed, the colour-blind total before.
type DaySummary struct {
	Day        Day
	Closed     bool
	Green, Red uint64 // zero unless Closed
	Total      uint64
}

// Summaries returns the summaries of days (all days with counts if days is
// nil), judged against today: days before today are closed.
func (s *Store) Summaries(days []Day, today Day) ([]DaySummary, error) {
	var out []DaySummary
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounts)
		if days == nil {
			seen := map[Day]bool{}
			if err := b.ForEach(func(k, _ []byte) error {
				if len(k) != len(time.DateOnly)+1 {
					return fmt.Errorf("summaries: corrupt key %q", k)
				}
				if d := Day(k[:len(k)-1]); !seen[d] {
					seen[d] = true
					days = append(days, d)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		for _, d := range days {
			var g, r uint64
			if v := b.Get(countKey(d, drivers.Green)); len(v) == 8 {
				g = binary.BigEndian.Uint64(v)
			}
			if v := b.Get(countKey(d, drivers.Red)); len(v) == 8 {
				r = binary.BigEndian.Uint64(v)
			}
			sum := DaySummary{Day: d, Total: g + r}
			if d < today {
				sum.Closed, sum.Green, sum.Red = true, g, r
			}
			out = append(out, sum)
		}
		return nil
	})
	return out, err
}

// NextVersion returns a new replication version, larger than every version
// returned before, by this process or an earlier one.
func (s *Store) NextVersion() (uint64, error) {
	var v uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if old := meta.Get(keyVersion); len(old) == 8 {
			v = binary.BigEndian.Uint64(old)
		}
		v++
		return meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, v))
	})
	if err != nil {
		return 0, fmt.Errorf("next replication version: %w", err)
	}
	return v, nil
}
