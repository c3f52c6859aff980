package cluster

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// reconcileNow is the fixed clock of the reconcile tests.
var reconcileNow = time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)

// Server builders: name, then how long ago the gossip state began.
func rcVoter(id, region string, aliveFor time.Duration) ServerInfo {
	return ServerInfo{ID: id, Addr: id + ":7400", Region: region, InRaft: true, Voter: true, Alive: true, Since: reconcileNow.Add(-aliveFor)}
}

func rcNonvoter(id, region string, aliveFor time.Duration) ServerInfo {
	s := rcVoter(id, region, aliveFor)
	s.Voter = false
	return s
}

func rcOutsider(id, region string, aliveFor time.Duration) ServerInfo {
	s := rcNonvoter(id, region, aliveFor)
	s.InRaft = false
	return s
}

func rcDead(s ServerInfo, deadFor time.Duration) ServerInfo {
	s.Alive = false
	s.Since = reconcileNow.Add(-deadFor)
	return s
}

func rcRTT(s ServerInfo, rtt time.Duration) ServerInfo {
	s.RTT = rtt
	return s
}

// rcSummary renders actions as "Kind id" for comparison; Reason is for
// humans and not pinned.
func rcSummary(acts []Action) []string {
	out := []string{}
	for _, a := range acts {
		out = append(out, a.Kind.String()+" "+a.ID)
	}
	return out
}

// rcApply applies actions to a copy of servers the way raft would.
func rcApply(servers []ServerInfo, acts []Action) []ServerInfo {
	out := slices.Clone(servers)
	for _, a := range acts {
		i := slices.IndexFunc(out, func(s ServerInfo) bool { return s.ID == a.ID })
		if i < 0 {
			panic("action for unknown server " + a.ID)
		}
		switch a.Kind {
		case AddNonvoter:
			out[i].InRaft, out[i].Voter = true, false
		case Promote:
			out[i].Voter = true
		case Demote:
			out[i].Voter = false
		case Remove:
			out[i].InRaft, out[i].Voter = false, false
		}
	}
	return out
}

// rcConverge runs Reconcile until it has nothing to do and returns the final
// servers and the number of rounds that changed something.
func rcConverge(tb testing.TB, cfg ReconcileConfig, leader string, servers []ServerInfo) ([]ServerInfo, int) {
	tb.Helper()
	for round := 0; round < 10; round++ {
		acts := Reconcile(cfg, reconcileNow, leader, servers)
		if len(acts) == 0 {
			return servers, round
		}
		servers = rcApply(servers, acts)
	}
	tb.Fatalf("Reconcile did not converge in 10 rounds: %v", rcSummary(Reconcile(cfg, reconcileNow, leader, servers)))
	return nil, 0
}

