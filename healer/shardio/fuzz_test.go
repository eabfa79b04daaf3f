package shardio

import (
	"testing"
)

// FuzzParseShardKey feeds ParseShardKey keys as a backend listing could
// return them. A key that parses must be exactly the key ShardKey builds
// for the parsed stripe and index (so scrub and GC never act on a key the
// store did not write under that name), and every key ShardKey builds
// must parse back to its stripe and index.
func FuzzParseShardKey(f *testing.F) {
	var id [16]byte
	for i := range id {
		id[i] = byte(i * 17)
	}
	for _, k := range []string{
		ShardKey(id, 13), ShardKey([16]byte{}, 0), ShardKey([16]byte{1}, 2),
		"", "healstore-marker", "shards/", "shards/00112233445566778899aabbccddeeff",
		"shards/00112233445566778899aabbccddeeff.", "shards/00112233445566778899aabbccddeeff.-1",
		"shards/00112233445566778899aabbccddeeff.01", "shards/0011223344556677889Xaabbccddeeff.1",
		"other/00112233445566778899aabbccddeeff.1",
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		stripe, index, ok := ParseShardKey(key)
		if ok {
			if index < 0 {
				t.Fatalf("ParseShardKey(%q) gave index %d", key, index)
			}
			if want := ShardKey(stripe, index); want != key {
				t.Fatalf("ParseShardKey(%q) = %x, %d, but ShardKey of those is %q", key, stripe, index, want)
			}
		}

		// The other way: a key built from any stripe and index parses back.
		var s [16]byte
		copy(s[:], key)
		idx := len(key) * 7919
		built := ShardKey(s, idx)
		gs, gi, gok := ParseShardKey(built)
		if !gok || gs != s || gi != idx {
			t.Fatalf("ShardKey(%x, %d) = %q parses to %x, %d, %v", s, idx, built, gs, gi, gok)
		}
	})
}
