package anon

import (
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func TestParseEpsilon(t *testing.T) {
	tests := []struct {
		in   string
		want Epsilon
		str  string
	}{
		{"1", Epsilon{1, 1}, "1"},
		{"1.0", Epsilon{1, 1}, "1"},
		{"0.5", Epsilon{1, 2}, "0.5"},
		{"0.25", Epsilon{1, 4}, "0.25"},
		{"12", Epsilon{12, 1}, "12"},
		{"0.1", Epsilon{1, 10}, "0.1"},
		{"1.20", Epsilon{6, 5}, "1.2"},
		{"007.500", Epsilon{15, 2}, "7.5"},
		{"0", Epsilon{0, 1}, "0"},
		{"0.000001", Epsilon{1, 1_000_000}, "0.000001"},
		{"1/3", Epsilon{1, 3}, "1/3"},
		{"2/4", Epsilon{1, 2}, "0.5"},
		{"18446744073709551615", Epsilon{1<<64 - 1, 1}, "18446744073709551615"},
		{"1/9223372036854775808", Epsilon{1, 1 << 63}, "0.000000000000000000108420217248550443400745280086994171142578125"},
	}
	for _, tt := range tests {
		got, err := ParseEpsilon(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseEpsilon(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseEpsilon(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
	}
}

func TestParseEpsilonRejects(t *testing.T) {
	for _, s := range []string{
		"", "-1", "+1", "1e3", "0x10", "1.", ".5", "1..0", "1/0", "1/", "/2", "1.5/2", " 1", "1 ", "inf", "NaN",
		"18446744073709551616",   // numerator over 64 bits
		"0.00000000000000000001", // denominator over 64 bits
		"1." + strings.Repeat("0", 99),
	} {
		if e, err := ParseEpsilon(s); !errors.Is(err, ErrBadEpsilon) {
			t.Errorf("ParseEpsilon(%q) = %+v, %v; want ErrBadEpsilon", s, e, err)
		}
	}
}

func TestEpsilonCmp(t *testing.T) {
	tests := []struct {
		a, b Epsilon
		want int
	}{
		{Epsilon{1, 2}, Epsilon{2, 4}, 0},
		{Epsilon{1, 3}, Epsilon{1, 2}, -1},
		{Epsilon{12, 1}, Epsilon{119, 10}, 1},
		{Epsilon{1<<64 - 1, 1}, Epsilon{1<<64 - 2, 1}, 1},
		{Epsilon{1<<64 - 1, 1<<64 - 1}, Epsilon{1, 1}, 0},
	}
	for _, tt := range tests {
		if got := tt.a.Cmp(tt.b); got != tt.want {
			t.Errorf("%v.Cmp(%v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestEpsilonJSON(t *testing.T) {
	in := struct{ E Epsilon }{Epsilon{3, 4}}
	p, err := json.Marshal(in)
	if err != nil || string(p) != `{"E":"0.75"}` {
		t.Fatalf("json.Marshal = %s, %v", p, err)
	}
	var out struct{ E Epsilon }
	if err := json.Unmarshal(p, &out); err != nil || out != in {
		t.Fatalf("json.Unmarshal(%s) = %+v, %v", p, out, err)
	}
	if _, err := json.Marshal(struct{ E Epsilon }{}); err == nil {
		t.Fatal("json.Marshal of a zero-denominator epsilon succeeded")
	}
}

// ε comes from config files and other offices' ledgers: anything that parses
// must be the exact value written, in lowest terms, and survive String.
func FuzzParseEpsilon(f *testing.F) {
	for _, s := range []string{"1.0", "0.5", "12", "1/3", "0", "0.1", "1/0", "-1", "1e3", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEpsilon(s)
		if err != nil {
			if !errors.Is(err, ErrBadEpsilon) {
				t.Fatalf("ParseEpsilon(%q) error %v does not wrap ErrBadEpsilon", s, err)
			}
			return
		}
		if e.Den == 0 || gcd(e.Num, e.Den) != 1 && e.Num != 0 || e.Num == 0 && e.Den != 1 {
			t.Fatalf("ParseEpsilon(%q) = %+v, not in lowest terms", s, e)
		}
		want, _ := new(big.Rat).SetString(s)
		if e.rat().Cmp(want) != 0 {
			t.Fatalf("ParseEpsilon(%q) = %s, want %s", s, e.rat(), want)
		}
		if back, err := ParseEpsilon(e.String()); err != nil || back != e {
			t.Fatalf("ParseEpsilon(%q) = %+v, %v; want %+v", e.String(), back, err, e)
		}
	})
}
