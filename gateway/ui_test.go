package gateway

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/gateway/store"
	"github.com/pulsegate/pulsegate/gateway/web"
)

// bookDays books closed days straight into the store: the UI's reads are
// under test here, not the serial path.
func bookDays(tb testing.TB, g *Gateway, days map[string][2]int) {
	tb.Helper()
	var ps []store.Press
	seq := uint32(0)
	for day, n := range days {
		for c, count := range n {
			for range count {
				seq++
				colour := drivers.Green
				if c == 1 {
					colour = drivers.Red
				}
				ps = append(ps, store.Press{Board: "ui-test", Boot: 1, Seq: seq, Colour: colour, Day: store.Day(day)})
			}
		}
	}
	if _, _, _, err := g.store.Book(time.Now(), ps, nil, nil); err != nil {
		tb.Fatal(err)
	}
}

func TestTrendExportAndErase(t *testing.T) {
	board := newBoard(t, "b1")
	now := func() time.Time { return time.Date(2026, 3, 18, 12, 0, 0, 0, time.UTC) } // a Wednesday of 2026-W12
	g := openGateway(t, board, now, io.Discard)
	bookDays(t, g, map[string][2]int{
		"2026-03-02": {6, 2}, // W10
		"2026-03-04": {1, 1}, // W10
		"2026-03-10": {1, 2}, // W11: 3 presses, under MinShown
		"2026-03-17": {4, 0}, // W12, closed
		"2026-03-18": {9, 9}, // today: never in the trend or the export's colours
	})
	pts, err := g.Trend(12)
	if err != nil {
		t.Fatal(err)
	}
	want := []web.TrendPoint{{Week: "2026-W10", Green: 7, Red: 3}, {Week: "2026-W11", Green: 1, Red: 2}, {Week: "2026-W12", Green: 4}}
	if len(pts) != len(want) {
		t.Fatalf("trend = %+v, want %+v", pts, want)
	}
	for i := range want {
		if pts[i] != want[i] {
			t.Fatalf("trend = %+v, want %+v", pts, want)
		}
	}

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if err := g.ExportLocal(context.Background(), zw.Create); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		b, _ := io.ReadAll(rc)
		rc.Close()
		files[f.Name] = string(b)
	}
	var doc struct {
		ClosedDays []struct {
			Day        string
			Green, Red uint64
		} `json:"closed_days"`
		Today struct {
			Day   string
			Total uint64
		} `json:"today"`
	}
	if err := json.Unmarshal([]byte(files["office/export.json"]), &doc); err != nil {
		t.Fatalf("export.json: %v\n%s", err, files["office/export.json"])
	}
	if len(doc.ClosedDays) != 4 || doc.Today.Total != 18 || doc.Today.Day != "2026-03-18" {
		t.Fatalf("export = %+v", doc)
	}
	if strings.Contains(files["office/closed_days.csv"], "2026-03-18") {
		t.Fatal("today's colours are in the CSV export")
	}
	if !strings.Contains(files["office/closed_days.csv"], "2026-03-02,6,2,8") {
		t.Fatalf("closed_days.csv = %q", files["office/closed_days.csv"])
	}

	if err := g.EraseLocal(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := g.store.TotalCounted(); n != 0 {
		t.Fatalf("%d presses left after erasure", n)
	}
}

func TestSetSiteAppliesAndPersists(t *testing.T) {
	board := newBoard(t, "b1")
	g := openGateway(t, board, time.Now, io.Discard)
	if err := g.SetSite(context.Background(), web.SiteSettings{Name: "Porto", Region: "eu-west", TimeZone: "Mars/Base"}); err == nil {
		t.Fatal("accepted an unknown time zone")
	}
	if err := g.SetSite(context.Background(), web.SiteSettings{Name: "Porto", Region: "eu west", TimeZone: "Europe/Lisbon"}); err == nil {
		t.Fatal("accepted a region with a space")
	}
	if err := g.SetSite(context.Background(), web.SiteSettings{Name: "Porto", Region: "eu-west", TimeZone: "Europe/Lisbon"}); err != nil {
		t.Fatal(err)
	}
	st, err := g.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Site != "Porto" || st.TimeZone != "Europe/Lisbon" {
		t.Fatalf("status after SetSite: %q %q", st.Site, st.TimeZone)
	}
	cfg := g.cfg
	cfg.Site = SiteConfig{Name: "From flags", Region: "x", TimeZone: "UTC"}
	if err := loadSiteFile(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Site.Name != "Porto" || cfg.Site.TimeZone != "Europe/Lisbon" {
		t.Fatalf("site.json does not win on restart: %+v", cfg.Site)
	}
}

// TestRunsWithoutTheGuard: where the guard cannot load (here: its cgroup is
// not on a cgroup v2 file system), the box runs, says why the guard is off,
// and exports pulsegate_guard_active 0.
func TestRunsWithoutTheGuard(t *testing.T) {
	board := newBoard(t, "b1")
	g := openGatewayWith(t, board, time.Now, io.Discard, func(c *Config) {
		c.Serial.AutoApprove = true
		c.Guard = GuardConfig{Mode: "enforce", Cgroup: t.TempDir() + "/not-a-cgroup", PinDir: t.TempDir()}
	})
	eg := g.Egress()
	if eg.Active || !strings.HasPrefix(eg.State, "unavailable: ") {
		t.Fatalf("egress = %+v, want the guard off with the reason", eg)
	}
	var m bytes.Buffer
	g.WritePrometheus(&m)
	if !strings.Contains(m.String(), "\npulsegate_guard_active 0\n") {
		t.Fatalf("metrics lack pulsegate_guard_active 0:\n%s", m.String())
	}
	if code, page := getAuth(t, g, "egress"); code != 200 || !strings.Contains(page, "The egress guard is off") {
		t.Fatalf("GET /egress = %d, want it to say the guard is off", code)
	}
	// And the box still counts.
	board.Press(drivers.Green)
	waitFor(t, 10*time.Second, "the press to be counted", func() bool {
		n, _ := g.store.TotalCounted()
		return n == 1
	})
}
