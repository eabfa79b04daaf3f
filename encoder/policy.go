package encoder

import (
	"fmt"
	"strconv"
)

// Limits of a policy.
const (
	// MaxBlockSize is the largest block a policy may use.
	MaxBlockSize = 64 << 20
	// MaxShards bounds k+m: the Reed-Solomon code works over GF(2^8).
	MaxShards = 256
	// DefaultBlockSize is the block size of DefaultPolicy.
	DefaultBlockSize = 4 << 20
)

// Names accepted in Policy fields.
const (
	CompressionNone = "none"
	CompressionZstd = "zstd"

	EncryptionNone     = "none"
	EncryptionAESGCM   = "aes-256-gcm"
	EncryptionXChaCha  = "xchacha20-poly1305"
	ChecksumXXH3       = "xxh3-128"
	ChecksumSHA256     = "sha256"
	defaultCompression = CompressionNone
)

// Policy says how blocks are cut, sealed and coded. The zero value is not
// valid; start from DefaultPolicy.
type Policy struct {
	K           int    `toml:"k" json:"k"`
	M           int    `toml:"m" json:"m"`
	BlockSize   int    `toml:"block_size" json:"block_size"`   // bytes; default 4 MiB; max 64 MiB
	Compression string `toml:"compression" json:"compression"` // "none" | "zstd"
	Encryption  string `toml:"encryption" json:"encryption"`   // "none" | "aes-256-gcm" | "xchacha20-poly1305"
	Checksum    string `toml:"checksum" json:"checksum"`       // "xxh3-128" | "sha256"
}

// DefaultPolicy is 4 data + 2 parity shards over 4 MiB blocks, no
// compression (most stored data is already compressed, and zstd costs more
// CPU than the coding itself), AES-256-GCM (hardware accelerated almost
// everywhere) and xxh3-128 checksums.
func DefaultPolicy() Policy {
	return Policy{
		K:           4,
		M:           2,
		BlockSize:   DefaultBlockSize,
		Compression: defaultCompression,
		Encryption:  EncryptionAESGCM,
		Checksum:    ChecksumXXH3,
	}
}

// Validate rejects a policy that cannot work. maxShardSize is the largest
// value the target backends take (0 = no limit); a policy whose full-block
// shards would exceed it is rejected. The error is a *PolicyError naming the
// field (as spelled in the TOML config) and matches ErrInvalidPolicy.
func (p Policy) Validate(maxShardSize int) error {
	bad := func(field, format string, args ...any) error {
		return &PolicyError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case p.K < 1:
		return bad("k", "must be at least 1, got %d", p.K)
	case p.M < 1:
		return bad("m", "must be at least 1 (a stripe without parity survives no loss), got %d", p.M)
	case p.K > MaxShards-p.M: // k+m > MaxShards, without overflowing for huge k
		return bad("k+m", "at most %d shards per stripe, got %d+%d", MaxShards, p.K, p.M)
	case p.BlockSize < 1:
		return bad("block_size", "must be at least 1 byte, got %d", p.BlockSize)
	case p.BlockSize > MaxBlockSize:
		return bad("block_size", "must be at most %d bytes (64 MiB), got %d", MaxBlockSize, p.BlockSize)
	}
	if _, ok := compressionIDs[p.Compression]; !ok {
		return bad("compression", "must be %q or %q, got %q", CompressionNone, CompressionZstd, p.Compression)
	}
	if _, ok := cipherIDs[p.Encryption]; !ok {
		return bad("encryption", "must be %q, %q or %q, got %q", EncryptionNone, EncryptionAESGCM, EncryptionXChaCha, p.Encryption)
	}
	if _, ok := checksumIDs[p.Checksum]; !ok {
		return bad("checksum", "must be %q or %q, got %q", ChecksumXXH3, ChecksumSHA256, p.Checksum)
	}
	if maxShardSize > 0 {
		if s := p.MaxShardSize(); s > maxShardSize {
			return bad("block_size", "blocks of %d bytes over k=%d make shards of up to %d bytes, above the backend limit of %d bytes; lower block_size or raise k",
				p.BlockSize, p.K, s, maxShardSize)
		}
	}
	return nil
}

// MaxShardSize is the size in bytes of the largest shard (header included)
// that a full block can produce under this policy. Compression never makes a
// shard larger: a block that zstd does not shrink is stored as is.
// It assumes a policy that passes Validate(0).
func (p Policy) MaxShardSize() int {
	if p.K < 1 {
		return 0
	}
	return HeaderSize + payloadLen(maxSealedLen(p), p.K)
}

// String is a canonical, human-readable form; it is also bound into every
// sealed block as associated data, so it must never change for version 1.
func (p Policy) String() string {
	return "k=" + strconv.Itoa(p.K) + ";m=" + strconv.Itoa(p.M) +
		";block_size=" + strconv.Itoa(p.BlockSize) +
		";compression=" + p.Compression + ";encryption=" + p.Encryption +
		";checksum=" + p.Checksum
}
