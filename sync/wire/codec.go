package wire

import (
	"errors"
	"fmt"
	"regexp"
)

// Limits on what one batch may carry: a customer with a thousand offices
// uploads a few thousand releases a month.
const (
	MaxReleases   = 100_000
	MaxBatchBytes = 16 << 20
)

// ErrInvalid wraps every reason a batch is refused.
var ErrInvalid = errors.New("invalid batch")

var (
	siteRE   = regexp.MustCompile(`^[0-9a-f]{16}$`)
	periodRE = regexp.MustCompile(`^[0-9]{4}-(0[1-9]|1[0-2]|W(0[1-9]|[1-4][0-9]|5[0-3]))$`)
	regionRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	epsRE    = regexp.MustCompile(`^[0-9]{1,6}(\.[0-9]{1,6})?$`)
)

// Encode encodes b.
func Encode(b *Batch) ([]byte, error) {
	out, err := b.MarshalMsg(nil)
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	return out, nil
}

// Decode decodes and validates a batch from outside.
func Decode(p []byte) (*Batch, error) {
	if len(p) > MaxBatchBytes {
		return nil, fmt.Errorf("%w: %d bytes, max %d", ErrInvalid, len(p), MaxBatchBytes)
	}
	var b Batch
	rest, err := b.UnmarshalMsg(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrInvalid, len(rest))
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &b, nil
}

// Validate checks every field: the index stores nothing it cannot vouch for.
func (b *Batch) Validate() error {
	if b.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, b.Version, Version)
	}
	if len(b.Releases) > MaxReleases {
		return fmt.Errorf("%w: %d releases, max %d", ErrInvalid, len(b.Releases), MaxReleases)
	}
	for i, r := range b.Releases {
		if err := r.validate(); err != nil {
			return fmt.Errorf("%w: release %d: %v", ErrInvalid, i, err)
		}
	}
	for i, s := range b.Ledger {
		switch {
		case !siteRE.MatchString(s.Site):
			return fmt.Errorf("%w: ledger %d: bad site", ErrInvalid, i)
		case s.Year < 2000 || s.Year > 9999 || s.Releases < 0:
			return fmt.Errorf("%w: ledger %d: bad year or count", ErrInvalid, i)
		case !epsRE.MatchString(s.Epsilon):
			return fmt.Errorf("%w: ledger %d: bad epsilon %q", ErrInvalid, i, s.Epsilon)
		}
	}
	return nil
}

func (r Release) validate() error {
	switch {
	case !siteRE.MatchString(r.Site):
		return fmt.Errorf("bad site %q", r.Site)
	case !regionRE.MatchString(r.Region):
		return fmt.Errorf("bad region %q", r.Region)
	case !periodRE.MatchString(r.Period):
		return fmt.Errorf("bad period %q (want YYYY-MM or YYYY-Www)", r.Period)
	case r.Colour != "G" && r.Colour != "R":
		return fmt.Errorf("bad colour %q", r.Colour)
	case r.Count < 0:
		return fmt.Errorf("negative count")
	case r.Suppressed && r.Count != 0:
		return fmt.Errorf("a suppressed release carries a count")
	case r.Version == 0:
		return fmt.Errorf("version 0")
	case !epsRE.MatchString(r.Epsilon):
		return fmt.Errorf("bad epsilon %q", r.Epsilon)
	case r.Sensitivity == 0:
		return fmt.Errorf("sensitivity 0")
	}
	return nil
}
