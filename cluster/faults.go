package cluster

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrPartitioned is the error of a dial or an accepted connection refused by
// Faults.Partition.
var ErrPartitioned = errors.New("partitioned by fault injection")

// Faults injects network faults into the connections of one or more Muxes, so
// tests can partition in-process nodes and emulate a WAN without root or
// network namespaces. Share one *Faults between all the Muxes of a test:
// every Mux reports its own advertised address and its peer's, so
// Partition("X") cuts X off from everyone.
//
// A peer is known by its advertised address: the one it is dialled at, and
// the one a dialler announces after the protocol byte. The announced address
// is not authenticated; Faults uses it for nothing but fault injection.
//
// Faults is safe for concurrent use. A nil *Faults injects nothing.
type Faults struct {
	mu     sync.Mutex
	parted map[string]bool
	delay  time.Duration
	links  map[faultLink]struct{}
}

// faultLink is a live connection as Faults sees it: its two ends, and a way
// to cut it.
type faultLink interface {
	ends() (local, remote string)
	// kill closes the connection at once, without a goodbye to the peer.
	kill()
}

// NewFaults returns a Faults that injects nothing until told to.
func NewFaults() *Faults {
	return &Faults{parted: make(map[string]bool), links: make(map[faultLink]struct{})}
}

// Partition cuts the given advertised addresses off: new connections to or
// from them fail, and the open ones are closed.
func (f *Faults) Partition(addrs ...string) {
	f.mu.Lock()
	for _, a := range addrs {
		f.parted[a] = true
	}
	var cut []faultLink
	for l := range f.links {
		local, remote := l.ends()
		if f.parted[local] || f.parted[remote] {
			cut = append(cut, l)
			delete(f.links, l)
		}
	}
	f.mu.Unlock()
	// Outside the lock: kill calls back into detach.
	for _, l := range cut {
		l.kill()
	}
}

// Heal undoes Partition for the given addresses. Connections closed by the
// partition stay closed; their owners dial again.
func (f *Faults) Heal(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		delete(f.parted, a)
	}
}

// SetDelay delays every write on every connection of the Muxes sharing f by
// d, so a request and its response see a round trip of about 2*d on top of
// the loopback's. Writes are delayed one at a time, so the delay also
// throttles a connection that writes many small chunks; raft and the RPC
// protocol write one buffered chunk per message. The TLS handshake is not
// delayed. Zero turns the delay off.
func (f *Faults) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// check reports whether a connection between local and remote may be made.
func (f *Faults) check(local, remote string) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checkLocked(local, remote)
}

func (f *Faults) checkLocked(local, remote string) error {
	if f.parted[local] || f.parted[remote] {
		return fmt.Errorf("%s to %s: %w", local, remote, ErrPartitioned)
	}
	return nil
}

// attach registers a new connection so Partition can cut it. It fails if
// either end is partitioned; checking and registering under one lock means
// no connection slips past a concurrent Partition.
func (f *Faults) attach(l faultLink) error {
	if f == nil {
		return nil
	}
	local, remote := l.ends()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkLocked(local, remote); err != nil {
		return err
	}
	f.links[l] = struct{}{}
	return nil
}

// detach forgets a closed connection.
func (f *Faults) detach(l faultLink) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, l)
}

// writeDelay waits out the write delay set by SetDelay, or until done is
// closed, in which case it reports false.
func (f *Faults) writeDelay(done <-chan struct{}) bool {
	if f == nil {
		return true
	}
	f.mu.Lock()
	d := f.delay
	f.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
