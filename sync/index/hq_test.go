package index

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/pulsegate/pulsegate/sync/regional"
)

func pubCell(period string, green, red int64, sites int) regional.Cell {
	total := green + red
	return regional.Cell{
		Period: period, Published: true, Green: green, Red: red, Total: total, Sites: sites,
		GreenPermille: int((2000*green + total) / (2 * total)), Version: 1,
	}
}

func heldCell(period string, r regional.Reason) regional.Cell {
	// The Message names a threshold, as regional's do; the page must not
	// show it, since a withheld row carries no figure at all.
	return regional.Cell{Period: period, Reason: r, Message: "fewer than 5 sites contributed to this cell"}
}

func samplePage() hqPage {
	return hqPage{
		Customer: "acme", From: "2026-01", To: "2026-06",
		Notice: "Figures for 2026-06 may still change.",
		Regions: []hqRegion{
			{Region: "eu-west", Cells: []regional.Cell{
				pubCell("2026-01", 625, 375, 6), // 62.5 %
				pubCell("2026-02", 0, 1200, 7),  // 0.0 %
				heldCell("2026-03", regional.ReasonTooFewSites),
				pubCell("2026-04", 1250, 1250, 9), // 50.0 %
				pubCell("2026-05", 1000, 0, 12),   // 100.0 %
				heldCell("2026-06", regional.ReasonWouldIsolate),
			}},
			{Region: "nordics", Cells: []regional.Cell{pubCell("2026-W09", 330, 170, 5)}},
			{Region: "apac"},
		},
	}
}

func render(tb testing.TB, p hqPage) string {
	tb.Helper()
	var b bytes.Buffer
	if err := renderHQ(&b, p); err != nil {
		tb.Fatalf("renderHQ: %v", err)
	}
	return b.String()
}

// voidElements have no end tag in HTML.
var voidElements = map[string]bool{
	"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true, "img": true,
	"input": true, "link": true, "meta": true, "source": true, "track": true, "wbr": true,
}

// checkBalanced reports the first element that is not closed in order. The
// HTML parser forgives unclosed tags; the templates close every element, so
// this is stricter and catches a broken template.
func checkBalanced(doc string) error {
	z := html.NewTokenizer(strings.NewReader(doc))
	var stack []string
	for {
		switch z.Next() {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				return z.Err()
			}
			if len(stack) > 0 {
				return &tagError{"unclosed <" + strings.Join(stack, "> <") + ">"}
			}
			return nil
		case html.StartTagToken:
			name, _ := z.TagName()
			if !voidElements[string(name)] {
				stack = append(stack, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				return &tagError{"</" + string(name) + "> does not close <" + strings.Join(stack, "> <") + ">"}
			}
			stack = stack[:len(stack)-1]
		}
	}
}

type tagError struct{ msg string }

func (e *tagError) Error() string { return e.msg }

func parse(tb testing.TB, doc string) *html.Node {
	tb.Helper()
	if err := checkBalanced(doc); err != nil {
		tb.Fatalf("page is not well formed: %v", err)
	}
	n, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		tb.Fatalf("parse page: %v", err)
	}
	return n
}

// attr looks key up without regard to case: the parser keeps SVG's
// camel-cased attributes (viewBox) as they are.
func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if strings.EqualFold(a.Key, key) {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, class string) bool {
	v, _ := attr(n, "class")
	return strings.Contains(" "+v+" ", " "+class+" ")
}

// findAll returns the elements under n, in document order, that match.
func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && match(c) {
			out = append(out, c)
		}
	}
	return out
}

