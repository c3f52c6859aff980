package wire

import (
	"errors"
	"reflect"
	"testing"
)

func validBatch() *Batch {
	return &Batch{
		Version: Version,
		BatchID: "b1",
		Releases: []Release{
			{Site: "0123456789abcdef", Region: "eu-west", Period: "2026-03", Colour: "G", Count: 41, Version: 3, Epsilon: "1.0", Sensitivity: 22},
			{Site: "0123456789abcdef", Region: "eu-west", Period: "2026-W09", Colour: "R", Suppressed: true, Version: 3, Epsilon: "1.0", Sensitivity: 5},
		},
		Ledger: []Spend{{Site: "0123456789abcdef", Year: 2026, Releases: 2, Epsilon: "2.0"}},
	}
}

func TestRoundTrip(t *testing.T) {
	b := validBatch()
	p, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("Decode(Encode(b)) = %+v, want %+v", got, b)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Batch)
	}{
		{"wrong version", func(b *Batch) { b.Version = 2 }},
		{"bad site", func(b *Batch) { b.Releases[0].Site = "Alice" }},
		{"bad period: a day", func(b *Batch) { b.Releases[0].Period = "2026-03-02" }},
		{"bad colour", func(b *Batch) { b.Releases[0].Colour = "B" }},
		{"negative count", func(b *Batch) { b.Releases[0].Count = -1 }},
		{"suppressed with a count", func(b *Batch) { b.Releases[1].Count = 3 }},
		{"version 0", func(b *Batch) { b.Releases[0].Version = 0 }},
		{"bad epsilon", func(b *Batch) { b.Releases[0].Epsilon = "1e9" }},
		{"bad region", func(b *Batch) { b.Releases[0].Region = "" }},
		{"bad ledger year", func(b *Batch) { b.Ledger[0].Year = 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := validBatch()
			tt.mutate(b)
			p, err := Encode(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decode(p); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := Decode([]byte{0xc1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Decode(garbage) = %v, want ErrInvalid", err)
	}
}

// Batches come from the network: anything must decode to an error or to a
// valid batch that re-encodes to an equal batch.
func FuzzDecode(f *testing.F) {
	p, _ := Encode(validBatch())
	f.Add(p)
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, p []byte) {
		b, err := Decode(p)
		if err != nil {
			return
		}
		q, err := Encode(b)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		b2, err := Decode(q)
		if err != nil || !reflect.DeepEqual(b, b2) {
			t.Fatalf("round trip of an accepted batch: %v\n%+v\n%+v", err, b, b2)
		}
	})
}
