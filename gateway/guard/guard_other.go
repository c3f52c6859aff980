//go:build !linux

package guard

import (
	"fmt"
	"runtime"
)

// Guard is the loaded egress guard of one cgroup. BPF exists only on
// Linux: here Open always fails with ErrUnavailable, so no Guard is ever
// open and every method reports that.
type Guard struct{}

func errNoBPF() error {
	return fmt.Errorf("%w: BPF cgroup programs need Linux, this is %s", ErrUnavailable, runtime.GOOS)
}

// Open reports that the guard cannot run on this system.
func Open(cfg Config) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, errNoBPF()
}

func (g *Guard) SetAllowlist([]Dest) error { return errNoBPF() }
func (g *Guard) SetMode(Mode) error        { return errNoBPF() }
func (g *Guard) Mode() Mode                { return ModeOff }
func (g *Guard) Ledger() ([]Flow, error)   { return nil, errNoBPF() }
func (g *Guard) Denied() ([]Denial, error) { return nil, errNoBPF() }
func (g *Guard) Active() bool              { return false }
func (g *Guard) Close() error              { return nil }
func (g *Guard) Remove() error             { return errNoBPF() }

// JoinCgroup reports that there are no cgroups on this system.
func JoinCgroup(dir string) error { return errNoBPF() }
