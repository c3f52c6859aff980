package anon

import (
	"bytes"
	crand "crypto/rand"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// chiSquarePMin is the p-value below which a goodness-of-fit test fails. A
// correct sampler fails one such test once in a million runs.
const chiSquarePMin = 1e-6

// laplacePMF is the exact P(k) of the discrete Laplace with scale t:
// (1-q)/(1+q)·q^|k| with q = e^(-1/t).
func laplacePMF(t float64, k int64) float64 {
	q := math.Exp(-1 / t)
	return (1 - q) / (1 + q) * math.Pow(q, math.Abs(float64(k)))
}

// TestDiscreteLaplaceChiSquare compares sample frequencies with the exact
// probabilities. Every k from -M to M is its own bin, where M is the largest
// |k| expected at least 50 times; the two tails beyond ±M are one bin each.
func TestDiscreteLaplaceChiSquare(t *testing.T) {
	tests := []struct {
		name     string
		num, den uint64
		n        int
		s        *Sampler
	}{
		{"t=1", 1, 1, 200_000, seeded(1)},
		{"t=2.5", 5, 2, 200_000, seeded(2)},
		{"t=2.5 unreduced", 10, 4, 100_000, seeded(3)},
		{"t=20", 20, 1, 200_000, seeded(4)},
		{"t=1/3", 1, 3, 100_000, seeded(5)},
		{"t=22 (a month at ε=1)", 22, 1, 100_000, seeded(6)},
		// The production source, not replayable: the threshold still makes
		// a false failure a one-in-a-million event.
		{"t=2.5 crypto/rand", 5, 2, 50_000, NewSampler()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scale := float64(tt.num) / float64(tt.den)
			var m int64
			for float64(tt.n)*laplacePMF(scale, m+1) >= 50 {
				m++
			}
			counts := make([]int, 2*m+3) // [0] below -m, [2m+2] above m
			for range tt.n {
				k, err := tt.s.DiscreteLaplace(tt.num, tt.den)
				if err != nil {
					t.Fatal(err)
				}
				counts[min(max(k+m+1, 0), 2*m+2)]++
			}
			q := math.Exp(-1 / scale)
			tail := math.Pow(q, float64(m+1)) / (1 + q) // P(k > m) = P(k < -m)
			var stat float64
			for i, o := range counts {
				p := tail
				if i > 0 && i < len(counts)-1 {
					p = laplacePMF(scale, int64(i)-m-1)
				}
				e := p * float64(tt.n)
				stat += (float64(o) - e) * (float64(o) - e) / e
			}
			df := len(counts) - 1
			pv := chiSquareQ(df, stat)
			crit := chiSquareCritical(df, chiSquarePMin)
			t.Logf("n=%d bins=%d χ²=%.1f df=%d p=%.3g (fail if χ² > %.1f, p < %g); P(0) observed %.4f exact %.4f",
				tt.n, len(counts), stat, df, pv, crit, chiSquarePMin, float64(counts[m+1])/float64(tt.n), laplacePMF(scale, 0))
			if pv < chiSquarePMin {
				t.Errorf("χ² = %.1f with %d df, p = %.3g < %g: samples do not follow the discrete Laplace with t = %d/%d", stat, df, pv, chiSquarePMin, tt.num, tt.den)
			}
		})
	}
}

// TestBernoulliExp checks P(true) = e^-γ, including γ > 1, within 5.5
// standard errors (two-sided p ≈ 4e-8).
func TestBernoulliExp(t *testing.T) {
	s := seeded(7)
	for _, g := range [][2]uint64{{0, 1}, {1, 3}, {1, 1}, {5, 2}, {7, 1}} {
		t.Run(fmt.Sprintf("γ=%d/%d", g[0], g[1]), func(t *testing.T) {
			const n = 100_000
			hits := 0
			for range n {
				ok, err := s.bernoulliExp(g[0], g[1])
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					hits++
				}
			}
			p := math.Exp(-float64(g[0]) / float64(g[1]))
			se := math.Sqrt(p * (1 - p) / n)
			if got := float64(hits) / n; math.Abs(got-p) > 5.5*se+1e-12 {
				t.Errorf("P(bernoulliExp(%d/%d)) = %.5f, want %.5f ± %.5f", g[0], g[1], got, p, 5.5*se)
			}
		})
	}
}

