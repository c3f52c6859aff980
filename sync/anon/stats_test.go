package anon

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// seeded returns a Sampler on a ChaCha8 stream, so a statistical test gives
// the same verdict on every run. Only tests may do this: production noise
// comes from crypto/rand (TestOnlyCryptoRandFeedsNoise).
func seeded(seed uint64) *Sampler {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return newSamplerFrom(rand.NewChaCha8(key))
}

// chiSquareQ is the upper tail P(χ²_df ≥ x): the p-value of a statistic x.
func chiSquareQ(df int, x float64) float64 {
	return gammaQ(float64(df)/2, x/2)
}

// chiSquareCritical is the x with P(χ²_df ≥ x) = p, found by bisection.
func chiSquareCritical(df int, p float64) float64 {
	lo, hi := 0.0, float64(df)+100*math.Sqrt(float64(2*df))+200
	for range 200 {
		mid := (lo + hi) / 2
		if chiSquareQ(df, mid) > p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// gammaQ is the regularized upper incomplete gamma function Q(a, x), by the
// series for x < a+1 and Lentz's continued fraction otherwise (Numerical
// Recipes §6.2).
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	front := math.Exp(-x + a*math.Log(x) - lg)
	if x < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 10000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if term < sum*1e-16 {
				break
			}
		}
		return 1 - front*sum
	}
	const tiny = 1e-300
	b := x + 1 - a
	c, d := 1/tiny, 1/b
	h := d
	for i := 1; i < 10000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < 1e-16 {
			break
		}
	}
	return front * h
}

func TestGammaQ(t *testing.T) {
	tests := []struct {
		df      int
		x, want float64
	}{
		{2, 0, 1},
		{2, 10, math.Exp(-5)},  // χ²_2 is exponential with mean 2
		{2, 60, math.Exp(-30)}, // continued-fraction branch
		{1, 3.841458820694124, 0.05},
		{10, 18.307038053275146, 0.05},
		{100, 124.34211340400407, 0.05},
	}
	for _, tt := range tests {
		if got := chiSquareQ(tt.df, tt.x); math.Abs(got-tt.want) > 1e-6*tt.want {
			t.Errorf("chiSquareQ(%d, %v) = %v, want %v", tt.df, tt.x, got, tt.want)
		}
	}
}
