package encoder

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/zeebo/xxh3"
)

// leafSize is the piece of a payload hashed on its own (see payloadSum). It
// matches the column width the codec processes at once, so every piece is
// hashed while it is still in the CPU cache, and pieces hash on any core.
const leafSize = 32 << 10

// checksumAlg is the on-disk id of a checksum algorithm.
type checksumAlg uint8

const (
	algXXH3   checksumAlg = 1
	algSHA256 checksumAlg = 2
)

var checksumIDs = map[string]checksumAlg{
	ChecksumXXH3:   algXXH3,
	ChecksumSHA256: algSHA256,
}

// maxSumSize is the room for a checksum in the shard header.
const maxSumSize = 32

func (a checksumAlg) size() int {
	if a == algSHA256 {
		return 32
	}
	return 16
}

func (a checksumAlg) String() string {
	switch a {
	case algXXH3:
		return ChecksumXXH3
	case algSHA256:
		return ChecksumSHA256
	}
	return "unknown"
}

// hash writes the plain hash of b into dst[:a.size()].
func (a checksumAlg) hash(dst, b []byte) {
	if a == algSHA256 {
		s := sha256.Sum256(b)
		copy(dst, s[:])
		return
	}
	s := xxh3.Hash128(b).Bytes() // big-endian: high 64 bits first
	copy(dst, s[:])
}

func numLeaves(n int) int { return (n + leafSize - 1) / leafSize }

// leafBuf returns a buffer for the leaf hashes of an n-byte payload, with
// the 8-byte length prefix already in place.
func (a checksumAlg) leafBuf(n int) []byte {
	buf := make([]byte, 8+numLeaves(n)*a.size())
	binary.LittleEndian.PutUint64(buf, uint64(n))
	return buf
}

// hashLeaf hashes leaf i of payload into its slot of buf.
func (a checksumAlg) hashLeaf(buf, payload []byte, i int) {
	end := min((i+1)*leafSize, len(payload))
	a.hash(buf[8+i*a.size():], payload[i*leafSize:end])
}

// root finishes a leaf buffer into the payload checksum.
func (a checksumAlg) root(buf []byte) []byte {
	out := make([]byte, a.size())
	a.hash(out, buf)
	return out
}

// payloadSum is the checksum of a shard payload:
//
//	H(le64(len(p)) || H(leaf_0) || ... || H(leaf_n-1))
//
// with leaves of 32 KiB (the last one shorter; none for an empty payload).
// The tree lets a shard be hashed piece by piece while it is produced, on
// several cores, without streaming state.
func (a checksumAlg) payloadSum(p []byte) []byte {
	buf := a.leafBuf(len(p))
	for i := range numLeaves(len(p)) {
		a.hashLeaf(buf, p, i)
	}
	return a.root(buf)
}

// shardSum is Sum given the head (at most HeaderSize bytes), the checksum of
// the rest and the total length: it costs one small hash.
func (a checksumAlg) shardSum(total int, head, restSum []byte) []byte {
	buf := make([]byte, 0, 8+len(head)+len(restSum))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(total))
	buf = append(buf, head...)
	buf = append(buf, restSum...)
	return a.root(buf)
}

// Sum returns the checksum of b under algorithm alg ("xxh3-128" or
// "sha256"), or nil for an unknown algorithm. For a full shard it equals the
// shard's entry in Stripe.Sums, the value the metastore keeps:
//
//	Sum(b) = H(le64(len(b)) || b[:h] || payloadSum(b[h:])),  h = min(len(b), 128)
//
// Splitting off the first 128 bytes (a shard header) means a shard's sum
// follows from its header and its payload checksum, so every shard byte is
// hashed once, not twice. docs/format.md specifies the construction.
func Sum(alg string, b []byte) []byte {
	a, ok := checksumIDs[alg]
	if !ok {
		return nil
	}
	h := min(len(b), HeaderSize)
	return a.shardSum(len(b), b[:h], a.payloadSum(b[h:]))
}
