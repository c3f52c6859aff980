package regional

import (
	"math"
	"testing"
)

func TestValidate(t *testing.T) {
	d := DefaultRules()
	with := func(f func(*Rules)) Rules { r := d; f(&r); return r }
	tests := []struct {
		name  string
		rules Rules
		ok    bool
	}{
		{"defaults", d, true},
		{"all raised", Rules{MinSites: 8, MinPresses: 1000, MaxSiteShare: 0.25}, true},
		{"zero value", Rules{}, false},
		{"min sites lowered", with(func(r *Rules) { r.MinSites = 4 }), false},
		{"min presses lowered", with(func(r *Rules) { r.MinPresses = 99 }), false},
		{"share raised", with(func(r *Rules) { r.MaxSiteShare = 0.51 }), false},
		{"share zero", with(func(r *Rules) { r.MaxSiteShare = 0 }), false},
		{"share negative", with(func(r *Rules) { r.MaxSiteShare = -0.1 }), false},
		{"share NaN", with(func(r *Rules) { r.MaxSiteShare = math.NaN() }), false},
		{"share +Inf", with(func(r *Rules) { r.MaxSiteShare = math.Inf(1) }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.rules.Validate(); (err == nil) != tt.ok {
				t.Errorf("%+v.Validate() = %v, want ok %v", tt.rules, err, tt.ok)
			}
		})
	}
}

func TestDefaultRules(t *testing.T) {
	want := Rules{MinSites: 5, MinPresses: 100, MaxSiteShare: 0.5}
	if got := DefaultRules(); got != want {
		t.Errorf("DefaultRules() = %+v, want %+v", got, want)
	}
}
