// Package clustertest starts real clusters for the tests of packages built
// on cluster: real raft on raft-wal, mutual TLS and gossip on 127.0.0.1,
// paired through the real init/token/join flow, with timings fast enough
// for tests.
package clustertest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/pulsegate/pulsegate/cluster"
)

// Options shape a test cluster. The zero value is fine.
type Options struct {
	Customer string                         // default "acme"
	Region   func(i int) string             // default "region-<i>"
	Now      func() time.Time               // every office's clock; default time.Now
	Faults   *cluster.Faults                // optional fault injection
	TimeZone string                         // default "UTC"
	Tune     func(c *cluster.Config, i int) // last word on each office's config
}

// Set is a running test cluster.
type Set struct {
	tb    testing.TB
	opts  Options
	Dirs  []string
	Nodes []*cluster.Cluster // nil once closed by Kill
}

// Timing makes raft elect and replicate in a few hundred milliseconds.
var Timing = cluster.Timing{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond, Commit: 10 * time.Millisecond}

// FastGossip tunes memberlist for loopback tests.
func FastGossip(c *memberlist.Config) {
	c.ProbeInterval = 50 * time.Millisecond
	c.ProbeTimeout = 25 * time.Millisecond
	c.GossipInterval = 10 * time.Millisecond
	c.PushPullInterval = 200 * time.Millisecond
	c.SuspicionMult = 2
	c.RetransmitMult = 2
	c.IndirectChecks = 1
	c.TCPTimeout = 500 * time.Millisecond
}

// New pairs n offices and waits until the voters have settled. Every office
// is closed at the end of the test.
func New(tb testing.TB, n int, opts Options) *Set {
	tb.Helper()
	if opts.Customer == "" {
		opts.Customer = "acme"
	}
	if opts.Region == nil {
		opts.Region = func(i int) string { return fmt.Sprintf("region-%d", i) }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TimeZone == "" {
		opts.TimeZone = "UTC"
	}
	s := &Set{tb: tb, opts: opts}
	root := tb.TempDir()
	for i := range n {
		s.Dirs = append(s.Dirs, filepath.Join(root, fmt.Sprint(i)))
	}
	if _, err := cluster.Init(s.Dirs[0], opts.Customer, opts.Now()); err != nil {
		tb.Fatal(err)
	}
	s.Nodes = append(s.Nodes, s.open(0))
	WaitFor(tb, 10*time.Second, "the first office to lead", s.Nodes[0].IsLeader)
	for i := 1; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		tok, _, err := s.Nodes[0].CreateToken(ctx)
		if err == nil {
			_, err = cluster.Join(ctx, s.Dirs[i], tok.String(), opts.Now())
		}
		cancel()
		if err != nil {
			tb.Fatalf("join office %d: %v", i, err)
		}
		s.Nodes = append(s.Nodes, s.open(i))
	}
	voters := min(n, 5)
	if voters%2 == 0 {
		voters--
	}
	WaitFor(tb, 30*time.Second, "the voters to settle", func() bool {
		st := s.Nodes[0].Status()
		return st.Voters == voters && len(st.Servers) == n
	})
	return s
}

func (s *Set) open(i int) *cluster.Cluster {
	s.tb.Helper()
	cfg := cluster.Config{
		Dir:               s.Dirs[i],
		Name:              fmt.Sprintf("office%d", i),
		Region:            s.opts.Region(i),
		TimeZone:          s.opts.TimeZone,
		Listen:            "127.0.0.1:0",
		GossipListen:      "127.0.0.1:0",
		Timing:            Timing,
		Reconcile:         cluster.ReconcileConfig{MaxVoters: 5, Stabilization: 500 * time.Millisecond, DeadTimeout: time.Hour},
		ReconcileInterval: 200 * time.Millisecond,
		Faults:            s.opts.Faults,
		TuneGossip:        FastGossip,
		Now:               s.opts.Now,
	}
	if s.opts.Tune != nil {
		s.opts.Tune(&cfg, i)
	}
	c, err := cluster.Open(context.Background(), cfg)
	if err != nil {
		s.tb.Fatalf("open office %d: %v", i, err)
	}
	s.tb.Cleanup(func() { c.Close() })
	return c
}

// Leader waits for an office that leads and returns its index.
func (s *Set) Leader() int {
	s.tb.Helper()
	leader := -1
	WaitFor(s.tb, 20*time.Second, "a leader", func() bool {
		for i, c := range s.Nodes {
			if c != nil && c.IsLeader() {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// Kill closes office i, as a crash would leave its peers.
func (s *Set) Kill(i int) {
	s.tb.Helper()
	if err := s.Nodes[i].Close(); err != nil {
		s.tb.Logf("close office %d: %v", i, err)
	}
	s.Nodes[i] = nil
}

// Restart reopens a killed office from its data.
func (s *Set) Restart(i int) *cluster.Cluster {
	s.tb.Helper()
	s.Nodes[i] = s.open(i)
	return s.Nodes[i]
}

// WaitFor polls cond every 20 ms until it holds or timeout passes.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
