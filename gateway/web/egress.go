package web

import (
	"net/http"
	"time"
)

// Egress is what the egress guard reports: what left this box, per
// destination, what it may reach, and every attempt it refused.
type Egress struct {
	Active  bool      `json:"active"`
	State   string    `json:"state"` // the mode, or why the guard is off
	Flows   []Flow    `json:"flows"`
	Denied  []Denial  `json:"denied"`
	Allowed []Allowed `json:"allowed"`
	Error   string    `json:"error,omitempty"`
}

// Flow is the traffic to one destination since the guard was loaded.
type Flow struct {
	Dest     string    `json:"dest"`
	Name     string    `json:"name,omitempty"` // "paired office", "central index", …
	Bytes    uint64    `json:"bytes"`
	Packets  uint64    `json:"packets"`
	LastSeen time.Time `json:"last_seen"`
}

// Denial is a destination the guard refused, and how often.
type Denial struct {
	Dest     string    `json:"dest"`
	Proto    string    `json:"proto,omitempty"`
	Count    uint64    `json:"count"`
	LastSeen time.Time `json:"last_seen"`
}

// Allowed is one entry of the allowlist.
type Allowed struct {
	Dest  string `json:"dest"`
	Proto string `json:"proto,omitempty"`
	Name  string `json:"name,omitempty"`
}

func (s *Server) handleEgress(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "egress", "What left this box", s.b.Egress(), flashOf(r), "")
}

func (s *Server) handleEgressJSON(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Egress())
}
