// Package shardio moves the shards of one stripe between memory and
// backends. The write path, the read path and the healer's rebuilder share
// it, so every shard is named, placed, retried and verified the same way.
//
//   - ShardKey names a shard on a backend; ParseShardKey reverses it (for
//     garbage collection and orphan listing).
//   - Upload sends shards to their targets in parallel. A failed shard is
//     retried on another eligible backend (spares first) that keeps the
//     stripe's failure domains distinct; the caller is told before each
//     retry so it can record the new location in its write intent first.
//     Upload reports which backend each shard landed on and every location
//     tried in vain (which may hold a partial or ambiguous copy and so must
//     go to garbage collection).
//   - Fetch reads enough shards of a stripe to decode it: the preferred
//     indices first (data shards, which need no decoding), more when some
//     are missing, unreachable or fail verification against the checksum
//     the metastore keeps, and one extra (a hedge) whenever the slowest
//     outstanding request lags. It reports every index it found missing,
//     unreachable or corrupt, so the caller can queue a repair. A caller
//     that verifies shards itself while using them (the read path, in
//     encoder.Codec.DecodeBlock) may leave verification to that step and
//     pass the good shards back in Have when it needs more.
//
// The package knows nothing of the metastore or the encoder: callers pass
// locations and a verify function (encoder.Codec.VerifyShard fits).
package shardio
