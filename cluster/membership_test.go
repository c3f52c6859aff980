package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

// membershipFastTune makes memberlist probe and gossip every few tens of
// milliseconds so loopback tests settle quickly.
func membershipFastTune(c *memberlist.Config) {
	c.ProbeInterval = 50 * time.Millisecond
	c.ProbeTimeout = 25 * time.Millisecond
	c.GossipInterval = 10 * time.Millisecond
	c.PushPullInterval = 200 * time.Millisecond
	c.SuspicionMult = 2
	c.RetransmitMult = 2
	c.IndirectChecks = 1
	c.TCPTimeout = 500 * time.Millisecond
}

// testMembership is an open Membership plus how often OnChange ran.
type testMembership struct {
	*Membership
	changes atomic.Int64
}

// openTestMembership starts gossip for site on 127.0.0.1 with a free port.
// edit may adjust the config before it is opened.
func openTestMembership(tb testing.TB, site string, key []byte, edit func(*MembershipConfig)) *testMembership {
	tb.Helper()
	tm := &testMembership{}
	cfg := MembershipConfig{
		Meta:     MemberMeta{SiteID: site, Region: "region-" + site, RaftAddr: "10.1.1.1:7400"},
		BindAddr: "127.0.0.1",
		Label:    "customer-1",
		Keys:     [][]byte{key},
		OnChange: func() { tm.changes.Add(1) },
		Tune:     membershipFastTune,
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := OpenMembership(cfg)
	if err != nil {
		tb.Fatalf("OpenMembership(%s): %v", site, err)
	}
	tb.Cleanup(func() { m.Close() })
	tm.Membership = m
	return tm
}

func membershipTestKey(tb testing.TB) []byte {
	tb.Helper()
	k, err := NewGossipKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// waitForMembership polls cond until it holds or the timeout passes.
func waitForMembership(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memberOf returns what m knows about site.
func memberOf(m *Membership, site string) (Member, bool) {
	for _, mem := range m.Members() {
		if mem.SiteID == site {
			return mem, true
		}
	}
	return Member{}, false
}

func seesAlive(m *Membership, site string) bool {
	mem, ok := memberOf(m, site)
	return ok && mem.Alive
}

func TestMembershipJoin(t *testing.T) {
	// Registered first, so it runs after every Close: Close must leave no
	// goroutine behind.
	leakOpt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leakOpt) })

	key := membershipTestKey(t)
	a := openTestMembership(t, "a", key, nil)
	b := openTestMembership(t, "b", key, nil)
	c := openTestMembership(t, "c", key, func(cfg *MembershipConfig) { cfg.Meta.RaftAddr = "10.1.1.3:7400" })

	for _, m := range []*testMembership{b, c} {
		if n, err := m.Join([]string{a.Addr()}); err != nil || n != 1 {
			t.Fatalf("Join(%s) = %d, %v, want 1, nil", a.Addr(), n, err)
		}
	}
	all := map[string]*testMembership{"a": a, "b": b, "c": c}
	for name, m := range all {
		waitForMembership(t, 5*time.Second, name+" to see 3 alive members", func() bool {
			return seesAlive(m.Membership, "a") && seesAlive(m.Membership, "b") && seesAlive(m.Membership, "c")
		})
	}

	got := b.Members()
	if ids := []string{got[0].SiteID, got[1].SiteID, got[2].SiteID}; !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("Members() ids = %q, want sorted a, b, c", ids)
	}
	for _, mem := range got {
		want := all[mem.SiteID]
		if mem.GossipAddr != want.Addr() {
			t.Errorf("member %s GossipAddr = %q, want %q", mem.SiteID, mem.GossipAddr, want.Addr())
		}
		if mem.Region != "region-"+mem.SiteID {
			t.Errorf("member %s Region = %q, want %q", mem.SiteID, mem.Region, "region-"+mem.SiteID)
		}
		if mem.Since.IsZero() {
			t.Errorf("member %s Since is zero", mem.SiteID)
		}
	}
	if mem, _ := memberOf(b.Membership, "c"); mem.RaftAddr != "10.1.1.3:7400" {
		t.Errorf("b sees c RaftAddr %q, want 10.1.1.3:7400", mem.RaftAddr)
	}
	if a.changes.Load() == 0 {
		t.Errorf("a: OnChange never called")
	}

	rtt, err := b.Ping("c")
	if err != nil || rtt <= 0 {
		t.Errorf("Ping(c) = %v, %v, want > 0, nil", rtt, err)
	}
	if _, err := b.Ping("nobody"); !errors.Is(err, ErrMemberNotAlive) {
		t.Errorf("Ping(nobody) error = %v, want ErrMemberNotAlive", err)
	}
}

