package anon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// ErrImplausibleRandomness reports a random source that kept a rejection loop
// going far past any plausible length (a stuck or all-zero reader). The limits
// are set so that a real source reaches them with probability below 2^-1000;
// a release that fails this way publishes nothing.
var ErrImplausibleRandomness = errors.New("implausible randomness")

// Loop limits, each far beyond what a working source needs (see
// ErrImplausibleRandomness): without them a broken reader would hang the
// uploader instead of failing it.
const (
	maxUniformTries = 1000 // each try succeeds with probability > 1/2
	maxBernoulliK   = 1000 // P(K > k) = γ^k/k! with γ ≤ 1
	maxGeometricV   = 2000 // P(V ≥ v) = e^-v
	maxLaplaceTries = 2000 // each try succeeds with probability > 0.3

	// maxScaleNum keeps den·k in bernoulliExpFrac (k ≤ maxBernoulliK) and
	// U + t·V (V ≤ maxGeometricV) inside 64 bits, so no draw can overflow.
	maxScaleNum = 1 << 52
)

// Sampler draws exact noise. Its only state is the reader, so it is safe for
// concurrent use when the reader is (crypto/rand.Reader is).
type Sampler struct {
	r io.Reader
}

// NewSampler returns a Sampler fed by crypto/rand. Noise that an attacker can
// predict or replay is no noise, so production code has no other source.
func NewSampler() *Sampler { return &Sampler{r: rand.Reader} }

// newSamplerFrom lets tests replay a seeded stream.
func newSamplerFrom(r io.Reader) *Sampler { return &Sampler{r: r} }

// DiscreteLaplace returns an integer k with probability proportional to
// exp(-|k|/t), t = scaleNum/scaleDen > 0, exactly: every probability involved
// is a ratio of integers, decided by comparing uniform integers, so there is
// no floating-point rounding for an attacker to exploit (Mironov 2012).
//
// It is Algorithm 2 of Canonne, Kamath and Steinke, "The Discrete Gaussian for
// Differential Privacy" (NeurIPS 2020), with their s = scaleDen, t = scaleNum.
func (s *Sampler) DiscreteLaplace(scaleNum, scaleDen uint64) (int64, error) {
	if s == nil || s.r == nil {
		return 0, errors.New("discrete laplace: sampler has no random source")
	}
	if scaleNum == 0 || scaleDen == 0 {
		return 0, fmt.Errorf("discrete laplace: scale %d/%d must be positive", scaleNum, scaleDen)
	}
	// Lowest terms keep every later product as small as it can be; the
	// distribution depends only on the value of t.
	g := gcd(scaleNum, scaleDen)
	t, d := scaleNum/g, scaleDen/g
	if t > maxScaleNum {
		return 0, fmt.Errorf("discrete laplace: scale numerator %d (in lowest terms) over %d", t, uint64(maxScaleNum))
	}
	for range maxLaplaceTries {
		// X = U + t·V is geometric with P(X = x) ∝ e^(-x/t): U is its
		// remainder mod t (drawn uniformly, kept with probability e^(-U/t)),
		// V its quotient (a run of Bernoulli(e^-1) successes).
		u, err := s.uniform(t)
		if err != nil {
			return 0, err
		}
		keep, err := s.bernoulliExpFrac(u, t)
		if err != nil {
			return 0, err
		}
		if !keep {
			continue
		}
		var v uint64
		for {
			more, err := s.bernoulliExpFrac(1, 1)
			if err != nil {
				return 0, err
			}
			if !more {
				break
			}
			if v++; v > maxGeometricV {
				return 0, fmt.Errorf("discrete laplace: geometric run over %d: %w", maxGeometricV, ErrImplausibleRandomness)
			}
		}
		hi, tv := bits.Mul64(t, v)
		x, carry := bits.Add64(tv, u, 0)
		if hi != 0 || carry != 0 {
			return 0, fmt.Errorf("discrete laplace: scale %d/%d overflows", scaleNum, scaleDen)
		}
		// Y = ⌊X/d⌋ is geometric with P(Y = y) ∝ e^(-y·d/t) = e^(-y/scale).
		y := x / d
		sign, err := s.uniform(2)
		if err != nil {
			return 0, err
		}
		// −0 and +0 would count zero twice; dropping one of them gives the
		// two-sided distribution its single peak.
		if sign == 1 && y == 0 {
			continue
		}
		if y > math.MaxInt64 {
			return 0, fmt.Errorf("discrete laplace: sample overflows int64: %w", ErrImplausibleRandomness)
		}
		if sign == 1 {
			return -int64(y), nil
		}
		return int64(y), nil
	}
	return 0, fmt.Errorf("discrete laplace: %d rejections: %w", maxLaplaceTries, ErrImplausibleRandomness)
}

// bernoulliExp returns true with probability exp(-num/den) for any num/den ≥ 0
// (Canonne–Kamath–Steinke Algorithm 1): e^-γ = (e^-1)^⌊γ⌋ · e^-(γ-⌊γ⌋).
func (s *Sampler) bernoulliExp(num, den uint64) (bool, error) {
	if den == 0 {
		return false, errors.New("bernoulli exp: zero denominator")
	}
	for range num / den {
		ok, err := s.bernoulliExpFrac(1, 1)
		if err != nil || !ok {
			return false, err
		}
	}
	return s.bernoulliExpFrac(num%den, den)
}

// bernoulliExpFrac returns true with probability exp(-γ), γ = num/den ∈ [0, 1].
// Draw A_k ~ Bernoulli(γ/k) for k = 1, 2, … until the first failure at K;
// P(K > k) = γ^k/k!, so P(K odd) = 1 - γ + γ²/2! - … = e^-γ.
func (s *Sampler) bernoulliExpFrac(num, den uint64) (bool, error) {
	if den == 0 || num > den {
		return false, fmt.Errorf("bernoulli exp: %d/%d is not in [0, 1]", num, den)
	}
	k := uint64(1)
	for ; ; k++ {
		if k > maxBernoulliK {
			return false, fmt.Errorf("bernoulli exp: run over %d: %w", maxBernoulliK, ErrImplausibleRandomness)
		}
		hi, dk := bits.Mul64(den, k)
		if hi != 0 {
			return false, fmt.Errorf("bernoulli exp: %d·%d overflows", den, k)
		}
		u, err := s.uniform(dk)
		if err != nil {
			return false, err
		}
		if u >= num { // A_k = 0 with probability 1 - num/(den·k)
			break
		}
	}
	return k%2 == 1, nil
}

// uniform returns an integer in [0, n), n ≥ 1, without modulo bias: read just
// enough bytes for n-1, mask to its bit length, and retry when the result
// lands at or above n (probability < 1/2 per try).
func (s *Sampler) uniform(n uint64) (uint64, error) {
	if n == 0 {
		return 0, errors.New("uniform: empty range")
	}
	if n == 1 {
		return 0, nil
	}
	nbits := bits.Len64(n - 1)
	mask := uint64(math.MaxUint64) >> (64 - nbits)
	var buf [8]byte
	b := buf[:(nbits+7)/8]
	for range maxUniformTries {
		if _, err := io.ReadFull(s.r, b); err != nil {
			return 0, fmt.Errorf("read randomness: %w", err)
		}
		var v uint64
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		if v &= mask; v < n {
			return v, nil
		}
	}
	return 0, fmt.Errorf("uniform below %d: %d rejections: %w", n, maxUniformTries, ErrImplausibleRandomness)
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