func tag(name string) func(*html.Node) bool {
	return func(n *html.Node) bool { return n.Data == name }
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

func child(n *html.Node, name string) *html.Node {
	for c := range n.ChildNodes() {
		if c.Type == html.ElementNode && c.Data == name {
			return c
		}
	}
	return nil
}

func TestRenderHQStructure(t *testing.T) {
	p := samplePage()
	doc := parse(t, render(t, p))

	if got := findAll(doc, func(n *html.Node) bool {
		v, _ := attr(n, "name")
		return n.Data == "meta" && v == "viewport"
	}); len(got) != 1 {
		t.Errorf("viewport meta: %d, want 1", len(got))
	}
	h2 := findAll(doc, tag("h2"))
	var headings []string
	for _, h := range h2 {
		headings = append(headings, text(h))
	}
	if want := []string{"eu-west", "nordics", "apac"}; strings.Join(headings, "|") != strings.Join(want, "|") {
		t.Errorf("region headings = %q, want %q", headings, want)
	}

	// One chart and one table per region with cells; "apac" has none.
	svgs := findAll(doc, tag("svg"))
	if len(svgs) != 2 {
		t.Fatalf("%d charts, want 2", len(svgs))
	}
	for i, svg := range svgs {
		if v, _ := attr(svg, "role"); v != "img" {
			t.Errorf("chart %d: role = %q, want img", i, v)
		}
		if v, _ := attr(svg, "aria-label"); !strings.HasPrefix(v, "Green share by period for region ") {
			t.Errorf("chart %d: aria-label = %q", i, v)
		}
		if v, _ := attr(svg, "viewbox"); v != "0 0 600 230" {
			t.Errorf("chart %d: viewBox = %q", i, v)
		}
		if v, _ := attr(svg, "width"); v != "100%" {
			t.Errorf("chart %d: width = %q, want 100%%", i, v)
		}
		for _, b := range findAll(svg, func(n *html.Node) bool { return hasClass(n, "bar") }) {
			if child(b, "title") == nil {
				t.Errorf("chart %d: a bar without a <title>", i)
			}
		}
	}
	if got := findAll(doc, tag("table")); len(got) != 2 {
		t.Errorf("%d tables, want 2", len(got))
	}
	if !strings.Contains(text(doc), "No periods of this region fall in the range shown.") {
		t.Error("a region without cells does not say so")
	}

	// The y axis: gridlines and labels at 0, 50 and 100 %.
	grid := findAll(svgs[0], func(n *html.Node) bool { return hasClass(n, "grid") })[0]
	var labels []string
	for _, l := range findAll(grid, tag("text")) {
		labels = append(labels, text(l))
	}
	if got, want := strings.Join(labels, "|"), "0 %|50 %|100 %"; got != want {
		t.Errorf("y labels = %q, want %q", got, want)
	}
	if n := len(findAll(grid, tag("line"))); n != 3 {
		t.Errorf("%d gridlines, want 3", n)
	}

	// Every bar's tooltip, in period order.
	var titles []string
	for _, b := range findAll(svgs[0], func(n *html.Node) bool { return hasClass(n, "bar") }) {
		titles = append(titles, text(child(b, "title")))
	}
	wantTitles := []string{
		"2026-01: 62.5 % green of 1,000 presses from 6 sites",
		"2026-02: 0.0 % green of 1,200 presses from 7 sites",
		"2026-03: withheld — too few sites",
		"2026-04: 50.0 % green of 2,500 presses from 9 sites",
		"2026-05: 100.0 % green of 1,000 presses from 12 sites",
		"2026-06: withheld — would single out offices",
	}
	if strings.Join(titles, "\n") != strings.Join(wantTitles, "\n") {
		t.Errorf("bar titles:\n%s\nwant:\n%s", strings.Join(titles, "\n"), strings.Join(wantTitles, "\n"))
	}

	// The published rows of the table, figures with thousands separators.
	var rows []string
	for _, tr := range findAll(findAll(doc, tag("tbody"))[0], tag("tr")) {
		var cells []string
		for c := range tr.ChildNodes() {
			if c.Type == html.ElementNode {
				cells = append(cells, text(c))
			}
		}
		rows = append(rows, strings.Join(cells, " | "))
	}
	wantRows := []string{
		"2026-01 | 62.5 % | 625 | 375 | 1,000 | 6",
		"2026-02 | 0.0 % | 0 | 1,200 | 1,200 | 7",
		"2026-03 | Withheld Fewer than the minimum number of offices contributed.",
		"2026-04 | 50.0 % | 1,250 | 1,250 | 2,500 | 9",
		"2026-05 | 100.0 % | 1,000 | 0 | 1,000 | 12",
		"2026-06 | Withheld " + reasonSentence(regional.ReasonWouldIsolate),
	}
	if strings.Join(rows, "\n") != strings.Join(wantRows, "\n") {
		t.Errorf("table rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(wantRows, "\n"))
	}
	var heads []string
	for _, th := range findAll(findAll(doc, tag("thead"))[0], tag("th")) {
		heads = append(heads, text(th))
	}
	if got, want := strings.Join(heads, "|"), "Period|Green share|Green|Red|Total|Sites"; got != want {
		t.Errorf("table header = %q, want %q", got, want)
	}
}

// TestChartBarHeights checks the geometry both as computed and as written
// into the page: a published bar's height is its share of the plot's
// height, every bar stands on the 0 % line, and a withheld bar is a full
// height placeholder that is drawn differently.
func TestChartBarHeights(t *testing.T) {
	p := samplePage()
	cells := p.Regions[0].Cells
	ch := newChart(0, "eu-west", cells)
	if len(ch.Bars) != len(cells) {
		t.Fatalf("%d bars for %d cells", len(ch.Bars), len(cells))
	}
	base := chartTop + chartPlotH
	for i, b := range ch.Bars {
		c := cells[i]
		if math.Abs(b.Y+b.H-base) > 0.02 {
			t.Errorf("%s: bar bottom %v, want the baseline %v", c.Period, b.Y+b.H, base)
		}
		if b.Withheld != !c.Published {
			t.Errorf("%s: Withheld = %v, want %v", c.Period, b.Withheld, !c.Published)
		}
		if c.Published {
			if want := chartPlotH * float64(c.GreenPermille) / 1000; math.Abs(b.H-want) > 0.02 {
				t.Errorf("%s: height %v, want %v for %d‰", c.Period, b.H, want, c.GreenPermille)
			}
		} else if b.H != chartPlotH || b.Value != "" {
			t.Errorf("%s: withheld bar height %v value %q, want the full %v and no value", c.Period, b.H, b.Value, chartPlotH)
		}
		if i > 0 && b.X <= ch.Bars[i-1].X+ch.Bars[i-1].W {
			t.Errorf("%s: bar at x=%v overlaps the previous one", c.Period, b.X)
		}
		if b.X < chartLeft || b.X+b.W > chartW-chartRight {
			t.Errorf("%s: bar [%v, %v] outside the plot", c.Period, b.X, b.X+b.W)
		}
	}

	// The same heights in the rendered SVG.
	doc := parse(t, render(t, p))
	svg := findAll(doc, tag("svg"))[0]
	var published []regional.Cell
	for _, c := range cells {
		if c.Published {
			published = append(published, c)
		}
	}
	rects := findAll(svg, func(n *html.Node) bool {
		return n.Data == "rect" && n.Parent != nil && hasClass(n.Parent, "bar-published")
	})
	if len(rects) != len(published) {
		t.Fatalf("%d published bars in the SVG, want %d", len(rects), len(published))
	}
	for i, r := range rects {
		hs, _ := attr(r, "height")
		h, err := strconv.ParseFloat(hs, 64)
		if err != nil {
			t.Fatalf("bar %d: height %q: %v", i, hs, err)
		}
		if want := chartPlotH * float64(published[i].GreenPermille) / 1000; math.Abs(h-want) > 0.02 {
			t.Errorf("%s: rendered height %v, want %v", published[i].Period, h, want)
		}
		if _, ok := attr(r, "fill"); ok {
			t.Errorf("%s: a published bar has a fill of its own; the CSS colours it", published[i].Period)
		}
	}
	held := findAll(svg, func(n *html.Node) bool {
		return n.Data == "rect" && n.Parent != nil && hasClass(n.Parent, "bar-withheld")
	})
	if len(held) != 2 {
		t.Fatalf("%d withheld bars, want 2", len(held))
	}
	pattern := findAll(svg, tag("pattern"))
	if len(pattern) != 1 {
		t.Fatalf("%d patterns, want the hatch", len(pattern))
	}
	id, _ := attr(pattern[0], "id")
	for _, r := range held {
		if fill, _ := attr(r, "fill"); fill != "url(#"+id+")" {
			t.Errorf("withheld bar fill = %q, want the hatch url(#%s)", fill, id)
		}
	}
}

func TestChartShareClamped(t *testing.T) {
	for _, pm := range []int{-5, 1001, math.MaxInt} {
		b := newChart(0, "r", []regional.Cell{{Period: "2026-01", Published: true, GreenPermille: pm}}).Bars[0]
		if b.Y < chartTop || b.H < 0 || b.H > chartPlotH {
			t.Errorf("GreenPermille %d: y=%v h=%v, outside the plot", pm, b.Y, b.H)
		}
	}
}

// TestChartLabelsDoNotOverlap: with many periods only some are labelled,
// far enough apart for the phone font size.
func TestChartLabelsDoNotOverlap(t *testing.T) {
	for _, n := range []int{1, 2, 5, 12, 24, 53, 104} {
		var cells []regional.Cell
		for i := range n {
			cells = append(cells, pubCell("2026-"+strconv.Itoa(i), 60, 40, 5))
		}
		ch := newChart(0, "r", cells)
		last, labelled := math.Inf(-1), 0
		for _, b := range ch.Bars {
			if b.Period == "" {
				continue
			}
			labelled++
			if b.ValueX-last < chartLabelW-0.01 {
				t.Errorf("%d periods: labels %v apart, want at least %v", n, b.ValueX-last, chartLabelW)
			}
			last = b.ValueX
		}
		if labelled == 0 || ch.Bars[0].Period == "" {
			t.Errorf("%d periods: the first period is not labelled", n)
		}
		if got, want := ch.Dense, chartPlotW/float64(n) < chartDenseW; got != want {
			t.Errorf("%d periods: Dense = %v, want %v", n, got, want)
		}
	}
}

// TestSVGWellFormed checks each chart as XML: a browser parses inline SVG
// as HTML, but a chart saved on its own must still be an SVG document.
func TestSVGWellFormed(t *testing.T) {
	out := render(t, samplePage())
	re := regexp.MustCompile(`(?s)<svg .*?</svg>`)
	svgs := re.FindAllString(out, -1)
	if len(svgs) != 2 {
		t.Fatalf("%d SVG fragments, want 2", len(svgs))
	}
	for i, s := range svgs {
		d := xml.NewDecoder(strings.NewReader(s))
		d.Strict = true
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("SVG %d is not well-formed XML: %v\n%s", i, err, s)
			}
		}
	}
}

