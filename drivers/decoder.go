package drivers

// Decoder turns a byte stream from one board into frames. It keeps its state
// between calls to Feed, so it yields the same frames however the stream is
// chunked. It resynchronises on '$' (a new frame starts, whatever came before)
// and on '\n' (a frame ends, complete or not).
//
// A Decoder is not safe for concurrent use; each port owns one.
type Decoder struct {
	state   decState
	body    [MaxBody]byte
	n       int    // bytes of body collected
	crc     uint16 // CRC digits collected so far
	crcN    int    // number of CRC digits collected
	inNoise bool   // inside a run of bytes outside any frame

	stats DecoderStats
}

// DecoderStats counts what a Decoder saw. Every field only grows.
type DecoderStats struct {
	Frames     uint64 // valid frames delivered
	Dropped    uint64 // frames dropped: bad CRC, malformed, truncated, too long, plus runs of noise
	BadCRC     uint64 // of Dropped: CRC mismatch
	NoiseBytes uint64 // bytes outside any frame ('\r' and '\n' between frames excluded)
}

type decState uint8

const (
	stIdle decState = iota // between frames, waiting for '$'
	stBody                 // after '$', collecting the body until '*'
	stCRC                  // after '*', collecting 4 hex digits
	stCR                   // after the CRC and '\r', waiting for '\n'
	stEnd                  // after the CRC, waiting for '\r' or '\n'
	stSkip                 // a broken frame: ignore everything until '$' or '\n'
)

// Stats returns the counters so far.
func (d *Decoder) Stats() DecoderStats { return d.stats }

// Feed consumes p and calls emit for every complete, valid frame in it. emit
// must not retain the Frame's byte slices (there are none today; strings are
// copied).
func (d *Decoder) Feed(p []byte, emit func(Frame)) {
	for _, c := range p {
		if c == '$' {
			if d.state != stIdle && d.state != stSkip {
				d.stats.Dropped++ // truncated by a new frame start
			}
			d.inNoise = false
			d.state, d.n, d.crc, d.crcN = stBody, 0, 0, 0
			continue
		}
		switch d.state {
		case stIdle:
			if c == '\n' || c == '\r' {
				d.inNoise = false
				continue
			}
			d.stats.NoiseBytes++
			if !d.inNoise {
				d.inNoise = true
				d.stats.Dropped++
			}
		case stBody:
			switch {
			case c == '*':
				d.state = stCRC
			case c == '\n':
				d.drop(stIdle)
			case c < 0x20 || c > 0x7E || d.n == MaxBody:
				d.drop(stSkip)
			default:
				d.body[d.n] = c
				d.n++
			}
		case stCRC:
			v, ok := upperHexVal(c)
			if !ok {
				d.drop(skipOrIdle(c))
				continue
			}
			d.crc = d.crc<<4 | uint16(v)
			d.crcN++
			if d.crcN == 4 {
				d.state = stEnd
			}
		case stEnd:
			switch c {
			case '\r':
				d.state = stCR
			case '\n':
				d.finish(emit)
			default:
				d.drop(stSkip)
			}
		case stCR:
			if c == '\n' {
				d.finish(emit)
			} else {
				d.drop(stSkip)
			}
		case stSkip:
			if c == '\n' {
				d.state = stIdle
			}
		}
	}
}

func skipOrIdle(c byte) decState {
	if c == '\n' {
		return stIdle
	}
	return stSkip
}

func (d *Decoder) drop(next decState) {
	d.stats.Dropped++
	d.state = next
}

func (d *Decoder) finish(emit func(Frame)) {
	d.state = stIdle
	body := d.body[:d.n]
	if CRC16(body) != d.crc {
		d.stats.Dropped++
		d.stats.BadCRC++
		return
	}
	f, err := ParseBody(body)
	if err != nil {
		d.stats.Dropped++
		return
	}
	d.stats.Frames++
	emit(f)
}

// upperHexVal accepts only uppercase hex digits: the CRC has one spelling.
func upperHexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
