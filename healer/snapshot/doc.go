// Package snapshot keeps healstore's metadata alive when the machine that
// holds it dies: it copies the whole metastore onto the data backends and
// reads it back on a new machine.
//
// A snapshot is every key and value of the metastore at one point in time,
// serialized as a record stream (format.go), sealed and erasure coded by
// encoder.Codec exactly like object data (zstd compression and AES-256-GCM
// encryption always on, under a key derived from the master key, the
// snapshot's random id standing in for an object id), and spread over the
// backends in distinct failure domains under keys "healstore-snap/...".
//
// Every backend also holds a small pointer, "healstore-snapshot-pointer",
// naming the snapshots kept (newest first, a few), where each of their
// shards lives and the specs of the backends holding them (specs carry
// secret refs only, never secrets). The pointer is sealed with an AEAD key
// derived from the master key, so a hostile backend can neither read nor
// forge it; it can only withhold it or replay an older one, which recovery
// defeats by taking the newest pointer any backend offers.
//
// Recovery needs the master key and one reachable backend: its pointer
// names the others. Restore verifies every shard against the checksum the
// pointer recorded, the seal, and a SHA-256 of the whole stream, and falls
// back to an older snapshot when the newest cannot be read.
//
// The package does not import the root healstore package: the store builds
// the Members and hands over its metastore.
package snapshot
