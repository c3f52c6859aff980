package drivers

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// fuzzSeeds are valid frames of every kind plus the broken shapes the decoder
// has a state for, so the fuzzer starts next to every branch.
var fuzzSeeds = []string{
	"$Q*AB24\n",
	"$H,hall-1,1.2.0,5A3C19F0*0CFB\n",
	"$P,5A3C19F0,1,G,0*909F\n",
	"$P,5A3C19F0,2,R,1250*F05E\r\n",
	"$B,5A3C19F0,3605,200,64*FE90\n",
	"$A,5A3C19F0,2*442D\n",
	"noise\x00\xff\r\n$Q*AB24\n",
	"$P,5A3C$Q*AB24\n",
	"$Q*AB25\n$Q*ab24\n$Q*AB\n$Q*AB24\r$Q*AB24x\n",
	"$*FFFF\n$\n\n\r\n",
	"$77777777777777777777777777777777777777777777777777777777777777777777777777777777*0000\n",
	"$777777777777777777777777777777777777777777777777777777777777777777777777777777777*0000\n",
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, stats := decodeAll(in)
		bytewise, bytewiseStats := decodeBytewise(in)
		if !slices.Equal(whole, bytewise) || stats != bytewiseStats {
			t.Fatalf("Feed(%q) whole = %+v, %+v; byte by byte = %+v, %+v", in, whole, stats, bytewise, bytewiseStats)
		}
		half, halfStats := decodeChunks(in, []int{len(in) / 2})
		if !slices.Equal(whole, half) || stats != halfStats {
			t.Fatalf("Feed(%q) whole = %+v, %+v; in halves = %+v, %+v", in, whole, stats, half, halfStats)
		}
		if stats.Frames != uint64(len(whole)) || stats.BadCRC > stats.Dropped || stats.NoiseBytes > uint64(len(in)) {
			t.Fatalf("Feed(%q): inconsistent stats %+v for %d frames", in, stats, len(whole))
		}
		for _, fr := range whole {
			enc := fr.Encode()
			again, againStats := decodeAll(enc)
			if len(again) != 1 || again[0] != fr || againStats != (DecoderStats{Frames: 1}) {
				t.Fatalf("Feed(%q) emitted %+v, whose encoding %q decodes to %+v, %+v", in, fr, enc, again, againStats)
			}
		}
	})
}

func FuzzParseBody(f *testing.F) {
	for _, s := range fuzzSeeds {
		if i := bytes.LastIndexByte([]byte(s), '*'); i > 0 && s[0] == '$' {
			f.Add([]byte(s[1:i]))
		}
	}
	f.Add([]byte("P,5a3c19f0,01,g,00"))
	f.Add([]byte("B,5A3C19F0,10,2,3"))
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := ParseBody(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || fr != (Frame{}) {
				t.Fatalf("ParseBody(%q) = %+v, %v, want %+v and an ErrMalformed", body, fr, err, Frame{})
			}
			// The decoder must not deliver what ParseBody refuses. Bodies with
			// framing bytes are left out: those split into other frames.
			if bytes.ContainsAny(body, "$*\r\n") {
				return
			}
			framed := appendCRC(append(append([]byte{'$'}, body...), '*'), CRC16(body))
			if got, stats := decodeAll(framed); len(got) != 0 || stats.Dropped != 1 {
				t.Fatalf("Feed(%q) = %+v, %+v, want no frame and 1 dropped", framed, got, stats)
			}
			return
		}
		// Values have one spelling, except boot, which may come in lower case.
		canon := fr.AppendBody(nil)
		if !bytes.EqualFold(canon, body) {
			t.Fatalf("ParseBody(%q) = %+v, which encodes as %q", body, fr, canon)
		}
		if again, err := ParseBody(canon); err != nil || again != fr {
			t.Fatalf("ParseBody(%q) = %+v, %v, want %+v, nil", canon, again, err, fr)
		}
		framed := appendCRC(append(append([]byte{'$'}, body...), '*'), CRC16(body))
		if got, stats := decodeAll(framed); !slices.Equal(got, []Frame{fr}) || stats != (DecoderStats{Frames: 1}) {
			t.Fatalf("Feed(%q) = %+v, %+v, want [%+v], {Frames:1}", framed, got, stats, fr)
		}
	})
}

func appendCRC(dst []byte, crc uint16) []byte {
	const hex = "0123456789ABCDEF"
	return append(dst, hex[crc>>12], hex[crc>>8&0xF], hex[crc>>4&0xF], hex[crc&0xF], '\n')
}
