package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/gateway/store"
	"github.com/pulsegate/pulsegate/gateway/web"
	"github.com/pulsegate/pulsegate/sync/index"
	"github.com/pulsegate/pulsegate/sync/upload"
)

// openCluster joins the customer's cluster if this box is paired. An
// unpaired box counts on its own and says so.
func (g *Gateway) openCluster(ctx context.Context) error {
	if !cluster.Paired(g.cfg.ClusterDir()) {
		g.log.Info("not paired with other offices: counting on this box alone (pulsegate init / pulsegate join to pair)")
		return nil
	}
	cc := g.cfg.Cluster
	site, loc := g.site()
	c, err := cluster.Open(ctx, cluster.Config{
		Dir:             g.cfg.ClusterDir(),
		Name:            site.Name,
		Region:          site.Region,
		TimeZone:        loc.String(),
		Listen:          cc.Listen,
		Advertise:       cc.Advertise,
		GossipListen:    cc.GossipListen,
		GossipAdvertise: cc.GossipAdvertise,
		Timing: cluster.Timing{
			Heartbeat:   cc.HeartbeatTimeout.Duration,
			Election:    cc.ElectionTimeout.Duration,
			LeaderLease: cc.LeaderLeaseTimeout.Duration,
			Commit:      cc.CommitTimeout.Duration,
		},
		Reconcile: cluster.ReconcileConfig{MaxVoters: cc.MaxVoters, DeadTimeout: cc.DeadTimeout.Duration},
		Now:       g.opts.Now,
		Logger:    g.log,
	})
	if err != nil {
		return err
	}
	rules, kind, err := g.cfg.ReleaseRules()
	if err != nil {
		c.Close()
		return err // Validate already refused this
	}
	r, err := upload.New(upload.Config{
		Rules: rules, Kind: kind, Interval: g.cfg.Release.Interval.Duration,
		Now: g.opts.Now, Logger: g.log,
	}, c)
	if err != nil {
		c.Close()
		return err
	}
	g.mu.Lock()
	g.cluster, g.releaser = c, r
	g.mu.Unlock()
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		g.publishLoop(ctx, c)
	}()
	go func() {
		defer g.wg.Done()
		r.Run(ctx)
	}()
	return nil
}

