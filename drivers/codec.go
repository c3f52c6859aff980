// Package drivers owns the button boards: the frame codec of the board protocol
// (PROTOCOL.md), the serial port manager, the only code that touches a tty, and
// the per-board state the rest of the gateway reads.
//
// The codec is pure: it works on bytes, never on a device, so it can be fuzzed
// and benchmarked on its own.
package drivers

import (
	"errors"
	"fmt"
	"strconv"
)

// MaxBody is the longest frame body, in bytes, between '$' and '*'.
const MaxBody = 80

// Kind is a frame's type, its first body field.
type Kind byte

// Frame kinds. Boards send hello, press and heartbeat; the gateway sends ack
// and query.
const (
	KindHello     Kind = 'H'
	KindPress     Kind = 'P'
	KindHeartbeat Kind = 'B'
	KindAck       Kind = 'A'
	KindQuery     Kind = 'Q'
)

func (k Kind) String() string {
	switch k {
	case KindHello:
		return "hello"
	case KindPress:
		return "press"
	case KindHeartbeat:
		return "heartbeat"
	case KindAck:
		return "ack"
	case KindQuery:
		return "query"
	}
	return fmt.Sprintf("kind(%q)", byte(k))
}

// Colour is the only thing a press says about the person who pressed.
type Colour byte

// The two buttons.
const (
	Green Colour = 'G'
	Red   Colour = 'R'
)

func (c Colour) String() string {
	switch c {
	case Green:
		return "green"
	case Red:
		return "red"
	}
	return fmt.Sprintf("colour(%q)", byte(c))
}

// Valid reports whether c is one of the two buttons.
func (c Colour) Valid() bool { return c == Green || c == Red }

// Frame is one decoded protocol message. Which fields are meaningful depends
// on Kind; the others are zero.
type Frame struct {
	Kind Kind

	// Hello.
	BoardID  string
	Firmware string

	// Hello, press, heartbeat, ack.
	Boot uint32

	// Press and ack.
	Seq uint32

	// Press.
	Colour Colour
	AgeMS  uint32

	// Heartbeat.
	UptimeS uint32
	LastSeq uint32
	Unacked uint32
}

// Errors the codec returns. Decoding errors wrap ErrMalformed.
var (
	ErrMalformed = errors.New("malformed frame")
	ErrCRC       = fmt.Errorf("%w: crc mismatch", ErrMalformed)
)

// CRC16 is CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no
// reflection, no final xor. CRC16([]byte("123456789")) == 0x29B1.
func CRC16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc = crcTable[byte(crc>>8)^c] ^ (crc << 8)
	}
	return crc
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

const hexDigits = "0123456789ABCDEF"

// AppendBody appends the frame's body (what stands between '$' and '*').
func (f Frame) AppendBody(dst []byte) []byte {
	dst = append(dst, byte(f.Kind))
	switch f.Kind {
	case KindHello:
		dst = append(dst, ',')
		dst = append(dst, f.BoardID...)
		dst = append(dst, ',')
		dst = append(dst, f.Firmware...)
		dst = append(dst, ',')
		dst = appendBoot(dst, f.Boot)
	case KindPress:
		dst = append(dst, ',')
		dst = appendBoot(dst, f.Boot)
		dst = append(dst, ',')
		dst = strconv.AppendUint(dst, uint64(f.Seq), 10)
		dst = append(dst, ',', byte(f.Colour), ',')
		dst = strconv.AppendUint(dst, uint64(f.AgeMS), 10)
	case KindHeartbeat:
		dst = append(dst, ',')
		dst = appendBoot(dst, f.Boot)
		for _, v := range [...]uint32{f.UptimeS, f.LastSeq, f.Unacked} {
			dst = append(dst, ',')
			dst = strconv.AppendUint(dst, uint64(v), 10)
		}
	case KindAck:
		dst = append(dst, ',')
		dst = appendBoot(dst, f.Boot)
		dst = append(dst, ',')
		dst = strconv.AppendUint(dst, uint64(f.Seq), 10)
	}
	return dst
}

// AppendFrame appends the whole frame, "$<body>*<CRC>\n".
func (f Frame) AppendFrame(dst []byte) []byte {
	dst = append(dst, '$')
	start := len(dst)
	dst = f.AppendBody(dst)
	crc := CRC16(dst[start:])
	return append(dst, '*',
		hexDigits[crc>>12], hexDigits[crc>>8&0xF], hexDigits[crc>>4&0xF], hexDigits[crc&0xF], '\n')
}

// Encode returns the whole frame as bytes. It does not validate f; use
// ParseBody on the result to check a hand-built frame.
func (f Frame) Encode() []byte { return f.AppendFrame(make([]byte, 0, 32)) }

// appendBoot writes a boot value as exactly 8 uppercase hex digits.
func appendBoot(dst []byte, v uint32) []byte {
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[v>>uint(shift)&0xF])
	}
	return dst
}

