// Package qr renders QR codes as inline SVG, so pages can show an enrolment
// token or URL as a code without any image file or third-party asset.
//
// The symbol is encoded by github.com/skip2/go-qrcode; this package only draws
// its module matrix.
package qr

import (
	"errors"
	"fmt"
	"html/template"
	"strconv"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// MaxLen is the longest text SVG encodes, in bytes. Longer text makes a dense
// symbol that phone cameras read badly from a screen.
const MaxLen = 1000

// quietZone is the light border, in modules, that the QR specification
// requires around the symbol.
const quietZone = 4

// Errors for text SVG will not encode.
var (
	ErrEmpty   = errors.New("qr: empty text")
	ErrTooLong = errors.New("qr: text too long")
)

// SVG returns text as a QR code (error correction level M) in an <svg>
// element that scales to its container; set its width with CSS.
//
// The dark modules are one stroked <path>: each horizontal run of dark
// modules in a row is a single 1-module-wide line, which keeps a 300-byte
// token under 12 KB. A white rectangle underneath keeps the code readable on
// dark page themes.
func SVG(text string) (template.HTML, error) {
	if text == "" {
		return "", ErrEmpty
	}
	if len(text) > MaxLen {
		return "", fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, len(text), MaxLen)
	}
	code, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("encode qr: %w", err)
	}
	code.DisableBorder = true
	return template.HTML(render(code.Bitmap())), nil
}

// render draws a square module matrix (true is dark) with the quiet zone
// around it.
func render(modules [][]bool) string {
	size := len(modules) + 2*quietZone
	var b strings.Builder
	b.Grow(8 << 10)
	n := strconv.Itoa(size)
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ` + n + ` ` + n +
		`" role="img" aria-label="QR code" shape-rendering="crispEdges">`)
	b.WriteString(`<rect width="` + n + `" height="` + n + `" fill="#fff"/>`)
	b.WriteString(`<path stroke="#000" stroke-width="1" fill="none" d="`)
	writeRuns(&b, modules)
	b.WriteString(`"/></svg>`)
	return b.String()
}

// writeRuns writes path data with one horizontal line per run of dark
// modules. Lines run along the middle of their row (y+0.5) with butt caps, so
// each covers exactly the modules of its run. The first run of a row moves
// absolutely; later runs in the row move relative to the end of the previous
// one, which is the shortest encoding.
func writeRuns(b *strings.Builder, modules [][]bool) {
	for y, row := range modules {
		penX := -1 // x where the previous line of this row ended; -1 for none
		for x := 0; x < len(row); {
			if !row[x] {
				x++
				continue
			}
			start := x
			for x < len(row) && row[x] {
				x++
			}
			if penX < 0 {
				fmt.Fprintf(b, "M%d %d.5", start+quietZone, y+quietZone)
			} else {
				fmt.Fprintf(b, "m%d 0", start-penX)
			}
			fmt.Fprintf(b, "h%d", x-start)
			penX = x
		}
	}
}