func TestMembershipDeparture(t *testing.T) {
	tests := []struct {
		name string
		stop func(*testMembership)
	}{
		// Close says goodbye: peers learn at once.
		{"close", func(m *testMembership) { m.Close() }},
		// A crash, or the office's WAN link dropping: peers must notice by
		// probing. Stop memberlist without leaving, then let Close only
		// wait for the notifier.
		{"crash", func(m *testMembership) {
			m.list.Shutdown()
			m.closed.Store(true)
			m.closeOnce.Do(func() { close(m.done); m.wg.Wait() })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := membershipTestKey(t)
			a := openTestMembership(t, "a", key, nil)
			b := openTestMembership(t, "b", key, nil)
			c := openTestMembership(t, "c", key, nil)
			if _, err := a.Join([]string{b.Addr(), c.Addr()}); err != nil {
				t.Fatal(err)
			}
			for _, m := range []*testMembership{a, b} {
				waitForMembership(t, 5*time.Second, "everyone alive", func() bool {
					return seesAlive(m.Membership, "a") && seesAlive(m.Membership, "b") && seesAlive(m.Membership, "c")
				})
			}
			before := a.changes.Load()
			stopped := time.Now()
			tt.stop(c)
			for name, m := range map[string]*testMembership{"a": a, "b": b} {
				waitForMembership(t, 5*time.Second, name+" to see c gone", func() bool {
					mem, ok := memberOf(m.Membership, "c")
					return ok && !mem.Alive
				})
			}
			mem, _ := memberOf(a.Membership, "c")
			if mem.Since.Before(stopped) {
				t.Errorf("c Since = %v, before it stopped at %v", mem.Since, stopped)
			}
			if mem.RaftAddr == "" {
				t.Errorf("dead member lost its metadata: %+v", mem)
			}
			waitForMembership(t, time.Second, "OnChange after c left", func() bool { return a.changes.Load() > before })
			if !seesAlive(a.Membership, "b") {
				t.Errorf("a no longer sees b alive")
			}
		})
	}
}

