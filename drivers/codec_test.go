package drivers

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// crcBitwise is CRC-16/CCITT-FALSE computed bit by bit, straight from the
// definition, so the table-driven CRC16 is checked against something it does
// not share code with.
func crcBitwise(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// wire frames body the way a board does, with the CRC from crcBitwise.
func wire(body string) string {
	return fmt.Sprintf("$%s*%04X\n", body, crcBitwise([]byte(body)))
}

// decodeAll feeds p to a fresh Decoder in one call.
func decodeAll(p []byte) ([]Frame, DecoderStats) {
	var d Decoder
	var got []Frame
	d.Feed(p, func(f Frame) { got = append(got, f) })
	return got, d.Stats()
}

// decodeChunks feeds p to a fresh Decoder cut at the given offsets.
func decodeChunks(p []byte, cuts []int) ([]Frame, DecoderStats) {
	var d Decoder
	var got []Frame
	emit := func(f Frame) { got = append(got, f) }
	prev := 0
	for _, c := range cuts {
		d.Feed(p[prev:c], emit)
		prev = c
	}
	d.Feed(p[prev:], emit)
	return got, d.Stats()
}

func decodeBytewise(p []byte) ([]Frame, DecoderStats) {
	cuts := make([]int, len(p))
	for i := range cuts {
		cuts[i] = i
	}
	return decodeChunks(p, cuts)
}

func TestCRC16(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want uint16
	}{
		{"check value", "123456789", 0x29B1},
		{"empty is the initial value", "", 0xFFFF},
		{"single byte", "A", 0xB915},
		{"query body", "Q", 0xAB24},
		{"hello body", "H,hall-1,1.2.0,5A3C19F0", 0x0CFB},
		{"press body", "P,5A3C19F0,1,G,0", 0x909F},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CRC16([]byte(tt.in)); got != tt.want {
				t.Errorf("CRC16(%q) = %04X, want %04X", tt.in, got, tt.want)
			}
			if got := crcBitwise([]byte(tt.in)); got != tt.want {
				t.Errorf("crcBitwise(%q) = %04X, want %04X (reference is wrong)", tt.in, got, tt.want)
			}
		})
	}
}

// The table is built at init; a wrong entry would only show for inputs that
// hit it, so every byte value is tried in every position that matters.
func TestCRC16MatchesBitwise(t *testing.T) {
	for i := range 256 {
		for _, prefix := range []string{"", "P", "\xff\x00"} {
			in := append([]byte(prefix), byte(i), byte(255-i))
			if got, want := CRC16(in), crcBitwise(in); got != want {
				t.Fatalf("CRC16(%q) = %04X, want %04X", in, got, want)
			}
		}
	}
}

func TestCodecEncode(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want string
	}{
		{"query", Frame{Kind: KindQuery}, "$Q*AB24\n"},
		{"hello", Frame{Kind: KindHello, BoardID: "hall-1", Firmware: "1.2.0", Boot: 0x5A3C19F0}, "$H,hall-1,1.2.0,5A3C19F0*0CFB\n"},
		{"press", Frame{Kind: KindPress, Boot: 0x5A3C19F0, Seq: 1, Colour: Green, AgeMS: 0}, "$P,5A3C19F0,1,G,0*909F\n"},
		{"press red", Frame{Kind: KindPress, Boot: 0x5A3C19F0, Seq: 2, Colour: Red, AgeMS: 1250}, "$P,5A3C19F0,2,R,1250*F05E\n"},
		{"heartbeat", Frame{Kind: KindHeartbeat, Boot: 0x5A3C19F0, UptimeS: 3605, LastSeq: 200, Unacked: 64}, "$B,5A3C19F0,3605,200,64*FE90\n"},
		{"ack", Frame{Kind: KindAck, Boot: 0x5A3C19F0, Seq: 2}, "$A,5A3C19F0,2*442D\n"},
		{"boot keeps leading zeros", Frame{Kind: KindAck, Boot: 0xAB, Seq: 0}, wire("A,000000AB,0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.f.Encode()); got != tt.want {
				t.Errorf("%+v.Encode() = %q, want %q", tt.f, got, tt.want)
			}
			if got := string(tt.f.AppendFrame([]byte("xx"))); got != "xx"+tt.want {
				t.Errorf("%+v.AppendFrame(\"xx\") = %q, want %q", tt.f, got, "xx"+tt.want)
			}
		})
	}
}

