package anon

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

func mustPeriod(tb testing.TB, s string) Period {
	tb.Helper()
	p, err := ParsePeriod(s)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestRulesValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Rules)
		ok     bool
	}{
		{"defaults", func(*Rules) {}, true},
		{"K raised", func(r *Rules) { r.K = 50 }, true},
		{"K lowered", func(r *Rules) { r.K = 9 }, false},
		{"K zero", func(r *Rules) { r.K = 0 }, false},
		{"epsilon 0.5", func(r *Rules) { r.Epsilon = Epsilon{1, 2} }, true},
		{"epsilon zero", func(r *Rules) { r.Epsilon = Epsilon{0, 1} }, false},
		{"epsilon invalid", func(r *Rules) { r.Epsilon = Epsilon{1, 0} }, false},
		{"cap equals epsilon", func(r *Rules) { r.YearCap = r.Epsilon }, true},
		{"cap below epsilon", func(r *Rules) { r.YearCap = Epsilon{1, 2} }, false},
		{"cap invalid", func(r *Rules) { r.YearCap = Epsilon{12, 0} }, false},
		{"sensitivity set", func(r *Rules) { r.Sensitivity = 31 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := DefaultRules()
			tt.mutate(&r)
			err := r.Validate()
			if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrBadRules) {
				t.Fatalf("Validate(%+v) = %v, want ok %v", r, err, tt.ok)
			}
		})
	}
	if err := (Rules{}).Validate(); err == nil {
		t.Fatal("the zero Rules validated")
	}
}

func TestDecideRejects(t *testing.T) {
	march := mustPeriod(t, "2026-03")
	half := march
	half.End = Date{2026, 3, 15}
	tests := []struct {
		name       string
		rules      Rules
		site       string
		p          Period
		green, red uint64
		want       error
	}{
		{"bad rules", Rules{K: 3, Epsilon: Epsilon{1, 1}, YearCap: Epsilon{12, 1}}, "lisbon", march, 50, 50, ErrBadRules},
		{"empty site", DefaultRules(), "", march, 50, 50, ErrBadRules},
		{"half a month", DefaultRules(), "lisbon", half, 50, 50, ErrBadPeriod},
		{"zero period", DefaultRules(), "lisbon", Period{}, 50, 50, ErrBadPeriod},
		{"sensitivity below one a working day", Rules{K: 10, Epsilon: Epsilon{1, 1}, Sensitivity: 5, YearCap: Epsilon{12, 1}}, "lisbon", march, 50, 50, ErrBadRules},
		{"scale overflows", Rules{K: 10, Epsilon: Epsilon{1, 1 << 62}, YearCap: Epsilon{12, 1}}, "lisbon", march, 50, 50, ErrBadRules},
		{"count overflows", DefaultRules(), "lisbon", march, 1<<62 + 1, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel, err := Decide(tt.rules, tt.site, tt.p, tt.green, tt.red, seeded(10))
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Decide = %+v, %v; want error %v", rel, err, tt.want)
			}
		})
	}
}

// TestDecideShape checks what every Release looks like, over many draws.
func TestDecideShape(t *testing.T) {
	s := seeded(11)
	week := mustPeriod(t, "2026-W09")
	march := mustPeriod(t, "2026-03")
	tests := []struct {
		name       string
		rules      Rules
		p          Period
		green, red uint64
		wantSens   uint64
	}{
		{"empty week", DefaultRules(), week, 0, 0, 5},
		{"small week", DefaultRules(), week, 4, 3, 5},
		{"busy month", DefaultRules(), march, 800, 200, 22},
		{"huge month", DefaultRules(), march, 1 << 40, 0, 22},
		{"sensitivity raised", Rules{K: 20, Epsilon: Epsilon{1, 2}, Sensitivity: 31, YearCap: Epsilon{6, 1}}, march, 30, 30, 31},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			suppressed := 0
			for range 2000 {
				rel, err := Decide(tt.rules, "lisbon", tt.p, tt.green, tt.red, s)
				if err != nil {
					t.Fatal(err)
				}
				if rel.Site != "lisbon" || rel.Period != tt.p.String() || rel.Epsilon != tt.rules.Epsilon || rel.Sensitivity != tt.wantSens || rel.Version != 0 {
					t.Fatalf("Decide = %+v: wrong labels", rel)
				}
				switch {
				case rel.Green < 0 || rel.Red < 0:
					t.Fatalf("Decide = %+v: negative count", rel)
				case rel.Suppressed && (rel.Green != 0 || rel.Red != 0):
					t.Fatalf("Decide = %+v: suppressed with counts", rel)
				case !rel.Suppressed && uint64(rel.Green+rel.Red) < tt.rules.K:
					t.Fatalf("Decide = %+v: published below K = %d", rel, tt.rules.K)
				}
				if rel.Suppressed {
					suppressed++
				}
			}
			t.Logf("%s: %d of 2000 suppressed", tt.name, suppressed)
		})
	}
}

