package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// compress writes src zstd-compressed to dst and returns the SHA-256 of
// dst's bytes and its size. One encoder goroutine and a fixed level keep the
// output the same from build to build.
func compress(src, dst string, progress io.Writer) (sum string, size int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", 0, err
	}
	out, err := os.Create(dst)
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(out, h)}
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return "", 0, err
	}
	pr := &progressReader{r: in, total: fi.Size(), w: progress}
	if _, err := io.Copy(enc, pr); err != nil {
		enc.Close()
		return "", 0, fmt.Errorf("compress %s: %w", src, err)
	}
	if err := enc.Close(); err != nil {
		return "", 0, fmt.Errorf("compress %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressReader prints a line at every tenth of the input read.
type progressReader struct {
	r      io.Reader
	total  int64
	read   int64
	tenths int64
	w      io.Writer
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	if p.total > 0 {
		for t := p.read * 10 / p.total; p.tenths < t; {
			p.tenths++
			fmt.Fprintf(p.w, "      compressing: %3d%%\n", p.tenths*10)
		}
	}
	return n, err
}
