package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/pulsegate/pulsegate/sync/anon"
)

// What leaves the cluster is decided inside it. The leader draws the noise
// for a closed period once, outside the state machine (Apply must be
// deterministic), and proposes the noisy release; the first release of a
// (site, period) that commits is the only one ever: a retry, a second leader
// or a replay finds it and changes nothing. The ledger that pays for it is
// charged in the same Apply, so a release and its charge exist together or
// not at all. The exact counts stay in Days and never leave.

// ReleaseRecord is one office's noisy release of one closed period, as the
// cluster keeps it until, and after, the index has it.
type ReleaseRecord struct {
	Site        string `json:"site"`
	Period      string `json:"period"` // "2026-03" or "2026-W09"
	Suppressed  bool   `json:"sup,omitempty"`
	Green       int64  `json:"g,omitempty"` // noisy, ≥ 0; 0 when suppressed
	Red         int64  `json:"r,omitempty"`
	Epsilon     string `json:"eps"` // the ε this release spent
	Sensitivity uint64 `json:"sens"`
	// Version is the ledger sequence number of the charge that paid for the
	// release, set by Apply. It only grows over the cluster's life.
	Version uint64 `json:"ver,omitempty"`
	// At is the leader's clock when it drew the release, Unix seconds.
	At int64 `json:"at"`
	// Uploaded is set once the index has acknowledged this version.
	Uploaded bool `json:"up,omitempty"`
}

// ReleaseCmd proposes a release. Cap is the year cap the leader's rules set:
// the charge is refused if it would take the site's ε for the year (of the
// period's last day) past it.
type ReleaseCmd struct {
	Release ReleaseRecord `json:"rel"`
	Cap     string        `json:"cap"`
}

// ReleaseRef names one version of a release.
type ReleaseRef struct {
	Site    string `json:"site"`
	Period  string `json:"period"`
	Version uint64 `json:"ver"`
}

// IndexEnrolment is the cluster's credential for the central index, shared
// by every office so that whichever is leader can upload.
type IndexEnrolment struct {
	URL      string `json:"url"`
	Pin      string `json:"pin"` // the index's key, as "sha256:<hex>"
	Customer string `json:"customer"`
	CertPEM  []byte `json:"cert"`
	KeyPEM   []byte `json:"key"`
	At       int64  `json:"at"` // Unix seconds; a later enrolment replaces an earlier one
}

// ErrAlreadyReleased answers a release proposal for a bucket that was
// released before: the stored release stands and nothing is charged.
var ErrAlreadyReleased = errors.New("period already released")

type releaseKey struct{ Site, Period string }

func (s *State) applyRelease(c *ReleaseCmd) error {
	if c == nil {
		return fmt.Errorf("%w: release without a body", ErrBadCommand)
	}
	r := c.Release
	p, err := anon.ParsePeriod(r.Period)
	switch {
	case err != nil:
		return fmt.Errorf("%w: release period: %v", ErrBadCommand, err)
	case r.Site == "":
		return fmt.Errorf("%w: release without a site", ErrBadCommand)
	case r.Green < 0 || r.Red < 0:
		return fmt.Errorf("%w: release %s %s: negative count", ErrBadCommand, r.Site, r.Period)
	case r.Suppressed && (r.Green != 0 || r.Red != 0):
		return fmt.Errorf("%w: release %s %s: suppressed with counts", ErrBadCommand, r.Site, r.Period)
	case r.Version != 0 || r.Uploaded:
		return fmt.Errorf("%w: release %s %s: version and upload are the cluster's to set", ErrBadCommand, r.Site, r.Period)
	}
	eps, err := anon.ParseEpsilon(r.Epsilon)
	if err != nil {
		return fmt.Errorf("%w: release epsilon: %v", ErrBadCommand, err)
	}
	capEps, err := anon.ParseEpsilon(c.Cap)
	if err != nil {
		return fmt.Errorf("%w: release cap: %v", ErrBadCommand, err)
	}
	k := releaseKey{r.Site, r.Period}
	if _, ok := s.releases[k]; ok {
		return ErrAlreadyReleased
	}
	seq, err := s.ledger.ChargeRelease(r.Site, p.End.Year, r.Period, eps, capEps)
	if err != nil {
		return err
	}
	r.Version = seq
	s.releases[k] = r
	return nil
}

func (s *State) applyUploaded(refs []ReleaseRef) error {
	for _, ref := range refs {
		k := releaseKey{ref.Site, ref.Period}
		if r, ok := s.releases[k]; ok && r.Version == ref.Version {
			r.Uploaded = true
			s.releases[k] = r
		}
	}
	return nil
}

func (s *State) applyIndex(e *IndexEnrolment) error {
	if e == nil || e.URL == "" || e.Pin == "" || e.Customer == "" || len(e.CertPEM) == 0 || len(e.KeyPEM) == 0 {
		return fmt.Errorf("%w: incomplete index enrolment", ErrBadCommand)
	}
	if s.index == nil || e.At >= s.index.At {
		cp := *e
		s.index = &cp
	}
	return nil
}

// Releases returns every release, sorted by site then period.
func (s *State) Releases() []ReleaseRecord {
	out := make([]ReleaseRecord, 0, len(s.releases))
	for _, r := range s.releases {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b ReleaseRecord) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Period, b.Period))
	})
	return out
}

// Released reports whether site's period has been released.
func (s *State) Released(site, period string) bool {
	_, ok := s.releases[releaseKey{site, period}]
	return ok
}

// BudgetFits reports whether a release of eps for site in year stays within
// capEps: the leader asks before it draws noise it could not release.
func (s *State) BudgetFits(site string, year int, eps, capEps anon.Epsilon) bool {
	return s.ledger.Fits(site, year, eps, capEps)
}

// LedgerTotals returns the privacy-loss ledger per site and calendar year:
// numbers of releases and ε, never counts.
func (s *State) LedgerTotals() []anon.Total { return s.ledger.Totals() }

// Index returns the cluster's index enrolment, if any.
func (s *State) Index() (IndexEnrolment, bool) {
	if s.index == nil {
		return IndexEnrolment{}, false
	}
	return *s.index, true
}
