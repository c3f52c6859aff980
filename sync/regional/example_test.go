package regional_test

import (
	"fmt"

	"github.com/pulsegate/pulsegate/sync/regional"
)

func ExamplePublisher_Cell() {
	p := regional.NewPublisher("acme")
	buckets := []regional.SiteBucket{
		{Site: "lisbon", Green: 40, Red: 10},
		{Site: "porto", Green: 20, Red: 30},
		{Site: "madrid", Green: 25, Red: 25},
		{Site: "seville", Green: 15, Red: 35},
		{Site: "valencia", Green: 30, Red: 20},
	}
	c := p.Cell(regional.DefaultRules(), "iberia", "2026-03", buckets)
	fmt.Printf("published %v: %.1f %% green of %d presses from %d sites\n", c.Published, c.GreenPercent(), c.Total, c.Sites)

	// A sixth office's late bucket would make the difference of the two
	// versions that office's own counts.
	late := append(buckets, regional.SiteBucket{Site: "bilbao", Green: 12, Red: 9})
	c = p.Cell(regional.DefaultRules(), "iberia", "2026-03", late)
	fmt.Printf("published %v: %s\n", c.Published, c.Reason)
	// Output:
	// published true: 52.0 % green of 250 presses from 5 sites
	// published false: would_isolate
}
