package snapshot

import (
	"strconv"
	"strings"
	"testing"

	"github.com/healstore/healstore/encoder"
)

// FuzzParseShardKey feeds ParseShardKey keys as a backend listing could
// return them. Snapshot pruning deletes what it parses, so a key that
// parses must be exactly one ShardKey builds: the parsed seq and id, and a
// stripe and shard number written as ShardKey writes them.
func FuzzParseShardKey(f *testing.F) {
	id, _ := encoder.ParseObjectID("00112233445566778899aabbccddeeff")
	for _, k := range []string{
		ShardKey(42, id, 3, 5), ShardKey(0, encoder.ObjectID{}, 0, 0), ShardKey(^uint64(0), id, 0x12345, 17),
		"shards/x", PointerKey, ShardPrefix + "zz", ShardPrefix + strings.Repeat("0", 16) + "-" + "x",
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		seq, pid, ok := ParseShardKey(key)
		if ok {
			// ParseShardKey returns no stripe or shard; take them from
			// the tail, which must be "-<stripe hex>.<shard>".
			tail := key[len(ShardPrefix)+16+1+32:]
			st, sh, found := strings.Cut(strings.TrimPrefix(tail, "-"), ".")
			stripe, err1 := strconv.ParseUint(st, 16, 31)
			shard, err2 := strconv.Atoi(sh)
			if !strings.HasPrefix(tail, "-") || !found || err1 != nil || err2 != nil {
				t.Fatalf("ParseShardKey(%q) accepted a key with no stripe and shard", key)
			}
			if want := ShardKey(seq, pid, int(stripe), shard); want != key {
				t.Fatalf("ParseShardKey(%q) = %d, %s, but ShardKey builds %q", key, seq, pid, want)
			}
		}

		// The other way: every key ShardKey builds parses back.
		var oid encoder.ObjectID
		copy(oid[:], key)
		s := uint64(len(key)) * 0x9e3779b97f4a7c15
		built := ShardKey(s, oid, len(key), len(key)%13)
		gs, gid, gok := ParseShardKey(built)
		if !gok || gs != s || gid != oid {
			t.Fatalf("ShardKey(%d, %s) = %q parses to %d, %s, %v", s, oid, built, gs, gid, gok)
		}
	})
}
