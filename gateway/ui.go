package gateway

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pulsegate/pulsegate/cluster"
	"github.com/pulsegate/pulsegate/gateway/store"
	"github.com/pulsegate/pulsegate/gateway/web"
	"github.com/pulsegate/pulsegate/sync/upload"
)

// This file is the gateway's side of the web UI (web.Backend): the office's
// settings, pairing from the browser, boards, the weekly trend, and the
// export and erasure of what the box holds.

// site returns the office's settings and time zone now.
func (g *Gateway) site() (SiteConfig, *time.Location) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg.Site, g.loc
}

// replication returns the cluster and its releaser, nil until paired.
func (g *Gateway) replication() (*cluster.Cluster, *upload.Releaser) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cluster, g.releaser
}

// sitePath is where settings made in the UI are kept. They win over the
// configuration file and flags, so what IT set in the browser survives a
// restart.
func (c Config) sitePath() string { return filepath.Join(c.DataDir, "site.json") }

type siteFile struct {
	Name     string `json:"name"`
	Region   string `json:"region"`
	TimeZone string `json:"time_zone"`
}

// loadSiteFile lays the UI's settings over cfg.Site.
func loadSiteFile(cfg *Config) error {
	b, err := os.ReadFile(cfg.sitePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read site settings: %w", err)
	}
	var f siteFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("read site settings %s: %w (fix or delete the file)", cfg.sitePath(), err)
	}
	cfg.Site.Name, cfg.Site.Region, cfg.Site.TimeZone = f.Name, f.Region, f.TimeZone
	return nil
}

// Site implements web.Backend.
func (g *Gateway) Site() web.SiteSettings {
	s, _ := g.site()
	return web.SiteSettings{Name: s.Name, Region: s.Region, TimeZone: s.TimeZone}
}

// SetSite checks and saves the office's settings and applies them at once:
// the page, presses from now on (days already booked keep their zone) and
// what the cluster knows about this office.
func (g *Gateway) SetSite(ctx context.Context, s web.SiteSettings) error {
	next := g.cfg
	next.Site = SiteConfig{Name: strings.TrimSpace(s.Name), Region: strings.TrimSpace(s.Region), TimeZone: strings.TrimSpace(s.TimeZone)}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("the settings were not saved: %w", err)
	}
	loc, _ := next.Location()
	b, err := json.MarshalIndent(siteFile{next.Site.Name, next.Site.Region, next.Site.TimeZone}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(g.cfg.sitePath(), b); err != nil {
		return fmt.Errorf("save site settings: %w", err)
	}
	g.mu.Lock()
	g.cfg.Site, g.loc = next.Site, loc
	c := g.cluster
	g.mu.Unlock()
	g.intake.SetLocation(loc)
	if c != nil {
		c.SetSite(next.Site.Name, next.Site.Region, loc.String())
	}
	g.log.Info("site settings changed", "site", next.Site.Name, "region", next.Site.Region, "time_zone", loc.String())
	return nil
}

// writeFileAtomic replaces path with data, durably.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Paired reports whether this office belongs to an organisation.
func (g *Gateway) Paired() bool {
	c, _ := g.replication()
	return c != nil
}

// InitCluster starts a new organisation with this office as its first
// member, and starts replicating at once.
func (g *Gateway) InitCluster(ctx context.Context, customer string) error {
	if g.Paired() {
		return errors.New("this office is already paired")
	}
	if customer == "" || len(customer) > 64 {
		return errors.New("the organisation name must be 1 to 64 characters")
	}
	if _, err := cluster.Init(g.cfg.ClusterDir(), customer, g.opts.Now()); err != nil {
		return err
	}
	return g.openCluster(g.ctx)
}

// JoinCluster pairs this office with an existing organisation using a join
// token, and starts replicating at once.
func (g *Gateway) JoinCluster(ctx context.Context, token string) error {
	if g.Paired() {
		return errors.New("this office is already paired")
	}
	if token == "" {
		return errors.New("paste the join token first")
	}
	if tok, err := cluster.ParseToken(token); err == nil {
		g.allowFor(tok.Peers, 2*time.Minute) // the guard lets the join through
	}
	if _, err := cluster.Join(ctx, g.cfg.ClusterDir(), token, g.opts.Now()); err != nil {
		return err
	}
	return g.openCluster(g.ctx)
}

// Boards implements web.Backend.
func (g *Gateway) Boards() ([]web.BoardRow, error) {
	views, err := g.BoardViews()
	if err != nil {
		return nil, err
	}
	out := make([]web.BoardRow, len(views))
	for i, v := range views {
		out[i] = web.BoardRow{
			ID: v.ID, Name: v.Name, Path: v.Path, Firmware: v.Firmware,
			Connected: v.Connected, Simulated: v.Simulated, Approved: v.Approved, Disabled: v.Disabled, Test: v.TestMode,
			LastHeartbeat: v.LastHeartbeat, FirstSeen: v.FirstSeen, LastTestPress: v.LastTestPress,
			Unacked: v.Unacked, FramesDropped: v.FramesDropped, Suppressed: v.Suppressed, Unapproved: v.Unapproved, TestSeen: v.TestPresses,
			LastError: v.LastError,
		}
	}
	return out, nil
}