func rcVoterIDs(servers []ServerInfo) []string {
	var ids []string
	for _, s := range servers {
		if s.InRaft && s.Voter {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestReconcile(t *testing.T) {
	const (
		stable  = time.Hour
		flappy  = 5 * time.Second
		settled = 31 * time.Second // just past the default 30s stabilization
	)
	tests := []struct {
		name   string
		cfg    ReconcileConfig
		leader string // default "a"
		in     []ServerInfo
		want   []string // first round
		final  []string // voters once converged; nil: not checked
	}{
		{
			name: "fresh 3 nodes join then become 3 voters",
			in:   []ServerInfo{rcVoter("a", "r1", stable), rcOutsider("b", "r1", stable), rcOutsider("c", "r1", stable)},
			// Joined servers are non-voters first; the next round promotes.
			want:  []string{"AddNonvoter b", "AddNonvoter c"},
			final: []string{"a", "b", "c"},
		},
		{
			name:  "3 stable non-voters are promoted",
			in:    []ServerInfo{rcVoter("a", "r1", stable), rcNonvoter("b", "r1", stable), rcNonvoter("c", "r1", stable)},
			want:  []string{"Promote b", "Promote c"},
			final: []string{"a", "b", "c"},
		},
		{
			name: "fresh 5 nodes become 5 voters",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcOutsider("b", "r1", stable), rcOutsider("c", "r1", stable),
				rcOutsider("d", "r1", stable), rcOutsider("e", "r1", stable)},
			want:  []string{"AddNonvoter b", "AddNonvoter c", "AddNonvoter d", "AddNonvoter e"},
			final: []string{"a", "b", "c", "d", "e"},
		},
		{
			name: "7 nodes with MaxVoters 5: one voter per region, then lowest RTT",
			cfg:  ReconcileConfig{MaxVoters: 5},
			in: []ServerInfo{
				rcVoter("a", "r1", stable),
				rcRTT(rcNonvoter("b", "r1", stable), 5*time.Millisecond), // same region as the leader, fastest
				rcRTT(rcNonvoter("c", "r1", stable), 6*time.Millisecond),
				rcRTT(rcNonvoter("d", "r2", stable), 40*time.Millisecond),
				rcRTT(rcNonvoter("e", "r2", stable), 30*time.Millisecond), // faster of r2
				rcNonvoter("f", "r3", stable),                             // RTT unknown, but only one in r3
				rcRTT(rcNonvoter("g", "r4", stable), 90*time.Millisecond),
			},
			// Four regions, five seats: every region first (e, f, g), then
			// the lowest RTT among the rest (b).
			want:  []string{"Promote e", "Promote g", "Promote f", "Promote b"},
			final: []string{"a", "b", "e", "f", "g"},
		},
		{
			name: "MaxVoters 3",
			cfg:  ReconcileConfig{MaxVoters: 3},
			in: []ServerInfo{rcVoter("a", "r1", stable), rcNonvoter("b", "r1", stable), rcNonvoter("c", "r2", stable),
				rcNonvoter("d", "r3", stable), rcNonvoter("e", "r3", stable)},
			want:  []string{"Promote c", "Promote d"},
			final: []string{"a", "c", "d"},
		},
		{
			name: "voter dead less than Stabilization keeps its seat",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable), rcDead(rcVoter("c", "r3", stable), 10*time.Second),
				rcNonvoter("d", "r3", stable)},
			want: []string{},
		},
		{
			name: "voter dead past Stabilization is replaced and demoted",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable), rcDead(rcVoter("c", "r3", stable), settled),
				rcNonvoter("d", "r3", stable)},
			want:  []string{"Promote d", "Demote c"},
			final: []string{"a", "b", "d"},
		},
		{
			name: "flapping node is not promoted",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable), rcVoter("c", "r3", stable),
				rcNonvoter("d", "r1", flappy), rcNonvoter("e", "r2", flappy)},
			want:  []string{},
			final: []string{"a", "b", "c"},
		},
		{
			name: "flapping replacement: the dead voter leaves, nobody is promoted yet",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable), rcDead(rcVoter("c", "r3", stable), time.Hour),
				rcNonvoter("d", "r3", flappy)},
			// Dropping c costs nothing (3 voters, 2 healthy → 2 voters, 2
			// healthy); d is promoted once it has been up for 30s.
			want:  []string{"Demote c"},
			final: []string{"a", "b"},
		},
		{
			name: "voter that just came back is not promoted over again",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable), rcVoter("c", "r3", flappy),
				rcNonvoter("d", "r3", stable), rcNonvoter("e", "r3", stable)},
			want: []string{},
		},
		{
			name: "dead 71h is not removed",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r1", stable), rcVoter("c", "r1", stable),
				rcDead(rcNonvoter("d", "r1", stable), 71*time.Hour)},
			want: []string{},
		},
		{
			name: "dead 73h is removed",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r1", stable), rcVoter("c", "r1", stable),
				rcDead(rcNonvoter("d", "r1", stable), 73*time.Hour)},
			want:  []string{"Remove d"},
			final: []string{"a", "b", "c"},
		},
		{
			name: "dead voter past DeadTimeout is removed directly, after its replacement",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r1", stable), rcDead(rcVoter("c", "r1", stable), 73*time.Hour),
				rcNonvoter("d", "r1", stable)},
			want:  []string{"Promote d", "Remove c"},
			final: []string{"a", "b", "d"},
		},
		{
			name: "custom DeadTimeout",
			cfg:  ReconcileConfig{DeadTimeout: time.Hour},
			in: []ServerInfo{rcVoter("a", "r1", stable), rcDead(rcNonvoter("b", "r1", stable), 61*time.Minute),
				rcDead(rcNonvoter("c", "r1", stable), 59*time.Minute)},
			want: []string{"Remove b"},
		},
		{
			name: "never removes or demotes the leader",
			in:   []ServerInfo{rcDead(rcVoter("a", "r1", stable), 100*time.Hour), rcVoter("b", "r1", stable), rcVoter("c", "r1", stable)},
			want: []string{},
		},
		{
			name:   "leader is healthy even while it is still stabilising",
			leader: "b",
			in:     []ServerInfo{rcVoter("b", "r1", flappy), rcNonvoter("c", "r1", stable), rcNonvoter("d", "r1", stable)},
			want:   []string{"Promote c", "Promote d"},
		},
		{
			name: "never removes a voter needed for quorum",
			// 5 voters, 3 dead: the 2 healthy are already short of a quorum
			// (3); dropping a dead voter would leave 2 of 4, still short.
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r1", stable),
				rcDead(rcVoter("c", "r1", stable), 100*time.Hour), rcDead(rcVoter("d", "r1", stable), 100*time.Hour),
				rcDead(rcVoter("e", "r1", stable), 100*time.Hour)},
			want: []string{},
		},
		{
			name: "never demotes a healthy voter below quorum",
			cfg:  ReconcileConfig{MaxVoters: 3},
			// 4 healthy voters > 3, but 3 more voters died moments ago:
			// 7 voters need 4, so none of the 4 healthy may go.
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r1", stable), rcVoter("c", "r1", stable), rcVoter("d", "r1", stable),
				rcDead(rcVoter("e", "r1", stable), time.Second), rcDead(rcVoter("f", "r1", stable), time.Second),
				rcDead(rcVoter("g", "r1", stable), time.Second)},
			want: []string{},
		},
		{
			name: "2 healthy servers: target 1, the non-voter stays a non-voter",
			in:   []ServerInfo{rcVoter("a", "r1", stable), rcNonvoter("b", "r2", stable)},
			want: []string{},
		},
		{
			name: "2 healthy voters: not demoted to make the count odd",
			in:   []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable)},
			want: []string{},
		},
		{
			name: "4 healthy voters under MaxVoters 5: kept",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r2", stable), rcVoter("c", "r3", stable),
				rcVoter("d", "r4", stable)},
			want: []string{},
		},
		{
			name: "MaxVoters lowered to 3: extras demoted from the crowded region",
			cfg:  ReconcileConfig{MaxVoters: 3},
			in: []ServerInfo{rcVoter("a", "r1", stable), rcRTT(rcVoter("b", "r1", stable), 10*time.Millisecond),
				rcRTT(rcVoter("c", "r1", stable), 20*time.Millisecond), rcVoter("d", "r2", stable), rcVoter("e", "r3", stable)},
			// r1 holds three voters; the leader stays, c (slower) goes, then
			// b, since r1 still has two.
			want:  []string{"Demote c", "Demote b"},
			final: []string{"a", "d", "e"},
		},
		{
			name: "unknown Since is never acted on",
			in: []ServerInfo{rcVoter("a", "r1", stable), rcVoter("b", "r1", stable), rcVoter("c", "r1", stable),
				{ID: "d", Addr: "d:7400", InRaft: true, Voter: true}, // in raft, never seen by gossip
				{ID: "e", Addr: "e:7400", InRaft: true, Alive: true}, // alive, history unknown
			},
			want: []string{},
		},
		{
			name: "alive server without raft address is not added",
			in:   []ServerInfo{rcVoter("a", "r1", stable), {ID: "b", Alive: true, Since: reconcileNow.Add(-stable)}},
			want: []string{},
		},
		{
			name: "dead outsider is ignored",
			in:   []ServerInfo{rcVoter("a", "r1", stable), rcDead(rcOutsider("b", "r1", stable), 100*time.Hour)},
			want: []string{},
		},
		{
			name: "invalid config does nothing",
			cfg:  ReconcileConfig{MaxVoters: 4},
			in:   []ServerInfo{rcVoter("a", "r1", stable), rcOutsider("b", "r1", stable)},
			want: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leader := tt.leader
			if leader == "" {
				leader = "a"
			}
			got := rcSummary(Reconcile(tt.cfg, reconcileNow, leader, tt.in))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Reconcile() = %q, want %q", got, tt.want)
			}
			if tt.final != nil {
				final, _ := rcConverge(t, tt.cfg, leader, tt.in)
				if got := rcVoterIDs(final); !slices.Equal(got, tt.final) {
					t.Errorf("voters after convergence = %q, want %q", got, tt.final)
				}
			}
		})
	}
}