func TestWithheldShowsReasonAndNoFigures(t *testing.T) {
	reasons := []regional.Reason{
		regional.ReasonTooFewSites, regional.ReasonTooFewPresses, regional.ReasonDominantSite,
		regional.ReasonWouldIsolate, regional.ReasonInvalidInput, regional.ReasonInvalidRules,
		"some_future_reason",
	}
	var cells []regional.Cell
	for i, r := range reasons {
		c := heldCell("2026-"+strconv.Itoa(10+i), r)
		// Figures a withheld cell should never carry; if one did, the
		// page must still not show them.
		c.Green, c.Red, c.Total, c.Sites, c.GreenPermille = 4242, 1717, 5959, 3, 712
		cells = append(cells, c)
	}
	doc := parse(t, render(t, hqPage{Customer: "acme", Regions: []hqRegion{{Region: "r", Cells: cells}}}))

	sentences := map[string]regional.Reason{}
	rows := findAll(doc, func(n *html.Node) bool { return n.Data == "tr" && hasClass(n, "withheld") })
	if len(rows) != len(reasons) {
		t.Fatalf("%d withheld rows, want %d", len(rows), len(reasons))
	}
	digits := regexp.MustCompile(`[0-9]`)
	for i, tr := range rows {
		want := reasonSentence(reasons[i])
		th, td := child(tr, "th"), child(tr, "td")
		if text(th) != cells[i].Period {
			t.Errorf("row %d: period %q, want %q", i, text(th), cells[i].Period)
		}
		if got := text(td); got != "Withheld "+want {
			t.Errorf("%s: row says %q, want %q", reasons[i], got, "Withheld "+want)
		}
		if digits.MatchString(text(td)) {
			t.Errorf("%s: a withheld row shows a figure: %q", reasons[i], text(td))
		}
		if prev, dup := sentences[want]; dup {
			t.Errorf("%s and %s read the same: %q", prev, reasons[i], want)
		}
		sentences[want] = reasons[i]
		if i < len(reasons)-1 && want == reasonSentence("some_future_reason") {
			t.Errorf("%s has no sentence of its own", reasons[i])
		}
	}
	if got := reasonSentence(regional.ReasonTooFewSites); got != "Fewer than the minimum number of offices contributed." {
		t.Errorf("too_few_sites reads %q", got)
	}
	// The chart: withheld bars only, each with a reason, and no value.
	svg := findAll(doc, tag("svg"))[0]
	for _, b := range findAll(svg, func(n *html.Node) bool { return hasClass(n, "bar") }) {
		title := text(child(b, "title"))
		if !hasClass(b, "bar-withheld") || !strings.Contains(title, ": withheld — ") {
			t.Errorf("bar %q is not drawn as withheld", title)
		}
		if len(findAll(b, tag("text"))) != 0 {
			t.Errorf("withheld bar %q carries a value", title)
		}
		if period, _, _ := strings.Cut(title, ":"); digits.MatchString(strings.TrimPrefix(title, period)) {
			t.Errorf("withheld bar title %q shows a figure", title)
		}
	}
	out := text(doc)
	for _, figure := range []string{"4,242", "4242", "1,717", "5,959", "71.2", cells[0].Message} {
		if strings.Contains(out, figure) {
			t.Errorf("the page shows %q of a withheld cell", figure)
		}
	}
	if label, _ := attr(svg, "aria-label"); !strings.Contains(label, "nothing published, 7 withheld") {
		t.Errorf("aria-label = %q", label)
	}
}

func TestRenderHQEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script>`
	p := hqPage{
		Customer: evil, From: `"><script>alert(2)</script>`, To: "2026-06", Notice: evil,
		Regions: []hqRegion{{Region: evil, Cells: []regional.Cell{pubCell("<b>2026-01</b>", 60, 40, 5)}}},
	}
	out := render(t, p)
	if strings.Contains(strings.ToLower(out), "<script") {
		t.Fatalf("the page contains a script element:\n%s", out)
	}
	if !strings.Contains(out, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the region name is not shown escaped")
	}
	if strings.Contains(out, "<b>") {
		t.Error("a period is not escaped")
	}
	doc := parse(t, out)
	if h := text(findAll(doc, tag("h2"))[0]); h != evil {
		t.Errorf("heading = %q, want the region name as text", h)
	}
	csv := findAll(doc, func(n *html.Node) bool { return n.Data == "a" && strings.Contains(text(n), "CSV") })
	if len(csv) != 1 {
		t.Fatalf("%d CSV links, want 1", len(csv))
	}
	href, _ := attr(csv[0], "href")
	want := "/api/v1/regions/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/index?from=%22%3E%3Cscript%3Ealert%282%29%3C%2Fscript%3E&to=2026-06&format=csv"
	if href != want {
		t.Errorf("CSV href = %q, want %q", href, want)
	}
	from := findAll(doc, func(n *html.Node) bool { v, _ := attr(n, "id"); return v == "from" })[0]
	if v, _ := attr(from, "value"); v != p.From {
		t.Errorf("from field value = %q, want %q", v, p.From)
	}
}

