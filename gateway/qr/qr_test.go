package qr

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
	qrcode "github.com/skip2/go-qrcode"
)

// wantQuietZone is the border the QR specification asks for, spelled out
// here so that a change to the package's constant fails the tests.
const wantQuietZone = 4

// svgDoc is what the tests read back out of the SVG.
type svgDoc struct {
	ViewBox   string `xml:"viewBox,attr"`
	Role      string `xml:"role,attr"`
	Label     string `xml:"aria-label,attr"`
	Rendering string `xml:"shape-rendering,attr"`
	Rects     []struct {
		Fill string `xml:"fill,attr"`
	} `xml:"rect"`
	Paths []struct {
		D           string `xml:"d,attr"`
		Stroke      string `xml:"stroke,attr"`
		StrokeWidth string `xml:"stroke-width,attr"`
		Fill        string `xml:"fill,attr"`
	} `xml:"path"`
}

func mustSVG(tb testing.TB, text string) string {
	tb.Helper()
	s, err := SVG(text)
	if err != nil {
		tb.Fatalf("SVG(%q): %v", text, err)
	}
	return string(s)
}

func parseSVG(tb testing.TB, s string) svgDoc {
	tb.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = true
	var doc svgDoc
	var root xml.StartElement
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("SVG is not well-formed XML: %v\n%s", err, s)
		}
		if se, ok := tok.(xml.StartElement); ok && root.Name.Local == "" {
			root = se
		}
	}
	if root.Name.Local != "svg" || root.Name.Space != "http://www.w3.org/2000/svg" {
		tb.Fatalf("root element is %v, want svg in the SVG namespace", root.Name)
	}
	if err := xml.Unmarshal([]byte(s), &doc); err != nil {
		tb.Fatalf("unmarshal SVG: %v", err)
	}
	return doc
}

// modulesFromPath reads back which modules the path's lines cover, on a grid
// of size×size. It accepts only what a 1-wide horizontal line through the
// middle of a row can be, so anything else fails the test.
func modulesFromPath(tb testing.TB, d string, size int) [][]bool {
	tb.Helper()
	grid := make([][]bool, size)
	for i := range grid {
		grid[i] = make([]bool, size)
	}
	var x, y2 int // pen position; y2 is twice y, so rows are odd
	i := 0
	number := func() int {
		j := i
		for j < len(d) && (d[j] == '-' && j == i || d[j] >= '0' && d[j] <= '9' || d[j] == '.') {
			j++
		}
		s := d[i:j]
		i = j
		if strings.HasSuffix(s, ".5") {
			n, err := strconv.Atoi(strings.TrimSuffix(s, ".5"))
			if err != nil {
				tb.Fatalf("path %q: bad number %q", d, s)
			}
			return 2*n + 1
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			tb.Fatalf("path %q: bad number %q at %d", d, s, i)
		}
		return 2 * n
	}
	skipSpace := func() {
		for i < len(d) && d[i] == ' ' {
			i++
		}
	}
	for i < len(d) {
		cmd := d[i]
		i++
		switch cmd {
		case 'M':
			x = number() / 2
			skipSpace()
			y2 = number()
		case 'm':
			x += number() / 2
			skipSpace()
			y2 += number()
		case 'h':
			n2 := number()
			if n2 <= 0 || n2%2 != 0 || y2%2 != 1 {
				tb.Fatalf("path %q: line of length %v at y %v.5 is not a run of whole modules", d, float64(n2)/2, y2/2)
			}
			row := y2 / 2
			for k := x; k < x+n2/2; k++ {
				if row < 0 || row >= size || k < 0 || k >= size {
					tb.Fatalf("path %q: module (%d,%d) outside the %d×%d view box", d, k, row, size, size)
				}
				if grid[row][k] {
					tb.Fatalf("path %q: module (%d,%d) drawn twice", d, k, row)
				}
				grid[row][k] = true
			}
			x += n2 / 2
		default:
			tb.Fatalf("path %q: unexpected command %q at %d", d, cmd, i-1)
		}
	}
	return grid
}

