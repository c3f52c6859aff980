package gateway

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
	"github.com/pulsegate/pulsegate/drivers/fakeboard"
)

// BenchmarkPressToAck measures what a person's press waits for: from the
// board's press to its durable acknowledgement, through a real pty, the
// serial manager, the intake and an fsync, at 100 presses per second. One
// iteration is one press; run it with -benchtime=2000x for a stable p99.
func BenchmarkPressToAck(b *testing.B) {
	var mu sync.Mutex
	var lat []time.Duration
	board, err := fakeboard.New(fakeboard.Config{
		BoardID:        "bench-1",
		ResendInterval: time.Second,
		MaxPending:     1 << 20,
		OnAck: func(d time.Duration) {
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { board.Close() })
	openGateway(b, board, time.Now, io.Discard)
	// Wait for the port to be open and the hello seen: one press round trip.
	board.Press(drivers.Green)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := board.WaitAcked(ctx); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()

	tick := time.NewTicker(10 * time.Millisecond) // 100 presses/s
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		if i%2 == 0 {
			board.Press(drivers.Green)
		} else {
			board.Press(drivers.Red)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := board.WaitAcked(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(lat) != b.N {
		b.Fatalf("%d acks for %d presses", len(lat), b.N)
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(0, "ns/op") // the pacing makes ns/op meaningless
}