// TestHQPageIsSelfContained: nothing from another origin, no script, and
// nothing the CSP would block (inline style or script, event handlers).
func TestHQPageIsSelfContained(t *testing.T) {
	var login bytes.Buffer
	if err := renderHQLogin(&login, "That key is not valid."); err != nil {
		t.Fatal(err)
	}
	pages := map[string]string{
		"hq":    render(t, samplePage()),
		"empty": render(t, hqPage{Customer: "acme"}),
		"login": login.String(),
	}
	for name, out := range pages {
		lower := strings.ToLower(out)
		for _, bad := range []string{"http://", "https://", "//", "<script", "<style", "style=", "javascript:", "<iframe", "<img"} {
			if bad == "//" {
				// A protocol-relative URL; "//" appears nowhere else in
				// the templates.
				if strings.Contains(lower, `="//`) {
					t.Errorf("%s: a protocol-relative URL", name)
				}
				continue
			}
			if strings.Contains(lower, bad) {
				t.Errorf("%s: contains %q", name, bad)
			}
		}
		doc := parse(t, out)
		for n := range doc.Descendants() {
			if n.Type != html.ElementNode {
				continue
			}
			for _, a := range n.Attr {
				if strings.HasPrefix(a.Key, "on") {
					t.Errorf("%s: <%s %s> is an inline event handler", name, n.Data, a.Key)
				}
				switch a.Key {
				case "href", "src", "action", "formaction":
					if !strings.HasPrefix(a.Val, "/") && !strings.HasPrefix(a.Val, "#") || strings.HasPrefix(a.Val, "//") {
						t.Errorf("%s: <%s %s=%q> is not same-origin", name, n.Data, a.Key, a.Val)
					}
				}
			}
		}
		sheets := findAll(doc, func(n *html.Node) bool { v, _ := attr(n, "rel"); return n.Data == "link" && v == "stylesheet" })
		if len(sheets) != 1 {
			t.Errorf("%s: %d stylesheets, want 1", name, len(sheets))
		} else if href, _ := attr(sheets[0], "href"); href != "/hq/static/hq.css" {
			t.Errorf("%s: stylesheet %q", name, href)
		}
		checkLabelled(t, name, doc)
	}
}

