package drivers

import (
	"context"
	"fmt"
	"time"

	"go.bug.st/serial/enumerator"
)

// discover adds every USB serial port that appears, every RescanInterval,
// until ctx is done. Ports are managed by their kernel name (/dev/ttyACM0):
// a name the kernel gives to one device at a time, so no device is ever
// read by two ports. A port whose device goes away stays managed and is
// retried at ReopenMax; a board replugged under the same name is picked up
// again. Configure Ports with /dev/serial/by-id names for names that
// survive replugging into another socket.
func (m *Manager) discover(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := m.cfg.RescanInterval
		paths, err := DiscoverUSB()
		switch {
		case err != nil && !failing:
			m.log.Warn("discover serial ports", "err", err)
			failing = true
		case err != nil:
			m.log.Debug("discover serial ports", "err", err)
		default:
			failing = false
		}
		if err != nil {
			// Listing races with udev as devices come and go; try again soon.
			next = min(next, time.Second)
		}
		for _, path := range paths {
			m.AddPort(path)
		}
		t.Reset(jitter(next))
	}
}

// DiscoverUSB lists the USB serial ports that have a device name (the
// enumerator can return entries without one).
func DiscoverUSB() ([]string, error) {
	list, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, fmt.Errorf("list serial ports: %w", err)
	}
	var paths []string
	for _, d := range list {
		if d != nil && d.IsUSB && d.Name != "" {
			paths = append(paths, d.Name)
		}
	}
	return paths, nil
}