// roundTripFrames include the longest legal value of every field of every kind: they
// must still fit MaxBody and survive the round trip.
var roundTripFrames = []struct {
	name string
	f    Frame
}{
	{"query", Frame{Kind: KindQuery}},
	{"hello", Frame{Kind: KindHello, BoardID: "hall-1", Firmware: "1.2.0", Boot: 0x5A3C19F0}},
	{"hello longest", Frame{Kind: KindHello, BoardID: strings.Repeat("Zz._-9", 5) + "ab", Firmware: "v1.2.3-rc.4_abcd", Boot: 0xFFFFFFFF}},
	{"hello shortest", Frame{Kind: KindHello, BoardID: "x", Firmware: "1", Boot: 0}},
	{"press green", Frame{Kind: KindPress, Boot: 0x01234567, Seq: 1, Colour: Green, AgeMS: 0}},
	{"press red max", Frame{Kind: KindPress, Boot: 0xFFFFFFFF, Seq: 0xFFFFFFFF, Colour: Red, AgeMS: 0xFFFFFFFF}},
	{"heartbeat zero", Frame{Kind: KindHeartbeat, Boot: 0x89ABCDEF}},
	{"heartbeat all unacked", Frame{Kind: KindHeartbeat, Boot: 0xDEADBEEF, UptimeS: 0xFFFFFFFF, LastSeq: 0xFFFFFFFF, Unacked: 0xFFFFFFFF}},
	{"ack zero", Frame{Kind: KindAck, Boot: 0x00000001, Seq: 0}},
	{"ack max", Frame{Kind: KindAck, Boot: 0xCAFEF00D, Seq: 0xFFFFFFFF}},
}

func TestCodecRoundTrip(t *testing.T) {
	for _, tt := range roundTripFrames {
		t.Run(tt.name, func(t *testing.T) {
			enc := tt.f.Encode()
			if len(enc) < 8 || enc[0] != '$' || enc[len(enc)-1] != '\n' || enc[len(enc)-6] != '*' {
				t.Fatalf("Encode() = %q, not shaped $<body>*XXXX\\n", enc)
			}
			body := enc[1 : len(enc)-6]
			if len(body) > MaxBody {
				t.Fatalf("Encode() body is %d bytes, over MaxBody", len(body))
			}
			if crc := fmt.Sprintf("%04X", crcBitwise(body)); string(enc[len(enc)-5:len(enc)-1]) != crc {
				t.Errorf("Encode() = %q, want CRC %s", enc, crc)
			}
			if b := tt.f.AppendBody(nil); !bytes.Equal(b, body) {
				t.Errorf("AppendBody() = %q, want %q", b, body)
			}
			got, err := ParseBody(body)
			if err != nil || got != tt.f {
				t.Errorf("ParseBody(%q) = %+v, %v, want %+v, nil", body, got, err, tt.f)
			}
			frames, stats := decodeAll(enc)
			if !slices.Equal(frames, []Frame{tt.f}) || stats != (DecoderStats{Frames: 1}) {
				t.Errorf("Feed(%q) = %+v, %+v, want [%+v], {Frames:1}", enc, frames, stats, tt.f)
			}
		})
	}
}