// EnrolIndex enrols the cluster with the central index using the token HQ
// gave: this box makes a key, the index signs a certificate for it bound to
// the customer, and the credential is replicated so that whichever office
// leads can upload. The index's key is pinned from the token.
func (g *Gateway) EnrolIndex(ctx context.Context, token string) (string, error) {
	c, _ := g.replication()
	if c == nil {
		return "", errors.New("this box is not paired: run `pulsegate init` first (a single office is a cluster of one)")
	}
	tok, err := index.ParseEnrolToken(strings.TrimSpace(token))
	if err != nil {
		return "", err
	}
	if hp, err := urlHostPort(tok.URL); err == nil {
		g.allowFor([]string{hp}, 2*time.Minute) // the guard lets the enrolment through
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	site, _ := g.site()
	cred, err := index.Enrol(ctx, tok, site.Name)
	if err != nil {
		return "", err
	}
	err = c.Enrol(ctx, cluster.IndexEnrolment{
		URL: cred.URL, Pin: cred.Pin, Customer: cred.Customer, CertPEM: cred.CertPEM, KeyPEM: cred.KeyPEM,
	})
	if err != nil {
		return "", fmt.Errorf("store the enrolment in the cluster: %w", err)
	}
	return cred.Customer, nil
}

// indexStatus shows the index enrolment and the privacy-loss ledger:
// numbers of releases and ε, never counts.
func (g *Gateway) indexStatus(c *cluster.Cluster, r *upload.Releaser) *web.IndexStatus {
	st := r.Status()
	names := map[string]string{}
	for _, sc := range c.Sites() {
		names[sc.Info.ID] = sc.Info.Name
	}
	is := &web.IndexStatus{
		Enrolled: st.Enrolled, Customer: st.Customer, URL: st.URL,
		Released: st.Released, Suppressed: st.Suppressed, Pending: st.Pending,
		BudgetExhausted: st.BudgetExhausted, Uploads: st.Uploads, LastError: st.LastError,
	}
	if !st.LastUpload.IsZero() {
		is.LastUpload = st.LastUpload.UTC().Format(time.RFC3339)
	}
	for _, t := range st.Ledger {
		is.Ledger = append(is.Ledger, web.LedgerRow{Site: t.Site, Name: names[t.Site], Year: t.Year, Releases: t.Releases, Epsilon: t.Spent.String()})
	}
	return is
}

// publishLoop pushes this office's cumulative counts into the cluster: all
// days once at start (catching up after any outage with one write), then the
// days booked since the last push, at most every push interval. A failed
// push keeps its days for the next round, so an office cut off from the
// others keeps counting and catches up when it can.
func (g *Gateway) publishLoop(ctx context.Context, c *cluster.Cluster) {
	every := g.cfg.Cluster.PushInterval.Duration
	t := time.NewTicker(every)
	defer t.Stop()
	full := true
	var lastToday store.Day
	for {
		now := g.opts.Now()
		_, loc := g.site()
		today := store.DayOf(now, loc)
		if lastToday != "" && today != lastToday {
			// The day that closed is published again, now with colours.
			g.store.MarkDirty(lastToday)
		}
		lastToday = today
		if g.intake.ClockSet() {
			var days []store.Day
			if full {
				g.store.TakeDirty() // covered by the full push
			} else {
				days = g.store.TakeDirty()
			}
			if full || len(days) > 0 {
				if err := g.publish(ctx, c, days, today); err != nil {
					if ctx.Err() != nil {
						return
					}
					g.log.Warn("pushing counts to the cluster failed; will retry", "err", err)
					g.store.MarkDirty(days...)
				} else {
					full = false
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) publish(ctx context.Context, c *cluster.Cluster, days []store.Day, today store.Day) error {
	sums, err := g.store.Summaries(days, today)
	if err != nil {
		return err
	}
	if len(sums) == 0 {
		return nil
	}
	v, err := g.store.NextVersion()
	if err != nil {
		return err
	}
	out := make([]cluster.DayCounts, len(sums))
	for i, s := range sums {
		out[i] = cluster.DayCounts{Day: string(s.Day), Closed: s.Closed, Green: s.Green, Red: s.Red, Total: s.Total}
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.Publish(pctx, v, out)
}

// CreateJoinToken creates a join token for a new office.
func (g *Gateway) CreateJoinToken(ctx context.Context) (string, time.Time, error) {
	c, _ := g.replication()
	if c == nil {
		return "", time.Time{}, errors.New("this box is not paired: start or join an organisation first")
	}
	tok, exp, err := c.CreateToken(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok.String(), exp, nil
}

// clusterStatus shows every office from the local replica (a stale read:
// the lag says how stale). Colours only of closed days, as everywhere.
func (g *Gateway) clusterStatus(c *cluster.Cluster, now time.Time) *web.ClusterStatus {
	st := c.Status()
	cs := &web.ClusterStatus{
		SiteID:       st.SiteID,
		Role:         st.Role,
		LeaderID:     st.LeaderID,
		LeaderKnown:  st.LeaderKnown,
		AppliedIndex: st.AppliedIndex,
		Voters:       st.Voters,
	}
	if !st.LastContact.IsZero() {
		cs.LastContact = now.Sub(st.LastContact).Round(time.Second).String()
	}
	voter := map[string]bool{}
	inRaft := map[string]bool{}
	for _, s := range st.Servers {
		inRaft[s.ID], voter[s.ID] = true, s.Voter
	}
	alive := map[string]bool{}
	for _, m := range st.Members {
		alive[m.SiteID] = m.Alive
	}
	for _, sc := range c.Sites() {
		o := web.Office{
			SiteID: sc.Info.ID, Name: sc.Info.Name, Region: sc.Info.Region,
			Self: sc.Info.ID == st.SiteID, Voter: voter[sc.Info.ID], Member: inRaft[sc.Info.ID],
			Alive: alive[sc.Info.ID] || sc.Info.ID == st.SiteID, Total: sc.Total(),
		}
		if sc.LastUpdate > 0 {
			o.Lag = now.Sub(time.Unix(sc.LastUpdate, 0)).Round(time.Second).String()
		}
		cutoff := lastDays(sc.Days, 7)
		var green, red, total uint64
		for _, d := range sc.Days {
			if !d.Closed {
				o.OpenTotal += d.Total
				continue
			}
			if d.Day >= cutoff {
				green, red, total = green+d.Green, red+d.Red, total+d.Total
			}
		}
		o.ClosedGreen, o.ClosedRed, o.ClosedTotal = web.Cell(green), web.Cell(red), web.Cell(total)
		cs.Offices = append(cs.Offices, o)
	}
	return cs
}

// lastDays returns the first day of the last n closed days present.
func lastDays(days []cluster.DayCounts, n int) string {
	var closed []string
	for _, d := range days {
		if d.Closed {
			closed = append(closed, d.Day)
		}
	}
	if len(closed) == 0 {
		return ""
	}
	last, err := store.ParseDay(closed[len(closed)-1])
	if err != nil {
		return ""
	}
	return string(last.AddDays(-(n - 1)))
}
