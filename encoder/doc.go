// Package encoder turns blocks of object data into sealed, erasure-coded
// stripes and back. It is a pure data transform: it does no I/O and keeps no
// state between calls beyond its configuration and buffer pools.
//
// A block goes through three steps on the way out:
//
//  1. Seal: optional zstd compression (kept only when it shrinks the block),
//     then optional authenticated encryption (AES-256-GCM or
//     XChaCha20-Poly1305) under a key derived per object from one master
//     key. The object id, block index, stripe id and policy are bound in as
//     associated data, so a block moved to another place does not open.
//  2. Code: the sealed bytes are cut into k data shards and Reed-Solomon
//     coded into m parity shards.
//  3. Frame: every shard gets a 128-byte self-describing header (magic,
//     version, stripe id, index, k, m, lengths, payload checksum, header
//     CRC) so a shard found on a backend can be checked on its own.
//
// Decoding verifies every shard it uses (header, payload checksum, and the
// checksum the metastore kept), treats a bad shard as missing, rebuilds what
// it needs from any k good shards and opens the seal. The byte-exact format
// is specified in docs/format.md; a checked-in golden shard set in
// testdata/golden keeps it from changing by accident.
//
// Codec is safe for concurrent use and spreads one block's work over idle
// cores; StreamEncoder encodes an io.Reader block by block ahead of its
// caller with a bounded number of stripes in flight.
package encoder
