package gateway

import (
	"fmt"
	"io"
	"strconv"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/sync/anon"
	"github.com/pulsegate/pulsegate/sync/upload"
)

type releaseStatus = upload.Status

// metric is one Prometheus sample read when /metrics is scraped. None is per
// colour, and none may ever be: a per-colour counter that moves while a
// colleague presses tells who pressed what.
type metric struct {
	name, help, kind string // kind: counter or gauge
	value            func() float64
}

// labelled is a metric with one label. Label values are written with %q,
// which matches the text format for the characters site ids and roles use.
type labelled struct {
	name, help, kind string
	samples          func() []sample
}

type sample struct {
	label, value string // the label's name and value
	v            float64
	year         int // when set, a second label year="…"
}

// metrics is everything /metrics shows.
type metrics struct {
	plain    metricSet
	labelled []labelled
}

// WritePrometheus writes all of them.
func (m metrics) WritePrometheus(w io.Writer) {
	m.plain.WritePrometheus(w)
	for _, l := range m.labelled {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", l.name, l.help, l.name, l.kind)
		for _, s := range l.samples() {
			year := ""
			if s.year != 0 {
				year = fmt.Sprintf(",year=\"%d\"", s.year)
			}
			fmt.Fprintf(w, "%s{%s=%q%s} %s\n", l.name, s.label, s.value, year, strconv.FormatFloat(s.v, 'g', -1, 64))
		}
	}
}

// metricSet writes the Prometheus text format (version 0.0.4).
type metricSet []metric

// WritePrometheus writes every metric with its HELP and TYPE lines.
func (ms metricSet) WritePrometheus(w io.Writer) {
	for _, m := range ms {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n",
			m.name, m.help, m.name, m.kind, m.name, strconv.FormatFloat(m.value(), 'g', -1, 64))
	}
}

