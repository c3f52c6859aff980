// Package cluster replicates the aggregated counts of all of a customer's
// offices across sites: the replicated state machine (pure, no I/O, no
// clock), the raft adapter, gossip membership, the peer PKI and join tokens,
// and the mutual-TLS transport that carries raft and forwarding RPCs.
//
// What is replicated is already aggregated: per office, per local day, per
// colour, a count. Nothing about a single press ever leaves the office.
package cluster

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/pulsegate/pulsegate/sync/anon"
)

// CommandType says what a replicated command does.
type CommandType uint8

// Commands.
const (
	CmdCounts   CommandType = iota + 1 // an office publishes its cumulative counts
	CmdSite                            // an office publishes its name, region, zone
	CmdAddToken                        // a join token is created
	CmdUseToken                        // a join token is spent by a new office
	CmdRelease                         // the leader releases a closed period's noisy counts
	CmdUploaded                        // the index acknowledged releases
	CmdIndex                           // the cluster enrolled with the central index
)

// Command is one raft log entry. The time of an event travels inside it
// (At, in Unix seconds): Apply never reads the clock.
type Command struct {
	Type     CommandType     `json:"t"`
	Counts   *CountsUpdate   `json:"c,omitempty"`
	Site     *SiteInfo       `json:"s,omitempty"`
	Token    *TokenRecord    `json:"k,omitempty"`
	UseToken *UseToken       `json:"u,omitempty"`
	Release  *ReleaseCmd     `json:"rel,omitempty"`
	Uploaded []ReleaseRef    `json:"up,omitempty"`
	Index    *IndexEnrolment `json:"idx,omitempty"`
}

// CountsUpdate is an office's cumulative counts for some days, stamped with
// the office's version, which only grows. Apply keeps, per (site, day), the
// value of the highest version: replays, retries, reordering and duplicates
// are harmless.
type CountsUpdate struct {
	Site    string      `json:"site"`
	Version uint64      `json:"v"`
	At      int64       `json:"at"` // the office's clock, Unix seconds: shows lag
	Days    []DayCounts `json:"days"`
}

// DayCounts is one local day's cumulative counts at an office. While the
// day is open at the office it travels colour-blind: Green and Red are zero
// and only Total is set, so no replica ever holds a colour of a day still
// being pressed. Once the day has closed, Green + Red == Total.
type DayCounts struct {
	Day    string `json:"d"` // YYYY-MM-DD in the office's time zone
	Closed bool   `json:"c,omitempty"`
	Green  uint64 `json:"g,omitempty"`
	Red    uint64 `json:"r,omitempty"`
	Total  uint64 `json:"t"`
}

// Validate checks the colour-blindness rule.
func (d DayCounts) Validate() error {
	if d.Closed && d.Green+d.Red != d.Total {
		return fmt.Errorf("%w: day %s: green %d + red %d != total %d", ErrBadCommand, d.Day, d.Green, d.Red, d.Total)
	}
	if !d.Closed && (d.Green != 0 || d.Red != 0) {
		return fmt.Errorf("%w: day %s is open: colours must not be replicated", ErrBadCommand, d.Day)
	}
	return nil
}

// SiteInfo describes an office. Version orders updates like counts.
type SiteInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Region   string `json:"region"`
	TimeZone string `json:"tz"`
	// GossipAddr lets members that lost touch find each other again,
	// whatever addresses they joined with.
	GossipAddr string `json:"gossip,omitempty"`
	Version    uint64 `json:"v"`
}

// TokenRecord is a join token as the cluster keeps it: never the secret,
// only its hash.
type TokenRecord struct {
	ID         string `json:"id"`
	SecretHash string `json:"hash"`
	Expires    int64  `json:"exp"` // Unix seconds
	UsedBy     string `json:"used_by,omitempty"`
}

// UseToken spends a token for a new office. At is the leader's clock.
type UseToken struct {
	ID         string `json:"id"`
	SecretHash string `json:"hash"`
	Site       string `json:"site"`
	At         int64  `json:"at"`
}

// Errors of applying commands. A token error is returned to the joiner.
var (
	ErrTokenUnknown = errors.New("join token unknown")
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenUsed    = errors.New("join token already used")
	ErrBadCommand   = errors.New("bad command")
)

type dayKey struct{ Site, Day string }

type dayVal struct {
	DayCounts
	Version uint64
}