func TestParseBodyAccepts(t *testing.T) {
	const boot = 0x5A3C19F0
	tests := []struct {
		name string
		body string
		want Frame
	}{
		{"query", "Q", Frame{Kind: KindQuery}},
		{"hello", "H,hall-1,1.2.0,5A3C19F0", Frame{Kind: KindHello, BoardID: "hall-1", Firmware: "1.2.0", Boot: boot}},
		{"hello 32 char id and 16 char fw", "H," + strings.Repeat("a", 32) + "," + strings.Repeat("9", 16) + ",00000000",
			Frame{Kind: KindHello, BoardID: strings.Repeat("a", 32), Firmware: strings.Repeat("9", 16)}},
		{"hello lowercase boot", "H,b,f,5a3c19f0", Frame{Kind: KindHello, BoardID: "b", Firmware: "f", Boot: boot}},
		{"press", "P,5A3C19F0,7,R,1250", Frame{Kind: KindPress, Boot: boot, Seq: 7, Colour: Red, AgeMS: 1250}},
		{"press age zero", "P,5A3C19F0,1,G,0", Frame{Kind: KindPress, Boot: boot, Seq: 1, Colour: Green}},
		{"press max values", "P,FFFFFFFF,4294967295,G,4294967295", Frame{Kind: KindPress, Boot: 0xFFFFFFFF, Seq: 0xFFFFFFFF, Colour: Green, AgeMS: 0xFFFFFFFF}},
		{"press mixed case boot", "P,5a3C19f0,1,G,0", Frame{Kind: KindPress, Boot: boot, Seq: 1, Colour: Green}},
		{"heartbeat", "B,5A3C19F0,3605,200,64", Frame{Kind: KindHeartbeat, Boot: boot, UptimeS: 3605, LastSeq: 200, Unacked: 64}},
		{"heartbeat nothing sent yet", "B,5A3C19F0,0,0,0", Frame{Kind: KindHeartbeat, Boot: boot}},
		{"heartbeat unacked equals last_seq", "B,5A3C19F0,9,12,12", Frame{Kind: KindHeartbeat, Boot: boot, UptimeS: 9, LastSeq: 12, Unacked: 12}},
		{"ack", "A,5A3C19F0,200", Frame{Kind: KindAck, Boot: boot, Seq: 200}},
		{"ack zero", "A,5A3C19F0,0", Frame{Kind: KindAck, Boot: boot}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBody([]byte(tt.body))
			if err != nil || got != tt.want {
				t.Errorf("ParseBody(%q) = %+v, %v, want %+v, nil", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestParseBodyRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ""},
		{"too long", strings.Repeat("Q", MaxBody+1)},

		{"unknown kind", "X"},
		{"unknown kind with fields", "X,5A3C19F0,1"},
		{"lowercase kind", "p,5A3C19F0,1,G,0"},
		{"two letter kind", "PP,5A3C19F0,1,G,0"},
		{"empty kind", ",5A3C19F0,1"},
		{"kind with space", "Q "},

		{"query with field", "Q,1"},
		{"query trailing comma", "Q,"},
		{"hello 3 fields", "H,hall-1,5A3C19F0"},
		{"hello 5 fields", "H,hall-1,1.2.0,5A3C19F0,1"},
		{"press 4 fields", "P,5A3C19F0,1,G"},
		{"press 6 fields", "P,5A3C19F0,1,G,0,0"},
		{"press 7 fields", "P,5A3C19F0,1,G,0,0,0"},
		{"heartbeat 4 fields", "B,5A3C19F0,1,2"},
		{"heartbeat 6 fields", "B,5A3C19F0,1,2,0,0"},
		{"ack 2 fields", "A,5A3C19F0"},
		{"ack 4 fields", "A,5A3C19F0,1,1"},
		{"ack trailing comma", "A,5A3C19F0,1,"},
		{"many commas", "P" + strings.Repeat(",", 40)},

		{"boot 7 digits", "P,5A3C19F,1,G,0"},
		{"boot 9 digits", "P,5A3C19F00,1,G,0"},
		{"boot empty", "A,,1"},
		{"boot non hex", "P,5A3C19FG,1,G,0"},
		{"boot 0x prefix", "A,0x3C19F0,1"},
		{"boot signed", "A,+5A3C19F,1"},
		{"boot with space", "A, 5A3C19F,1"},
		{"hello bad boot", "H,hall-1,1.2.0,5A3C19F"},
		{"heartbeat bad boot", "B,5A3C19F_,1,2,0"},

		{"seq leading zero", "P,5A3C19F0,01,G,0"},
		{"age leading zero", "P,5A3C19F0,1,G,00"},
		{"age leading zeros", "P,5A3C19F0,1,G,0100"},
		{"uptime leading zero", "B,5A3C19F0,007,2,0"},
		{"last_seq leading zero", "B,5A3C19F0,7,02,0"},
		{"unacked leading zero", "B,5A3C19F0,7,2,00"},
		{"ack seq leading zero", "A,5A3C19F0,00"},

		{"seq overflow", "P,5A3C19F0,4294967296,G,0"},
		{"age overflow", "P,5A3C19F0,1,G,9999999999"},
		{"age 11 digits", "P,5A3C19F0,1,G,10000000000"},
		{"uptime overflow", "B,5A3C19F0,4294967296,0,0"},
		{"ack overflow", "A,5A3C19F0,4294967296"},

		{"seq zero", "P,5A3C19F0,0,G,0"},
		{"seq empty", "P,5A3C19F0,,G,0"},
		{"seq negative", "P,5A3C19F0,-1,G,0"},
		{"seq plus sign", "P,5A3C19F0,+1,G,0"},
		{"seq hex", "P,5A3C19F0,A,G,0"},
		{"age trailing space", "P,5A3C19F0,1,G,0 "},
		{"age empty", "P,5A3C19F0,1,G,"},
		{"age decimal point", "P,5A3C19F0,1,G,1.5"},

		{"colour lowercase", "P,5A3C19F0,1,g,0"},
		{"colour unknown", "P,5A3C19F0,1,B,0"},
		{"colour two letters", "P,5A3C19F0,1,GR,0"},
		{"colour empty", "P,5A3C19F0,1,,0"},

		{"unacked above last_seq", "B,5A3C19F0,10,2,3"},

		{"board_id empty", "H,,1.2.0,5A3C19F0"},
		{"board_id 33 chars", "H," + strings.Repeat("a", 33) + ",1.2.0,5A3C19F0"},
		{"board_id space", "H,hall 1,1.2.0,5A3C19F0"},
		{"board_id slash", "H,hall/1,1.2.0,5A3C19F0"},
		{"board_id colon", "H,hall:1,1.2.0,5A3C19F0"},
		{"board_id non-ASCII", "H,caf\xc3\xa9,1.2.0,5A3C19F0"},
		{"board_id NUL", "H,hall\x001,1.2.0,5A3C19F0"},
		{"board_id tab", "H,hall\t1,1.2.0,5A3C19F0"},
		{"fw empty", "H,hall-1,,5A3C19F0"},
		{"fw 17 chars", "H,hall-1," + strings.Repeat("1", 17) + ",5A3C19F0"},
		{"fw plus", "H,hall-1,1.2.0+git,5A3C19F0"},
		{"fw dollar", "H,hall-1,1.$,5A3C19F0"},
		{"fw star", "H,hall-1,1.*,5A3C19F0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBody([]byte(tt.body))
			if !errors.Is(err, ErrMalformed) || got != (Frame{}) {
				t.Errorf("ParseBody(%q) = %+v, %v, want %+v, %v", tt.body, got, err, Frame{}, ErrMalformed)
			}
		})
	}
}

func TestDecoderStream(t *testing.T) {
	var (
		q        = Frame{Kind: KindQuery}
		press    = Frame{Kind: KindPress, Boot: 0x5A3C19F0, Seq: 1, Colour: Green}
		hello    = Frame{Kind: KindHello, BoardID: "hall-1", Firmware: "1.2.0", Boot: 0x5A3C19F0}
		pressW   = "$P,5A3C19F0,1,G,0*909F\n"
		helloW   = "$H,hall-1,1.2.0,5A3C19F0*0CFB\n"
		qW       = "$Q*AB24\n"
		longBody = strings.Repeat("7", MaxBody+1)
	)
	tests := []struct {
		name   string
		in     string
		frames []Frame
		stats  DecoderStats
	}{
		{"empty", "", nil, DecoderStats{}},
		{"one frame", pressW, []Frame{press}, DecoderStats{Frames: 1}},
		{"back to back", helloW + pressW + qW, []Frame{hello, press, q}, DecoderStats{Frames: 3}},
		{"crlf", strings.ReplaceAll(helloW+pressW, "\n", "\r\n"), []Frame{hello, press}, DecoderStats{Frames: 2}},
		{"blank lines between frames are not noise", "\r\n\n" + qW + "\r\n\n\r" + qW, []Frame{q, q}, DecoderStats{Frames: 2}},
		{"noise before frame", "xyz" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1, NoiseBytes: 3}},
		{"noise runs split by newlines", "ab\ncd\r\ne", nil, DecoderStats{Dropped: 3, NoiseBytes: 5}},
		{"binary noise", "\x00\xff\x80*" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1, NoiseBytes: 4}},
		{"noise after frame", qW + "zz" + qW, []Frame{q, q}, DecoderStats{Frames: 2, Dropped: 1, NoiseBytes: 2}},
		{"truncated by dollar in body", "$P,5A3C19" + pressW, []Frame{press}, DecoderStats{Frames: 1, Dropped: 1}},
		{"truncated by dollar in CRC", "$Q*AB" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"truncated by dollar after CRC", "$Q*AB24" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"truncated by dollar after CR", "$Q*AB24\r" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"truncated by newline in body", "$P,5A3C19\n" + pressW, []Frame{press}, DecoderStats{Frames: 1, Dropped: 1}},
		{"truncated by newline in CRC", "$Q*AB\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"lone dollar", "$\n", nil, DecoderStats{Dropped: 1}},
		{"unfinished frame is not counted yet", "$Q*AB24", nil, DecoderStats{}},
		{"bad CRC", "$Q*AB25\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1, BadCRC: 1}},
		{"CRC of another body", "$P,5A3C19F0,2,G,0*909F\n", nil, DecoderStats{Dropped: 1, BadCRC: 1}},
		{"lowercase CRC", "$Q*ab24\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"CRC too short", "$Q*B24\n", nil, DecoderStats{Dropped: 1}},
		{"CRC too long", "$Q*AB240\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"junk after CRC, then a dollar resyncs", "$Q*AB24 x$y\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 2}},
		{"CR not followed by LF", "$Q*AB24\rx\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"control byte in body", "$Q\x01*AB24\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"CR in body", "$Q\r\n" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"high byte in body", "$P,5A3C19F0,1,\xc7,0*909F\n", nil, DecoderStats{Dropped: 1}},
		{"empty body", "$*FFFF\n", nil, DecoderStats{Dropped: 1}},
		{"good CRC, malformed body", wire("P,5A3C19F0,0,G,0") + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		// BadCRC tells the two apart: only a body within the limit gets as far
		// as the CRC check.
		{"body of exactly MaxBody reaches the CRC check", "$" + longBody[1:] + "*0000\n", nil, DecoderStats{Dropped: 1, BadCRC: 1}},
		{"over-long body is dropped before the CRC check", "$" + longBody + "*0000\n", nil, DecoderStats{Dropped: 1}},
		{"over-long body skipped to newline", wire(longBody) + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"over-long body then noise", wire(longBody) + "ab" + qW, []Frame{q}, DecoderStats{Frames: 1, Dropped: 2, NoiseBytes: 2}},
		{"dollar mid-frame resyncs", "$P,5A3C$" + "Q*AB24\n", []Frame{q}, DecoderStats{Frames: 1, Dropped: 1}},
		{"dollar mid-hello resyncs", "$H,hall-1,1." + helloW, []Frame{hello}, DecoderStats{Frames: 1, Dropped: 1}},
		{
			"everything",
			"boot noise\r\n" + helloW + // noise run, frame
				"$P,5A3C" + // truncated by the next '$'
				"$Q*AB25\n" + // bad CRC
				strings.ReplaceAll(pressW, "\n", "\r\n") + // CRLF
				"$Q*ab24\n" + // lowercase CRC
				wire(longBody) + // over-long
				"$H,hall-1,$" + qW[1:] + // '$' in the middle: resync
				"\x00\x01", // trailing noise
			[]Frame{hello, press, q},
			DecoderStats{Frames: 3, Dropped: 7, BadCRC: 1, NoiseBytes: 12},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames, stats := decodeAll([]byte(tt.in))
			if !slices.Equal(frames, tt.frames) {
				t.Errorf("Feed(%q) frames = %+v, want %+v", tt.in, frames, tt.frames)
			}
			if stats != tt.stats {
				t.Errorf("Feed(%q) stats = %+v, want %+v", tt.in, stats, tt.stats)
			}
			if stats.Frames != uint64(len(frames)) {
				t.Errorf("Feed(%q): Stats().Frames = %d, but %d frames emitted", tt.in, stats.Frames, len(frames))
			}
			frames, stats = decodeBytewise([]byte(tt.in))
			if !slices.Equal(frames, tt.frames) || stats != tt.stats {
				t.Errorf("Feed(%q) byte by byte = %+v, %+v, want %+v, %+v", tt.in, frames, stats, tt.frames, tt.stats)
			}
		})
	}
}

// A Decoder lives as long as its port; its counters must keep adding up
// across calls rather than describe only the last chunk.
func TestDecoderStatsAccumulate(t *testing.T) {
	var d Decoder
	n := 0
	emit := func(Frame) { n++ }
	d.Feed([]byte("xx$Q*AB24\n"), emit)
	d.Feed([]byte("$Q*0000\n$Q*AB24\n"), emit)
	want := DecoderStats{Frames: 2, Dropped: 2, BadCRC: 1, NoiseBytes: 2}
	if got := d.Stats(); got != want || n != 2 {
		t.Errorf("Stats() = %+v after %d frames, want %+v after 2", got, n, want)
	}
}

// genFrame draws a valid frame of any kind.
func genFrame(t *rapid.T) Frame {
	boot := rapid.Uint32().Draw(t, "boot")
	switch rapid.SampledFrom([]Kind{KindHello, KindPress, KindHeartbeat, KindAck, KindQuery}).Draw(t, "kind") {
	case KindHello:
		return Frame{
			Kind:     KindHello,
			BoardID:  rapid.StringMatching(`[A-Za-z0-9._-]{1,32}`).Draw(t, "board_id"),
			Firmware: rapid.StringMatching(`[A-Za-z0-9._-]{1,16}`).Draw(t, "fw"),
			Boot:     boot,
		}
	case KindPress:
		return Frame{
			Kind:   KindPress,
			Boot:   boot,
			Seq:    rapid.Uint32Min(1).Draw(t, "seq"),
			Colour: rapid.SampledFrom([]Colour{Green, Red}).Draw(t, "colour"),
			AgeMS:  rapid.Uint32().Draw(t, "age_ms"),
		}
	case KindHeartbeat:
		last := rapid.Uint32().Draw(t, "last_seq")
		return Frame{
			Kind:    KindHeartbeat,
			Boot:    boot,
			UptimeS: rapid.Uint32().Draw(t, "uptime_s"),
			LastSeq: last,
			Unacked: rapid.Uint32Range(0, last).Draw(t, "unacked"),
		}
	case KindAck:
		return Frame{Kind: KindAck, Boot: boot, Seq: rapid.Uint32().Draw(t, "seq")}
	}
	return Frame{Kind: KindQuery}
}

// noiseBytes biases towards the bytes the decoder treats specially, so the
// interesting transitions happen often.
var noiseBytes = rapid.OneOf(
	rapid.Byte(),
	rapid.SampledFrom([]byte("$*\r\n,0AFaP")),
)

func TestDecodeChunkingProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var stream []byte
		var sent []Frame
		mayForge := false
		for range rapid.IntRange(0, 30).Draw(t, "parts") {
			switch rapid.IntRange(0, 4).Draw(t, "part") {
			case 0, 1: // a valid frame
				f := genFrame(t)
				sent = append(sent, f)
				stream = f.AppendFrame(stream)
				if rapid.Bool().Draw(t, "crlf") {
					stream = append(stream[:len(stream)-1], '\r', '\n')
				}
			case 2: // noise
				noise := rapid.SliceOfN(noiseBytes, 1, 40).Draw(t, "noise")
				mayForge = mayForge || bytes.IndexByte(noise, '$') >= 0
				stream = append(stream, noise...)
			case 3: // a frame cut short, as when a board resets mid-write
				enc := genFrame(t).Encode()
				stream = append(stream, enc[:rapid.IntRange(1, len(enc)-1).Draw(t, "cut")]...)
				mayForge = true // noise after it may complete it as another frame
			case 4: // a frame with one byte damaged
				enc := genFrame(t).Encode()
				i := rapid.IntRange(0, len(enc)-1).Draw(t, "at")
				enc[i] ^= rapid.ByteMin(1).Draw(t, "xor")
				mayForge = true // the damage may have made a different valid frame
				stream = append(stream, enc...)
			}
		}

		whole, wholeStats := decodeAll(stream)
		cuts := rapid.SliceOfN(rapid.IntRange(0, len(stream)), 0, 20).Draw(t, "cuts")
		slices.Sort(cuts)
		chunked, chunkedStats := decodeChunks(stream, cuts)
		if !slices.Equal(whole, chunked) || wholeStats != chunkedStats {
			t.Fatalf("chunked at %v: %+v, %+v; whole: %+v, %+v", cuts, chunked, chunkedStats, whole, wholeStats)
		}
		if wholeStats.Frames != uint64(len(whole)) || wholeStats.BadCRC > wholeStats.Dropped || wholeStats.NoiseBytes > uint64(len(stream)) {
			t.Fatalf("inconsistent stats %+v for %d frames from %d bytes", wholeStats, len(whole), len(stream))
		}
		// Every valid frame starts with '$', which resynchronises, so no
		// noise or broken frame before it can hide it; only noise can add
		// frames, by chance.
		if mayForge {
			if !isSubsequence(sent, whole) {
				t.Fatalf("sent %+v, decoded %+v: a sent frame is missing", sent, whole)
			}
		} else if !slices.Equal(sent, whole) {
			t.Fatalf("sent %+v, decoded %+v", sent, whole)
		}
	})
}

func isSubsequence(sub, seq []Frame) bool {
	i := 0
	for _, f := range seq {
		if i < len(sub) && f == sub[i] {
			i++
		}
	}
	return i == len(sub)
}