// checkLabelled: every form control has a label, or is a button with text.
func checkLabelled(t *testing.T, name string, doc *html.Node) {
	t.Helper()
	labels := map[string]bool{}
	for _, l := range findAll(doc, tag("label")) {
		if f, ok := attr(l, "for"); ok && text(l) != "" {
			labels[f] = true
		}
	}
	for _, in := range findAll(doc, func(n *html.Node) bool { return n.Data == "input" || n.Data == "select" || n.Data == "textarea" }) {
		if ty, _ := attr(in, "type"); ty == "hidden" {
			continue
		}
		if id, _ := attr(in, "id"); id == "" || !labels[id] {
			n, _ := attr(in, "name")
			t.Errorf("%s: control %q has no label", name, n)
		}
	}
	for _, b := range findAll(doc, tag("button")) {
		if text(b) == "" {
			t.Errorf("%s: a button without text", name)
		}
	}
}

func TestRenderHQForms(t *testing.T) {
	doc := parse(t, render(t, samplePage()))
	forms := findAll(doc, tag("form"))
	type form struct{ method, action, button string }
	var got []form
	for _, f := range forms {
		m, _ := attr(f, "method")
		a, _ := attr(f, "action")
		got = append(got, form{m, a, text(findAll(f, tag("button"))[0])})
	}
	want := []form{{"post", "/hq/logout", "Log out"}, {"get", "/hq/", "Show"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("forms = %+v, want %+v", got, want)
	}
	for _, id := range []string{"from", "to"} {
		in := findAll(forms[1], func(n *html.Node) bool { v, _ := attr(n, "name"); return n.Data == "input" && v == id })
		if len(in) != 1 {
			t.Errorf("the range form has %d %q fields, want 1", len(in), id)
		}
	}
	links := map[string]bool{}
	for _, a := range findAll(doc, tag("a")) {
		href, _ := attr(a, "href")
		links[href] = true
	}
	for _, href := range []string{
		"/openapi.json",
		"/api/v1/regions/eu-west/index?from=2026-01&to=2026-06&format=csv",
		"/api/v1/regions/nordics/index?from=2026-01&to=2026-06&format=csv",
		"/api/v1/regions/apac/index?from=2026-01&to=2026-06&format=csv",
		"#region-1",
	} {
		if !links[href] {
			t.Errorf("no link to %s", href)
		}
	}
	notice := findAll(doc, func(n *html.Node) bool { return hasClass(n, "notice") })
	if len(notice) != 1 || text(notice[0]) != "Figures for 2026-06 may still change." {
		t.Errorf("notice banner: %d elements", len(notice))
	}
}

func TestRenderHQEmpty(t *testing.T) {
	out := render(t, hqPage{Customer: "acme", From: "2026-01", To: "2026-06"})
	doc := parse(t, out)
	if !strings.Contains(text(doc), "No regional data yet") {
		t.Error("an empty page does not say there is no data")
	}
	if n := len(findAll(doc, func(n *html.Node) bool { return hasClass(n, "notice") })); n != 0 {
		t.Errorf("%d notice banners without a notice", n)
	}
	if n := len(findAll(doc, tag("svg"))); n != 0 {
		t.Errorf("%d charts on an empty page", n)
	}
}

func TestRenderHQLogin(t *testing.T) {
	for _, msg := range []string{"", `Wrong key <b>"x"</b>`} {
		var b bytes.Buffer
		if err := renderHQLogin(&b, msg); err != nil {
			t.Fatal(err)
		}
		doc := parse(t, b.String())
		forms := findAll(doc, tag("form"))
		if len(forms) != 1 {
			t.Fatalf("%d forms, want 1", len(forms))
		}
		m, _ := attr(forms[0], "method")
		a, _ := attr(forms[0], "action")
		if m != "post" || a != "/hq/login" {
			t.Errorf("form %s %s, want post /hq/login", m, a)
		}
		inputs := findAll(forms[0], tag("input"))
		if len(inputs) != 1 {
			t.Fatalf("%d inputs, want 1", len(inputs))
		}
		in := inputs[0]
		ty, _ := attr(in, "type")
		name, _ := attr(in, "name")
		id, _ := attr(in, "id")
		if ty != "password" || name != "key" || id == "" {
			t.Errorf("input type=%q name=%q id=%q, want a password field named key", ty, name, id)
		}
		label := findAll(doc, func(n *html.Node) bool { f, _ := attr(n, "for"); return n.Data == "label" && f == id })
		if len(label) != 1 || text(label[0]) != "HQ key" {
			t.Errorf("the key field is not labelled %q", "HQ key")
		}
		alerts := findAll(doc, func(n *html.Node) bool { r, _ := attr(n, "role"); return r == "alert" })
		switch {
		case msg == "" && len(alerts) != 0:
			t.Error("an error shown without one")
		case msg != "" && (len(alerts) != 1 || text(alerts[0]) != msg):
			t.Errorf("error not shown as text: %d alerts", len(alerts))
		}
		if strings.Contains(b.String(), "<b>") {
			t.Error("the error message is not escaped")
		}
	}
}

func TestHQStatic(t *testing.T) {
	srv := httptest.NewServer(hqStatic)
	defer srv.Close()
	tests := []struct {
		path string
		code int
		ct   string
	}{
		{"/hq/static/hq.css", http.StatusOK, "text/css; charset=utf-8"},
		{"/hq/static/", http.StatusNotFound, ""},
		{"/hq/static/page.html", http.StatusNotFound, ""}, // templates are not assets
		{"/hq/static/../page.html", http.StatusNotFound, ""},
		{"/hq/static/nope.css", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.code)
			}
			if tt.ct != "" && resp.Header.Get("Content-Type") != tt.ct {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tt.ct)
			}
			if tt.code == http.StatusOK && !bytes.Contains(body, []byte(".bar-published rect")) {
				t.Errorf("GET %s: not the HQ stylesheet", tt.path)
			}
		})
	}
}

