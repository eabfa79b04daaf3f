// Package metastore is what healstore remembers: objects, stripes and the
// location and checksum of every shard, backends and their states, the
// repair queue, an index from backend to the stripes it holds, garbage
// awaiting deletion and the intents of writes in flight.
//
// Two layers. KV is a tiny ordered key-value interface with atomic,
// conditional batches; engines implement it (metastore/pebble embedded,
// metastore/etcd shared by several machines, metastore/memkv for tests)
// and metastore/metastoretest checks each against one conformance suite.
// Store is written once on top of KV and keeps every multi-record change
// in one batch, so a crash never leaves half of one. docs/metadata.md
// specifies the key layout and the record encodings.
//
// Errors are wrapped with context; test them with errors.Is against
// ErrNotFound, ErrExists, ErrConflict, ErrClosed, ErrSchema, ErrUnavailable,
// ErrLocked, ErrTooLarge, ErrCorrupt and ErrInvalid.
package metastore
