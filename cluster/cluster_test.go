package cluster

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fastTiming makes raft elect and replicate in a few hundred milliseconds.
var fastTiming = Timing{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond, Commit: 10 * time.Millisecond}

func openTestCluster(tb testing.TB, dir, name string, faults *Faults) *Cluster {
	tb.Helper()
	c, err := Open(context.Background(), Config{
		Dir:               dir,
		Name:              name,
		Region:            "region-" + name,
		TimeZone:          "UTC",
		Listen:            "127.0.0.1:0",
		GossipListen:      "127.0.0.1:0",
		Timing:            fastTiming,
		Reconcile:         ReconcileConfig{MaxVoters: 5, Stabilization: 500 * time.Millisecond, DeadTimeout: time.Hour},
		ReconcileInterval: 200 * time.Millisecond,
		Faults:            faults,
		TuneGossip:        membershipFastTune,
	})
	if err != nil {
		tb.Fatalf("open cluster %s: %v", name, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func waitUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newTestClusters pairs n offices through the real init/token/join flow.
func newTestClusters(tb testing.TB, n int, faults *Faults) []*Cluster {
	tb.Helper()
	root := tb.TempDir()
	if _, err := Init(filepath.Join(root, "0"), "acme", time.Now()); err != nil {
		tb.Fatal(err)
	}
	cs := []*Cluster{openTestCluster(tb, filepath.Join(root, "0"), "office0", faults)}
	waitUntil(tb, 10*time.Second, "the first office to lead", cs[0].Node().IsLeader)
	for i := 1; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		tok, _, err := cs[0].CreateToken(ctx)
		if err != nil {
			cancel()
			tb.Fatal(err)
		}
		dir := filepath.Join(root, string(rune('0'+i)))
		if _, err := Join(ctx, dir, tok.String(), time.Now()); err != nil {
			cancel()
			tb.Fatalf("join office %d: %v", i, err)
		}
		cancel()
		cs = append(cs, openTestCluster(tb, dir, "office"+string(rune('0'+i)), faults))
	}
	voters := min(n, 5)
	if voters%2 == 0 {
		voters-- // an odd number of voters: the rest are non-voters
	}
	waitUntil(tb, 30*time.Second, "the voters to settle", func() bool {
		st := cs[0].Status()
		return st.Voters == voters && len(st.Servers) == n
	})
	return cs
}

func totalsOf(c *Cluster) map[string]uint64 {
	out := map[string]uint64{}
	for _, sc := range c.Sites() {
		if len(sc.Days) > 0 {
			out[sc.Info.ID] = sc.Total()
		}
	}
	return out
}

func sameTotals(cs []*Cluster, want map[string]uint64) bool {
	for _, c := range cs {
		got := totalsOf(c)
		if len(got) != len(want) {
			return false
		}
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
	}
	return true
}

// TestPartitionedOfficeKeepsCountingAndConverges cuts one office off the
// other two, keeps publishing everywhere, heals, and checks every replica
// ends with the exact totals, none counted twice.
func TestPartitionedOfficeKeepsCountingAndConverges(t *testing.T) {
	faults := NewFaults()
	cs := newTestClusters(t, 3, faults)
	want := map[string]uint64{}
	versions := map[string]uint64{}
	publish := func(c *Cluster, total uint64, timeout time.Duration) error {
		versions[c.SiteID()]++
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return c.Publish(ctx, versions[c.SiteID()], []DayCounts{{Day: "2026-03-02", Total: total}})
	}
	for i, c := range cs {
		want[c.SiteID()] = uint64(10 * (i + 1))
		if err := publish(c, want[c.SiteID()], 10*time.Second); err != nil {
			t.Fatalf("publish from office %d: %v", i, err)
		}
	}
	waitUntil(t, 10*time.Second, "every office to see every count", func() bool { return sameTotals(cs, want) })

	// Cut the last office off (if it leads, the other two elect a new leader).
	cut := cs[2]
	faults.Partition(cut.PeerAddr())
	rest := cs[:2]
	for round := range 5 {
		for _, c := range rest {
			want[c.SiteID()] += 3
			if err := publish(c, want[c.SiteID()], 15*time.Second); err != nil {
				t.Fatalf("round %d: publish from a connected office: %v", round, err)
			}
		}
		// The cut-off office keeps counting; its pushes fail until healed.
		want[cut.SiteID()] += 2
		if err := publish(cut, want[cut.SiteID()], 300*time.Millisecond); err == nil {
			t.Fatalf("round %d: a partitioned office published", round)
		}
	}
	waitUntil(t, 10*time.Second, "the connected offices to converge", func() bool {
		w := map[string]uint64{}
		for k, v := range want {
			w[k] = v
		}
		w[cut.SiteID()] = 30 // its last published value before the cut
		return sameTotals(rest, w)
	})

	faults.Heal(cut.PeerAddr())
	// One write catches up: the cumulative value carries everything.
	var err error
	waitUntil(t, 20*time.Second, "the healed office to publish", func() bool {
		err = publish(cut, want[cut.SiteID()], 2*time.Second)
		return err == nil
	})
	waitUntil(t, 20*time.Second, "all offices to converge", func() bool { return sameTotals(cs, want) })
}

func TestJoinRefusesBadTokens(t *testing.T) {
	cs := newTestClusters(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, _, err := cs[0].CreateToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	// A wrong secret.
	bad := tok
	bad.Secret = "0123456789abcdefghijklmnopqrstuv"
	if _, err := Join(ctx, filepath.Join(root, "a"), bad.String(), time.Now()); err == nil {
		t.Fatal("join with a wrong secret succeeded")
	}
	// A wrong CA hash: the joining box refuses the cluster.
	wrongCA := tok
	wrongCA.CAHash = "sha256:" + "00000000000000000000000000000000000000000000000000000000000000ff"
	if _, err := Join(ctx, filepath.Join(root, "b"), wrongCA.String(), time.Now()); err == nil {
		t.Fatal("join trusted a cluster with another CA")
	}
	// The right token works once...
	if _, err := Join(ctx, filepath.Join(root, "c"), tok.String(), time.Now()); err != nil {
		t.Fatalf("join with a good token: %v", err)
	}
	// ...and never again.
	_, err = Join(ctx, filepath.Join(root, "d"), tok.String(), time.Now())
	var re *RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("reused token: err = %v, want a refusal from the cluster", err)
	}
}

func TestJoinRefusesExpiredToken(t *testing.T) {
	root := t.TempDir()
	if _, err := Init(filepath.Join(root, "0"), "acme", time.Now()); err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64 // the cluster's clock runs ahead by this much
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	c, err := Open(context.Background(), Config{
		Dir: filepath.Join(root, "0"), Name: "a", Listen: "127.0.0.1:0", GossipListen: "127.0.0.1:0",
		Timing: fastTiming, TokenTTL: time.Minute, Now: clock, TuneGossip: membershipFastTune,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitUntil(t, 10*time.Second, "leadership", c.Node().IsLeader)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, _, err := c.CreateToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(2 * time.Minute))
	_, err = Join(ctx, filepath.Join(root, "1"), tok.String(), time.Now())
	if err == nil || !strings.Contains(err.Error(), ErrTokenExpired.Error()) {
		t.Fatalf("join with an expired token: err = %v, want %q", err, ErrTokenExpired)
	}
}

// TestVoterLossPromotesNonvoterAndLeaderLossKeepsCounting runs five offices
// with three voters, kills the leader while the others publish, and checks
// that a non-voter takes the dead voter's seat and nothing is lost.
func TestVoterLossPromotesNonvoterAndLeaderLossKeepsCounting(t *testing.T) {
	if testing.Short() {
		t.Skip("five raft nodes: not in -short")
	}
	root := t.TempDir()
	if _, err := Init(filepath.Join(root, "0"), "acme", time.Now()); err != nil {
		t.Fatal(err)
	}
	open := func(i int) *Cluster {
		c, err := Open(context.Background(), Config{
			Dir: filepath.Join(root, string(rune('0'+i))), Name: "office" + string(rune('0'+i)), Region: "r",
			Listen: "127.0.0.1:0", GossipListen: "127.0.0.1:0", Timing: fastTiming,
			Reconcile:         ReconcileConfig{MaxVoters: 3, Stabilization: 500 * time.Millisecond, DeadTimeout: time.Hour},
			ReconcileInterval: 200 * time.Millisecond, TuneGossip: membershipFastTune,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cs := []*Cluster{open(0)}
	waitUntil(t, 10*time.Second, "a leader", cs[0].Node().IsLeader)
	for i := 1; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		tok, _, err := cs[0].CreateToken(ctx)
		if err == nil {
			_, err = Join(ctx, filepath.Join(root, string(rune('0'+i))), tok.String(), time.Now())
		}
		cancel()
		if err != nil {
			t.Fatalf("pair office %d: %v", i, err)
		}
		cs = append(cs, open(i))
	}
	waitUntil(t, 30*time.Second, "3 voters among 5 servers", func() bool {
		st := cs[0].Status()
		return st.Voters == 3 && len(st.Servers) == 5
	})

	var leader *Cluster
	for _, c := range cs {
		if c.Node().IsLeader() {
			leader = c
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	var rest []*Cluster
	for _, c := range cs {
		if c != leader {
			rest = append(rest, c)
		}
	}
	want := map[string]uint64{}
	var version uint64
	publishAll := func() {
		t.Helper()
		version++
		for _, c := range rest {
			want[c.SiteID()] = version * 7
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := c.Publish(ctx, version, []DayCounts{{Day: "2026-03-02", Total: version * 7}})
			cancel()
			if err != nil {
				t.Fatalf("publish %d from %s: %v", version, c.cfg.Name, err)
			}
		}
	}
	publishAll()
	leader.Close() // the leader dies mid-stream
	for range 3 {
		publishAll() // followers keep publishing through the election
	}
	waitUntil(t, 30*time.Second, "a non-voter to take the dead leader's seat", func() bool {
		for _, c := range rest {
			if !c.Node().IsLeader() {
				continue
			}
			st := c.Status()
			healthy := 0
			for _, s := range st.Servers {
				if s.Voter && s.ID != leader.SiteID() {
					healthy++
				}
			}
			return healthy == 3
		}
		return false
	})
	for id, v := range totalsOf(leader) { // what the dead leader had published
		if _, ok := want[id]; !ok {
			want[id] = v
		}
	}
	waitUntil(t, 20*time.Second, "the survivors to converge", func() bool { return sameTotals(rest, want) })
}

func TestFollowerMayOnlyPublishItsOwnCounts(t *testing.T) {
	cs := newTestClusters(t, 2, nil)
	leader, follower := cs[0], cs[1]
	if !leader.Node().IsLeader() {
		leader, follower = follower, leader
	}
	body, _ := EncodeCommand(Command{Type: CmdCounts, Counts: &CountsUpdate{Site: leader.SiteID(), Version: 99, Days: []DayCounts{{Day: "2026-03-02", Total: 1000}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitUntil(t, 10*time.Second, "the follower to know the leader", func() bool {
		addr, _ := follower.Node().Raft().LeaderWithID()
		return addr != ""
	})
	addr, id := follower.Node().Raft().LeaderWithID()
	_, err := follower.mux.Call(ctx, string(addr), follower.clientTLS(string(id)), rpcApply, body)
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, ErrNotOwner.Error()) {
		t.Fatalf("forging another office's counts: err = %v, want %v", err, ErrNotOwner)
	}
}

func TestRestartNeverBootstrapsAgain(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "0")
	if _, err := Init(dir, "acme", time.Now()); err != nil {
		t.Fatal(err)
	}
	c := openTestCluster(t, dir, "a", nil)
	waitUntil(t, 10*time.Second, "a leader", c.Node().IsLeader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Publish(ctx, 1, []DayCounts{{Day: "2026-03-02", Total: 5}}); err != nil {
		t.Fatal(err)
	}
	idx := c.Node().Raft().LastIndex()
	c.Close()
	c = openTestCluster(t, dir, "a", nil)
	waitUntil(t, 10*time.Second, "a leader after restart", c.Node().IsLeader)
	if got := c.Node().Raft().LastIndex(); got < idx {
		t.Fatalf("after restart the log ends at %d, before it ended at %d: bootstrapped again?", got, idx)
	}
	waitUntil(t, 5*time.Second, "the old state", func() bool { return totalsOf(c)[c.SiteID()] == 5 })
}
