// Package healstore is a self-healing erasure-coded object store.
//
// A Store cuts each object into blocks, seals each block (optional zstd,
// then authenticated encryption under a key derived from the master key),
// erasure-codes it into k data and m parity shards and puts every shard on
// a backend in its own failure domain (node or farm), recording where each
// went, with the shard's checksum, in the metastore. Reads fetch the data
// shards first, verify every shard against the metastore's checksum,
// rebuild what is missing from parity, and queue any stripe they found
// short for repair. The healer (package healer, run by `healstore daemon`) brings
// lost redundancy back.
//
// Start with Open on a Config (LoadConfig reads the TOML file that
// `healstore init` writes), then Put/Create, Open, Stat, List, Delete.
// OpenCatalog opens the metadata alone, for listing, renaming and
// deleting without waiting on any backend.
// Errors callers branch on are ErrNotFound, ErrExists,
// ErrInsufficientBackends (an *InsufficientBackendsError naming what was
// usable and what was needed), ErrAuth (wrong master key), ErrBadConfig
// and ErrClosed (the Reader, or the Store, was closed, also under a read
// or write still under way).
//
// Guarantees (DESIGN.md invariants):
//   - A Put returns only after its metadata commit is durable; a crash
//     leaves the old object or the new one, never a mix. Shards uploaded by
//     a write that never committed are recorded in write intents first, so
//     garbage collection finds them.
//   - No shard is deleted or overwritten before its replacement commits:
//     shard keys are unique per stripe, and replaced shards go to garbage
//     collection with a delay.
//   - Every shard read is verified against the metastore's checksum.
//   - No two shards of a stripe share a failure domain.
//   - No secret (master key, backend password, S3 secret) appears in logs,
//     errors or metadata records.
package healstore