// matrix is go-qrcode's own module matrix for text, without a border.
func matrix(tb testing.TB, text string) [][]bool {
	tb.Helper()
	code, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		tb.Fatal(err)
	}
	code.DisableBorder = true
	return code.Bitmap()
}

func token(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

var texts = []string{
	"a",
	"https://pulsegate.local:8443/enrol?t=abc",
	"HELLO WORLD 123",
	"Zürich — café ✓",
	strings.Repeat("x", MaxLen),
}

func TestSVGStructure(t *testing.T) {
	for _, text := range texts {
		t.Run(fmt.Sprintf("%.20q", text), func(t *testing.T) {
			s := mustSVG(t, text)
			doc := parseSVG(t, s)
			m := matrix(t, text)
			want := strconv.Itoa(len(m) + 2*wantQuietZone)
			if doc.ViewBox != "0 0 "+want+" "+want {
				t.Errorf("viewBox = %q, want 0 0 %s %s", doc.ViewBox, want, want)
			}
			if doc.Role != "img" || doc.Label != "QR code" || doc.Rendering != "crispEdges" {
				t.Errorf("role %q, aria-label %q, shape-rendering %q", doc.Role, doc.Label, doc.Rendering)
			}
			if len(doc.Paths) != 1 {
				t.Fatalf("%d paths, want 1", len(doc.Paths))
			}
			if p := doc.Paths[0]; p.Stroke != "#000" || p.StrokeWidth != "1" || p.Fill != "none" {
				t.Errorf("path stroke %q width %q fill %q", p.Stroke, p.StrokeWidth, p.Fill)
			}
			if len(doc.Rects) != 1 || doc.Rects[0].Fill != "#fff" {
				t.Errorf("background rects = %+v, want one white", doc.Rects)
			}
		})
	}
}

// TestSVGModules checks every module against go-qrcode's matrix: each dark
// module is covered by the path, no light one is, and the quiet zone is
// empty.
func TestSVGModules(t *testing.T) {
	for _, text := range append(texts, token(t, 300)) {
		t.Run(fmt.Sprintf("%.20q", text), func(t *testing.T) {
			doc := parseSVG(t, mustSVG(t, text))
			m := matrix(t, text)
			size := len(m) + 2*wantQuietZone
			got := modulesFromPath(t, doc.Paths[0].D, size)
			for y := range size {
				for x := range size {
					want := false
					if mx, my := x-wantQuietZone, y-wantQuietZone; mx >= 0 && my >= 0 && mx < len(m) && my < len(m) {
						want = m[my][mx]
					}
					if got[y][x] != want {
						t.Fatalf("module (%d,%d) in the SVG: dark = %v, want %v", x, y, got[y][x], want)
					}
				}
			}
		})
	}
}

// TestSVGDecodes rasterises the path the way a browser would and decodes it
// with an independent reader (gozxing, a port of ZXing).
func TestSVGDecodes(t *testing.T) {
	for _, text := range append(texts, token(t, 300)) {
		t.Run(fmt.Sprintf("%.20q", text), func(t *testing.T) {
			doc := parseSVG(t, mustSVG(t, text))
			var size int
			if _, err := fmt.Sscanf(doc.ViewBox, "0 0 %d", &size); err != nil {
				t.Fatalf("viewBox %q: %v", doc.ViewBox, err)
			}
			img := rasterise(modulesFromPath(t, doc.Paths[0].D, size), 4)
			bmp, err := gozxing.NewBinaryBitmap(gozxing.NewHybridBinarizer(gozxing.NewLuminanceSourceFromImage(img)))
			if err != nil {
				t.Fatal(err)
			}
			res, err := zxqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{
				gozxing.DecodeHintType_PURE_BARCODE:  true,
				gozxing.DecodeHintType_CHARACTER_SET: "UTF-8",
			})
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if res.GetText() != text {
				t.Errorf("decoded %q, want %q", res.GetText(), text)
			}
			if lvl := res.GetResultMetadata()[gozxing.ResultMetadataType_ERROR_CORRECTION_LEVEL]; fmt.Sprint(lvl) != "M" {
				t.Errorf("error correction level %v, want M", lvl)
			}
		})
	}
}