// TestStylesheetCoversThePage: every class the page and the chart use is
// styled, or deliberately left to the defaults, so that a renamed class
// cannot silently drop the chart's colours.
func TestStylesheetCoversThePage(t *testing.T) {
	css, err := hqStaticFS.ReadFile("hq/static/hq.css")
	if err != nil {
		t.Fatal(err)
	}
	unstyled := map[string]bool{"intro": true, "logout": true, "field-action": true, "series": true, "bar": true}
	var login bytes.Buffer
	if err := renderHQLogin(&login, "x"); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{render(t, samplePage()), render(t, hqPage{}), login.String()} {
		for n := range parse(t, out).Descendants() {
			v, _ := attr(n, "class")
			for _, c := range strings.Fields(v) {
				styled := regexp.MustCompile(`\.` + regexp.QuoteMeta(c) + `([^a-zA-Z0-9_-]|$)`)
				if !unstyled[c] && !styled.Match(css) {
					t.Errorf("class %q is not in hq.css", c)
				}
			}
		}
	}
}

func TestFormatCount(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"}, {7, "7"}, {999, "999"}, {1000, "1,000"}, {12345, "12,345"},
		{999999, "999,999"}, {1234567, "1,234,567"}, {-1234, "-1,234"},
		{math.MaxInt64, "9,223,372,036,854,775,807"},
		{math.MinInt64, "-9,223,372,036,854,775,808"},
	}
	for _, tt := range tests {
		if got := formatCount(tt.n); got != tt.want {
			t.Errorf("formatCount(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestFormatPermille(t *testing.T) {
	tests := []struct {
		p    int
		want string
	}{{0, "0.0 %"}, {5, "0.5 %"}, {625, "62.5 %"}, {999, "99.9 %"}, {1000, "100.0 %"}}
	for _, tt := range tests {
		if got := formatPermille(tt.p); got != tt.want {
			t.Errorf("formatPermille(%d) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestRegionCSVURL(t *testing.T) {
	tests := []struct {
		region, from, to, want string
	}{
		{"eu-west", "2026-01", "2026-06", "/api/v1/regions/eu-west/index?from=2026-01&to=2026-06&format=csv"},
		{"eu west/north", "2026-W01", "2026-W09", "/api/v1/regions/eu%20west%2Fnorth/index?from=2026-W01&to=2026-W09&format=csv"},
		{"ü&?#", "", "", "/api/v1/regions/%C3%BC&%3F%23/index?format=csv"},
		{"x", "a&b", "", "/api/v1/regions/x/index?from=a%26b&format=csv"},
	}
	for _, tt := range tests {
		if got := regionCSVURL(tt.region, tt.from, tt.to); got != tt.want {
			t.Errorf("regionCSVURL(%q, %q, %q) = %q, want %q", tt.region, tt.from, tt.to, got, tt.want)
		}
	}
}

func TestChartLabel(t *testing.T) {
	tests := []struct {
		name  string
		cells []regional.Cell
		want  string
	}{
		{"none", nil, "Green share for region r: no periods in this range."},
		{"one", []regional.Cell{pubCell("2026-01", 625, 375, 6)},
			"Green share by period for region r, 2026-01: 1 published at 62.5 %."},
		{"mixed", samplePage().Regions[0].Cells,
			"Green share by period for region r, 2026-01 to 2026-06 (6 periods): 4 published, from 0.0 % to 100.0 %, 2 withheld."},
		{"same", []regional.Cell{pubCell("2026-01", 1, 1, 5), pubCell("2026-02", 2, 2, 5)},
			"Green share by period for region r, 2026-01 to 2026-02 (2 periods): 2 published, all at 50.0 %."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chartLabel("r", tt.cells); got != tt.want {
				t.Errorf("chartLabel = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzRenderHQ: region names and periods come from uploads; whatever they
// are, the page stays well formed and never gains markup.
func FuzzRenderHQ(f *testing.F) {
	f.Add("eu-west", "2026-03", "acme")
	f.Add(`<script>alert(1)</script>`, `"><svg onload=x>`, "</title><script>")
	f.Add("]]><!--", "</text></svg>", "\xff\xfe")
	f.Fuzz(func(t *testing.T, region, period, customer string) {
		p := hqPage{Customer: customer, From: period, To: period, Notice: region, Regions: []hqRegion{
			{Region: region, Cells: []regional.Cell{
				{Region: region, Period: period, Published: true, Green: 1, Red: 1, Total: 2, Sites: 5, GreenPermille: 500},
				{Region: region, Period: period, Reason: regional.Reason(region)},
			}},
		}}
		var b bytes.Buffer
		if err := renderHQ(&b, p); err != nil {
			t.Fatalf("renderHQ: %v", err)
		}
		out := b.String()
		if err := checkBalanced(out); err != nil {
			t.Fatalf("not well formed: %v", err)
		}
		doc, err := html.Parse(strings.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		for n := range doc.Descendants() {
			if n.Type != html.ElementNode {
				continue
			}
			if n.Data == "script" {
				t.Fatal("a script element")
			}
			for _, a := range n.Attr {
				if strings.HasPrefix(a.Key, "on") {
					t.Fatalf("an event handler attribute %q", a.Key)
				}
			}
		}
		if got := len(findAll(doc, tag("svg"))); got != 1 {
			t.Fatalf("%d charts, want 1", got)
		}
	})
}