func (g *Gateway) newMetrics() metrics {
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
		{"pulsegate_presses_unapproved_total", "Presses from boards not approved, or disabled: acknowledged, not counted.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.Unapproved })},
		{"pulsegate_presses_test_total", "Presses from boards in test mode: acknowledged, not counted.", "counter",
			intakeStat(func(s intakeStats) uint64 { return s.TestPresses })},
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
	ms = append(ms, g.guardMetrics()...)
	m := metrics{plain: ms}
	if c, r := g.replication(); c != nil {
		m.plain = append(m.plain, g.clusterMetrics(c)...)
		m.labelled = g.clusterLabelled(c)
		st := r.Status() // once per scrape: it reads the whole replica
		m.plain = append(m.plain, releaseMetrics(st)...)
		m.labelled = append(m.labelled, ledgerLabelled(st.Ledger)...)
	}
	m.labelled = append(m.labelled, g.egressLabelled()...)
	return m
}

// clusterMetrics describe replication. Replicated presses are colour-blind
// totals per office, like every other press figure here.
func (g *Gateway) clusterMetrics(c *cluster.Cluster) metricSet {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	st := func(f func(st clusterStatus) float64) func() float64 {
		return func() float64 { return f(c.Status()) }
	}
	return metricSet{
		{"pulsegate_cluster_leader_known", "1 when a leader is known.", "gauge",
			st(func(s clusterStatus) float64 { return b(s.LeaderKnown) })},
		{"pulsegate_cluster_last_contact_seconds", "Seconds since the leader was last heard from (0 on the leader).", "gauge",
			st(func(s clusterStatus) float64 {
				if s.LastContact.IsZero() {
					return 0
				}
				return g.opts.Now().Sub(s.LastContact).Seconds()
			})},
		{"pulsegate_cluster_applied_index", "Last raft index applied here.", "gauge",
			st(func(s clusterStatus) float64 { return float64(s.AppliedIndex) })},
		{"pulsegate_cluster_voters", "Voting offices.", "gauge",
			st(func(s clusterStatus) float64 { return float64(s.Voters) })},
		{"pulsegate_cluster_members", "Offices known to gossip.", "gauge",
			st(func(s clusterStatus) float64 { return float64(len(s.Members)) })},
	}
}

// clusterLabelled: the role, and presses per office in the replicated state,
// colour-blind like every other press figure here.
func (g *Gateway) clusterLabelled(c *cluster.Cluster) []labelled {
	return []labelled{
		{"pulsegate_cluster_role", "1 for this box's raft role.", "gauge", func() []sample {
			role := c.Status().Role
			var out []sample
			for _, r := range []string{"Leader", "Follower", "Candidate"} {
				v := 0.0
				if r == role {
					v = 1
				}
				out = append(out, sample{label: "role", value: r, v: v})
			}
			return out
		}},
		{"pulsegate_replicated_presses_total", "Presses per office in the replicated state, all colours together.", "counter", func() []sample {
			var out []sample
			for _, sc := range c.Sites() {
				out = append(out, sample{label: "site", value: sc.Info.ID, v: float64(sc.Total())})
			}
			return out
		}},
	}
}

// releaseMetrics describe what left, or waits to leave, for the index:
// numbers of releases, never counts.
func releaseMetrics(s releaseStatus) metricSet {
	st := func(f func(s releaseStatus) float64) func() float64 {
		return func() float64 { return f(s) }
	}
	return metricSet{
		{"pulsegate_index_enrolled", "1 when the cluster is enrolled with the central index.", "gauge",
			st(func(s releaseStatus) float64 {
				if s.Enrolled {
					return 1
				}
				return 0
			})},
		{"pulsegate_releases", "Closed periods released, all offices.", "gauge",
			st(func(s releaseStatus) float64 { return float64(s.Released) })},
		{"pulsegate_releases_suppressed", "Released periods that were suppressed (below k).", "gauge",
			st(func(s releaseStatus) float64 { return float64(s.Suppressed) })},
		{"pulsegate_releases_pending_upload", "Releases the index has not acknowledged yet.", "gauge",
			st(func(s releaseStatus) float64 { return float64(s.Pending) })},
		{"pulsegate_releases_budget_exhausted", "Due periods held back because the year's privacy budget is spent.", "gauge",
			st(func(s releaseStatus) float64 { return float64(s.BudgetExhausted) })},
		{"pulsegate_index_uploads_total", "Successful uploads to the index by this office since start.", "counter",
			st(func(s releaseStatus) float64 { return float64(s.Uploads) })},
		{"pulsegate_index_last_upload_timestamp_seconds", "Time of this office's last successful upload (0: none).", "gauge",
			st(func(s releaseStatus) float64 {
				if s.LastUpload.IsZero() {
					return 0
				}
				return float64(s.LastUpload.Unix())
			})},
	}
}

// ledgerLabelled is the privacy-loss ledger per office and calendar year.
func ledgerLabelled(ledger []anon.Total) []labelled {
	rows := func(f func(t anon.Total) float64) func() []sample {
		return func() []sample {
			var out []sample
			for _, t := range ledger {
				out = append(out, sample{label: "site", value: t.Site, year: t.Year, v: f(t)})
			}
			return out
		}
	}
	return []labelled{
		{"pulsegate_privacy_releases", "Releases charged to an office's privacy budget in a year.", "gauge",
			rows(func(t anon.Total) float64 { return float64(t.Releases) })},
		{"pulsegate_privacy_epsilon_spent", "Privacy loss (ε) an office has spent in a year.", "gauge",
			rows(func(t anon.Total) float64 { return float64(t.Spent.Num) / float64(t.Spent.Den) })},
	}
}

// guardMetrics say whether the egress guard is on and how often it refused.
func (g *Gateway) guardMetrics() metricSet {
	return metricSet{
		{"pulsegate_guard_active", "1 when the egress guard is loaded (monitor or enforce).", "gauge",
			func() float64 {
				if g.egress != nil && g.egress.g != nil && g.egress.g.Active() {
					return 1
				}
				return 0
			}},
		{"pulsegate_guard_denied_total", "Connections and datagrams the guard refused (or, in monitor mode, would have).", "counter",
			func() float64 {
				var n uint64
				if g.egress != nil && g.egress.g != nil {
					denied, _ := g.egress.g.Denied()
					for _, d := range denied {
						n += d.Count
					}
				}
				return float64(n)
			}},
	}
}

// egressLabelled is what left this box, per destination address.
func (g *Gateway) egressLabelled() []labelled {
	return []labelled{
		{"pulsegate_egress_bytes_total", "Bytes sent per destination since the guard was loaded.", "counter", func() []sample {
			var out []sample
			if g.egress == nil || g.egress.g == nil {
				return out
			}
			flows, _ := g.egress.g.Ledger()
			for _, f := range flows {
				out = append(out, sample{label: "dest", value: f.Addr.String(), v: float64(f.Bytes)})
			}
			return out
		}},
	}
}
