// Package bench holds the benchmarks behind `healstore bench`. Each one
// measures healstore and, in the same run, a baseline doing the same work
// on the same bytes without healstore, and reports both with their ratio.
//
// Encode (`healstore bench encode`) measures the encoder alone, in memory:
// the raw Reed-Solomon baseline, healstore's encode, and decode with all
// shards present and with m missing. Results and method are recorded in
// docs/benchmarks-encode.md.
package bench