// ParseBody decodes a frame body (without '$', '*' and CRC). It checks every
// field strictly: a frame with anything unexpected is dropped, not guessed at.
func ParseBody(body []byte) (Frame, error) {
	var f Frame
	if len(body) == 0 {
		return f, fmt.Errorf("%w: empty body", ErrMalformed)
	}
	if len(body) > MaxBody {
		return f, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrMalformed, len(body), MaxBody)
	}
	f.Kind = Kind(body[0])
	var fields [6][]byte
	n := splitFields(body, fields[:])
	if n < 0 {
		return Frame{}, fmt.Errorf("%w: too many fields for %s", ErrMalformed, f.Kind)
	}
	if len(fields[0]) != 1 {
		return Frame{}, fmt.Errorf("%w: unknown kind %q", ErrMalformed, fields[0])
	}
	want := fieldCount(f.Kind)
	if want == 0 {
		return Frame{}, fmt.Errorf("%w: unknown kind %q", ErrMalformed, body[0])
	}
	if n != want {
		return Frame{}, fmt.Errorf("%w: %s has %d fields, want %d", ErrMalformed, f.Kind, n, want)
	}
	var err error
	switch f.Kind {
	case KindHello:
		if f.BoardID, err = parseToken(fields[1], 32, "board_id"); err != nil {
			return Frame{}, err
		}
		if f.Firmware, err = parseToken(fields[2], 16, "fw"); err != nil {
			return Frame{}, err
		}
		f.Boot, err = parseBoot(fields[3])
	case KindPress:
		if f.Boot, err = parseBoot(fields[1]); err != nil {
			return Frame{}, err
		}
		if f.Seq, err = parseSeq(fields[2]); err != nil {
			return Frame{}, err
		}
		if len(fields[3]) != 1 || !Colour(fields[3][0]).Valid() {
			return Frame{}, fmt.Errorf("%w: colour %q is not G or R", ErrMalformed, fields[3])
		}
		f.Colour = Colour(fields[3][0])
		f.AgeMS, err = parseUint(fields[4], "age_ms")
	case KindHeartbeat:
		if f.Boot, err = parseBoot(fields[1]); err != nil {
			return Frame{}, err
		}
		if f.UptimeS, err = parseUint(fields[2], "uptime_s"); err != nil {
			return Frame{}, err
		}
		if f.LastSeq, err = parseUint(fields[3], "last_seq"); err != nil {
			return Frame{}, err
		}
		if f.Unacked, err = parseUint(fields[4], "unacked"); err != nil {
			return Frame{}, err
		}
		if f.Unacked > f.LastSeq {
			err = fmt.Errorf("%w: unacked %d exceeds last_seq %d", ErrMalformed, f.Unacked, f.LastSeq)
		}
	case KindAck:
		if f.Boot, err = parseBoot(fields[1]); err != nil {
			return Frame{}, err
		}
		f.Seq, err = parseUint(fields[2], "seq")
	}
	if err != nil {
		return Frame{}, err
	}
	return f, nil
}

// fieldCount is the number of comma-separated fields of each kind, kind
// included; 0 for an unknown kind.
func fieldCount(k Kind) int {
	switch k {
	case KindHello:
		return 4
	case KindPress, KindHeartbeat:
		return 5
	case KindAck:
		return 3
	case KindQuery:
		return 1
	}
	return 0
}

// splitFields splits body on ',' into out and returns the count, or -1 if
// there are more fields than out holds. It does not allocate.
func splitFields(body []byte, out [][]byte) int {
	n, start := 0, 0
	for i := 0; i <= len(body); i++ {
		if i == len(body) || body[i] == ',' {
			if n == len(out) {
				return -1
			}
			out[n] = body[start:i]
			n++
			start = i + 1
		}
	}
	return n
}

// parseBoot accepts exactly 8 hex digits (either case, for lenient firmware).
func parseBoot(b []byte) (uint32, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: boot %q is not 8 hex digits", ErrMalformed, b)
	}
	var v uint32
	for _, c := range b {
		d, ok := hexVal(c)
		if !ok {
			return 0, fmt.Errorf("%w: boot %q is not 8 hex digits", ErrMalformed, b)
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parseUint accepts a decimal uint32 without sign, spaces or leading zeros
// (other than "0" itself), so every value has exactly one spelling.
func parseUint(b []byte, name string) (uint32, error) {
	if len(b) == 0 || len(b) > 10 || (len(b) > 1 && b[0] == '0') {
		return 0, fmt.Errorf("%w: %s %q is not a decimal number", ErrMalformed, name, b)
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %s %q is not a decimal number", ErrMalformed, name, b)
		}
		v = v*10 + uint64(c-'0')
	}
	if v > 0xFFFFFFFF {
		return 0, fmt.Errorf("%w: %s %q overflows 32 bits", ErrMalformed, name, b)
	}
	return uint32(v), nil
}

func parseSeq(b []byte) (uint32, error) {
	v, err := parseUint(b, "seq")
	if err == nil && v == 0 {
		err = fmt.Errorf("%w: seq 0 (presses count from 1)", ErrMalformed)
	}
	return v, err
}

// parseToken accepts 1..max bytes of [A-Za-z0-9._-].
func parseToken(b []byte, max int, name string) (string, error) {
	if len(b) == 0 || len(b) > max {
		return "", fmt.Errorf("%w: %s must be 1 to %d characters, got %d", ErrMalformed, name, max, len(b))
	}
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "", fmt.Errorf("%w: %s %q has a character outside [A-Za-z0-9._-]", ErrMalformed, name, b)
		}
	}
	return string(b), nil
}
