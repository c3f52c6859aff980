package store

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"pgregory.net/rapid"
)

func mustOpen(tb testing.TB, path string) *Store {
	tb.Helper()
	if path == "" {
		path = filepath.Join(tb.TempDir(), "counts.db")
	}
	s, err := Open(path)
	if err != nil {
		tb.Fatalf("Open(%q): %v", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func press(board string, boot, seq uint32, c drivers.Colour, day Day) Press {
	return Press{Board: board, Boot: boot, Seq: seq, Colour: c, Day: day}
}

// bookTime is when the tests' presses are booked.
var bookTime = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func mustBook(tb testing.TB, s *Store, ps []Press, decide func(int, Press) Outcome) []Result {
	tb.Helper()
	res, _, _, err := s.Book(bookTime, ps, nil, decide)
	if err != nil {
		tb.Fatalf("Book: %v", err)
	}
	return res
}

func TestBookCountsOnceAndAcksCumulatively(t *testing.T) {
	s := mustOpen(t, "")
	day := Day("2026-03-02")
	res := mustBook(t, s, []Press{
		press("b1", 7, 1, drivers.Green, day),
		press("b1", 7, 2, drivers.Red, day),
		press("b1", 7, 4, drivers.Green, day), // 3 lost on the line
	}, nil)
	want := []Result{{Counted, 2}, {Counted, 2}, {Counted, 2}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("first batch = %v, want %v", res, want)
	}
	// The board resends 3 and 4: 3 fills the gap, 4 is a duplicate.
	res = mustBook(t, s, []Press{press("b1", 7, 3, drivers.Red, day), press("b1", 7, 4, drivers.Green, day)}, nil)
	want = []Result{{Counted, 4}, {Duplicate, 4}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("resend = %v, want %v", res, want)
	}
	// A reboot starts the sequence again under a new boot: not duplicates.
	res = mustBook(t, s, []Press{press("b1", 8, 1, drivers.Green, day)}, nil)
	if res[0] != (Result{Counted, 1}) {
		t.Fatalf("after reboot = %v, want counted, ack 1", res[0])
	}
	days, err := s.ClosedDays(day, day.AddDays(1))
	if err != nil {
		t.Fatal(err)
	}
	if want := []DayCount{{Day: day, Green: 3, Red: 2}}; !reflect.DeepEqual(days, want) {
		t.Fatalf("ClosedDays = %v, want %v", days, want)
	}
}

func TestBookSuppressedIsAckedNotCounted(t *testing.T) {
	s := mustOpen(t, "")
	day := Day("2026-03-02")
	res := mustBook(t, s, []Press{press("b1", 1, 1, drivers.Green, day), press("b1", 1, 2, drivers.Green, day)},
		func(i int, p Press) Outcome {
			if i == 0 {
				return Counted
			}
			return Suppressed
		})
	if want := []Result{{Counted, 2}, {Suppressed, 2}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("Book = %v, want %v", res, want)
	}
	n, _ := s.TotalCounted()
	boards, _ := s.Boards()
	if n != 1 || boards["b1"].Suppressed != 1 {
		t.Fatalf("counted %d suppressed %d, want 1 and 1", n, boards["b1"].Suppressed)
	}
	// A resend of the suppressed press must not reach the limiter again.
	res = mustBook(t, s, []Press{press("b1", 1, 2, drivers.Green, day)}, func(int, Press) Outcome {
		t.Fatal("decide called for a duplicate")
		return Counted
	})
	if res[0].Outcome != Duplicate {
		t.Fatalf("resend = %v, want duplicate", res[0])
	}
}

func TestBookDefersFarAhead(t *testing.T) {
	s := mustOpen(t, "")
	day := Day("2026-03-02")
	res := mustBook(t, s, []Press{press("b1", 1, maxAhead+5, drivers.Green, day)}, nil)
	if res[0].Outcome != Deferred || res[0].Ack != 0 {
		t.Fatalf("far-ahead press = %v, want deferred with no ack", res[0])
	}
	var ps []Press
	for i := range uint32(maxOutOfSeq + 1) {
		ps = append(ps, press("b1", 1, 3+2*i, drivers.Green, day)) // every other seq: all out of order
	}
	res = mustBook(t, s, ps, nil)
	if res[maxOutOfSeq-1].Outcome != Counted || res[maxOutOfSeq].Outcome != Deferred {
		t.Fatalf("out-of-order window: got %v then %v, want counted then deferred", res[maxOutOfSeq-1], res[maxOutOfSeq])
	}
}

func TestSettleAdvancesWatermark(t *testing.T) {
	s := mustOpen(t, "")
	// A board says it holds nothing up to 500 (this store was erased, say):
	// the next press is 501 and must be acknowledged.
	_, settled, _, err := s.Book(bookTime, nil, []Settle{{Board: "b1", Boot: 9, Upto: 500}}, nil)
	if err != nil || settled[0] != 500 {
		t.Fatalf("settle = %v, %v; want 500", settled, err)
	}
	res := mustBook(t, s, []Press{press("b1", 9, 501, drivers.Red, "2026-03-02"), press("b1", 9, 12, drivers.Red, "2026-03-02")}, nil)
	if want := []Result{{Counted, 501}, {Duplicate, 501}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("after settle = %v, want %v", res, want)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counts.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustBook(t, s, []Press{press("b1", 1, 1, drivers.Green, "2026-03-01"), press("b1", 1, 2, drivers.Red, "2026-03-02")}, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	res := mustBook(t, s, []Press{press("b1", 1, 2, drivers.Red, "2026-03-02")}, nil)
	if res[0] != (Result{Duplicate, 2}) {
		t.Fatalf("resend after reopen = %v, want duplicate ack 2", res[0])
	}
	if n, _ := s.TotalCounted(); n != 2 {
		t.Fatalf("TotalCounted = %d, want 2", n)
	}
}

func TestClosedDaysNeverIncludesToday(t *testing.T) {
	s := mustOpen(t, "")
	today := Day("2026-03-05")
	mustBook(t, s, []Press{
		press("b1", 1, 1, drivers.Green, "2026-03-03"),
		press("b1", 1, 2, drivers.Green, today),
		press("b1", 1, 3, drivers.Red, today.AddDays(1)),
	}, nil)
	days, err := s.ClosedDays("2026-03-01", today)
	if err != nil {
		t.Fatal(err)
	}
	want := []DayCount{{Day: "2026-03-01"}, {Day: "2026-03-02"}, {Day: "2026-03-03", Green: 1}, {Day: "2026-03-04"}}
	if !reflect.DeepEqual(days, want) {
		t.Fatalf("ClosedDays = %v, want %v", days, want)
	}
	if n, _ := s.DayTotal(today); n != 1 {
		t.Fatalf("DayTotal(today) = %d, want 1", n)
	}
	if _, err := s.ClosedDays("2026-13-01", today); err == nil {
		t.Fatal("ClosedDays with a bad day: want error")
	}
}

func TestOpenDamagedFileIsReportedAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counts.db")
	garbage := []byte(strings.Repeat("not a bolt file ", 1024))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open(garbage) = %v, want a 'damaged' error", err)
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(garbage) {
		t.Fatal("Open changed a damaged file")
	}
}

func TestDayOfUsesOfficeZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tz database: %v", err)
	}
	at := time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC) // 00:30 on the 2nd in Berlin
	if got := DayOf(at, berlin); got != "2026-03-02" {
		t.Fatalf("DayOf(%v, Berlin) = %s, want 2026-03-02", at, got)
	}
}

// A board's dedupe state behaves like the set of booked seqs, whatever
// order presses arrive in: the watermark is the largest n with 1..n booked.
func TestBootStateMatchesSetModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var b BootState
		booked := map[uint32]bool{}
		for _, seq := range rapid.SliceOfN(rapid.Uint32Range(1, 80), 1, 200).Draw(t, "seqs") {
			if b.has(seq) != booked[seq] {
				t.Fatalf("has(%d) = %v, model says %v", seq, b.has(seq), booked[seq])
			}
			if !booked[seq] && b.canAdd(seq) {
				b.add(seq)
				booked[seq] = true
			}
			var w uint32
			for booked[w+1] {
				w++
			}
			if b.Watermark != w {
				t.Fatalf("watermark %d, model %d", b.Watermark, w)
			}
			dec, err := decodeBoard(encodeBoard(BoardRecord{Boots: []BootState{b}}))
			if err != nil || dec.Boots[0].Watermark != b.Watermark || len(dec.Boots[0].Ahead) != len(b.Ahead) {
				t.Fatalf("round trip of %+v = %+v, %v", b, dec, err)
			}
		}
	})
}

