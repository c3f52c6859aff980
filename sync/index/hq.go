package index

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/pulsegate/pulsegate/sync/regional"
)

// The HQ page is rendered on the server from embedded templates, with one
// embedded stylesheet and no script: the index's CSP is
// "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'",
// so nothing here may use an inline style or come from another origin. The
// chart is inline SVG coloured by presentation attributes and CSS classes.

//go:embed hq/*.html
var hqTemplatesFS embed.FS

//go:embed hq/static
var hqStaticFS embed.FS

//go:embed openapi.json
var openAPIDoc []byte

var hqTemplates = template.Must(template.New("hq").ParseFS(hqTemplatesFS, "hq/*.html"))

// hqStatic serves GET /hq/static/... (the stylesheet). Directory listings
// are refused: there is nothing to browse.
var hqStatic http.Handler = func() http.Handler {
	sub, err := fs.Sub(hqStaticFS, "hq/static")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	files := http.StripPrefix("/hq/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}()

// hqRegion is one region's cells, in period order.
type hqRegion struct {
	Region string
	Cells  []regional.Cell
}

// hqPage is what the HQ page shows: one customer's regions over a range of
// periods (From and To as the user typed them, "" for open ends), and an
// optional notice for the banner.
type hqPage struct {
	Customer, From, To string
	Regions            []hqRegion
	Notice             string
}

// renderHQ writes the full HQ page.
func renderHQ(w io.Writer, p hqPage) error {
	v := hqView{
		Customer: p.Customer,
		From:     p.From,
		To:       p.To,
		Notice:   p.Notice,
		Range:    rangeText(p.From, p.To),
	}
	for i, r := range p.Regions {
		v.Regions = append(v.Regions, newRegionView(i, r, p.From, p.To))
	}
	if err := hqTemplates.ExecuteTemplate(w, "page.html", v); err != nil {
		return fmt.Errorf("render hq page: %w", err)
	}
	return nil
}

// renderHQLogin writes the login form; errMsg, when set, says why the last
// attempt failed.
func renderHQLogin(w io.Writer, errMsg string) error {
	if err := hqTemplates.ExecuteTemplate(w, "login.html", struct{ Error string }{errMsg}); err != nil {
		return fmt.Errorf("render hq login: %w", err)
	}
	return nil
}

// hqView is the page's template data: everything formatted, nothing left
// for the template to compute.
type hqView struct {
	Customer, From, To string
	Range              string
	Notice             string
	Regions            []regionView
}

type regionView struct {
	Region string
	Anchor string // the section's id
	CSV    string // download link, already escaped for a URL
	Chart  chart
	Rows   []rowView
}

// rowView is one table row: the figures of a published cell, or the reason
// a withheld one is withheld, never both.
type rowView struct {
	Period    string
	Published bool
	Share     string // "62.5 %"
	Green     string
	Red       string
	Total     string
	Sites     string
	Reason    string // a sentence for people
}

func newRegionView(i int, r hqRegion, from, to string) regionView {
	v := regionView{
		Region: r.Region,
		Anchor: "region-" + strconv.Itoa(i+1),
		CSV:    regionCSVURL(r.Region, from, to),
		Chart:  newChart(i, r.Region, r.Cells),
	}
	for _, c := range r.Cells {
		row := rowView{Period: c.Period, Published: c.Published}
		if c.Published {
			row.Share = formatPermille(c.GreenPermille)
			row.Green = formatCount(c.Green)
			row.Red = formatCount(c.Red)
			row.Total = formatCount(c.Total)
			row.Sites = formatCount(int64(c.Sites))
		} else {
			row.Reason = reasonSentence(c.Reason)
		}
		v.Rows = append(v.Rows, row)
	}
	return v
}

// regionCSVURL is the CSV download of one region over the page's range.
// Open ends are left out of the query rather than sent empty.
func regionCSVURL(region, from, to string) string {
	var q []string
	if from != "" {
		q = append(q, "from="+url.QueryEscape(from))
	}
	if to != "" {
		q = append(q, "to="+url.QueryEscape(to))
	}
	q = append(q, "format=csv")
	return "/api/v1/regions/" + url.PathEscape(region) + "/index?" + strings.Join(q, "&")
}

func rangeText(from, to string) string {
	switch {
	case from == "" && to == "":
		return "all periods"
	case from == "":
		return "up to " + to
	case to == "":
		return "from " + from
	case from == to:
		return from
	}
	return from + " to " + to
}

// reasonShort is a withheld cell's reason in a few words, for the chart's
// tooltips.
func reasonShort(r regional.Reason) string {
	switch r {
	case regional.ReasonTooFewSites:
		return "too few sites"
	case regional.ReasonTooFewPresses:
		return "too few presses"
	case regional.ReasonDominantSite:
		return "one site dominates"
	case regional.ReasonWouldIsolate:
		return "would single out offices"
	case regional.ReasonInvalidInput:
		return "invalid data"
	case regional.ReasonInvalidRules:
		return "rules below the privacy floors"
	}
	return "withheld for privacy"
}

// reasonSentence is a withheld cell's reason in plain words. Like the
// Cell's own Message it names no count and no site, and unlike it no
// threshold either: the table shows no figure at all for such a cell.
func reasonSentence(r regional.Reason) string {
	switch r {
	case regional.ReasonTooFewSites:
		return "Fewer than the minimum number of offices contributed."
	case regional.ReasonTooFewPresses:
		return "Too few presses were recorded across the region to publish a share."
	case regional.ReasonDominantSite:
		return "A single office accounts for too large a part of the presses."
	case regional.ReasonWouldIsolate:
		return "Next to figures already published for this period, it would reveal the figures of one office or a handful of offices."
	case regional.ReasonInvalidInput:
		return "The data received for this period is malformed, so nothing is published."
	case regional.ReasonInvalidRules:
		return "The configured publication rules are looser than the privacy floors, so nothing is published."
	}
	return "Withheld to protect the offices' privacy."
}

// formatCount writes n with a comma between thousands: 1,234,567.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, d := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteByte(d)
	}
	return b.String()
}

