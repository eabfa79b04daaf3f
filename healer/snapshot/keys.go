package snapshot

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/healstore/healstore/encoder"
)

// PointerKey is the backend key of the pointer every backend carries.
const PointerKey = "healstore-snapshot-pointer"

// ShardPrefix starts the backend key of every snapshot shard. It shares no
// prefix with data shard keys ("shards/"), so the healer's scrubber and
// garbage collector never mistake a snapshot shard for data.
const ShardPrefix = "healstore-snap/"

// ShardKey names shard `shard` of stripe `stripe` of snapshot id with
// sequence number seq: "healstore-snap/<seq 16 hex>-<id 32 hex>-<stripe 4+
// hex>.<shard>". The sequence number leads so that pruning can tell old
// leftovers from a snapshot another process is still uploading.
func ShardKey(seq uint64, id encoder.ObjectID, stripe, shard int) string {
	return fmt.Sprintf("%s%016x-%s-%04x.%d", ShardPrefix, seq, id, stripe, shard)
}

// ParseShardKey reverses ShardKey; ok is false for any other key.
func ParseShardKey(key string) (seq uint64, id encoder.ObjectID, ok bool) {
	rest, found := strings.CutPrefix(key, ShardPrefix)
	if !found || len(rest) < 16+1+32+1 || rest[16] != '-' || rest[49] != '-' {
		return 0, id, false
	}
	seq, err := strconv.ParseUint(rest[:16], 16, 64)
	if err != nil {
		return 0, id, false
	}
	id, err = encoder.ParseObjectID(rest[17:49])
	if err != nil {
		return 0, id, false
	}
	// Pruning deletes what parses: the stripe and shard numbers must
	// follow, and the key must be the very one ShardKey builds (lower-case
	// hex, no extra digits or signs).
	st, sh, found := strings.Cut(rest[50:], ".")
	stripe, err1 := strconv.ParseUint(st, 16, 31)
	shard, err2 := strconv.ParseUint(sh, 10, 31)
	if !found || err1 != nil || err2 != nil || ShardKey(seq, id, int(stripe), int(shard)) != key {
		return 0, encoder.ObjectID{}, false
	}
	return seq, id, true
}

// Key derivation. Each use of the master key gets its own HKDF salt, so a
// snapshot key never equals an object key, and the pointer key is never a
// codec key.
var (
	snapshotKeySalt = []byte("healstore/v1 snapshot key")
	pointerKeySalt  = []byte("healstore/v1 snapshot pointer key")
	keyCheckLabel   = []byte("healstore/v1 snapshot pointer key check")
)

// Keys are the keys a Snapshotter and a recovery derive from the master
// key. They never leave the process.
type Keys struct {
	codec   []byte      // master key handed to encoder.NewCodec for snapshots
	pointer cipher.AEAD // seals pointers
	check   [8]byte     // identifies the master key in a pointer's clear header
}

// DeriveKeys derives the snapshot keys from the 32-byte master key.
func DeriveKeys(master []byte) (*Keys, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("snapshot: the master key must be 32 bytes, got %d", len(master))
	}
	codec, err := hkdf.Key(sha256.New, master, snapshotKeySalt, "codec", 32)
	if err != nil {
		return nil, fmt.Errorf("snapshot: derive key: %w", err)
	}
	pk, err := hkdf.Key(sha256.New, master, pointerKeySalt, "aes-256-gcm", 32)
	if err != nil {
		return nil, fmt.Errorf("snapshot: derive key: %w", err)
	}
	defer clear(pk)
	blk, err := aes.NewCipher(pk)
	if err != nil {
		return nil, fmt.Errorf("snapshot: pointer cipher: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("snapshot: pointer cipher: %w", err)
	}
	k := &Keys{codec: codec, pointer: aead}
	m := hmac.New(sha256.New, master)
	m.Write(keyCheckLabel)
	copy(k.check[:], m.Sum(nil))
	return k, nil
}

// KeyCheck is a short one-way fingerprint of the master key, written in
// the clear in every pointer so that recovery with the wrong key says so
// instead of calling every pointer corrupt. It reveals nothing about the
// key beyond equality.
func (k *Keys) KeyCheck() string { return hex.EncodeToString(k.check[:]) }

// snapshotPolicy is the policy snapshots are sealed and coded with: the
// store's k and m (so a snapshot survives what data survives), zstd (the
// metadata is JSON and shrinks several times), AES-256-GCM whatever the data
// policy says, and blocks small enough that a shard fits every backend.
func snapshotPolicy(k, m, maxShard int) (encoder.Policy, error) {
	p := encoder.Policy{
		K: k, M: m, BlockSize: 4 << 20,
		Compression: encoder.CompressionZstd,
		Encryption:  encoder.EncryptionAESGCM,
		Checksum:    encoder.ChecksumXXH3,
	}
	for maxShard > 0 && p.BlockSize > 64<<10 && p.MaxShardSize() > maxShard {
		p.BlockSize /= 2
	}
	if err := p.Validate(maxShard); err != nil {
		return p, fmt.Errorf("snapshot policy: %w", err)
	}
	return p, nil
}
