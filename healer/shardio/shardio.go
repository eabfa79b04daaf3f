package shardio

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/healstore/healstore/backends"
)

// ShardPrefix starts every shard key. Other keys a store writes on a
// backend (the identity marker, metadata snapshots) never start with it.
const ShardPrefix = "shards/"

// ShardKey is the backend key of shard index of a stripe:
// "shards/<32 hex digits>.<index>". No shard key is a prefix of another key
// followed by '/', so file-path based backends (local, versitygw) accept
// them all.
func ShardKey(stripe [16]byte, index int) string {
	return ShardPrefix + hex.EncodeToString(stripe[:]) + "." + strconv.Itoa(index)
}

// ParseShardKey reverses ShardKey; ok is false for any other key.
func ParseShardKey(key string) (stripe [16]byte, index int, ok bool) {
	rest, found := strings.CutPrefix(key, ShardPrefix)
	if !found || len(rest) < 34 || rest[32] != '.' {
		return stripe, 0, false
	}
	if _, err := hex.Decode(stripe[:], []byte(rest[:32])); err != nil {
		return stripe, 0, false
	}
	index, err := strconv.Atoi(rest[33:])
	// Only the very key ShardKey builds: hex.Decode also takes upper case
	// and Atoi a sign or leading zeros, which would name keys the store
	// never wrote as its own.
	if err != nil || index < 0 || ShardKey(stripe, index) != key {
		return stripe, 0, false
	}
	return stripe, index, true
}

// Pool gives access to the store's open backends by name. ok is false for
// a backend that is unknown or could not be opened; shardio treats its
// shards as unreachable.
type Pool interface {
	Backend(name string) (b backends.Backend, ok bool)
}

// MapPool is a Pool over a fixed map, for tests and tools.
type MapPool map[string]backends.Backend

// Backend implements Pool.
func (m MapPool) Backend(name string) (backends.Backend, bool) {
	b, ok := m[name]
	return b, ok
}

// Loc is where one shard lives: a backend and a key, plus the checksum of
// the full shard that the metastore keeps. Backend == "" means the shard is
// missing (not yet rebuilt).
type Loc struct {
	Backend string
	Key     string
	Sum     []byte
}

func (l Loc) String() string {
	if l.Backend == "" {
		return "(missing)"
	}
	return fmt.Sprintf("%s:%s", l.Backend, l.Key)
}