// formatPermille writes tenths of a percent as a percentage: 625 → "62.5 %".
func formatPermille(p int) string {
	return strconv.Itoa(p/10) + "." + strconv.Itoa(p%10) + " %"
}

// The chart's geometry, in viewBox units. The SVG scales to its container's
// width, so these fix proportions and the size of text relative to bars.
const (
	chartW      = 600.0
	chartH      = 230.0
	chartLeft   = 48.0 // room for the y labels
	chartRight  = 12.0
	chartTop    = 22.0 // room for the value over a 100 % bar
	chartBottom = 34.0 // room for the x labels
	chartPlotW  = chartW - chartLeft - chartRight
	chartPlotH  = chartH - chartTop - chartBottom
	chartMaxBar = 40.0
	chartLabelW = 100.0 // the least room an x label needs, at the phone font size too
	chartValueW = 30.0  // the least slot that fits a value over its bar
	chartDenseW = 56.0  // below this slot, phones drop the values (the table has them)
)

// chart is one region's bar chart of the green share per period.
type chart struct {
	ViewBox string
	Label   string // aria-label: what the chart shows, in one sentence
	HatchID string // the id of this chart's hatch pattern; ids are per page
	Dense   bool   // bars too narrow for values at a phone's font size
	Grid    []gridLine
	Bars    []bar
}

type gridLine struct {
	X1, X2, Y float64
	LabelX    float64
	Label     string
}

// bar is one period. A published bar rises to its share; a withheld one is
// a hatched placeholder over the full height, so it cannot be read as 0 %.
type bar struct {
	X, Y, W, H float64
	Withheld   bool
	Title      string  // tooltip
	Value      string  // over the bar, or "" when it does not fit
	ValueX     float64 // centre of the bar
	ValueY     float64
	Period     string // under the bar, or "" when thinned out
	LabelY     float64
}

