package drivers

import (
	"math/rand/v2"
	"testing"
)

// benchStream is what a busy board sends: presses, with a heartbeat every
// few dozen frames and, in the mixed stream, the occasional hello. It is
// deterministic so runs compare.
func benchStream(frames int, mixed bool) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	const boot = 0x5A3C19F0
	var out []byte
	seq := uint32(0)
	for i := range frames {
		var f Frame
		switch {
		case mixed && i%50 == 0:
			f = Frame{Kind: KindHello, BoardID: "hall-1", Firmware: "1.2.0", Boot: boot}
		case mixed && i%12 == 0:
			f = Frame{Kind: KindHeartbeat, Boot: boot, UptimeS: uint32(i) * 5, LastSeq: seq, Unacked: min(seq, 3)}
		default:
			seq++
			c := Green
			if r.IntN(3) == 0 {
				c = Red
			}
			f = Frame{Kind: KindPress, Boot: boot, Seq: seq, Colour: c, AgeMS: r.Uint32N(8000)}
		}
		out = f.AppendFrame(out)
	}
	return out
}

func BenchmarkDecode(b *testing.B) {
	for _, bm := range []struct {
		name  string
		mixed bool
	}{
		{"press", false},
		{"mixed", true},
	} {
		b.Run(bm.name, func(b *testing.B) {
			stream := benchStream(1000, bm.mixed)
			var d Decoder
			frames := 0
			emit := func(Frame) { frames++ }
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				// A serial read returns at most a few dozen bytes.
				for p := stream; len(p) > 0; {
					n := min(len(p), 64)
					d.Feed(p[:n], emit)
					p = p[n:]
				}
			}
			if st := d.Stats(); st.Dropped != 0 || st.Frames != uint64(frames) {
				b.Fatalf("stats %+v after %d frames: the benchmark stream is broken", st, frames)
			}
			b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	f := Frame{Kind: KindPress, Boot: 0x5A3C19F0, Seq: 123456, Colour: Red, AgeMS: 4321}
	b.Run("AppendFrame", func(b *testing.B) {
		buf := make([]byte, 0, 64)
		b.SetBytes(int64(len(f.Encode())))
		b.ReportAllocs()
		for b.Loop() {
			buf = f.AppendFrame(buf[:0])
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.SetBytes(int64(len(f.Encode())))
		b.ReportAllocs()
		for b.Loop() {
			encodeSink = f.Encode()
		}
	})
}

// encodeSink makes Encode's result escape, as it does when a port writes it,
// so the benchmark counts the allocation a caller really pays.
var encodeSink []byte