// SetBoard implements web.Backend.
func (g *Gateway) SetBoard(id string, c web.BoardChange) error {
	var errs []error
	if c.Approve != nil {
		errs = append(errs, g.ApproveBoard(id, *c.Approve))
	}
	if c.Disable != nil {
		errs = append(errs, g.DisableBoard(id, *c.Disable))
	}
	if c.Test != nil {
		errs = append(errs, g.SetBoardTestMode(id, *c.Test))
	}
	if c.Name != nil {
		errs = append(errs, g.NameBoard(id, *c.Name))
	}
	return errors.Join(errs...)
}

// Trend returns this office's last weeks closed ISO weeks, oldest first,
// from closed days only: the current week counts its closed days.
func (g *Gateway) Trend(weeks int) ([]web.TrendPoint, error) {
	_, loc := g.site()
	today := store.DayOf(g.opts.Now(), loc)
	days, err := g.store.ClosedDays(today.AddDays(-7*weeks), today)
	if err != nil {
		return nil, err
	}
	var out []web.TrendPoint
	for _, d := range days {
		t, err := time.Parse(time.DateOnly, string(d.Day))
		if err != nil {
			return nil, err
		}
		y, w := t.ISOWeek()
		week := fmt.Sprintf("%04d-W%02d", y, w)
		if len(out) == 0 || out[len(out)-1].Week != week {
			out = append(out, web.TrendPoint{Week: week})
		}
		out[len(out)-1].Green += d.Green
		out[len(out)-1].Red += d.Red
	}
	// Weeks before the first press are not part of the trend.
	for len(out) > 0 && out[0].Green+out[0].Red == 0 {
		out = out[1:]
	}
	if len(out) > weeks {
		out = out[len(out)-weeks:]
	}
	return out, nil
}

// ExportLocal writes what this box keeps about its office: per closed day
// the counts per colour (today only as a colour-blind total, as everywhere),
// the boards' settings and the site's settings, as JSON and CSV.
func (g *Gateway) ExportLocal(ctx context.Context, create func(name string) (io.Writer, error)) error {
	site, loc := g.site()
	now := g.opts.Now()
	today := store.DayOf(now, loc)
	var days []store.DayCount
	if first, ok, err := g.store.FirstDay(); err != nil {
		return err
	} else if ok && first < today {
		if days, err = g.store.ClosedDays(first, today); err != nil {
			return err
		}
	}
	todayTotal, err := g.store.DayTotal(today)
	if err != nil {
		return err
	}
	boards, err := g.BoardViews()
	if err != nil {
		return err
	}
	type dayRow struct {
		Day   string `json:"day"`
		Green uint64 `json:"green"`
		Red   uint64 `json:"red"`
		Total uint64 `json:"total"`
	}
	rows := make([]dayRow, 0, len(days))
	for _, d := range days {
		if d.Total() > 0 {
			rows = append(rows, dayRow{string(d.Day), d.Green, d.Red, d.Total()})
		}
	}
	doc := struct {
		ExportedAt time.Time   `json:"exported_at"`
		Site       SiteConfig  `json:"site"`
		ClosedDays []dayRow    `json:"closed_days"`
		Today      any         `json:"today"`
		Boards     []BoardView `json:"boards"`
	}{now.UTC(), site, rows, struct {
		Day   string `json:"day"`
		Total uint64 `json:"total"`
	}{string(today), todayTotal}, boards}
	w, err := create("office/export.json")
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if w, err = create("office/closed_days.csv"); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	cw.Write([]string{"day", "green", "red", "total"}) //nolint:errcheck // checked by Flush below
	for _, r := range rows {
		cw.Write([]string{r.Day, strconv.FormatUint(r.Green, 10), strconv.FormatUint(r.Red, 10), strconv.FormatUint(r.Total, 10)}) //nolint:errcheck
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if w, err = create("office/boards.csv"); err != nil {
		return err
	}
	cw = csv.NewWriter(w)
	cw.Write([]string{"id", "name", "approved", "disabled", "first_seen"}) //nolint:errcheck
	for _, b := range boards {
		first := ""
		if !b.FirstSeen.IsZero() {
			first = b.FirstSeen.UTC().Format(time.RFC3339)
		}
		cw.Write([]string{b.ID, b.Name, strconv.FormatBool(b.Approved), strconv.FormatBool(b.Disabled), first}) //nolint:errcheck
	}
	cw.Flush()
	return cw.Error()
}

// EraseLocal deletes this office's counts from this box, and publishes the
// erased days as zero to the other offices, whose replicas keep the
// highest version: the copies in the cluster are overwritten with nothing.
// Releases already uploaded to the index are noised aggregates; erasing
// them there is HQ's `pulsegate index erase` (the page says so).
func (g *Gateway) EraseLocal(ctx context.Context) error {
	days, err := g.store.EraseCounts()
	if err != nil {
		return err
	}
	g.store.MarkDirty(days...)
	g.log.Warn("this office's counts were erased; the erased days are published as zero to the other offices", "days", len(days))
	return nil
}

// TLSFingerprint is the SHA-256 fingerprint of the UI's certificate.
func (g *Gateway) TLSFingerprint() string {
	if g.tlsID == nil {
		return ""
	}
	return g.tlsID.Fingerprint()
}
