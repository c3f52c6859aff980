// Package anon decides what of an office's counts may leave the customer's
// cluster, and keeps the books on the privacy this costs.
//
// It owns four things, all pure except for the noise source:
//   - Period: the reporting unit (calendar month by default, or ISO week),
//     never finer than a day, and released only once it has closed;
//   - Sampler: exact discrete Laplace noise drawn with integer arithmetic from
//     crypto/rand (Canonne, Kamath and Steinke 2020, Algorithm 2);
//   - Decide and Publish: one bucket (site, period) turned into a Release of
//     noisy green and red counts, or a suppressed one when the noisy total is
//     below the threshold K;
//   - Ledger: the ε spent per site and calendar year, summed exactly, which
//     refuses a release that would pass the yearly cap.
//
// Exact counts go in; only a Release comes out. DESIGN.md explains why the
// mechanism is built the way it is.
package anon
