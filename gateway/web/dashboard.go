package web

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
)

// dashboardData is the status with this office's weekly trend.
type dashboardData struct {
	Status
	Trend template.HTML
}

// trendWeeks is how many closed ISO weeks the trend shows.
const trendWeeks = 12

func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.Status(r.Context())
	if err != nil {
		s.log.Error("read status", "err", err)
		s.renderError(w, r, http.StatusServiceUnavailable, "The status of this box cannot be read right now: "+err.Error())
		return
	}
	pts, err := s.b.Trend(trendWeeks)
	if err != nil {
		s.log.Warn("read trend", "err", err)
	}
	s.render(w, r, http.StatusOK, "dashboard", "Dashboard", dashboardData{Status: st, Trend: trendSVG(pts)}, flashOf(r), "")
}

// trendSVG draws the green share of each closed week as a bar, 0 to 100 %.
// A week under MinShown presses gets a grey placeholder and no share: a
// share of two presses says how those two people felt.
func trendSVG(pts []TrendPoint) template.HTML {
	const w, h, left, bottom, top = 640, 220, 40, 24, 10
	var b strings.Builder
	label := "Weekly green share: no closed week yet"
	if len(pts) > 0 {
		label = fmt.Sprintf("Weekly green share over %d closed weeks", len(pts))
	}
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" aria-label="%s">`, w, h, template.HTMLEscapeString(label))
	plotH := float64(h - bottom - top)
	for _, pct := range []int{0, 50, 100} {
		y := float64(top) + plotH*(1-float64(pct)/100)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text x="%d" y="%.1f" text-anchor="end">%d %%</text>`, left, w, y, y, left-6, y+4, pct)
	}
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">No closed week yet</text>`, (w+left)/2, h/2)
	}
	slot := float64(w-left) / float64(max(len(pts), 1))
	for i, p := range pts {
		week := template.HTMLEscapeString(p.Week)
		x := float64(left) + slot*float64(i) + slot*0.15
		bw := slot * 0.7
		total := p.Green + p.Red
		if total < MinShown {
			fmt.Fprintf(&b, `<rect class="gap" x="%.1f" y="%d" width="%.1f" height="%.1f"><title>%s: fewer than %d presses</title></rect>`,
				x, top, bw, plotH, week, MinShown)
		} else {
			share := float64(p.Green) / float64(total)
			bh := plotH * share
			fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %.0f %% green of %d presses</title></rect>`,
				x, float64(top)+plotH-bh, bw, bh, week, share*100, total)
		}
		if len(pts) <= 12 || i%2 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x+bw/2, h-6, shortWeek(week))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and week names this package formats
}

// shortWeek drops the century: "26-W09".
func shortWeek(w string) string {
	if len(w) > 2 {
		return w[2:]
	}
	return w
}
