// Package web serves the appliance's local web UI: first-boot setup,
// accounts, the dashboard, board, office and index pairing, the audit log and
// the data-subject rights, plus /healthz and /metrics. Everything is
// server-rendered from embedded templates: no script, font or style from any
// other origin.
//
// It only ever receives what may be shown: the Status it renders carries
// per-colour figures for closed days alone, and cells under MinShown are
// rendered as "< 5".
package web

import (
	"strconv"
	"time"
)

// MinShown is the smallest count shown as a number; smaller cells read "< 5"
// so that a quiet day cannot be traced to the one or two people who pressed.
const MinShown = 5

// Status is everything the page and API show. Build it with per-colour
// figures for closed days only.
type Status struct {
	Site       string         `json:"site"`
	TimeZone   string         `json:"time_zone"`
	Today      string         `json:"today"`
	TodayTotal uint64         `json:"today_total"` // colour-blind
	ClosedDays []ClosedDay    `json:"closed_days"` // oldest first
	Boards     []Board        `json:"boards"`
	Simulated  bool           `json:"simulated"` // a simulated board is running
	Clock      Clock          `json:"clock"`
	Healthy    bool           `json:"healthy"`
	Problems   []string       `json:"problems,omitempty"`
	Cluster    *ClusterStatus `json:"cluster,omitempty"` // nil while not paired
	Index      *IndexStatus   `json:"index,omitempty"`   // nil while not paired
}

// IndexStatus is the cluster's link to the central index and its
// privacy-loss ledger: numbers of releases and ε, never counts.
type IndexStatus struct {
	Enrolled        bool        `json:"enrolled"`
	Customer        string      `json:"customer,omitempty"`
	URL             string      `json:"url,omitempty"`
	Released        int         `json:"released"`   // closed periods released, all offices
	Suppressed      int         `json:"suppressed"` // of which suppressed
	Pending         int         `json:"pending"`    // not yet acknowledged by the index
	BudgetExhausted int         `json:"budget_exhausted"`
	Uploads         int         `json:"uploads"` // by this office, since it started
	LastUpload      string      `json:"last_upload,omitempty"`
	LastError       string      `json:"last_error,omitempty"`
	Ledger          []LedgerRow `json:"ledger"`
}

// LedgerRow is one office's privacy loss in one calendar year.
type LedgerRow struct {
	Site     string `json:"site_id"`
	Name     string `json:"name"`
	Year     int    `json:"year"`
	Releases int    `json:"releases"`
	Epsilon  string `json:"epsilon"`
}

// ClusterStatus is this box's view of the customer's cluster.
type ClusterStatus struct {
	SiteID       string   `json:"site_id"`
	Role         string   `json:"role"`
	LeaderID     string   `json:"leader_id"`
	LeaderKnown  bool     `json:"leader_known"`
	LastContact  string   `json:"last_contact,omitempty"` // with the leader, ago
	AppliedIndex uint64   `json:"applied_index"`
	Voters       int      `json:"voters"`
	Offices      []Office `json:"offices"`
}

// Office is one office as replicated: its closed days' colours summed over
// the last 7 closed days, and colour-blind totals.
type Office struct {
	SiteID      string `json:"site_id"`
	Name        string `json:"name"`
	Region      string `json:"region"`
	Self        bool   `json:"self"`
	Member      bool   `json:"member"` // in the raft configuration
	Voter       bool   `json:"voter"`
	Alive       bool   `json:"alive"`
	Lag         string `json:"lag,omitempty"` // since its latest update arrived here
	OpenTotal   uint64 `json:"open_total"`    // presses on days still open there
	Total       uint64 `json:"total"`         // all days, colour-blind
	ClosedGreen Cell   `json:"closed_green_7d"`
	ClosedRed   Cell   `json:"closed_red_7d"`
	ClosedTotal Cell   `json:"closed_total_7d"`
}

// ClosedDay is one closed day's counts.
type ClosedDay struct {
	Day   string `json:"day"`
	Green Cell   `json:"green"`
	Red   Cell   `json:"red"`
	Total Cell   `json:"total"`
}

// Cell is a count as shown: the number, or "< 5" below MinShown.
type Cell uint64

func (c Cell) String() string {
	if c < MinShown {
		return "< " + strconv.Itoa(MinShown)
	}
	return strconv.FormatUint(uint64(c), 10)
}

// MarshalJSON writes a number, or the string "< 5" below MinShown.
func (c Cell) MarshalJSON() ([]byte, error) {
	if c < MinShown {
		return []byte(`"` + c.String() + `"`), nil
	}
	return strconv.AppendUint(nil, uint64(c), 10), nil
}

// Board is one board's health, without anything about its presses' colours.
type Board struct {
	Path          string    `json:"path"`
	BoardID       string    `json:"board_id"`
	Firmware      string    `json:"firmware"`
	Connected     bool      `json:"connected"`
	Simulated     bool      `json:"simulated"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	Unacked       uint32    `json:"unacked"`
	FramesDropped uint64    `json:"frames_dropped"`
	Suppressed    uint64    `json:"suppressed"`
	Reopens       uint64    `json:"reopens"`
	LastError     string    `json:"last_error,omitempty"`
	// Admin state: presses count only from an approved board that is
	// neither disabled nor in test mode. Unapproved counts presses since
	// start that were acknowledged but not counted for it.
	Name       string `json:"name,omitempty"`
	Approved   bool   `json:"approved"`
	TestMode   bool   `json:"test_mode"`
	Unapproved uint64 `json:"unapproved"`
}

// Clock says whether presses can be booked.
type Clock struct {
	Set       bool   `json:"set"`
	Now       string `json:"now"`
	NotBefore string `json:"not_before"`
	Refused   uint64 `json:"refused"` // presses left unacknowledged for it
}
