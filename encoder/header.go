package encoder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of the header in front of every shard payload.
const HeaderSize = 128

// FormatVersion is the shard format this package writes. ParseHeader
// rejects any other version; see docs/format.md for how it will evolve.
const FormatVersion = 1

// shardMagic opens every shard.
var shardMagic = [8]byte{'H', 'E', 'A', 'L', 'S', 'H', 'R', 'D'}

// Byte offsets in the shard header (all integers little-endian).
const (
	offMagic      = 0  // [8]  "HEALSHRD"
	offVersion    = 8  // u8   format version
	offChecksum   = 9  // u8   checksum algorithm id
	offIndex      = 10 // u16  shard index
	offK          = 12 // u16  data shards
	offM          = 14 // u16  parity shards
	offStripe     = 16 // [16] stripe id
	offPayloadLen = 32 // u32  payload bytes after the header
	offSealedLen  = 36 // u32  sealed block bytes spread over the k data payloads
	offDataLen    = 40 // u32  plaintext bytes of the block
	offLeafSize   = 44 // u32  leaf size of the payload checksum tree
	offPayloadSum = 48 // [32] payload checksum, zero padded
	offReserved   = 80 // [44] zero
	offHeaderCRC  = 124
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the parsed form of a shard header.
type Header struct {
	Version    uint8
	Stripe     StripeID
	Index      int // 0..K+M-1; indices below K are data shards
	K, M       int
	PayloadLen int    // bytes after the header
	SealedLen  int    // sealed block bytes, spread over the K data payloads (the rest is zero padding)
	DataLen    int    // plaintext bytes of the block
	Checksum   string // algorithm of PayloadSum: "xxh3-128" or "sha256"
	PayloadSum []byte // checksum of the payload (see Sum)
}

// maxPayloadLen bounds PayloadLen for any valid policy (64 MiB block, k=1,
// largest seal overhead); ParseHeader rejects anything larger.
var maxPayloadLen = payloadLen(maxSealedAny(MaxBlockSize), 1)

// payloadLen is the payload size of each shard for a sealed block of n
// bytes over k data shards: ceil(n/k) rounded up to 64 bytes, so each
// payload starts cache-line aligned in the shard buffer and SIMD code runs
// on whole vectors.
func payloadLen(n, k int) int {
	per := (n + k - 1) / k
	return (per + 63) &^ 63
}

// ShardAlign is the memory alignment of every shard of HeaderSize+per >=
// AlignedShardMin bytes in a stripe buffer: each such shard starts on its
// own 4 KiB boundary, so a backend can hand it to the disk with O_DIRECT
// (see backends/local) without copying it first. Smaller shards are packed
// back to back: the padding would cost more memory than direct I/O saves.
// Only the memory layout changes; a shard's bytes are the same.
const (
	ShardAlign      = 4096
	AlignedShardMin = 64 << 10
)

// slotLen is the distance between the starts of two neighbouring shards
// of HeaderSize+per bytes in a stripe buffer.
func slotLen(per int) int {
	s := HeaderSize + per
	if s >= AlignedShardMin {
		s = (s + ShardAlign - 1) &^ (ShardAlign - 1)
	}
	return s
}

// ParseHeader parses and checks the header at the start of b (a shard or
// just its first HeaderSize bytes): magic, version, header CRC and the
// internal consistency of its fields. It never allocates from a length
// field. Errors match ErrCorrupt.
func ParseHeader(b []byte) (Header, error) {
	fail := func(format string, args ...any) (Header, error) {
		return Header{}, &ShardError{Index: -1, Reason: "header: " + fmt.Sprintf(format, args...)}
	}
	if len(b) < HeaderSize {
		return fail("%d bytes, shorter than the %d-byte header", len(b), HeaderSize)
	}
	b = b[:HeaderSize]
	if !bytes.Equal(b[offMagic:offMagic+8], shardMagic[:]) {
		return fail("bad magic %q", b[offMagic:offMagic+8])
	}
	if want, got := binary.LittleEndian.Uint32(b[offHeaderCRC:]), crc32.Checksum(b[:offHeaderCRC], castagnoli); want != got {
		return fail("crc32c mismatch (stored %08x, computed %08x)", want, got)
	}
	h := Header{
		Version:    b[offVersion],
		Index:      int(binary.LittleEndian.Uint16(b[offIndex:])),
		K:          int(binary.LittleEndian.Uint16(b[offK:])),
		M:          int(binary.LittleEndian.Uint16(b[offM:])),
		PayloadLen: int(binary.LittleEndian.Uint32(b[offPayloadLen:])),
		SealedLen:  int(binary.LittleEndian.Uint32(b[offSealedLen:])),
		DataLen:    int(binary.LittleEndian.Uint32(b[offDataLen:])),
	}
	copy(h.Stripe[:], b[offStripe:offStripe+16])
	if h.Version != FormatVersion {
		return fail("format version %d, this healstore reads version %d only", h.Version, FormatVersion)
	}
	alg := checksumAlg(b[offChecksum])
	if alg != algXXH3 && alg != algSHA256 {
		return fail("unknown checksum algorithm id %d", b[offChecksum])
	}
	h.Checksum = alg.String()
	if ls := binary.LittleEndian.Uint32(b[offLeafSize:]); ls != leafSize {
		return fail("checksum leaf size %d, version 1 uses %d", ls, leafSize)
	}
	switch {
	case h.K < 1 || h.M < 1 || h.K+h.M > MaxShards:
		return fail("k=%d m=%d out of range", h.K, h.M)
	case h.Index >= h.K+h.M:
		return fail("index %d out of range for k=%d m=%d", h.Index, h.K, h.M)
	case h.DataLen > MaxBlockSize:
		return fail("data length %d above the %d-byte block limit", h.DataLen, MaxBlockSize)
	case h.PayloadLen > maxPayloadLen:
		return fail("payload length %d above the %d-byte limit", h.PayloadLen, maxPayloadLen)
	case h.SealedLen < sealFixedLen || h.SealedLen > h.K*h.PayloadLen:
		return fail("sealed length %d does not fit k=%d payloads of %d bytes", h.SealedLen, h.K, h.PayloadLen)
	case h.PayloadLen != payloadLen(h.SealedLen, h.K):
		return fail("payload length %d, sealed length %d over k=%d needs %d", h.PayloadLen, h.SealedLen, h.K, payloadLen(h.SealedLen, h.K))
	}
	for _, c := range b[offPayloadSum+alg.size() : offHeaderCRC] {
		if c != 0 {
			return fail("reserved bytes are not zero")
		}
	}
	h.PayloadSum = bytes.Clone(b[offPayloadSum : offPayloadSum+alg.size()])
	return h, nil
}

// put writes the header into b[:HeaderSize], every byte of it (buffers are
// reused, so nothing may be left over from an earlier stripe).
func (h *Header) put(b []byte, alg checksumAlg) {
	b = b[:HeaderSize]
	clear(b)
	copy(b[offMagic:], shardMagic[:])
	b[offVersion] = FormatVersion
	b[offChecksum] = byte(alg)
	binary.LittleEndian.PutUint16(b[offIndex:], uint16(h.Index))
	binary.LittleEndian.PutUint16(b[offK:], uint16(h.K))
	binary.LittleEndian.PutUint16(b[offM:], uint16(h.M))
	copy(b[offStripe:], h.Stripe[:])
	binary.LittleEndian.PutUint32(b[offPayloadLen:], uint32(h.PayloadLen))
	binary.LittleEndian.PutUint32(b[offSealedLen:], uint32(h.SealedLen))
	binary.LittleEndian.PutUint32(b[offDataLen:], uint32(h.DataLen))
	binary.LittleEndian.PutUint32(b[offLeafSize:], leafSize)
	copy(b[offPayloadSum:offPayloadSum+maxSumSize], h.PayloadSum)
	binary.LittleEndian.PutUint32(b[offHeaderCRC:], crc32.Checksum(b[:offHeaderCRC], castagnoli))
}