// newChart lays out the chart of region's cells: x is the periods in order,
// y is the green share from 0 to 100 %. i numbers the chart on its page.
func newChart(i int, region string, cells []regional.Cell) chart {
	ch := chart{
		ViewBox: fmt.Sprintf("0 0 %g %g", chartW, chartH),
		Label:   chartLabel(region, cells),
		HatchID: "hq-hatch-" + strconv.Itoa(i+1),
	}
	for _, pct := range []int{0, 50, 100} {
		ch.Grid = append(ch.Grid, gridLine{
			X1: chartLeft, X2: chartW - chartRight, Y: shareY(pct * 10),
			LabelX: chartLeft - 8, Label: strconv.Itoa(pct) + " %",
		})
	}
	n := len(cells)
	if n == 0 {
		return ch
	}
	slot := chartPlotW / float64(n)
	ch.Dense = slot < chartDenseW
	w := math.Min(slot*0.68, chartMaxBar)
	// Label every k-th period so that labels never overlap.
	k := int(math.Ceil(chartLabelW / slot))
	for j, c := range cells {
		x := chartLeft + slot*float64(j) + (slot-w)/2
		b := bar{
			X: round2(x), W: round2(w),
			ValueX: round2(x + w/2),
			LabelY: chartH - chartBottom + 20,
		}
		if j%k == 0 {
			b.Period = c.Period
		}
		if c.Published {
			b.Y = round2(shareY(c.GreenPermille))
			b.H = round2(chartTop + chartPlotH - b.Y)
			b.Title = fmt.Sprintf("%s: %s green of %s presses from %s sites",
				c.Period, formatPermille(c.GreenPermille), formatCount(c.Total), formatCount(int64(c.Sites)))
			if slot >= chartValueW {
				b.Value = strconv.Itoa(c.GreenPermille/10) + "." + strconv.Itoa(c.GreenPermille%10)
				b.ValueY = round2(b.Y - 6)
			}
		} else {
			b.Withheld = true
			b.Y = chartTop
			b.H = chartPlotH
			b.Title = c.Period + ": withheld — " + reasonShort(c.Reason)
		}
		ch.Bars = append(ch.Bars, b)
	}
	return ch
}

// shareY is the y coordinate of a share given in tenths of a percent,
// clamped to the plot so that bad input cannot draw outside it.
func shareY(permille int) float64 {
	p := min(max(permille, 0), 1000)
	return chartTop + chartPlotH*float64(1000-p)/1000
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// chartLabel summarises the chart for screen readers; the table below it
// has every figure.
func chartLabel(region string, cells []regional.Cell) string {
	if len(cells) == 0 {
		return "Green share for region " + region + ": no periods in this range."
	}
	var published, withheld int
	lo, hi := 1001, -1
	for _, c := range cells {
		if !c.Published {
			withheld++
			continue
		}
		published++
		lo, hi = min(lo, c.GreenPermille), max(hi, c.GreenPermille)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Green share by period for region %s, %s", region, cells[0].Period)
	if n := len(cells); n > 1 {
		fmt.Fprintf(&b, " to %s (%d periods)", cells[n-1].Period, n)
	}
	b.WriteString(": ")
	switch {
	case published == 0:
		b.WriteString("nothing published")
	case published == 1:
		fmt.Fprintf(&b, "1 published at %s", formatPermille(lo))
	case lo == hi:
		fmt.Fprintf(&b, "%d published, all at %s", published, formatPermille(lo))
	default:
		fmt.Fprintf(&b, "%d published, from %s to %s", published, formatPermille(lo), formatPermille(hi))
	}
	if withheld > 0 {
		fmt.Fprintf(&b, ", %d withheld", withheld)
	}
	b.WriteString(".")
	return b.String()
}