func TestPublish(t *testing.T) {
	s := seeded(12)
	r := DefaultRules()
	var l Ledger

	march := mustPeriod(t, "2026-03")
	if _, err := Publish(&l, r, "lisbon", march, "2026-03-31", 100, 50, s); !errors.Is(err, ErrPeriodOpen) {
		t.Fatalf("Publish on the period's last day = %v, want ErrPeriodOpen", err)
	}
	bad := r
	bad.K = 5
	if _, err := Publish(&l, bad, "lisbon", march, "2026-04-01", 100, 50, s); !errors.Is(err, ErrBadRules) {
		t.Fatalf("Publish with K = 5: %v, want ErrBadRules", err)
	}
	if n := len(l.Entries()); n != 0 {
		t.Fatalf("refused publishes left %d ledger entries", n)
	}

	// ISO week 2026-W01 starts in 2025 but ends in 2026: 2026's budget pays.
	w1 := mustPeriod(t, "2026-W01")
	rel, err := Publish(&l, r, "lisbon", w1, "2026-01-05", 30, 30, s)
	if err != nil || rel.Version != 1 || l.Releases("lisbon", 2026) != 1 || l.Releases("lisbon", 2025) != 0 {
		t.Fatalf("Publish(2026-W01) = %+v, %v; ledger %+v", rel, err, l.Entries())
	}
	// Eleven months fill the remaining budget of 12; the twelfth is refused.
	for m := 1; m <= 12; m++ {
		p := mustPeriod(t, fmt.Sprintf("2026-%02d", m))
		rel, err := Publish(&l, r, "lisbon", p, "2027-01-01", 100, 50, s)
		if m <= 11 {
			if err != nil || rel.Version != uint64(m+1) {
				t.Fatalf("Publish(%s) = %+v, %v", p, rel, err)
			}
			continue
		}
		if !errors.Is(err, ErrBudgetExhausted) {
			t.Fatalf("Publish(%s) with the year's budget spent = %+v, %v; want ErrBudgetExhausted", p, rel, err)
		}
	}
	if got := l.Spent("lisbon", 2026); got != (Epsilon{12, 1}) {
		t.Errorf("Spent = %s, want 12", got)
	}
	if e := l.Entries(); e[len(e)-1].Period != "2026-11" {
		t.Errorf("last entry %+v, want period 2026-11", e[len(e)-1])
	}
	// Another office has its own budget.
	if _, err := Publish(&l, r, "porto", march, "2026-04-01", 100, 50, s); err != nil {
		t.Fatalf("Publish(porto) = %v", err)
	}
}

// suppressProb is the exact P(suppressed) for exact counts g, r: the chance
// that max(0, g+N1) + max(0, r+N2) < k with N1, N2 ~ DL(t) independent.
func suppressProb(g, r, k uint64, t float64) float64 {
	q := math.Exp(-1 / t)
	pmf := func(n int64) float64 { return (1 - q) / (1 + q) * math.Pow(q, math.Abs(float64(n))) }
	// P(max(0, c+N) = a) for a < k.
	clamped := func(c uint64) []float64 {
		d := make([]float64, k)
		d[0] = math.Pow(q, float64(c)) / (1 + q) // P(N ≤ -c)
		for a := uint64(1); a < k; a++ {
			d[a] = pmf(int64(a) - int64(c))
		}
		return d
	}
	dg, dr := clamped(g), clamped(r)
	var p float64
	for a := range k {
		for b := range k - a {
			p += dg[a] * dr[b]
		}
	}
	return p
}

// TestSuppressionIsPrivate: because Decide suppresses on the noisy total,
// whether a bucket is suppressed changes by at most a factor e^ε when one
// person adds up to Δ presses of any colours, so the suppression bit is
// covered by the ε charged. (Suppressing on the exact total would not be: a
// bucket of 9 is always suppressed and one of 10 never, an unbounded ratio
// that an attacker who knows everyone else's presses reads off directly.)
func TestSuppressionIsPrivate(t *testing.T) {
	week := mustPeriod(t, "2026-W09") // Δ = 5
	tests := []struct {
		rules Rules
	}{
		{DefaultRules()},
		{Rules{K: 25, Epsilon: Epsilon{1, 2}, YearCap: Epsilon{12, 1}}},
		{Rules{K: 10, Epsilon: Epsilon{3, 1}, YearCap: Epsilon{12, 1}}},
	}
	for _, tt := range tests {
		r := tt.rules
		t.Run(fmt.Sprintf("K=%d ε=%s", r.K, r.Epsilon), func(t *testing.T) {
			delta := week.WorkingDays()
			eps := float64(r.Epsilon.Num) / float64(r.Epsilon.Den)
			scale := float64(delta) / eps
			bound := math.Exp(eps) * (1 + 1e-9)
			span := 3*r.K + delta
			probs := make([][]float64, span)
			for g := range span {
				probs[g] = make([]float64, span)
				for rd := range span {
					probs[g][rd] = suppressProb(g, rd, r.K, scale)
				}
			}
			worst := 0.0
			for g := range 3 * r.K {
				for rd := range 3 * r.K {
					p := probs[g][rd]
					for a := range delta + 1 {
						for b := range delta + 1 - a {
							p2 := probs[g+a][rd+b]
							worst = max(worst, p/p2, p2/p, (1-p)/(1-p2), (1-p2)/(1-p))
						}
					}
				}
			}
			t.Logf("largest ratio over neighbours %.4f, e^ε = %.4f", worst, math.Exp(eps))
			if worst > bound {
				t.Errorf("suppression odds change by %.4f between neighbours, over e^ε = %.4f", worst, math.Exp(eps))
			}

			// And Decide really behaves like the computation above.
			const n = 20_000
			s := seeded(13)
			g, rd := r.K/2, r.K/3
			hits := 0
			for range n {
				rel, err := Decide(r, "lisbon", week, g, rd, s)
				if err != nil {
					t.Fatal(err)
				}
				if rel.Suppressed {
					hits++
				}
			}
			want := suppressProb(g, rd, r.K, scale)
			se := math.Sqrt(want * (1 - want) / n)
			if got := float64(hits) / n; math.Abs(got-want) > 5.5*se {
				t.Errorf("P(suppressed | %d, %d) = %.4f over %d draws, exact %.4f ± %.4f", g, rd, got, n, want, 5.5*se)
			}
		})
	}
}
