// Package wire holds what crosses from a customer's cluster to the central
// index: upload batches of released buckets, encoded with MessagePack
// (tinylib/msgp; the codecs in wire_gen.go are generated and committed).
//
// Everything here is already anonymised at the office: suppressed or
// noised counts per site, period and colour. No exact count, no day, no
// press ever travels.
package wire

//go:generate go tool msgp -file=wire.go -o=wire_gen.go -tests=false

// Version is the wire format's version; the index refuses others.
const Version = 1

// Batch is one upload: the releases of any number of sites of one customer.
// The customer is not in the batch: the index takes it from the client
// certificate, so a batch cannot speak for another customer.
type Batch struct {
	Version  int       `msg:"v"`
	BatchID  string    `msg:"id"` // random; for logs and the audit trail only
	Releases []Release `msg:"rel"`
	Ledger   []Spend   `msg:"led"`
}

// Release is one released bucket: a site's count of one colour over one
// closed period. The index upserts it by (customer, site, period, colour),
// keeping the highest release version, so resending is harmless.
type Release struct {
	Site        string `msg:"s"`
	Region      string `msg:"rg"`
	Period      string `msg:"p"` // "2026-03" or "2026-W09"
	Colour      string `msg:"c"` // "G" or "R"
	Suppressed  bool   `msg:"sup"`
	Count       int64  `msg:"n"` // noised, ≥ 0; 0 when suppressed
	Version     uint64 `msg:"ver"`
	Epsilon     string `msg:"eps"` // the budget this release spent, decimal
	Sensitivity uint64 `msg:"sens"`
}

// Spend is a site's cumulative privacy loss for a calendar year, as the
// cluster's ledger has it: numbers of releases and ε, never counts.
type Spend struct {
	Site     string `msg:"s"`
	Year     int    `msg:"y"`
	Releases int    `msg:"r"`
	Epsilon  string `msg:"eps"`
}