// State is the replicated state. Its methods do no I/O and read no clock.
type State struct {
	days       map[dayKey]dayVal
	lastUpdate map[string]int64 // per site, the latest At
	sites      map[string]SiteInfo
	tokens     map[string]TokenRecord
	releases   map[releaseKey]ReleaseRecord
	ledger     anon.Ledger
	index      *IndexEnrolment
}

// NewState returns an empty state.
func NewState() *State {
	return &State{days: map[dayKey]dayVal{}, lastUpdate: map[string]int64{}, sites: map[string]SiteInfo{},
		tokens: map[string]TokenRecord{}, releases: map[releaseKey]ReleaseRecord{}}
}

// Apply applies one command.
func (s *State) Apply(c Command) error {
	switch c.Type {
	case CmdCounts:
		if c.Counts == nil || c.Counts.Site == "" {
			return fmt.Errorf("%w: counts without a site", ErrBadCommand)
		}
		u := c.Counts
		for _, d := range u.Days {
			if err := d.Validate(); err != nil {
				return err
			}
		}
		if u.At > s.lastUpdate[u.Site] {
			s.lastUpdate[u.Site] = u.At
		}
		for _, d := range u.Days {
			k := dayKey{u.Site, d.Day}
			if old, ok := s.days[k]; !ok || u.Version > old.Version {
				s.days[k] = dayVal{d, u.Version}
			}
		}
		return nil
	case CmdSite:
		if c.Site == nil || c.Site.ID == "" {
			return fmt.Errorf("%w: site without an id", ErrBadCommand)
		}
		if old, ok := s.sites[c.Site.ID]; !ok || c.Site.Version > old.Version {
			s.sites[c.Site.ID] = *c.Site
		}
		return nil
	case CmdAddToken:
		if c.Token == nil || c.Token.ID == "" || c.Token.SecretHash == "" {
			return fmt.Errorf("%w: token without id or hash", ErrBadCommand)
		}
		if _, ok := s.tokens[c.Token.ID]; ok {
			return fmt.Errorf("%w: token %s exists", ErrBadCommand, c.Token.ID)
		}
		s.tokens[c.Token.ID] = *c.Token
		return nil
	case CmdUseToken:
		return s.useToken(c.UseToken)
	case CmdRelease:
		return s.applyRelease(c.Release)
	case CmdUploaded:
		return s.applyUploaded(c.Uploaded)
	case CmdIndex:
		return s.applyIndex(c.Index)
	}
	return fmt.Errorf("%w: unknown type %d", ErrBadCommand, c.Type)
}

func (s *State) useToken(u *UseToken) error {
	if u == nil || u.ID == "" || u.Site == "" {
		return fmt.Errorf("%w: token use without id or site", ErrBadCommand)
	}
	// Spent and expired tokens are forgotten a day after they expire: the
	// time comes from the command, so every replica forgets the same ones.
	for id, t := range s.tokens {
		if u.At > t.Expires+24*3600 {
			delete(s.tokens, id)
		}
	}
	t, ok := s.tokens[u.ID]
	switch {
	case !ok || !hashEqual(t.SecretHash, u.SecretHash):
		return ErrTokenUnknown
	case t.UsedBy != "":
		if t.UsedBy == u.Site {
			return nil // the same office retrying its own join
		}
		return ErrTokenUsed
	case u.At > t.Expires:
		return ErrTokenExpired
	}
	t.UsedBy = u.Site
	s.tokens[u.ID] = t
	return nil
}

// SiteCounts is what the state holds about one office.
type SiteCounts struct {
	Info SiteInfo
	Days []DayCounts // sorted by day
	// Version is the highest version seen from the office.
	Version uint64
	// LastUpdate is the office's clock at its latest update, Unix seconds.
	LastUpdate int64
}

// Total is the colour-blind sum over all days.
func (sc SiteCounts) Total() uint64 {
	var n uint64
	for _, d := range sc.Days {
		n += d.Total
	}
	return n
}