// A voter dies; the leader keeps reconciling as time passes.
func TestReconcileVoterDiesOverTime(t *testing.T) {
	servers := []ServerInfo{
		rcVoter("a", "r1", time.Hour), rcVoter("b", "r2", time.Hour), rcVoter("c", "r3", time.Hour),
		rcNonvoter("d", "r3", time.Hour),
	}
	died := reconcileNow
	servers[2].Alive, servers[2].Since = false, died
	for _, step := range []struct {
		after time.Duration
		want  []string
	}{
		{0, []string{}},
		{29 * time.Second, []string{}},
		{30 * time.Second, []string{"Promote d", "Demote c"}},
		{71 * time.Hour, []string{}},
		{72 * time.Hour, []string{"Remove c"}},
		{73 * time.Hour, []string{}},
	} {
		acts := Reconcile(ReconcileConfig{}, died.Add(step.after), "a", servers)
		if got := rcSummary(acts); !slices.Equal(got, step.want) {
			t.Errorf("after %v: Reconcile() = %q, want %q", step.after, got, step.want)
		}
		servers = rcApply(servers, acts)
	}
	if got, want := rcVoterIDs(servers), []string{"a", "b", "d"}; !slices.Equal(got, want) {
		t.Errorf("voters = %q, want %q", got, want)
	}
}

func TestReconcileConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     ReconcileConfig
		wantErr string // "" for valid
	}{
		{ReconcileConfig{}, ""},
		{ReconcileConfig{MaxVoters: 3}, ""},
		{ReconcileConfig{MaxVoters: 5, Stabilization: time.Minute, DeadTimeout: time.Hour}, ""},
		{ReconcileConfig{MaxVoters: 4}, "max voters 4"},
		{ReconcileConfig{MaxVoters: 7}, "max voters 7"},
		{ReconcileConfig{MaxVoters: -1}, "max voters -1"},
		{ReconcileConfig{Stabilization: -time.Second}, "stabilization -1s"},
		{ReconcileConfig{DeadTimeout: -time.Second}, "dead timeout -1s"},
		{ReconcileConfig{Stabilization: time.Hour, DeadTimeout: time.Minute}, "shorter than stabilization"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%+v.Validate() = %v, want nil", tt.cfg, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%+v.Validate() = %v, want error containing %q", tt.cfg, err, tt.wantErr)
		}
	}
}

func TestActionKindString(t *testing.T) {
	for k, want := range map[ActionKind]string{
		AddNonvoter: "AddNonvoter", Promote: "Promote", Demote: "Demote", Remove: "Remove", 0: "ActionKind(0)",
	} {
		if got := k.String(); got != want {
			t.Errorf("ActionKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// rcHealthyVoters counts voters and healthy voters the way Reconcile defines
// health.
func rcHealthyVoters(cfg ReconcileConfig, leader string, servers []ServerInfo) (voters, healthy int) {
	cfg = cfg.withDefaults()
	for _, s := range servers {
		if !s.InRaft || !s.Voter {
			continue
		}
		voters++
		if s.ID == leader || (s.Alive && !s.Since.IsZero() && reconcileNow.Sub(s.Since) >= cfg.Stabilization) {
			healthy++
		}
	}
	return voters, healthy
}

func TestReconcileProperties(t *testing.T) {
	ages := []time.Duration{0, time.Second, 29 * time.Second, 30 * time.Second, time.Hour, 71 * time.Hour, 72 * time.Hour, 100 * time.Hour}
	rtts := []time.Duration{0, 5 * time.Millisecond, 40 * time.Millisecond, 120 * time.Millisecond}
	rapid.Check(t, func(t *rapid.T) {
		cfg := ReconcileConfig{MaxVoters: rapid.SampledFrom([]int{0, 3, 5}).Draw(t, "maxVoters")}
		n := rapid.IntRange(1, 10).Draw(t, "n")
		servers := make([]ServerInfo, n)
		for i := range servers {
			s := ServerInfo{
				ID:     fmt.Sprintf("s%02d", i),
				Addr:   fmt.Sprintf("10.0.0.%d:7400", i),
				Region: rapid.SampledFrom([]string{"r1", "r2", "r3", ""}).Draw(t, "region"),
				InRaft: rapid.Bool().Draw(t, "inRaft"),
				Alive:  rapid.Bool().Draw(t, "alive"),
				RTT:    rapid.SampledFrom(rtts).Draw(t, "rtt"),
			}
			s.Voter = s.InRaft && rapid.Bool().Draw(t, "voter")
			if age := rapid.SampledFrom(ages).Draw(t, "age"); age > 0 {
				s.Since = reconcileNow.Add(-age)
			}
			servers[i] = s
		}
		// The leader is a voter in raft; its gossip state is left random
		// (it must count as healthy whatever gossip says).
		li := rapid.IntRange(0, n-1).Draw(t, "leader")
		servers[li].InRaft, servers[li].Voter = true, true
		leader := servers[li].ID

		// Deterministic whatever the input order.
		first := Reconcile(cfg, reconcileNow, leader, servers)
		perm := rapid.Permutation(servers).Draw(t, "perm")
		if again := Reconcile(cfg, reconcileNow, leader, perm); !slices.Equal(first, again) {
			t.Fatalf("order changed the result:\n%v\n%v", first, again)
		}

		for round := 0; ; round++ {
			acts := Reconcile(cfg, reconcileNow, leader, servers)
			if len(acts) == 0 {
				break
			}
			if round == 4 {
				t.Fatalf("not converged after 4 rounds; still %v", acts)
			}
			seen := map[string]bool{}
			for _, a := range acts {
				if seen[a.ID] {
					t.Fatalf("two actions for %s: %v", a.ID, acts)
				}
				seen[a.ID] = true
				if a.ID == leader && (a.Kind == Demote || a.Kind == Remove) {
					t.Fatalf("%v on the leader", a)
				}
				i := slices.IndexFunc(servers, func(s ServerInfo) bool { return s.ID == a.ID })
				s := servers[i]
				ok := map[ActionKind]bool{
					AddNonvoter: !s.InRaft && s.Alive,
					Promote:     s.InRaft && !s.Voter && s.Alive,
					Demote:      s.InRaft && s.Voter,
					Remove:      s.InRaft && !s.Alive,
				}[a.Kind]
				if !ok {
					t.Fatalf("%v does not fit %+v", a, s)
				}

				// Apply one step at a time: a quorum of healthy voters,
				// once there, must survive every intermediate step.
				v0, h0 := rcHealthyVoters(cfg, leader, servers)
				servers = rcApply(servers, []Action{a})
				v1, h1 := rcHealthyVoters(cfg, leader, servers)
				if h0 >= v0/2+1 && h1 < v1/2+1 {
					t.Fatalf("%v left %d healthy of %d voters (was %d of %d)", a, h1, v1, h0, v0)
				}
				if v1 < v0 { // a voter left: Reconcile checked the quorum
					if h1 < v1/2+1 {
						t.Fatalf("%v left %d healthy of %d voters, below quorum", a, h1, v1)
					}
				}
			}
		}
		if v, _ := rcHealthyVoters(cfg, leader, servers); v < 1 {
			t.Fatalf("no voters left")
		}
	})
}
