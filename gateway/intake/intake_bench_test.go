package intake

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsegate/pulsegate/drivers"
)

// procIO reads this process's write counters: wchar (bytes handed to
// write/pwrite) and write_bytes (bytes the kernel sent to storage).
func procIO(tb testing.TB) (wchar, writeBytes uint64) {
	tb.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "wchar":
			wchar = n
		case "write_bytes":
			writeBytes = n
		}
	}
	return wchar, writeBytes
}

// BenchmarkBurst books a backlog of presses as fast as the store allows (a
// board replaying after an outage, or many boards at once) and reports
// presses per second, presses per fsync and bytes written per press. The
// window is how many presses may wait for their ack at once: 128 keeps
// batches near the 100-per-fsync floor, 8192 shows the ceiling.
func BenchmarkBurst(b *testing.B) {
	for _, window := range []uint32{128, 8192} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) { benchBurst(b, window) })
	}
}

func benchBurst(b *testing.B, window uint32) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	in, _ := newIntake(b, Config{Now: func() time.Time { return now }, AutoApprove: true, Limits: LimitConfig{}})
	in.Start(context.Background())
	var acked atomic.Uint32
	ack := func(seq uint32) {
		for {
			cur := acked.Load()
			if seq <= cur || acked.CompareAndSwap(cur, seq) {
				return
			}
		}
	}
	w0, d0 := procIO(b)
	c0 := in.Stats().Commits
	b.ResetTimer()
	for i := range b.N {
		seq := uint32(i + 1)
		for seq-acked.Load() > window {
			time.Sleep(50 * time.Microsecond)
		}
		c := drivers.Green
		if i%3 == 0 {
			c = drivers.Red
		}
		in.SubmitPress(drivers.Press{Board: "bench", Boot: 1, Seq: seq, Colour: c, Received: now}, ack)
	}
	for acked.Load() < uint32(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	st := in.Stats()
	w1, d1 := procIO(b)
	commits := st.Commits - c0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "presses/s")
	b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "presses/fsync")
	b.ReportMetric(float64(w1-w0)/float64(b.N), "written-B/press")
	b.ReportMetric(float64(d1-d0)/float64(b.N), "disk-B/press")
	if st.QueueFull > 0 {
		b.Fatalf("%d presses dropped on a full queue", st.QueueFull)
	}
}