// Sites returns every office known from its counts or its info, sorted by
// id.
func (s *State) Sites() []SiteCounts {
	by := map[string]*SiteCounts{}
	get := func(id string) *SiteCounts {
		sc, ok := by[id]
		if !ok {
			sc = &SiteCounts{Info: SiteInfo{ID: id}}
			by[id] = sc
		}
		return sc
	}
	for id, info := range s.sites {
		get(id).Info = info
	}
	for k, v := range s.days {
		sc := get(k.Site)
		sc.Version = max(sc.Version, v.Version)
		sc.Days = append(sc.Days, v.DayCounts)
	}
	for id, at := range s.lastUpdate {
		get(id).LastUpdate = at
	}
	for _, sc := range by {
		slices.SortFunc(sc.Days, func(a, b DayCounts) int { return cmp.Compare(a.Day, b.Day) })
	}
	out := make([]SiteCounts, 0, len(by))
	for _, id := range slices.Sorted(maps.Keys(by)) {
		out = append(out, *by[id])
	}
	return out
}

// hashEqual compares two secret hashes in constant time.
func hashEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Token returns a token record, for tests and the admin API.
func (s *State) Token(id string) (TokenRecord, bool) {
	t, ok := s.tokens[id]
	return t, ok
}

// snapshot is the state's serialised form.
type snapshot struct {
	Days       []snapDay              `json:"days"`
	LastUpdate map[string]int64       `json:"last_update"`
	Sites      map[string]SiteInfo    `json:"sites"`
	Tokens     map[string]TokenRecord `json:"tokens"`
	Releases   []ReleaseRecord        `json:"releases,omitempty"`
	Ledger     *anon.Ledger           `json:"ledger,omitempty"`
	Index      *IndexEnrolment        `json:"index,omitempty"`
}

type snapDay struct {
	Site string `json:"s"`
	DayCounts
	Version uint64 `json:"v"`
}

func (s *State) marshal() ([]byte, error) {
	snap := snapshot{Sites: s.sites, Tokens: s.tokens, LastUpdate: s.lastUpdate,
		Releases: s.Releases(), Ledger: &s.ledger, Index: s.index}
	for k, v := range s.days {
		snap.Days = append(snap.Days, snapDay{k.Site, v.DayCounts, v.Version})
	}
	slices.SortFunc(snap.Days, func(a, b snapDay) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Day, b.Day))
	})
	return json.Marshal(snap)
}

func unmarshalState(b []byte) (*State, error) {
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	s := NewState()
	for _, d := range snap.Days {
		if err := d.DayCounts.Validate(); err != nil {
			return nil, fmt.Errorf("decode snapshot: %w", err)
		}
		s.days[dayKey{d.Site, d.Day}] = dayVal{d.DayCounts, d.Version}
	}
	if snap.Sites != nil {
		s.sites = snap.Sites
	}
	if snap.LastUpdate != nil {
		s.lastUpdate = snap.LastUpdate
	}
	if snap.Tokens != nil {
		s.tokens = snap.Tokens
	}
	if snap.Ledger != nil {
		s.ledger = *snap.Ledger // UnmarshalJSON replayed and checked every charge
	}
	charged := map[uint64]anon.Entry{}
	for _, e := range s.ledger.Entries() {
		charged[e.Seq] = e
	}
	for _, r := range snap.Releases {
		// A release must be the one its charge paid for: a snapshot that
		// breaks the tie could hand out budget twice.
		if e, ok := charged[r.Version]; !ok || e.Site != r.Site || e.Period != r.Period {
			return nil, fmt.Errorf("decode snapshot: release %s %s has no charge of version %d", r.Site, r.Period, r.Version)
		}
		k := releaseKey{r.Site, r.Period}
		if _, dup := s.releases[k]; dup {
			return nil, fmt.Errorf("decode snapshot: release %s %s twice", r.Site, r.Period)
		}
		s.releases[k] = r
	}
	s.index = snap.Index
	return s, nil
}

// FSM adapts State to raft: it decodes log entries and guards the state
// with a lock so readers get consistent (stale, local) views.
type FSM struct {
	mu    sync.RWMutex
	state *State
}

// NewFSM returns an FSM over an empty state.
func NewFSM() *FSM { return &FSM{state: NewState()} }

// EncodeCommand encodes a command for raft.Apply.
func EncodeCommand(c Command) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return b, nil
}

// Apply implements raft.FSM. Its response is nil or an error.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Apply(c)
}

// Read runs fn with the state locked for reading. fn must not keep it.
func (f *FSM) Read(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Snapshot implements raft.FSM: the state is serialised at once, under the
// lock, so the snapshot is consistent and Persist needs no lock.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.state.marshal()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return fsmSnapshot(b), nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	s, err := unmarshalState(b)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}