func rasterise(grid [][]bool, scale int) image.Image {
	img := image.NewGray(image.Rect(0, 0, len(grid)*scale, len(grid)*scale))
	for y, row := range grid {
		for x, dark := range row {
			c := color.Gray{Y: 255}
			if dark {
				c = color.Gray{}
			}
			for dy := range scale {
				for dx := range scale {
					img.SetGray(x*scale+dx, y*scale+dy, c)
				}
			}
		}
	}
	return img
}

func TestSVGSize(t *testing.T) {
	for range 20 {
		s := mustSVG(t, token(t, 300))
		if len(s) >= 12<<10 {
			t.Fatalf("SVG of a 300-character token is %d bytes, want under 12 KB", len(s))
		}
	}
}

func TestSVGEmpty(t *testing.T) {
	if s, err := SVG(""); !errors.Is(err, ErrEmpty) {
		t.Fatalf("SVG(\"\") = %.40q, %v; want ErrEmpty", s, err)
	}
}

func TestSVGTooLong(t *testing.T) {
	s, err := SVG(strings.Repeat("x", MaxLen+1))
	if !errors.Is(err, ErrTooLong) {
		t.Fatalf("SVG(%d bytes) = %.40q, %v; want ErrTooLong", MaxLen+1, s, err)
	}
}

// TestSVGEscapesNothing: the text never reaches the markup, so markup in it
// cannot break out of the element.
func TestSVGEscapesNothing(t *testing.T) {
	s := mustSVG(t, `"><script>alert(1)</script>`)
	if strings.Contains(s, "script") || strings.Contains(s, "alert") {
		t.Errorf("SVG contains the text: %s", s)
	}
}

// TestSVGInChromium has a real browser draw the SVG inside a dark page and
// decodes the screenshot, so what people see is checked, not just the markup.
func TestSVGInChromium(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed")
	}
	if testing.Short() {
		t.Skip("starts a browser")
	}
	text := "https://pulsegate.local:8443/enrol?t=" + token(t, 120)
	dir := t.TempDir()
	page := filepath.Join(dir, "qr.html")
	html := `<!doctype html><body style="margin:0;background:#222"><div style="width:300px;margin:20px">` + mustSVG(t, text) + `</div>`
	if err := os.WriteFile(page, []byte(html), 0o600); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "qr.png")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--screenshot="+shot, "--window-size=400,400", "file://"+page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode screenshot: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := zxqr.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("decode QR code in screenshot: %v", err)
	}
	if res.GetText() != text {
		t.Errorf("screenshot decodes to %q, want %q", res.GetText(), text)
	}
}

func FuzzSVG(f *testing.F) {
	for _, s := range texts {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := SVG(text)
		if text == "" {
			if !errors.Is(err, ErrEmpty) {
				t.Fatalf("SVG(\"\"): err = %v, want ErrEmpty", err)
			}
			return
		}
		if len(text) > MaxLen {
			if !errors.Is(err, ErrTooLong) {
				t.Fatalf("SVG(%d bytes): err = %v, want ErrTooLong", len(text), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("SVG(%q): %v", text, err)
		}
		doc := parseSVG(t, string(s))
		var size int
		fmt.Sscanf(doc.ViewBox, "0 0 %d", &size)
		got := modulesFromPath(t, doc.Paths[0].D, size)
		m := matrix(t, text)
		for y := range m {
			for x := range m[y] {
				if got[y+wantQuietZone][x+wantQuietZone] != m[y][x] {
					t.Fatalf("SVG(%q): module (%d,%d) differs from go-qrcode", text, x, y)
				}
			}
		}
	})
}
