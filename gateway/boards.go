package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pulsegate/pulsegate/gateway/store"
)

// ErrUnknownBoard reports a board id that no port has said hello with and
// the store has never booked.
var ErrUnknownBoard = errors.New("unknown board")

// BoardView is one board as the admin pages show it: what the serial
// manager knows of it now, what an admin decided about it, and its presses
// that were acknowledged without being counted. No field is per colour.
type BoardView struct {
	ID, Name, Path, Firmware string

	Connected, Simulated bool
	// Approved: an admin approved the board, or serial.auto_approve treats
	// every board as approved. Its presses count unless it is Disabled or
	// in TestMode.
	Approved, Disabled, TestMode bool

	LastHeartbeat, FirstSeen time.Time
	Unacked                  uint32

	FramesDropped, Suppressed uint64
	// Unapproved and TestPresses count presses since this process started
	// that were acknowledged but not counted because of the board's state.
	Unapproved, TestPresses uint64
	LastTestPress           time.Time

	LastError string
}

// BoardViews returns every board seen: connected now (after its hello) or
// recorded in the store, sorted by name, then id.
func (g *Gateway) BoardViews() ([]BoardView, error) {
	admins, err := g.store.BoardAdmins()
	if err != nil {
		return nil, err
	}
	records, err := g.store.Boards()
	if err != nil {
		return nil, fmt.Errorf("read boards: %w", err)
	}
	views := map[string]*BoardView{}
	view := func(id string) *BoardView {
		if v, ok := views[id]; ok {
			return v
		}
		v := &BoardView{ID: id}
		views[id] = v
		return v
	}
	for id := range admins {
		view(id)
	}
	for id := range records {
		view(id)
	}
	// A board moved between ports has said hello on both: the open port,
	// else the latest hello, describes it.
	simPath := g.SimDevice()
	lastHello := map[string]time.Time{}
	for _, b := range g.boards.Boards() {
		if b.BoardID == "" {
			continue // no hello yet: nothing to name or approve
		}
		v := view(b.BoardID)
		if seen, ok := lastHello[b.BoardID]; ok && (v.Connected && !b.Connected || v.Connected == b.Connected && !b.LastHello.After(seen)) {
			continue
		}
		lastHello[b.BoardID] = b.LastHello
		v.Path, v.Firmware, v.Connected = b.Path, b.Firmware, b.Connected
		v.Simulated = simPath != "" && b.Path == simPath
		v.LastHeartbeat, v.Unacked, v.FramesDropped, v.LastError = b.LastHeartbeat, b.Unacked, b.FramesDropped, b.LastError
	}
	out := make([]BoardView, 0, len(views))
	for id, v := range views {
		a := admins[id]
		v.Name, v.Disabled, v.TestMode, v.FirstSeen = a.Name, a.Disabled, a.TestMode, a.FirstSeen
		v.Approved = a.Approved || g.cfg.Serial.AutoApprove
		v.Suppressed = records[id].Suppressed
		bs := g.intake.BoardStats(id)
		v.Unapproved, v.TestPresses, v.LastTestPress = bs.Unapproved, bs.TestPresses, bs.LastTestPress
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b BoardView) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// ApproveBoard approves a board, so that its presses count from the next
// batch on, or withdraws the approval. Presses acknowledged while it was not
// approved stay uncounted.
func (g *Gateway) ApproveBoard(id string, approve bool) error {
	return g.changeBoard(id, "approve board", func(a *store.BoardAdmin, now time.Time) {
		switch {
		case approve && !a.Approved:
			a.ApprovedAt = now
		case !approve:
			a.ApprovedAt = time.Time{}
		}
		a.Approved = approve
	}, "approved", approve)
}

// DisableBoard stops counting a board's presses (they are still
// acknowledged), or counts them again, without changing its approval.
func (g *Gateway) DisableBoard(id string, disable bool) error {
	return g.changeBoard(id, "disable board", func(a *store.BoardAdmin, _ time.Time) {
		a.Disabled = disable
	}, "disabled", disable)
}

// NameBoard names a board; an empty name (after trimming spaces) removes
// the name. A name is 1 to 64 printable characters (store.ValidateBoardName).
func (g *Gateway) NameBoard(id, name string) error {
	name = strings.TrimSpace(name)
	if name != "" {
		if err := store.ValidateBoardName(name); err != nil {
			return fmt.Errorf("name board %q: %w", id, err)
		}
	}
	return g.changeBoard(id, "name board", func(a *store.BoardAdmin, _ time.Time) {
		a.Name = name
	}, "name", name)
}

// SetBoardTestMode puts a board in test mode, where its presses are shown
// as having arrived (never their colour) and not counted, or takes it out.
func (g *Gateway) SetBoardTestMode(id string, on bool) error {
	return g.changeBoard(id, "set board test mode", func(a *store.BoardAdmin, _ time.Time) {
		a.TestMode = on
	}, "test_mode", on)
}

// changeBoard applies change to a known board's admin record and logs it.
// The intake sees the change from its next batch on.
func (g *Gateway) changeBoard(id, what string, change func(a *store.BoardAdmin, now time.Time), logKey string, logValue any) error {
	known, err := g.knownBoard(id)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, id, err)
	}
	if !known {
		return fmt.Errorf("%s %q: %w", what, id, ErrUnknownBoard)
	}
	now := g.opts.Now().UTC()
	err = g.store.SetBoardAdmin(id, func(a *store.BoardAdmin) error {
		if a.FirstSeen.IsZero() { // said hello, nothing booked yet
			a.FirstSeen = now
		}
		change(a, now)
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	g.log.Info("board changed by an admin", "board", id, logKey, logValue)
	return nil
}

// knownBoard reports whether id has said hello on a port or is in the store.
func (g *Gateway) knownBoard(id string) (bool, error) {
	for _, b := range g.boards.Boards() {
		if b.BoardID == id && id != "" {
			return true, nil
		}
	}
	admins, err := g.store.BoardAdmins()
	if err != nil {
		return false, err
	}
	if _, ok := admins[id]; ok {
		return true, nil
	}
	records, err := g.store.Boards()
	if err != nil {
		return false, err
	}
	_, ok := records[id]
	return ok, nil
}