// TestUniformHasNoModuloBias feeds every byte value exactly once: rejection
// sampling must then return each value below n equally often, where taking
// the byte modulo n would favour the small ones.
func TestUniformHasNoModuloBias(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, n := range []uint64{2, 3, 5, 7, 100, 200, 256} {
		s := newSamplerFrom(bytes.NewReader(all))
		seen := make([]int, n)
		for {
			v, err := s.uniform(n)
			if err != nil {
				break
			}
			seen[v]++
		}
		for v, c := range seen {
			if c != seen[0] {
				t.Fatalf("uniform(%d) over all bytes: %d seen %d times, 0 seen %d times", n, v, c, seen[0])
			}
		}
	}
}

func TestUniformRange(t *testing.T) {
	s := seeded(8)
	for _, n := range []uint64{1, 2, 3, 1 << 32, 1<<32 + 1, 1<<63 + 12345, math.MaxUint64} {
		for range 1000 {
			v, err := s.uniform(n)
			if err != nil || v >= n {
				t.Fatalf("uniform(%d) = %d, %v", n, v, err)
			}
		}
	}
	if _, err := s.uniform(0); err == nil {
		t.Fatal("uniform(0) succeeded")
	}
}

// TestBrokenSourceFailsClosed: a stuck or failing reader must end in an
// error, never in a hang or in "noise" that is a constant.
func TestBrokenSourceFailsClosed(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		r    io.Reader
		want error
	}{
		{"all zeros", zeros{}, ErrImplausibleRandomness},
		{"all ones", ones{}, ErrImplausibleRandomness},
		{"read error", iotest.ErrReader(boom), boom},
		{"short stream", bytes.NewReader([]byte{1, 2, 3}), io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := newSamplerFrom(tt.r).DiscreteLaplace(20, 1)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DiscreteLaplace = %d, %v; want error %v", k, err, tt.want)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type ones struct{}

func (ones) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0xff
	}
	return len(p), nil
}

func TestDiscreteLaplaceRejectsBadScale(t *testing.T) {
	s := seeded(9)
	for _, sc := range [][2]uint64{{0, 1}, {1, 0}, {0, 0}, {1<<52 + 1, 1}} {
		if k, err := s.DiscreteLaplace(sc[0], sc[1]); err == nil {
			t.Errorf("DiscreteLaplace(%d, %d) = %d, want an error", sc[0], sc[1], k)
		}
	}
	var zero Sampler // no reader: an error, not a nil-pointer panic mid-release
	if k, err := zero.DiscreteLaplace(1, 1); err == nil {
		t.Errorf("zero Sampler: DiscreteLaplace = %d, want an error", k)
	}
	// A huge scale in lowest terms is fine once it fits.
	if _, err := s.DiscreteLaplace(3<<52, 3); err != nil {
		t.Errorf("DiscreteLaplace(3<<52, 3) = %v", err)
	}
}

// TestNewSamplerUsesCryptoRand: noise an attacker can predict is no noise.
func TestNewSamplerUsesCryptoRand(t *testing.T) {
	if s := NewSampler(); s.r != crand.Reader {
		t.Fatalf("NewSampler reads from %T, want crypto/rand.Reader", s.r)
	}
}

// TestOnlyCryptoRandFeedsNoise scans the package's non-test sources: neither
// math/rand package may be imported, so no code path can draw noise from a
// seedable generator. Tests may (seeded, above).
func TestOnlyCryptoRandFeedsNoise(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	scanned := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		scanned++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if path == "math/rand" || path == "math/rand/v2" {
				t.Errorf("%s imports %q: noise must come from crypto/rand only", name, path)
			}
		}
	}
	if scanned < 3 {
		t.Fatalf("scanned %d source files; is the test running in the package directory?", scanned)
	}
}