func TestMembershipIsolation(t *testing.T) {
	key := membershipTestKey(t)
	tests := []struct {
		name  string
		edit  func(*MembershipConfig)
		joins bool
	}{
		{"same label and key", nil, true},
		{"other customer's label", func(c *MembershipConfig) { c.Label = "customer-2" }, false},
		{"no label", func(c *MembershipConfig) { c.Label = "" }, false},
		{"other key", func(c *MembershipConfig) { c.Keys = [][]byte{membershipTestKey(t)} }, false},
		// Key rotation, step 1: a box that already knows the new key but
		// still encrypts with the old one talks to one that knows only the
		// old key.
		{"new key installed as secondary", func(c *MembershipConfig) { c.Keys = [][]byte{key, membershipTestKey(t)} }, true},
		// Step 2 before step 1 finished everywhere: encrypting with a key
		// the peer lacks fails.
		{"new key primary too early", func(c *MembershipConfig) { c.Keys = [][]byte{membershipTestKey(t), key} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := openTestMembership(t, "a", key, nil)
			x := openTestMembership(t, "x", key, tt.edit)
			_, err := x.Join([]string{a.Addr()})
			if tt.joins {
				if err != nil {
					t.Fatalf("Join: %v", err)
				}
				waitForMembership(t, 5*time.Second, "a and x to see each other", func() bool {
					return seesAlive(a.Membership, "x") && seesAlive(x.Membership, "a")
				})
				return
			}
			if err == nil {
				t.Errorf("Join across clusters succeeded, want error")
			}
			// Even if a stray packet got through, neither may ever list
			// the other; give gossip a few rounds to prove it.
			deadline := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(deadline) {
				if _, ok := memberOf(a.Membership, "x"); ok {
					t.Fatalf("a lists x from another cluster")
				}
				if _, ok := memberOf(x.Membership, "a"); ok {
					t.Fatalf("x lists a from another cluster")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestMembershipUpdateMeta(t *testing.T) {
	key := membershipTestKey(t)
	a := openTestMembership(t, "a", key, nil)
	b := openTestMembership(t, "b", key, nil)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitForMembership(t, 5*time.Second, "a to see b", func() bool { return seesAlive(a.Membership, "b") })
	mem, _ := memberOf(a.Membership, "b")
	since := mem.Since
	before := a.changes.Load()

	// DHCP moved b's raft address.
	if err := b.UpdateMeta(MemberMeta{Region: "region-b", RaftAddr: "10.9.9.9:7400"}); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	waitForMembership(t, 5*time.Second, "a to see b's new raft address", func() bool {
		mem, _ := memberOf(a.Membership, "b")
		return mem.RaftAddr == "10.9.9.9:7400"
	})
	waitForMembership(t, time.Second, "OnChange after the update", func() bool { return a.changes.Load() > before })
	if mem, _ := memberOf(a.Membership, "b"); !mem.Alive || !mem.Since.Equal(since) {
		t.Errorf("after a metadata update b = %+v, want alive with Since unchanged (%v)", mem, since)
	}
	if mem, _ := memberOf(b.Membership, "b"); mem.RaftAddr != "10.9.9.9:7400" {
		t.Errorf("b's own entry RaftAddr = %q, want the new address", mem.RaftAddr)
	}

	if err := b.UpdateMeta(MemberMeta{SiteID: "z"}); err == nil {
		t.Errorf("UpdateMeta with another site id succeeded")
	}
	if err := b.UpdateMeta(MemberMeta{RaftAddr: strings.Repeat("x", 600)}); err == nil {
		t.Errorf("UpdateMeta with oversized metadata succeeded")
	}
}

// memberlist reports events with its node lock held; OnChange must run
// outside it, so calling back into the Membership (here UpdateMeta, which
// takes that lock) cannot deadlock. The first call, for this node joining
// itself, happens before OpenMembership returns.
func TestMembershipOnChangeMayCallBack(t *testing.T) {
	key := membershipTestKey(t)
	self := make(chan *Membership, 1)
	var calls atomic.Int64
	cfg := MembershipConfig{
		Meta:     MemberMeta{SiteID: "a", RaftAddr: "10.1.1.1:7400"},
		BindAddr: "127.0.0.1",
		Keys:     [][]byte{key},
		Tune:     membershipFastTune,
		OnChange: func() {
			m := <-self
			self <- m
			if err := m.UpdateMeta(MemberMeta{RaftAddr: "10.1.1.1:7400"}); err != nil && !errors.Is(err, ErrMembershipClosed) {
				t.Errorf("UpdateMeta from OnChange: %v", err)
			}
			if m.Addr() != "" && len(m.Members()) > 0 {
				calls.Add(1)
			}
		},
	}
	m, err := OpenMembership(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	self <- m
	waitForMembership(t, 2*time.Second, "OnChange for the self join", func() bool { return calls.Load() > 0 })

	b := openTestMembership(t, "b", key, func(c *MembershipConfig) { c.Label = "" })
	if _, err := b.Join([]string{m.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitForMembership(t, 5*time.Second, "OnChange for b", func() bool { return seesAlive(m, "b") && calls.Load() > 1 })
}

func TestOpenMembershipRejectsConfig(t *testing.T) {
	key := membershipTestKey(t)
	tests := []struct {
		name    string
		cfg     MembershipConfig
		wantErr string
	}{
		{"no key", MembershipConfig{Meta: MemberMeta{SiteID: "a"}}, "key is required"},
		{"bad key length", MembershipConfig{Meta: MemberMeta{SiteID: "a"}, Keys: [][]byte{key[:10]}}, "gossip key 0: 10 bytes"},
		{"no site id", MembershipConfig{Keys: [][]byte{key}}, "site id is required"},
		{"meta too large", MembershipConfig{Meta: MemberMeta{SiteID: "a", Region: strings.Repeat("r", 600)}, Keys: [][]byte{key}}, "limit 512"},
		{"label too long", MembershipConfig{Meta: MemberMeta{SiteID: "a"}, Keys: [][]byte{key}, Label: strings.Repeat("l", 300)}, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.BindAddr = "127.0.0.1"
			m, err := OpenMembership(tt.cfg)
			if err == nil {
				m.Close()
				t.Fatalf("OpenMembership succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("OpenMembership error = %v, want it to contain %q", err, tt.wantErr)
			}
			if bytes.Contains([]byte(err.Error()), key) {
				t.Errorf("error reveals the key")
			}
		})
	}
}

func TestMembershipCloseTwice(t *testing.T) {
	m := openTestMembership(t, "a", membershipTestKey(t), nil)
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Join([]string{"127.0.0.1:1"}); !errors.Is(err, ErrMembershipClosed) {
		t.Errorf("Join after Close = %v, want ErrMembershipClosed", err)
	}
	if err := m.UpdateMeta(MemberMeta{}); !errors.Is(err, ErrMembershipClosed) {
		t.Errorf("UpdateMeta after Close = %v, want ErrMembershipClosed", err)
	}
}

func TestNewGossipKey(t *testing.T) {
	k1, err := NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := NewGossipKey()
	if len(k1) != 32 || bytes.Equal(k1, k2) {
		t.Errorf("NewGossipKey() = %d bytes, equal to the next: %v", len(k1), bytes.Equal(k1, k2))
	}
	if err := memberlist.ValidateKey(k1); err != nil {
		t.Errorf("memberlist rejects the key: %v", err)
	}
}

func TestMemberlistLogWriter(t *testing.T) {
	tests := []struct {
		line, msg, level string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", "Stream connection from=127.0.0.1:1", "DEBUG"},
		{"[ERR] memberlist: discarding packet with unacceptable label \"x\"\n", "discarding packet with unacceptable label \"x\"", "ERR"},
		{"no level at all\n", "no level at all", ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		w := memberlistLogWriter{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		if n, err := w.Write([]byte(tt.line)); n != len(tt.line) || err != nil {
			t.Errorf("Write(%q) = %d, %v, want %d, nil", tt.line, n, err, len(tt.line))
		}
		var got struct {
			Level, Msg string
			MLevel     string `json:"memberlist_level"`
		}
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("Write(%q) logged %q: %v", tt.line, buf.String(), err)
		}
		if got.Level != "DEBUG" || got.Msg != tt.msg || got.MLevel != tt.level {
			t.Errorf("Write(%q) logged %+v, want DEBUG %q memberlist_level=%q", tt.line, got, tt.msg, tt.level)
		}
	}
}
