package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// ServerInfo is what the leader knows about one server when it reconciles
// raft membership: the raft side (InRaft, Voter) and the gossip side (Alive,
// Since, RTT).
type ServerInfo struct {
	ID, Addr string        // raft server id (the site id) and raft address
	Region   string        // free-form; "" is a region like any other
	InRaft   bool          // present in the raft configuration
	Voter    bool          // current raft suffrage (only meaningful if InRaft)
	Alive    bool          // gossip says alive
	Since    time.Time     // when Alive last changed (gossip); zero means unknown, treated as "just now"
	RTT      time.Duration // measured round trip from the leader, 0 unknown
}

// ReconcileConfig tunes Reconcile. The zero value of each field selects its
// default.
type ReconcileConfig struct {
	// MaxVoters is 3 or 5; 0 means 5.
	MaxVoters int
	// Stabilization is how long a server must be alive before it is
	// promoted, and how long a voter must be dead before it is demoted;
	// 0 means 30s.
	Stabilization time.Duration
	// DeadTimeout is how long a server must be dead before it is removed
	// from raft; 0 means 72h, because offices go offline for hours.
	DeadTimeout time.Duration
}

func (c ReconcileConfig) withDefaults() ReconcileConfig {
	if c.MaxVoters == 0 {
		c.MaxVoters = 5
	}
	if c.Stabilization == 0 {
		c.Stabilization = 30 * time.Second
	}
	if c.DeadTimeout == 0 {
		c.DeadTimeout = 72 * time.Hour
	}
	return c
}

// Validate reports whether c, with defaults applied, is usable.
func (c ReconcileConfig) Validate() error {
	d := c.withDefaults()
	var errs []error
	if d.MaxVoters != 3 && d.MaxVoters != 5 {
		errs = append(errs, fmt.Errorf("max voters %d: want 3 or 5", c.MaxVoters))
	}
	if d.Stabilization < 0 {
		errs = append(errs, fmt.Errorf("stabilization %v: must not be negative", c.Stabilization))
	}
	if d.DeadTimeout < 0 {
		errs = append(errs, fmt.Errorf("dead timeout %v: must not be negative", c.DeadTimeout))
	} else if d.DeadTimeout < d.Stabilization {
		errs = append(errs, fmt.Errorf("dead timeout %v: shorter than stabilization %v", d.DeadTimeout, d.Stabilization))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid reconcile config: %w", err)
	}
	return nil
}

// ActionKind is a raft membership change.
type ActionKind int

// The zero ActionKind is deliberately invalid.
const (
	AddNonvoter ActionKind = iota + 1 // raft AddNonvoter
	Promote                           // raft AddVoter on an existing non-voter
	Demote                            // raft DemoteVoter
	Remove                            // raft RemoveServer
)

