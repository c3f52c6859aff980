package regional

import (
	"bytes"
	"errors"
	"testing"
)

// A Publisher restored from its state refuses what the original would have
// refused, and gives the same versions.
func TestStateRoundTrip(t *testing.T) {
	p := NewPublisher("acme")
	s6, x5 := names("s", 6), names("x", 5)
	for _, c := range []struct {
		region string
		sites  []string
	}{{"eu", s6}, {"eu", concat(s6, x5)}, {"us", x5}} {
		if got := p.Cell(DefaultRules(), c.region, "2026-03", even(c.sites...)); !got.Published {
			t.Fatalf("Cell(%s, %v) withheld: %s", c.region, c.sites, got.Message)
		}
	}
	b, err := p.MarshalState()
	if err != nil {
		t.Fatalf("MarshalState: %v", err)
	}
	q := NewPublisher("acme")
	if err := q.UnmarshalState(b); err != nil {
		t.Fatalf("UnmarshalState(%s): %v", b, err)
	}
	if b2, err := q.MarshalState(); err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("MarshalState after UnmarshalState = %s, %v; want %s", b2, err, b)
	}
	if c := q.Cell(DefaultRules(), "eu", "2026-03", even(concat(s6, x5)...)); !c.Published || c.Version != 2 {
		t.Errorf("restored Cell of version 2 = %+v", c)
	}
	if c := q.Cell(DefaultRules(), "eu", "2026-03", even(s6[1:]...)); c.Reason != ReasonWouldIsolate {
		t.Errorf("restored Cell of one site fewer: reason %q, want %q", c.Reason, ReasonWouldIsolate)
	}
}

func TestMarshalStateEmpty(t *testing.T) {
	b, err := NewPublisher("acme").MarshalState()
	if want := `{"format":1,"customer":"acme","cells":[]}`; err != nil || string(b) != want {
		t.Errorf("MarshalState() = %s, %v; want %s", b, err, want)
	}
}

func TestUnmarshalStateRefuses(t *testing.T) {
	const good = `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["a","b"],"green":1,"red":2}]}]}`
	tests := []struct {
		name, data string
		is         error
	}{
		{"not json", `{`, nil},
		{"other format", `{"format":2,"customer":"acme","cells":[]}`, nil},
		{"no format", `{"customer":"acme","cells":[]}`, nil},
		{"other customer", `{"format":1,"customer":"globex","cells":[]}`, ErrWrongCustomer},
		{"no period", `{"format":1,"customer":"acme","cells":[{"region":"eu","versions":[{"sites":["a"]}]}]}`, nil},
		{"no region", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","versions":[{"sites":["a"]}]}]}`, nil},
		{"no versions", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[]}]}`, nil},
		{"no sites", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":[]}]}]}`, nil},
		{"unsorted sites", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["b","a"]}]}]}`, nil},
		{"repeated site", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["a","a"]}]}]}`, nil},
		{"unnamed site", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":[""]}]}]}`, nil},
		{"negative count", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["a"],"red":-1}]}]}`, nil},
		{"overflowing counts", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["a"],"green":9223372036854775807,"red":1}]}]}`, nil},
		{"repeated version", `{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["a"]},{"sites":["a"]}]}]}`, nil},
		{"repeated cell", `{"format":1,"customer":"acme","cells":[` +
			`{"period":"2026-03","region":"eu","versions":[{"sites":["a"]}]},{"period":"2026-03","region":"eu","versions":[{"sites":["b"]}]}]}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPublisher("acme")
			if err := p.UnmarshalState([]byte(good)); err != nil {
				t.Fatalf("UnmarshalState(good) = %v", err)
			}
			err := p.UnmarshalState([]byte(tt.data))
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("UnmarshalState(%s) = %v, want an error (is %v)", tt.data, err, tt.is)
			}
			// A refused state leaves the one before in place.
			if b, _ := p.MarshalState(); string(b) != good {
				t.Errorf("after a refused state, MarshalState() = %s, want %s", b, good)
			}
		})
	}
}

// The index reads its state back from storage: damaged bytes must give an
// error, never a panic, and whatever is accepted must round-trip.
func FuzzUnmarshalState(f *testing.F) {
	f.Add([]byte(`{"format":1,"customer":"acme","cells":[{"period":"2026-03","region":"eu","versions":[{"sites":["a","b"],"green":1,"red":2},{"sites":["c"]}]}]}`))
	f.Add([]byte(`{"format":1,"customer":"acme","cells":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := NewPublisher("acme")
		if err := p.UnmarshalState(b); err != nil {
			return
		}
		m, err := p.MarshalState()
		if err != nil {
			t.Fatalf("MarshalState after UnmarshalState(%q): %v", b, err)
		}
		q := NewPublisher("acme")
		if err := q.UnmarshalState(m); err != nil {
			t.Fatalf("UnmarshalState(MarshalState()) = %v for %s", err, m)
		}
		if m2, _ := q.MarshalState(); !bytes.Equal(m, m2) {
			t.Fatalf("state %s re-marshals as %s", m, m2)
		}
		// Whatever state was loaded, Cell must not panic.
		q.Cell(DefaultRules(), "eu", "2026-03", even(names("s", 6)...))
	})
}
