package regional

import (
	"fmt"
	"testing"
)

// The combination check runs whenever a new site set is published for a
// period. Its cost grows with the cells already published for that period:
// here a large customer, 40 regions of 25 offices, each published in three
// versions (5 offices joined twice), plus the customer-wide cell.
func BenchmarkExposedGroups(b *testing.B) {
	var cells [][]string
	var everyone []string
	for r := range 40 {
		sites := names(fmt.Sprintf("r%02d-", r), 25)
		everyone = append(everyone, sites...)
		cells = append(cells, sites[:15], sites[:20], sites)
	}
	cells = append(cells, everyone)
	for b.Loop() {
		exposedGroups(cells, 5)
	}
}
