package index

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pulsegate/pulsegate/sync/regional"
	"github.com/pulsegate/pulsegate/sync/wire"
)

// publishers holds one regional.Publisher per customer, loaded from the
// store on first use. Its memory of what was published is what stops a cell
// being differenced against an earlier one, so a cell leaves the index only
// after the state that records it is saved.
//
// The cache assumes one index process per database: two processes would each
// hold their own memory (see DESIGN.md).
type publishers struct {
	mu sync.Mutex
	m  map[string]*publisherEntry
}

// publisherEntry is one customer's publisher. mu is held across the Cell
// calls of a request and the save that follows them.
type publisherEntry struct {
	mu    sync.Mutex
	p     *regional.Publisher // nil until loaded, and again after a failed save
	saved []byte              // the state as last loaded or saved
}

func (ps *publishers) entry(customer string) *publisherEntry {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e := ps.m[customer]
	if e == nil {
		e = &publisherEntry{}
		ps.m[customer] = e
	}
	return e
}

// forget drops a customer's publisher, so the next request reloads it (after
// an erasure, say).
func (ps *publishers) forget(customer string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.m, customer)
}

// regionCells decides the cells of one region of the customer for every
// period in [from, to] for which the region has releases, in period order,
// and saves the customer's publisher state if a cell was newly published.
// Only when it returns without error may the cells leave the index.
func (s *Server) regionCells(ctx context.Context, customer, region, from, to string) ([]regional.Cell, error) {
	rels, err := s.store.Releases(ctx, customer, region, from, to)
	if err != nil {
		return nil, err
	}
	e := s.pubs.entry(customer)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(ctx, s.store, customer); err != nil {
		return nil, err
	}
	var cells []regional.Cell
	for _, pb := range periodBuckets(rels) {
		cells = append(cells, e.p.Cell(s.rules, region, pb.period, pb.buckets))
	}
	if err := e.save(ctx, s.store, customer, s.now); err != nil {
		return nil, err
	}
	return cells, nil
}

func (e *publisherEntry) load(ctx context.Context, st *Store, customer string) error {
	if e.p != nil {
		return nil
	}
	state, err := st.PublisherState(ctx, customer)
	if err != nil {
		return err
	}
	p := regional.NewPublisher(customer)
	if state != nil {
		if err := p.UnmarshalState(state); err != nil {
			return fmt.Errorf("load publisher state of %s: %w", customer, err)
		}
	}
	e.p, e.saved = p, state
	return nil
}

// save stores the publisher's state if it changed. After a failure the
// publisher is dropped: it may remember a cell the store does not, and the
// next request starts again from what the store holds.
func (e *publisherEntry) save(ctx context.Context, st *Store, customer string, now func() time.Time) error {
	state, err := e.p.MarshalState()
	if err == nil && bytes.Equal(state, e.saved) {
		return nil
	}
	if err == nil {
		err = st.SavePublisherState(ctx, customer, state, now())
	}
	if err != nil {
		e.p, e.saved = nil, nil
		return err
	}
	e.saved = state
	return nil
}

type periodBucket struct {
	period  string
	buckets []regional.SiteBucket
}

// periodBuckets groups releases (sorted by period, site, colour, as
// Store.Releases returns them) into one bucket per site and period. A site
// whose green or red release is suppressed, or missing, counts as
// suppressed: a cell published without a colour that arrives later could
// never be republished with it (regional freezes a published site set's
// counts).
func periodBuckets(rels []wire.Release) []periodBucket {
	var out []periodBucket
	for i := 0; i < len(rels); {
		period := rels[i].Period
		pb := periodBucket{period: period}
		for i < len(rels) && rels[i].Period == period {
			site := rels[i].Site
			b := regional.SiteBucket{Site: site}
			var green, red bool
			for ; i < len(rels) && rels[i].Period == period && rels[i].Site == site; i++ {
				r := rels[i]
				b.Suppressed = b.Suppressed || r.Suppressed
				switch r.Colour {
				case "G":
					b.Green, green = r.Count, true
				case "R":
					b.Red, red = r.Count, true
				}
			}
			if !green || !red {
				b.Suppressed = true
			}
			if b.Suppressed {
				b.Green, b.Red = 0, 0
			}
			pb.buckets = append(pb.buckets, b)
		}
		out = append(out, pb)
	}
	return out
}
