package anon

import (
	"fmt"
	"math"
	"testing"
)

// The all-but-one adversary knows the published release of a bucket and the
// exact presses of everyone but the target (so, in effect, everything except
// the target's presses and the noise). It takes the published green count at
// face value as the exact count and subtracts what it knows. Its guess is
// right exactly when the noise drew 0, which for the discrete Laplace with
// scale t = Δ/ε happens with probability (1-e^(-1/t))/(1+e^(-1/t)) =
// tanh(1/(2t)) = tanh(ε/(2Δ)).
//
// The trials use a seeded stream so the measured rates are reproducible; the
// production source is crypto/rand (TestNewSamplerUsesCryptoRand).

const (
	attackTrials = 20_000
	attackSlack  = 0.02
	othersGreen  = 400 // far from 0, so clamping never helps the adversary
	othersRed    = 300
)

// allButOne runs the attack and returns the adversary's success rate.
func allButOne(tb testing.TB, r Rules, p Period, seed uint64) float64 {
	tb.Helper()
	s := seeded(seed)
	delta := p.WorkingDays()
	if r.Sensitivity != 0 {
		delta = r.Sensitivity
	}
	wins := 0
	for i := range attackTrials {
		target := uint64(i) % (delta + 1) // the target's presses: 0 to Δ
		rel, err := Decide(r, "lisbon", p, othersGreen+target, othersRed, s)
		if err != nil {
			tb.Fatal(err)
		}
		if rel.Suppressed {
			tb.Fatalf("bucket of %d suppressed", othersGreen+othersRed+target)
		}
		if guess := rel.Green - othersGreen; guess == int64(target) {
			wins++
		}
	}
	return float64(wins) / attackTrials
}

func TestAllButOneAttack(t *testing.T) {
	tests := []struct {
		name   string
		rules  Rules
		period string
	}{
		{"month, defaults", DefaultRules(), "2026-03"},
		{"week, defaults", DefaultRules(), "2026-W09"},
		{"week, ε=0.5", Rules{K: 10, Epsilon: Epsilon{1, 2}, YearCap: Epsilon{12, 1}}, "2026-W09"},
		// A weak setting, where the bound is far from 0 and so actually bites.
		{"week, ε=5", Rules{K: 10, Epsilon: Epsilon{5, 1}, YearCap: Epsilon{12, 1}}, "2026-W09"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPeriod(t, tt.period)
			eps := float64(tt.rules.Epsilon.Num) / float64(tt.rules.Epsilon.Den)
			delta := float64(p.WorkingDays())
			exact := math.Tanh(eps / (2 * delta))
			got := allButOne(t, tt.rules, p, uint64(100+i))
			t.Logf("Δ=%v ε=%v: adversary right in %.4f of %d trials; P(noise=0) = tanh(ε/2Δ) = %.4f, bound %.4f",
				delta, eps, got, attackTrials, exact, exact+attackSlack)
			if got > exact+attackSlack {
				t.Errorf("adversary succeeds %.4f > tanh(ε/2Δ) + %.2f = %.4f", got, attackSlack, exact+attackSlack)
			}
			// A rate far below P(noise=0) would mean the test lost its teeth
			// (e.g. the guess no longer matches the release).
			if got < exact-attackSlack {
				t.Errorf("adversary succeeds %.4f, well below P(noise=0) = %.4f: the attack is mis-built", got, exact)
			}
		})
	}
}

// TestAllButOneAttackWithoutNoise documents what the noise buys: with ε so
// large that the scale Δ/ε is 5·10⁻⁶ (the noise is 0 except with probability
// about e^-200000), the same adversary recovers the target's exact presses
// every time.
func TestAllButOneAttackWithoutNoise(t *testing.T) {
	r := Rules{K: 10, Epsilon: Epsilon{1_000_000, 1}, YearCap: Epsilon{1_000_000, 1}}
	got := allButOne(t, r, mustPeriod(t, "2026-W09"), 200)
	t.Logf("noise off: adversary right in %.4f of %d trials", got, attackTrials)
	if got != 1 {
		t.Fatalf("with noise off the adversary succeeds %.4f, want 1", got)
	}
}

// TestNeighboursIndistinguishable is the guarantee itself, seen by the best
// adversary: knowing everything else, it must tell whether the target pressed
// 0 or Δ times. Any test between two ε-DP neighbours is right with
// probability at most e^ε/(1+e^ε) (0.731 at ε=1) when both are equally likely;
// the likelihood-ratio test used here (pick the nearer hypothesis) is optimal
// for Laplace noise and gets close.
func TestNeighboursIndistinguishable(t *testing.T) {
	for i, eps := range []Epsilon{{1, 1}, {1, 2}} {
		t.Run(fmt.Sprintf("ε=%s", eps), func(t *testing.T) {
			r := Rules{K: 10, Epsilon: eps, YearCap: Epsilon{12, 1}}
			p := mustPeriod(t, "2026-W09")
			delta := int64(p.WorkingDays()) // 5: odd, so there are no ties
			s := seeded(uint64(300 + i))
			wins := 0
			for j := range attackTrials {
				pressed := j%2 == 1
				target := int64(0)
				if pressed {
					target = delta
				}
				rel, err := Decide(r, "lisbon", p, othersGreen+uint64(target), othersRed, s)
				if err != nil {
					t.Fatal(err)
				}
				guess := 2*(rel.Green-othersGreen) > delta
				if guess == pressed {
					wins++
				}
			}
			e := float64(eps.Num) / float64(eps.Den)
			got, bound := float64(wins)/attackTrials, math.Exp(e)/(1+math.Exp(e))
			t.Logf("Δ=%d ε=%v: best test right in %.4f of %d trials; DP bound e^ε/(1+e^ε) = %.4f", delta, e, got, attackTrials, bound)
			if got > bound+attackSlack {
				t.Errorf("neighbours told apart in %.4f of trials, over e^ε/(1+e^ε) + %.2f = %.4f", got, attackSlack, bound+attackSlack)
			}
		})
	}
}
