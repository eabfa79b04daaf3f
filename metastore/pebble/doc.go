// Package pebblekv is healstore's embedded metadata engine: a
// metastore.KV on a pebble database in one local directory.
//
// Every commit is synced (pebble.Sync) before Commit returns. Batch
// conditions are checked and the batch applied under the locks of the keys
// the batch names, held until the sync returned, which makes
// compare-and-swap exact within the process while commits on different
// keys share their WAL syncs; a file lock keeps every other process out of
// the directory (ErrLocked). The database carries a
// schema key written at creation: a database from a newer healstore, or a
// pebble database that is not healstore's, is refused with ErrSchema
// instead of being misread. pebble's informational logging (WAL replay,
// compactions) is silenced; its errors still reach the configured log.
//
// Scan, like every metastore.KV's, is not a snapshot. ScanPointInTime
// walks one pebble snapshot instead, so a reader that needs one
// consistent view of the whole database (the metadata snapshotter) gets
// it however busy the writers are.
package pebblekv