func (k ActionKind) String() string {
	switch k {
	case AddNonvoter:
		return "AddNonvoter"
	case Promote:
		return "Promote"
	case Demote:
		return "Demote"
	case Remove:
		return "Remove"
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is one membership change for the leader to apply. Reason is for
// logs only.
type Action struct {
	Kind     ActionKind
	ID, Addr string
	Reason   string
}

func (a Action) String() string {
	return fmt.Sprintf("%v %s (%s)", a.Kind, a.ID, a.Reason)
}

// Reconcile decides which raft membership changes bring the configuration
// closer to the desired one. It is pure: the clock is the now argument and
// the result depends only on the arguments, not on the order of servers.
// Server IDs are assumed unique. It returns nil when there is nothing to do,
// and also when cfg is invalid (doing nothing is always safe).
//
// The actions are returned in the order they must be applied, one raft
// configuration change at a time: AddNonvoter, Promote, Demote, Remove. Each
// step on its own keeps at least a quorum of healthy voters if the
// configuration had one, so the leader may stop after any failed step and
// simply run Reconcile again on its next tick.
//
// A server is healthy when gossip has seen it alive for at least
// Stabilization; the leader is always healthy. Only servers in the raft
// configuration count, so a server joins as a non-voter in one round and can
// be promoted in a later one. The rules:
//
//   - Join: an alive server that is not in raft (and has a raft address) is
//     added as a non-voter, stable or not; non-voters cost the quorum nothing.
//   - Target: the largest odd number ≤ min(MaxVoters, healthy servers), at
//     least 1. Odd because an even voter set tolerates no more failures than
//     the odd set one smaller, yet needs one more ack per commit. With two
//     healthy servers the target is therefore 1 and the second one stays a
//     non-voter: with two voters losing either loses quorum, with one only
//     losing the leader does.
//   - Promote: healthy non-voters while the voters that are not yet
//     replaceable (healthy, still stabilising, or dead for less than
//     Stabilization) number fewer than the target. A voter that merely
//     flapped is therefore not replaced. Preference: the region with the
//     fewest healthy voters (an unrepresented one first), then the lowest
//     known RTT (0 sorts last), then the lowest ID.
//   - Demote dead: a voter dead for at least Stabilization is demoted. It is
//     not answering, and the voter set then always exceeds the target, so
//     dropping it never lowers the healthy voter count and never raises the
//     quorum. When a replacement exists it is promoted in the same round,
//     before the demotion. If the healthy voters are already short of a
//     quorum nothing could commit, and nothing is demoted or removed.
//   - Demote extras: healthy voters are demoted only while they exceed
//     MaxVoters (for example after MaxVoters went from 5 to 3), never the
//     leader, from the most represented region first, then the highest RTT
//     (unknown counts as highest), then the highest ID. Healthy voters are
//     never demoted merely to make the count odd (4 healthy voters with
//     MaxVoters 5 stay 4): promotion only adds up to the target. A healthy
//     demotion must leave at least a quorum of both the old and the new voter
//     set healthy.
//   - Remove: a server dead for at least DeadTimeout is removed (a voter
//     directly, without a demotion first), never the leader, and a voter
//     only if the healthy voters left are at least a quorum of the remaining
//     voters.
//
// A server whose Since is zero has an unknown history and is neither
// promoted, demoted nor removed: callers should set Since to when they began
// watching a server gossip has never reported.
func Reconcile(cfg ReconcileConfig, now time.Time, leaderID string, servers []ServerInfo) []Action {
	if cfg.Validate() != nil {
		return nil
	}
	r := reconcileRound{
		cfg:      cfg.withDefaults(),
		now:      now,
		leaderID: leaderID,
		servers:  slices.Clone(servers),
	}
	slices.SortFunc(r.servers, func(a, b ServerInfo) int { return strings.Compare(a.ID, b.ID) })
	return r.plan()
}

// reconcileRound holds one Reconcile call: the inputs and the voter set as
// planned so far, so every guard is checked against the configuration that
// the preceding actions will have produced.
type reconcileRound struct {
	cfg      ReconcileConfig
	now      time.Time
	leaderID string
	servers  []ServerInfo // sorted by ID

	voter   map[string]bool // planned suffrage of servers in raft
	voters  int             // planned voter count
	healthy int             // planned healthy voter count
	actions []Action
}

// age is how long s has been in its current gossip state; zero when unknown.
func (r *reconcileRound) age(s ServerInfo) time.Duration {
	if s.Since.IsZero() || s.Since.After(r.now) {
		return 0
	}
	return r.now.Sub(s.Since)
}

func (r *reconcileRound) isHealthy(s ServerInfo) bool {
	return s.ID == r.leaderID || (s.Alive && r.age(s) >= r.cfg.Stabilization)
}

func (r *reconcileRound) deadFor(s ServerInfo, d time.Duration) bool {
	return s.ID != r.leaderID && !s.Alive && !s.Since.IsZero() && r.age(s) >= d
}

// rttRank orders servers by measured round trip, unknown (0) last.
func (r *reconcileRound) rttRank(s ServerInfo) time.Duration {
	if s.RTT <= 0 {
		return math.MaxInt64
	}
	return s.RTT
}

// quorum is the number of votes a raft voter set of n needs to commit.
func (r *reconcileRound) quorum(n int) int { return n/2 + 1 }

func (r *reconcileRound) add(kind ActionKind, s ServerInfo, reason string) {
	r.actions = append(r.actions, Action{Kind: kind, ID: s.ID, Addr: s.Addr, Reason: reason})
}

func (r *reconcileRound) plan() []Action {
	r.voter = make(map[string]bool)
	healthyServers := 0
	for _, s := range r.servers {
		if !s.InRaft {
			continue
		}
		r.voter[s.ID] = s.Voter
		if r.isHealthy(s) {
			healthyServers++
		}
		if s.Voter {
			r.voters++
			if r.isHealthy(s) {
				r.healthy++
			}
		}
	}
	initialVoters := r.voters

	maxVoters := r.cfg.MaxVoters // odd: Validate allows only 3 and 5
	target := max(min(maxVoters, healthyServers), 1)
	if target%2 == 0 {
		target--
	}

	r.join()
	r.promote(target)
	r.demoteDead()
	r.demoteExtras(maxVoters, initialVoters)
	r.remove()
	return r.actions
}

func (r *reconcileRound) join() {
	for _, s := range r.servers {
		if !s.InRaft && s.Alive && s.Addr != "" {
			r.add(AddNonvoter, s, fmt.Sprintf("alive in gossip for %v, not in raft", r.age(s).Round(time.Second)))
		}
	}
}

func (r *reconcileRound) promote(target int) {
	// Voters that are not yet replaceable hold their seat.
	seated := 0
	regions := make(map[string]int) // healthy voters per region
	var candidates []ServerInfo
	for _, s := range r.servers {
		switch {
		case !s.InRaft:
		case s.Voter && r.isHealthy(s):
			regions[s.Region]++
			seated++
		case s.Voter && !r.deadFor(s, r.cfg.Stabilization):
			seated++
		case !s.Voter && r.isHealthy(s):
			candidates = append(candidates, s)
		}
	}
	for seated < target && len(candidates) > 0 {
		best := slices.MinFunc(candidates, func(a, b ServerInfo) int {
			if c := cmp.Compare(regions[a.Region], regions[b.Region]); c != 0 {
				return c
			}
			if c := cmp.Compare(r.rttRank(a), r.rttRank(b)); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		candidates = slices.DeleteFunc(candidates, func(s ServerInfo) bool { return s.ID == best.ID })
		r.add(Promote, best, fmt.Sprintf("healthy for %v; %d of target %d voters seated; region %q has %d healthy voters",
			r.age(best).Round(time.Second), seated, target, best.Region, regions[best.Region]))
		regions[best.Region]++
		seated++
		r.voter[best.ID] = true
		r.voters++
		r.healthy++
	}
}

// demoteDead drops voters that have been dead for Stabilization, unless they
// are due for removal anyway.
func (r *reconcileRound) demoteDead() {
	for _, s := range r.servers {
		if !r.voter[s.ID] || !r.deadFor(s, r.cfg.Stabilization) || r.deadFor(s, r.cfg.DeadTimeout) {
			continue
		}
		if r.healthy < r.quorum(r.voters-1) {
			continue // no quorum to commit with; changing nothing is safest
		}
		r.add(Demote, s, fmt.Sprintf("voter dead for %v (≥ %v)", r.age(s).Round(time.Second), r.cfg.Stabilization))
		r.voter[s.ID] = false
		r.voters--
	}
}

// demoteExtras trims healthy voters down to maxVoters, starting with the
// most represented region.
func (r *reconcileRound) demoteExtras(maxVoters, initialVoters int) {
	for r.healthy > maxVoters {
		if r.healthy-1 < r.quorum(r.voters-1) || r.healthy-1 < r.quorum(initialVoters) {
			return
		}
		regions := make(map[string]int)
		var extras []ServerInfo
		for _, s := range r.servers {
			if r.voter[s.ID] && r.isHealthy(s) {
				regions[s.Region]++
				if s.ID != r.leaderID {
					extras = append(extras, s)
				}
			}
		}
		if len(extras) == 0 {
			return
		}
		worst := slices.MaxFunc(extras, func(a, b ServerInfo) int {
			if c := cmp.Compare(regions[a.Region], regions[b.Region]); c != 0 {
				return c
			}
			if c := cmp.Compare(r.rttRank(a), r.rttRank(b)); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		r.add(Demote, worst, fmt.Sprintf("%d healthy voters > max %d; region %q has %d voters",
			r.healthy, maxVoters, worst.Region, regions[worst.Region]))
		r.voter[worst.ID] = false
		r.voters--
		r.healthy--
	}
}

func (r *reconcileRound) remove() {
	for _, s := range r.servers {
		if !s.InRaft || !r.deadFor(s, r.cfg.DeadTimeout) {
			continue
		}
		if r.voter[s.ID] {
			if r.healthy < r.quorum(r.voters-1) {
				continue
			}
			r.voters--
			r.voter[s.ID] = false
		}
		r.add(Remove, s, fmt.Sprintf("dead for %v (≥ %v)", r.age(s).Round(time.Second), r.cfg.DeadTimeout))
	}
}
