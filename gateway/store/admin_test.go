package store

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	bolt "go.etcd.io/bbolt"
)

func TestBookRecordsFirstSeenOnce(t *testing.T) {
	s := mustOpen(t, "")
	t1 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	if _, _, _, err := s.Book(t1, []Press{press("b1", 1, 1, drivers.Green, "2026-03-02")},
		[]Settle{{Board: "b2", Boot: 1, Upto: 3}}, nil); err != nil {
		t.Fatal(err)
	}
	t2 := t1.Add(time.Hour)
	if _, _, _, err := s.Book(t2, []Press{press("b1", 1, 2, drivers.Green, "2026-03-02"), press("b3", 1, 1, drivers.Red, "2026-03-02")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.BoardAdmins()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]BoardAdmin{"b1": {FirstSeen: t1}, "b2": {FirstSeen: t1}, "b3": {FirstSeen: t2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("BoardAdmins() = %+v, want %+v", got, want)
	}
}

func TestBoardAdminPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counts.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustBook(t, s, []Press{press("b1", 1, 1, drivers.Green, "2026-03-02")}, nil)
	v0 := s.AdminVersion()
	approvedAt := bookTime.Add(time.Minute)
	if err := s.SetBoardAdmin("b1", func(a *BoardAdmin) error {
		a.Approved, a.ApprovedAt, a.Name = true, approvedAt, "Lobby, by the lifts"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBoardAdmin("b9", func(a *BoardAdmin) error { a.Disabled, a.TestMode = true, true; return nil }); err != nil {
		t.Fatal(err)
	}
	if v := s.AdminVersion(); v != v0+2 {
		t.Fatalf("AdminVersion went %d → %d after two changes, want +2", v0, v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	got, err := s.BoardAdmins()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]BoardAdmin{
		"b1": {Approved: true, Name: "Lobby, by the lifts", FirstSeen: bookTime, ApprovedAt: approvedAt},
		"b9": {Disabled: true, TestMode: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen BoardAdmins() = %+v, want %+v", got, want)
	}
}

func TestSetBoardAdminWritesNothingOnError(t *testing.T) {
	s := mustOpen(t, "")
	if err := s.SetBoardAdmin("b1", func(a *BoardAdmin) error { a.Name = "Front door"; return nil }); err != nil {
		t.Fatal(err)
	}
	v := s.AdminVersion()
	boom := errors.New("boom")
	if err := s.SetBoardAdmin("b1", func(a *BoardAdmin) error { a.Approved = true; return boom }); !errors.Is(err, boom) {
		t.Fatalf("SetBoardAdmin with a failing fn = %v, want it to wrap %v", err, boom)
	}
	if err := s.SetBoardAdmin("b1", func(a *BoardAdmin) error { a.Approved, a.Name = true, "bad\nname"; return nil }); !errors.Is(err, ErrBadBoardName) {
		t.Fatalf("SetBoardAdmin with a bad name = %v, want ErrBadBoardName", err)
	}
	if err := s.SetBoardAdmin(strings.Repeat("x", 65), func(*BoardAdmin) error { return nil }); !errors.Is(err, ErrBadBoardID) {
		t.Fatalf("SetBoardAdmin with a 65-byte id = %v, want ErrBadBoardID", err)
	}
	got, _ := s.BoardAdmins()
	if want := map[string]BoardAdmin{"b1": {Name: "Front door"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("BoardAdmins() = %+v, want %+v: a failed change was written", got, want)
	}
	if s.AdminVersion() != v {
		t.Fatal("AdminVersion changed after failed changes")
	}
}

func TestValidateBoardName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"Lobby", true},
		{"Café – 2nd floor", true},
		{strings.Repeat("é", MaxBoardName), true},
		{"", false},
		{"   ", false},
		{strings.Repeat("n", MaxBoardName+1), false},
		{"tab\there", false},
		{"new\nline", false},
		{"bell\a", false},
		{"\xff\xfe", false},
		{"zero\u200bwidth", false},
	}
	for _, tt := range tests {
		err := ValidateBoardName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateBoardName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadBoardName) {
			t.Errorf("ValidateBoardName(%q) = %v, want it to wrap ErrBadBoardName", tt.name, err)
		}
	}
}

// TestBookUncountedOutcomesSettleTheSeq: a press decided Unapproved or
// Tested is acknowledged and never counted, not even when resent after the
// board was approved.
func TestBookUncountedOutcomesSettleTheSeq(t *testing.T) {
	s := mustOpen(t, "")
	day := Day("2026-03-02")
	decide := func(i int, p Press) Outcome { return []Outcome{Unapproved, Tested, Suppressed}[i] }
	res, _, st, err := s.Book(bookTime, []Press{
		press("b1", 1, 1, drivers.Green, day),
		press("b1", 1, 2, drivers.Red, day),
		press("b1", 1, 3, drivers.Red, day),
	}, nil, decide)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Result{{Unapproved, 3}, {Tested, 3}, {Suppressed, 3}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("Book = %v, want %v", res, want)
	}
	if want := (BatchStats{Unapproved: 1, Tested: 1, Suppressed: 1}); st != want {
		t.Fatalf("stats = %+v, want %+v", st, want)
	}
	res = mustBook(t, s, []Press{press("b1", 1, 1, drivers.Green, day), press("b1", 1, 2, drivers.Red, day)}, nil)
	if want := []Result{{Duplicate, 3}, {Duplicate, 3}}; !reflect.DeepEqual(res, want) {
		t.Fatalf("resend = %v, want duplicates", res)
	}
	if n, _ := s.TotalCounted(); n != 0 {
		t.Fatalf("TotalCounted = %d, want 0", n)
	}
	if b, _ := s.Boards(); b["b1"].Suppressed != 1 {
		t.Fatalf("suppressed = %d, want 1 (unapproved and tested presses are not over the limit)", b["b1"].Suppressed)
	}
}

func TestBookRefusesADecisionThatIsNotAVerdict(t *testing.T) {
	s := mustOpen(t, "")
	_, _, _, err := s.Book(bookTime, []Press{press("b1", 1, 1, drivers.Green, "2026-03-02")}, nil,
		func(int, Press) Outcome { return Duplicate })
	if err == nil {
		t.Fatal("Book accepted Duplicate as a decision for a new press")
	}
	if w, _ := s.Watermark("b1", 1); w != 0 {
		t.Fatalf("watermark %d after a failed Book, want 0", w)
	}
}

// TestOpenStoreFromBeforeBoardAdmin opens a store as builds before board
// approval wrote it (no board_admin bucket): it opens, keeps its counts and
// dedupe state, and every board is unapproved.
func TestOpenStoreFromBeforeBoardAdmin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counts.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(bucketMeta)
		counts, _ := tx.CreateBucket(bucketCounts)
		boards, _ := tx.CreateBucket(bucketBoards)
		if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, 1)); err != nil {
			return err
		}
		if err := counts.Put(countKey("2026-03-01", drivers.Green), binary.BigEndian.AppendUint64(nil, 7)); err != nil {
			return err
		}
		return boards.Put([]byte("old-1"), encodeBoard(BoardRecord{Suppressed: 2, Boots: []BootState{{Boot: 4, Watermark: 9}}}))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := mustOpen(t, path)
	admins, err := s.BoardAdmins()
	if err != nil || len(admins) != 0 {
		t.Fatalf("BoardAdmins() of an old store = %v, %v; want none", admins, err)
	}
	if n, _ := s.TotalCounted(); n != 7 {
		t.Fatalf("TotalCounted = %d, want the old store's 7", n)
	}
	res := mustBook(t, s, []Press{press("old-1", 4, 9, drivers.Red, "2026-03-02")}, nil)
	if res[0] != (Result{Duplicate, 9}) {
		t.Fatalf("resend of an old press = %v, want duplicate ack 9", res[0])
	}
	if err := s.SetBoardAdmin("old-1", func(a *BoardAdmin) error { a.Approved = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.BoardAdmins(); !a["old-1"].Approved {
		t.Fatalf("BoardAdmins() = %+v, want old-1 approved", a)
	}
}

func TestEraseCountsKeepsDedupeState(t *testing.T) {
	s := mustOpen(t, "")
	day := Day("2026-03-02")
	p := press("b1", 1, 1, drivers.Green, day)
	if _, _, _, err := s.Book(time.Now(), []Press{p}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if first, ok, err := s.FirstDay(); err != nil || !ok || first != day {
		t.Fatalf("FirstDay = %q %v %v", first, ok, err)
	}
	days, err := s.EraseCounts()
	if err != nil || len(days) != 1 || days[0] != day {
		t.Fatalf("EraseCounts = %v, %v; want [%s]", days, err, day)
	}
	if total, _ := s.TotalCounted(); total != 0 {
		t.Fatalf("%d presses left after erasure", total)
	}
	if _, ok, _ := s.FirstDay(); ok {
		t.Fatal("a first day after erasure")
	}
	// The same press resent is still a duplicate: it does not come back.
	res, _, _, err := s.Book(time.Now(), []Press{p}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != Duplicate {
		t.Fatalf("resent press after erasure: %v, want Duplicate", res[0])
	}
	if total, _ := s.TotalCounted(); total != 0 {
		t.Fatalf("a resent press was counted after erasure")
	}
}
