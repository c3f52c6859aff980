package cluster

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"
)

// fataler is what testing.TB and *rapid.T share.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

// applyLog runs a command through the FSM as raft would.
func applyLog(tb fataler, f *FSM, c Command) error {
	tb.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		tb.Fatal(err)
	}
	res := f.Apply(&raft.Log{Type: raft.LogCommand, Data: b})
	if res == nil {
		return nil
	}
	return res.(error)
}

func counts(site string, v uint64, days ...DayCounts) Command {
	return Command{Type: CmdCounts, Counts: &CountsUpdate{Site: site, Version: v, Days: days}}
}

func closed(day string, g, r uint64) DayCounts {
	return DayCounts{Day: day, Closed: true, Green: g, Red: r, Total: g + r}
}

func open(day string, total uint64) DayCounts { return DayCounts{Day: day, Total: total} }

func sitesOf(f *FSM) []SiteCounts {
	var out []SiteCounts
	f.Read(func(s *State) { out = s.Sites() })
	return out
}

func TestApplyKeepsHighestVersion(t *testing.T) {
	f := NewFSM()
	for _, c := range []Command{
		counts("a", 2, closed("2026-03-02", 5, 3)),
		counts("a", 1, closed("2026-03-02", 4, 1)), // late, older: ignored
		counts("a", 3, open("2026-03-03", 1)),      // another day, still open
		counts("b", 1, closed("2026-03-02", 9, 9)),
		counts("a", 2, closed("2026-03-02", 5, 3)), // duplicate
	} {
		if err := applyLog(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	got := sitesOf(f)
	want := []SiteCounts{
		{Info: SiteInfo{ID: "a"}, Version: 3, Days: []DayCounts{closed("2026-03-02", 5, 3), open("2026-03-03", 1)}},
		{Info: SiteInfo{ID: "b"}, Version: 1, Days: []DayCounts{closed("2026-03-02", 9, 9)}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Sites() = %+v, want %+v", got, want)
	}
	if got[0].Total() != 9 {
		t.Fatalf("Total() = %d, want 9", got[0].Total())
	}
}

// Any order and any duplication of the same updates give the same state:
// what makes retries after a lost leadership and replays harmless.
func TestApplyOrderAndDuplicationDoNotMatter(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Each site's true history: cumulative counts that only grow.
		var updates []Command
		for _, site := range []string{"a", "b", "c"} {
			g, r := uint64(0), uint64(0)
			for v := uint64(1); v <= uint64(rapid.IntRange(1, 8).Draw(t, "versions")); v++ {
				day := rapid.SampledFrom([]string{"2026-03-01", "2026-03-02"}).Draw(t, "day")
				g += uint64(rapid.IntRange(0, 5).Draw(t, "g"))
				r += uint64(rapid.IntRange(0, 5).Draw(t, "r"))
				d := closed(day, g, r)
				if rapid.Bool().Draw(t, "open") {
					d = open(day, g+r)
				}
				updates = append(updates, counts(site, v, d))
			}
		}
		inOrder := NewFSM()
		for _, u := range updates {
			applyLog(t, inOrder, u)
		}
		// Shuffle with duplicates.
		shuffled := NewFSM()
		idx := rapid.SliceOfN(rapid.IntRange(0, len(updates)-1), len(updates), 3*len(updates)).Draw(t, "order")
		applied := map[int]bool{}
		for _, i := range idx {
			applyLog(t, shuffled, updates[i])
			applied[i] = true
		}
		for i, u := range updates { // every update arrives at least once
			if !applied[i] {
				applyLog(t, shuffled, u)
			}
		}
		if a, b := sitesOf(inOrder), sitesOf(shuffled); !reflect.DeepEqual(a, b) {
			t.Fatalf("in order: %+v\nshuffled: %+v", a, b)
		}
	})
}

func TestTokens(t *testing.T) {
	f := NewFSM()
	add := Command{Type: CmdAddToken, Token: &TokenRecord{ID: "abc123", SecretHash: "h1", Expires: 1000}}
	if err := applyLog(t, f, add); err != nil {
		t.Fatal(err)
	}
	use := func(hash, site string, at int64) error {
		return applyLog(t, f, Command{Type: CmdUseToken, UseToken: &UseToken{ID: "abc123", SecretHash: hash, Site: site, At: at}})
	}
	tests := []struct {
		name string
		hash string
		site string
		at   int64
		want error
	}{
		{"wrong secret", "h2", "s1", 10, ErrTokenUnknown},
		{"expired", "h1", "s1", 1001, ErrTokenExpired},
		{"valid", "h1", "s1", 999, nil},
		{"retry by the same office", "h1", "s1", 999, nil},
		{"reused by another office", "h1", "s2", 999, ErrTokenUsed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := use(tt.hash, tt.site, tt.at); !errors.Is(err, tt.want) {
				t.Fatalf("use = %v, want %v", err, tt.want)
			}
		})
	}
	if err := applyLog(t, f, add); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("adding a token twice = %v, want ErrBadCommand", err)
	}
	// A day after expiry the token is forgotten everywhere.
	use("x", "s3", 1000+24*3600+1)
	f.Read(func(s *State) {
		if _, ok := s.Token("abc123"); ok {
			t.Fatal("expired token kept")
		}
	})
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func TestSnapshotRestore(t *testing.T) {
	f := NewFSM()
	applyLog(t, f, counts("a", 4, closed("2026-03-02", 5, 3)))
	applyLog(t, f, Command{Type: CmdSite, Site: &SiteInfo{ID: "a", Name: "Lisbon", Region: "eu-south", TimeZone: "Europe/Lisbon", Version: 1}})
	applyLog(t, f, Command{Type: CmdAddToken, Token: &TokenRecord{ID: "t1", SecretHash: "h", Expires: 5}})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if a, b := sitesOf(f), sitesOf(g); !reflect.DeepEqual(a, b) {
		t.Fatalf("restored %+v, want %+v", b, a)
	}
	g.Read(func(s *State) {
		if _, ok := s.Token("t1"); !ok {
			t.Fatal("token lost in snapshot")
		}
	})
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("{garbage")))); err == nil {
		t.Fatal("Restore(garbage) succeeded")
	}
}

func TestApplyRejectsBadCommands(t *testing.T) {
	f := NewFSM()
	for _, c := range []Command{
		{Type: 99}, {Type: CmdCounts}, {Type: CmdSite, Site: &SiteInfo{}}, {Type: CmdUseToken},
		counts("a", 1, DayCounts{Day: "2026-03-02", Green: 1, Total: 1}),               // colours of an open day
		counts("a", 1, DayCounts{Day: "2026-03-02", Closed: true, Green: 1, Total: 2}), // sum mismatch
	} {
		if err := applyLog(t, f, c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("Apply(%+v) = %v, want ErrBadCommand", c, err)
		}
	}
	if res := f.Apply(&raft.Log{Type: raft.LogCommand, Data: []byte("not json")}); res == nil {
		t.Error("Apply(garbage) = nil, want an error")
	}
}

// Snapshots come from disk and from peers: a damaged one must fail cleanly.
func FuzzRestore(f *testing.F) {
	f.Add([]byte(`{"days":[{"s":"a","d":"2026-03-02","c":true,"g":5,"t":5,"v":1}],"sites":{},"tokens":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := NewFSM()
		_ = g.Restore(io.NopCloser(bytes.NewReader(b)))
	})
}
