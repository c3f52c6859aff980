package drivers

import "time"

// Press is one press as the gateway books it. No field identifies a person:
// a board, a power-up, a counter, a colour and when it happened.
type Press struct {
	Board    string    // board_id from the port's hello
	Boot     uint32    // the board's power-up the press belongs to
	Seq      uint32    // from 1 per power-up; with Board and Boot it names the press
	Colour   Colour    // Green or Red
	Received time.Time // when the frame arrived (Config.Now)
	AgeMS    uint32    // how long before Received the button was pressed, by the board's clock
}

// Sink is what the Manager hands presses to; the gateway's durable intake
// implements it. Both methods are called from a port's reading goroutine, so
// they must not block for long.
type Sink interface {
	// SubmitPress offers a press, possibly again (boards resend until acked).
	// Once the press is stored, the sink calls ack, from any goroutine, with
	// the cumulative seq that is durable for (p.Board, p.Boot): every seq up
	// to it. If it never calls ack the board resends the press.
	SubmitPress(p Press, ack func(seq uint32))

	// SubmitHeartbeat reports that the board holds nothing at or below
	// boardAcked (its last_seq minus its unacked count): anything there is
	// either stored or lost for good. The sink may reply through ack with the
	// cumulative seq it has for (board, boot), which lets a board whose acks
	// were lost drop what it still holds.
	SubmitHeartbeat(board string, boot uint32, boardAcked uint32, ack func(seq uint32))
}

// BoardState is what the Manager knows of one port and the board on it.
type BoardState struct {
	Path      string // the device path as configured or discovered
	Connected bool   // the port is open

	// From the last hello on this port; kept while disconnected.
	BoardID  string
	Firmware string
	Boot     uint32

	LastHello     time.Time
	LastHeartbeat time.Time
	LastByte      time.Time

	// From the last heartbeat of the current boot.
	UptimeS uint32
	LastSeq uint32
	Unacked uint32

	// Decoder counters, cumulative across reopens.
	FramesOK      uint64
	FramesDropped uint64
	BadCRC        uint64
	NoiseBytes    uint64

	Presses   uint64 // press frames received, resends included
	Reopens   uint64 // opens after the first successful one
	LastError string // why the port last closed or failed to open
}
