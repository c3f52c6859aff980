package anon

import (
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// mustEps takes the narrow interface so rapid's *T can use it too.
func mustEps(tb interface {
	Helper()
	Fatal(...any)
}, s string) Epsilon {
	tb.Helper()
	e, err := ParseEpsilon(s)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// TestLedgerCapIsExact: the cap is reached exactly and the next charge fails
// closed. In float64, ten charges of 0.1 make 0.9999999999999999, and 120 of
// them would creep past or short of 12 depending on order.
func TestLedgerCapIsExact(t *testing.T) {
	tests := []struct {
		eps, cap string
		fits     int
	}{
		{"1.0", "12", 12},
		{"0.1", "12", 120},
		{"0.3", "1.2", 4},
		{"1/3", "4", 12},
		{"0.5", "0.5", 1},
		{"0.7", "1", 1},
	}
	for _, tt := range tests {
		t.Run(tt.eps+" under "+tt.cap, func(t *testing.T) {
			eps, cap := mustEps(t, tt.eps), mustEps(t, tt.cap)
			var l Ledger
			for i := range tt.fits {
				if err := l.Charge("lisbon", 2026, eps, cap); err != nil {
					t.Fatalf("charge %d of %s under %s: %v", i+1, eps, cap, err)
				}
			}
			err := l.Charge("lisbon", 2026, eps, cap)
			if !errors.Is(err, ErrBudgetExhausted) {
				t.Fatalf("charge %d of %s under %s = %v, want ErrBudgetExhausted", tt.fits+1, eps, cap, err)
			}
			want, _ := epsilonOf(new(big.Rat).Mul(eps.rat(), big.NewRat(int64(tt.fits), 1)))
			if got := l.Spent("lisbon", 2026); got != want {
				t.Errorf("Spent = %s, want %s", got, want)
			}
			if got := l.Releases("lisbon", 2026); got != tt.fits {
				t.Errorf("Releases = %d, want %d", got, tt.fits)
			}
			if n := len(l.Entries()); n != tt.fits {
				t.Errorf("%d entries after a refused charge, want %d", n, tt.fits)
			}
		})
	}
}

func TestLedgerSeparatesSitesAndYears(t *testing.T) {
	var l Ledger
	one, cap := Epsilon{1, 1}, Epsilon{1, 1}
	for _, c := range []struct {
		site string
		year int
	}{{"lisbon", 2026}, {"porto", 2026}, {"lisbon", 2027}} {
		if err := l.Charge(c.site, c.year, one, cap); err != nil {
			t.Fatalf("Charge(%s, %d): %v", c.site, c.year, err)
		}
	}
	if err := l.Charge("lisbon", 2026, one, cap); !errors.Is(err, ErrBudgetExhausted) {
		t.Fatalf("second charge for lisbon 2026 = %v, want ErrBudgetExhausted", err)
	}
	if got := l.Spent("faro", 2026); got.Cmp(Epsilon{0, 1}) != 0 || l.Releases("faro", 2026) != 0 {
		t.Errorf("unknown site: spent %s, %d releases", got, l.Releases("faro", 2026))
	}
	want := []Total{
		{"lisbon", 2026, 1, one}, {"lisbon", 2027, 1, one}, {"porto", 2026, 1, one},
	}
	if got := l.Totals(); !reflect.DeepEqual(got, want) {
		t.Errorf("Totals() = %+v, want %+v", got, want)
	}
}

func TestLedgerChargeRejects(t *testing.T) {
	tests := []struct {
		name     string
		site     string
		eps, cap Epsilon
	}{
		{"empty site", "", Epsilon{1, 1}, Epsilon{12, 1}},
		{"zero epsilon", "lisbon", Epsilon{0, 1}, Epsilon{12, 1}},
		{"invalid epsilon", "lisbon", Epsilon{1, 0}, Epsilon{12, 1}},
		{"invalid cap", "lisbon", Epsilon{1, 1}, Epsilon{12, 0}},
	}
	for _, tt := range tests {
		var l Ledger
		if err := l.Charge(tt.site, 2026, tt.eps, tt.cap); err == nil {
			t.Errorf("%s: Charge succeeded", tt.name)
		}
		if len(l.Entries()) != 0 {
			t.Errorf("%s: a refused charge was recorded", tt.name)
		}
	}
}

func TestLedgerJSON(t *testing.T) {
	var l Ledger
	for _, e := range []string{"1", "0.5", "1/3"} {
		if err := l.Charge("lisbon", 2026, mustEps(t, e), Epsilon{12, 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.charge("porto", 2026, "2026-03", Epsilon{1, 1}, Epsilon{12, 1}); err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back Ledger
	if err := json.Unmarshal(p, &back); err != nil {
		t.Fatalf("json.Unmarshal(%s): %v", p, err)
	}
	if !reflect.DeepEqual(back.Entries(), l.Entries()) || !reflect.DeepEqual(back.Totals(), l.Totals()) {
		t.Fatalf("round trip: %+v, want %+v", back.Entries(), l.Entries())
	}
	if got := back.Spent("lisbon", 2026).String(); got != "11/6" {
		t.Errorf("Spent after round trip = %s, want 11/6", got)
	}

	// A damaged ledger must not quietly hand out budget.
	tamper := []struct{ name, from, to string }{
		{"lowered spend", `"spent":"11/6"`, `"spent":"1"`},
		{"skipped seq", `"seq":2`, `"seq":7`},
		{"raised past cap", `"epsilon":"1/3","cap":"12"`, `"epsilon":"13","cap":"12"`},
		{"zero charge", `"epsilon":"0.5"`, `"epsilon":"0"`},
		{"bad epsilon", `"epsilon":"0.5"`, `"epsilon":"-0.5"`},
	}
	for _, tt := range tamper {
		s := strings.Replace(string(p), tt.from, tt.to, 1)
		if s == string(p) {
			t.Fatalf("%s: %q not in %s", tt.name, tt.from, p)
		}
		var l2 Ledger
		if err := json.Unmarshal([]byte(s), &l2); err == nil {
			t.Errorf("%s: json.Unmarshal(%s) succeeded", tt.name, s)
		}
	}
}

// TestLedgerNeverPassesCap: whatever the charges and caps, the spend recorded
// is the exact sum of the accepted charges and never over the cap in force.
func TestLedgerNeverPassesCap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var l Ledger
		sums := map[siteYear]*big.Rat{}
		epsGen := rapid.SampledFrom([]string{"0.1", "0.25", "0.5", "1", "1/3", "2", "3.7"})
		for range rapid.IntRange(0, 60).Draw(t, "n") {
			site := rapid.SampledFrom([]string{"a", "b"}).Draw(t, "site")
			year := rapid.IntRange(2025, 2026).Draw(t, "year")
			eps := mustEps(t, epsGen.Draw(t, "eps"))
			cap := mustEps(t, rapid.SampledFrom([]string{"1", "2.5", "12"}).Draw(t, "cap"))
			k := siteYear{site, year}
			if sums[k] == nil {
				sums[k] = new(big.Rat)
			}
			next := new(big.Rat).Add(sums[k], eps.rat())
			err := l.Charge(site, year, eps, cap)
			if fits := next.Cmp(cap.rat()) <= 0; fits != (err == nil) {
				t.Fatalf("Charge(%s, %d, %s, cap %s) after %s = %v", site, year, eps, cap, sums[k].FloatString(3), err)
			}
			if err == nil {
				sums[k] = next
			}
			if got := l.Spent(site, year).rat(); got.Cmp(sums[k]) != 0 {
				t.Fatalf("Spent = %s, want %s", got, sums[k])
			}
		}
		p, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		var back Ledger
		if err := json.Unmarshal(p, &back); err != nil || !reflect.DeepEqual(back.Totals(), l.Totals()) {
			t.Fatalf("round trip = %v", err)
		}
	})
}
