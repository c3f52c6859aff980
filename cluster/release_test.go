package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/pulsegate/pulsegate/sync/anon"
)

func release(site, period string, g, r int64, eps, cap string) Command {
	return Command{Type: CmdRelease, Release: &ReleaseCmd{
		Release: ReleaseRecord{Site: site, Period: period, Green: g, Red: r, Epsilon: eps, Sensitivity: 22, At: 1},
		Cap:     cap,
	}}
}

func releasesOf(f *FSM) []ReleaseRecord {
	var out []ReleaseRecord
	f.Read(func(s *State) { out = s.Releases() })
	return out
}

// TestReleaseIsDrawnOnce: the first release of a bucket stands; a second
// proposal (a retry, a new leader with fresh noise) changes nothing and
// charges nothing.
func TestReleaseIsDrawnOnce(t *testing.T) {
	f := NewFSM()
	if err := applyLog(t, f, release("a", "2026-03", 40, 12, "1", "12")); err != nil {
		t.Fatal(err)
	}
	err := applyLog(t, f, release("a", "2026-03", 99, 1, "1", "12"))
	if !errors.Is(err, ErrAlreadyReleased) {
		t.Fatalf("second release: %v, want ErrAlreadyReleased", err)
	}
	got := releasesOf(f)
	if len(got) != 1 || got[0].Green != 40 || got[0].Red != 12 || got[0].Version != 1 {
		t.Fatalf("releases = %+v, want the first draw with version 1", got)
	}
	var totals []anon.Total
	f.Read(func(s *State) { totals = s.LedgerTotals() })
	if len(totals) != 1 || totals[0].Releases != 1 || totals[0].Spent.String() != "1" {
		t.Fatalf("ledger = %+v, want one release of ε 1", totals)
	}
}

// TestReleaseFailsClosedAtCap: the charge and the release happen together or
// not at all.
func TestReleaseFailsClosedAtCap(t *testing.T) {
	f := NewFSM()
	for _, p := range []string{"2026-01", "2026-02"} {
		if err := applyLog(t, f, release("a", p, 1, 1, "1", "2")); err != nil {
			t.Fatal(err)
		}
	}
	err := applyLog(t, f, release("a", "2026-03", 1, 1, "1", "2"))
	if !errors.Is(err, anon.ErrBudgetExhausted) {
		t.Fatalf("third release over a cap of 2: %v, want ErrBudgetExhausted", err)
	}
	f.Read(func(s *State) {
		if s.Released("a", "2026-03") {
			t.Error("a release over the cap was stored")
		}
		if s.BudgetFits("a", 2026, anon.Epsilon{Num: 1, Den: 1}, anon.Epsilon{Num: 2, Den: 1}) {
			t.Error("BudgetFits says a spent budget fits")
		}
		// Another year, another budget.
		if !s.BudgetFits("a", 2027, anon.Epsilon{Num: 1, Den: 1}, anon.Epsilon{Num: 2, Den: 1}) {
			t.Error("BudgetFits refuses a fresh year")
		}
	})
	// A weekly period belongs to the year of its last day: 2026-W53 does not
	// exist, 2025-W01 ends in 2025; 2026-W01 ends on 2026-01-04.
	if err := applyLog(t, f, release("a", "2026-W01", 1, 1, "1", "2")); !errors.Is(err, anon.ErrBudgetExhausted) {
		t.Fatalf("2026-W01 charged to another year: %v", err)
	}
}

func TestReleaseRejectsBadCommands(t *testing.T) {
	for name, c := range map[string]Command{
		"no body":        {Type: CmdRelease},
		"no site":        release("", "2026-03", 1, 1, "1", "12"),
		"bad period":     release("a", "2026-13", 1, 1, "1", "12"),
		"daily period":   release("a", "2026-03-01", 1, 1, "1", "12"),
		"negative":       release("a", "2026-03", -1, 1, "1", "12"),
		"bad epsilon":    release("a", "2026-03", 1, 1, "-1", "12"),
		"zero epsilon":   release("a", "2026-03", 1, 1, "0", "12"),
		"bad cap":        release("a", "2026-03", 1, 1, "1", "x"),
		"suppressed+num": {Type: CmdRelease, Release: &ReleaseCmd{Release: ReleaseRecord{Site: "a", Period: "2026-03", Suppressed: true, Green: 3, Epsilon: "1"}, Cap: "12"}},
		"preset version": {Type: CmdRelease, Release: &ReleaseCmd{Release: ReleaseRecord{Site: "a", Period: "2026-03", Epsilon: "1", Version: 7}, Cap: "12"}},
		"preset upload":  {Type: CmdRelease, Release: &ReleaseCmd{Release: ReleaseRecord{Site: "a", Period: "2026-03", Epsilon: "1", Uploaded: true}, Cap: "12"}},
		"empty index":    {Type: CmdIndex, Index: &IndexEnrolment{URL: "https://x"}},
	} {
		f := NewFSM()
		if err := applyLog(t, f, c); err == nil {
			t.Errorf("%s: applied, want an error", name)
		}
		if len(releasesOf(f)) != 0 {
			t.Errorf("%s: a release was stored", name)
		}
	}
}

