package gateway

import (
	"fmt"
	"io"
	"strconv"
)

// metric is one Prometheus sample read when /metrics is scraped. None is per
// colour, and none may ever be: a per-colour counter that moves while a
// colleague presses tells who pressed what.
type metric struct {
	name, help, kind string // kind: counter or gauge
	value            func() float64
	// samples, if set instead of value, gives labelled samples; a label
	// value is escaped by %q, which matches the text format for the
	// characters site ids and roles use.
	samples func() []sample
}

type sample struct {
	label, value string // one label: name and value
	v            float64
}

// metricSet writes the Prometheus text format (version 0.0.4).
type metricSet []metric

// WritePrometheus writes every metric with its HELP and TYPE lines.
func (ms metricSet) WritePrometheus(w io.Writer) {
	for _, m := range ms {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.kind)
		if m.samples == nil {
			fmt.Fprintf(w, "%s %s\n", m.name, strconv.FormatFloat(m.value(), 'g', -1, 64))
			continue
		}
		for _, s := range m.samples() {
			fmt.Fprintf(w, "%s{%s=%q} %s\n", m.name, s.label, s.value, strconv.FormatFloat(s.v, 'g', -1, 64))
		}
	}
}

func (g *Gateway) newMetrics() metricSet {
	intakeStat := func(f func(s intakeStats) uint64) func() float64 {
		return func() float64 { return float64(f(g.intake.Stats())) }
	}
	boardSum := func(f func(b boardState) float64) func() float64 {
		return func() float64 {
			var n float64
			for _, b := range g.boards.Boards() {
				n += f(b)
			}
			return n
		}
	}
	ms := metricSet{
		{"pulsegate_presses_total", "Presses counted since start, all colours together.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.Counted })},
		{"pulsegate_presses_suppressed_total", "Presses over the abuse limit: acknowledged, not counted.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.Suppressed })},
		{"pulsegate_presses_duplicate_total", "Resent presses recognised as already counted.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.Duplicates })},
		{"pulsegate_presses_clock_refused_total", "Presses left on the boards because the clock was not set.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.ClockRefused })},
		{"pulsegate_presses_queue_full_total", "Presses left on the boards because the intake queue was full.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.QueueFull })},
		{"pulsegate_store_commits_total", "Store transactions (one fsync each).", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.Commits })},
		{"pulsegate_store_commit_errors_total", "Store transactions that failed; their presses were not acknowledged.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.CommitErrors })},
		{"pulsegate_frames_dropped_total", "Frames dropped for noise, truncation, bad CRC or bad syntax.", "counter",
			boardSum(func(b boardState) float64 { return float64(b.FramesDropped) })},
		{"pulsegate_boards_connected", "Board ports open now.", "gauge",
			boardSum(func(b boardState) float64 {
				if b.Connected {
					return 1
				}
				return 0
			})},
		{"pulsegate_clock_set", "1 when the clock is set and presses can be booked.", "gauge",
			func() float64 {
				if g.intake.ClockSet() {
					return 1
				}
				return 0
			}},
	}
	if g.cluster != nil {
		ms = append(ms, g.clusterMetrics()...)
	}
	return ms
}

// clusterMetrics describe replication. Replicated presses are colour-blind
// totals per office, like every other press figure here.
func (g *Gateway) clusterMetrics() metricSet {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	st := func(f func(st clusterStatus) float64) func() float64 {
		return func() float64 { return f(g.cluster.Status()) }
	}
	return metricSet{
		{name: "pulsegate_cluster_role", help: "1 for this box's raft role.", kind: "gauge", samples: func() []sample {
			role := g.cluster.Status().Role
			var out []sample
			for _, r := range []string{"Leader", "Follower", "Candidate"} {
				out = append(out, sample{"role", r, b(r == role)})
			}
			return out
		}},
		{"pulsegate_cluster_leader_known", "1 when a leader is known.", "gauge",
			st(func(s clusterStatus) float64 { return b(s.LeaderKnown) }), nil},
		{"pulsegate_cluster_last_contact_seconds", "Seconds since the leader was last heard from (0 on the leader).", "gauge",
			st(func(s clusterStatus) float64 {
				if s.LastContact.IsZero() {
					return 0
				}
				return g.opts.Now().Sub(s.LastContact).Seconds()
			}), nil},
		{"pulsegate_cluster_applied_index", "Last raft index applied here.", "gauge",
			st(func(s clusterStatus) float64 { return float64(s.AppliedIndex) }), nil},
		{"pulsegate_cluster_voters", "Voting offices.", "gauge",
			st(func(s clusterStatus) float64 { return float64(s.Voters) }), nil},
		{"pulsegate_cluster_members", "Offices known to gossip.", "gauge",
			st(func(s clusterStatus) float64 { return float64(len(s.Members)) }), nil},
		{name: "pulsegate_replicated_presses_total", help: "Presses per office in the replicated state, all colours together.", kind: "counter", samples: func() []sample {
			var out []sample
			for _, sc := range g.cluster.Sites() {
				out = append(out, sample{"site", sc.Info.ID, float64(sc.Total())})
			}
			return out
		}},
	}
}