// Board records are read back from disk: a damaged one must give an error,
// never a panic or a record that re-encodes differently.
func FuzzDecodeBoard(f *testing.F) {
	f.Add(encodeBoard(BoardRecord{Suppressed: 3, Boots: []BootState{{Boot: 1, Watermark: 5, Ahead: []uint32{7, 9}}, {Boot: 2}}}))
	f.Add([]byte{})
	f.Add(make([]byte, 9))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeBoard(b)
		if err != nil {
			return
		}
		if got := encodeBoard(r); string(got) != string(b) {
			t.Fatalf("decodeBoard(%x) re-encodes as %x", b, got)
		}
	})
}

func TestSummariesHideColoursOfOpenDays(t *testing.T) {
	s := mustOpen(t, "")
	mustBook(t, s, []Press{
		press("b1", 1, 1, drivers.Green, "2026-03-04"),
		press("b1", 1, 2, drivers.Red, "2026-03-04"),
		press("b1", 1, 3, drivers.Green, "2026-03-05"),
	}, nil)
	if got, want := s.TakeDirty(), []Day{"2026-03-04", "2026-03-05"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("TakeDirty() = %v, want %v", got, want)
	}
	if got := s.TakeDirty(); len(got) != 0 {
		t.Fatalf("second TakeDirty() = %v, want nothing", got)
	}
	got, err := s.Summaries(nil, "2026-03-05")
	if err != nil {
		t.Fatal(err)
	}
	want := []DaySummary{
		{Day: "2026-03-04", Closed: true, Green: 1, Red: 1, Total: 2},
		{Day: "2026-03-05", Total: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Summaries = %+v, want %+v", got, want)
	}
	v1, _ := s.NextVersion()
	v2, _ := s.NextVersion()
	if v2 <= v1 {
		t.Fatalf("NextVersion went %d then %d", v1, v2)
	}
}
