package anon

import (
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"strings"
)

// ErrBadEpsilon reports an ε that cannot be parsed or does not fit.
var ErrBadEpsilon = errors.New("bad epsilon")

// maxEpsilonText bounds the input so a hostile config cannot make big.Rat
// chew on a megabyte of digits. It is long enough for anything String
// writes: at most 20 integer digits, a point and 64 decimals.
const maxEpsilonText = 100

// Epsilon is a privacy budget as an exact non-negative rational Num/Den.
// Budgets are added up over a year and compared with a cap; in floating point
// twelve releases of 0.1 would not add up to 1.2, so ε never is a float here.
// Den must be non-zero; the zero Epsilon is invalid, not "no budget".
type Epsilon struct {
	Num, Den uint64
}

// ParseEpsilon parses a non-negative decimal ("1", "1.0", "0.25") or a
// fraction ("1/3") into lowest terms.
func ParseEpsilon(s string) (Epsilon, error) {
	if len(s) > maxEpsilonText {
		return Epsilon{}, fmt.Errorf("%w: %d characters, max %d", ErrBadEpsilon, len(s), maxEpsilonText)
	}
	// big.Rat.SetString also takes signs, exponents and hex; check the shape
	// first so config files have one way to spell a budget.
	ok := false
	if whole, frac, dot := strings.Cut(s, "."); dot {
		ok = digits(whole) && digits(frac)
	} else if num, den, slash := strings.Cut(s, "/"); slash {
		ok = digits(num) && digits(den)
	} else {
		ok = digits(s)
	}
	if !ok {
		return Epsilon{}, fmt.Errorf("%w: %q: want a decimal like 1.0 or a fraction like 1/3", ErrBadEpsilon, s)
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok { // only a zero denominator gets here
		return Epsilon{}, fmt.Errorf("%w: %q: zero denominator", ErrBadEpsilon, s)
	}
	e, ok := epsilonOf(r)
	if !ok {
		return Epsilon{}, fmt.Errorf("%w: %q does not fit in 64-bit numerator and denominator", ErrBadEpsilon, s)
	}
	return e, nil
}

// epsilonOf converts r (already in lowest terms, as big.Rat keeps it).
func epsilonOf(r *big.Rat) (Epsilon, bool) {
	if r.Sign() < 0 || !r.Num().IsUint64() || !r.Denom().IsUint64() {
		return Epsilon{}, false
	}
	return Epsilon{r.Num().Uint64(), r.Denom().Uint64()}, true
}

// valid reports a usable rational (any value, including zero).
func (e Epsilon) valid() bool { return e.Den != 0 }

// positive reports a usable, strictly positive budget.
func (e Epsilon) positive() bool { return e.Den != 0 && e.Num != 0 }

func (e Epsilon) rat() *big.Rat {
	return new(big.Rat).SetFrac(new(big.Int).SetUint64(e.Num), new(big.Int).SetUint64(e.Den))
}

// Cmp compares e and o by value (1/2 equals 2/4): -1, 0 or +1. Both must be
// valid.
func (e Epsilon) Cmp(o Epsilon) int {
	// Cross-multiply in 128 bits: exact, and no allocation.
	lh, ll := bits.Mul64(e.Num, o.Den)
	rh, rl := bits.Mul64(o.Num, e.Den)
	switch {
	case lh < rh || lh == rh && ll < rl:
		return -1
	case lh == rh && ll == rl:
		return 0
	}
	return 1
}

// String formats e in lowest terms: as an exact decimal ("1", "0.5") when one
// exists, else as a fraction ("1/3"). ParseEpsilon reads either back.
func (e Epsilon) String() string {
	if !e.valid() {
		return fmt.Sprintf("%d/0", e.Num)
	}
	r := e.rat()
	// A reduced fraction has a finite decimal iff its denominator is 2^a·5^b,
	// and then max(a, b) digits after the point are exactly enough.
	d := new(big.Int).Set(r.Denom())
	var twos, fives int
	for d.Bit(0) == 0 {
		d.Rsh(d, 1)
		twos++
	}
	five, rem := big.NewInt(5), new(big.Int)
	for {
		q, m := new(big.Int).QuoRem(d, five, rem)
		if m.Sign() != 0 {
			break
		}
		d = q
		fives++
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		return r.String()
	}
	return r.FloatString(max(twos, fives))
}

// MarshalText writes e as String does, so JSON keeps ε exact.
func (e Epsilon) MarshalText() ([]byte, error) {
	if !e.valid() {
		return nil, fmt.Errorf("%w: zero denominator", ErrBadEpsilon)
	}
	return []byte(e.String()), nil
}

// UnmarshalText reads what ParseEpsilon accepts.
func (e *Epsilon) UnmarshalText(p []byte) error {
	v, err := ParseEpsilon(string(p))
	if err != nil {
		return err
	}
	*e = v
	return nil
}