func TestUploadedMarksOnlyThatVersion(t *testing.T) {
	f := NewFSM()
	for _, c := range []Command{release("a", "2026-01", 5, 5, "1", "12"), release("b", "2026-01", 5, 5, "1", "12")} {
		if err := applyLog(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	// b's release has version 2; a stale ack for version 1 of b marks nothing.
	err := applyLog(t, f, Command{Type: CmdUploaded, Uploaded: []ReleaseRef{{"a", "2026-01", 1}, {"b", "2026-01", 1}, {"c", "2026-01", 3}}})
	if err != nil {
		t.Fatal(err)
	}
	got := releasesOf(f)
	if !got[0].Uploaded || got[1].Uploaded {
		t.Fatalf("uploaded flags = %v %v, want true false", got[0].Uploaded, got[1].Uploaded)
	}
}

func TestSnapshotKeepsReleasesLedgerAndEnrolment(t *testing.T) {
	f := NewFSM()
	enr := &IndexEnrolment{URL: "https://127.0.0.1:8443", Pin: "sha256:00", Customer: "acme", CertPEM: []byte("c"), KeyPEM: []byte("k"), At: 5}
	for _, c := range []Command{
		release("a", "2026-01", 5, 5, "0.5", "12"),
		release("a", "2026-02", 0, 0, "0.5", "12"),
		{Type: CmdUploaded, Uploaded: []ReleaseRef{{"a", "2026-01", 1}}},
		{Type: CmdIndex, Index: enr},
	} {
		if err := applyLog(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(snap.(fsmSnapshot))
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(releasesOf(f), releasesOf(g)) {
		t.Fatalf("releases after restore = %+v, want %+v", releasesOf(g), releasesOf(f))
	}
	g.Read(func(s *State) {
		if got, ok := s.Index(); !ok || !reflect.DeepEqual(got, *enr) {
			t.Errorf("enrolment after restore = %+v %v", got, ok)
		}
		if sp := s.ledger.Spent("a", 2026); sp.String() != "1" {
			t.Errorf("ε spent after restore = %s, want 1", sp)
		}
	})
	// The restored ledger keeps counting from where it was.
	if err := applyLog(t, g, release("a", "2026-03", 1, 1, "0.5", "12")); err != nil {
		t.Fatal(err)
	}
	if got := releasesOf(g); got[2].Version != 3 {
		t.Fatalf("version after restore = %d, want 3", got[2].Version)
	}

	// A snapshot whose release has no matching charge is refused: it could
	// otherwise hand out budget twice.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	raw["releases"] = json.RawMessage(strings.Replace(string(raw["releases"]), `"ver":2`, `"ver":9`, 1))
	bad, _ := json.Marshal(raw)
	if err := NewFSM().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Fatal("restored a release without its charge")
	}
}

// TestPeersCannotReleaseOrMarkUploads: only the leader's own releaser
// proposes releases and upload marks; a forwarded one is refused before it
// reaches raft. An enrolment may come from any office.
func TestPeersCannotReleaseOrMarkUploads(t *testing.T) {
	n := &Node{}
	for _, c := range []Command{release("a", "2026-01", 1, 1, "1", "12"), {Type: CmdUploaded, Uploaded: []ReleaseRef{{"a", "2026-01", 1}}}} {
		b, _ := EncodeCommand(c)
		if _, err := n.HandleApply(context.Background(), RPCPeer{SiteID: "a"}, b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("forwarded command type %d: %v, want ErrBadCommand", c.Type, err)
		}
	}
}
