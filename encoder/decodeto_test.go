package encoder

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestDecodeBlockTo checks DecodeBlockTo against DecodeBlock for every
// policy: all shards present, m shards missing, a corrupt data shard
// (which must count as missing), a destination too small, and a reused
// destination full of stale bytes.
func TestDecodeBlockTo(t *testing.T) {
	rng, _ := seedRand(t)
	for _, p := range allPolicies(4, 2, testBlock) {
		c := newCodec(t, p)
		for _, size := range []int{0, 1, testBlock - 1, testBlock} {
			t.Run(fmt.Sprintf("%s/%d", p, size), func(t *testing.T) {
				data := fill(rng, size)
				obj, id := NewObjectID(), NewStripeID()
				st, err := c.EncodeBlock(obj, 5, id, data)
				if err != nil {
					t.Fatal(err)
				}
				orig := cloneShards(st.Shards)
				dst := bytes.Repeat([]byte{0xee}, testBlock+7)
				check := func(what string, shards [][]byte) {
					t.Helper()
					clear(dst)
					n, err := c.DecodeBlockTo(dst, obj, 5, id, shards, st.Sums)
					if err != nil || n != size || !bytes.Equal(dst[:n], data) {
						t.Fatalf("%s: n %d, err %v, equal %v", what, n, err, bytes.Equal(dst[:max(n, 0)], data))
					}
				}
				check("all present", st.Shards)
				missing := slices.Clone(st.Shards)
				for _, i := range rng.Perm(p.K + p.M)[:p.M] {
					missing[i] = nil
				}
				check("m missing", missing)
				// A flipped payload byte in a data shard: verification must
				// reject it and rebuild the shard from parity.
				bad := slices.Clone(st.Shards)
				i := rng.IntN(p.K)
				bad[i] = bytes.Clone(bad[i])
				bad[i][HeaderSize+rng.IntN(len(bad[i])-HeaderSize)] ^= 0x10
				check(fmt.Sprintf("data shard %d corrupt", i), bad)
				// Too many lost, counting the corrupt one.
				tooFew := slices.Clone(bad)
				dropped := 0
				for j := range tooFew {
					if j != i && dropped < p.M {
						tooFew[j] = nil
						dropped++
					}
				}
				_, err = c.DecodeBlockTo(dst, obj, 5, id, tooFew, st.Sums)
				var tf *TooFewShardsError
				if !errors.As(err, &tf) || !slices.Contains(tf.Corrupt, i) {
					t.Fatalf("beyond m with shard %d corrupt: %v, want TooFewShardsError listing it", i, err)
				}
				if size > 0 {
					_, err = c.DecodeBlockTo(dst[:size-1], obj, 5, id, st.Shards, st.Sums)
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("destination one byte short: %v, want ErrCorrupt", err)
					}
				}
				for j := range orig {
					if !bytes.Equal(orig[j], st.Shards[j]) {
						t.Fatalf("shard %d was modified by decoding", j)
					}
				}
			})
		}
	}
}

// TestDecodeBlockToAuth: a block opened under the wrong key or in the
// wrong place does not authenticate, whichever path decodes it.
func TestDecodeBlockToAuth(t *testing.T) {
	rng, _ := seedRand(t)
	for _, enc := range []string{EncryptionAESGCM, EncryptionXChaCha} {
		for _, comp := range []string{CompressionNone, CompressionZstd} {
			p := Policy{K: 4, M: 2, BlockSize: testBlock, Compression: comp, Encryption: enc, Checksum: ChecksumXXH3}
			c := newCodec(t, p)
			other, err := NewCodec(p, bytes.Repeat([]byte{0x11}, 32))
			if err != nil {
				t.Fatal(err)
			}
			obj, id := NewObjectID(), NewStripeID()
			st, err := c.EncodeBlock(obj, 2, id, fill(rng, testBlock))
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]byte, testBlock)
			if _, err := other.DecodeBlockTo(dst, obj, 2, id, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
				t.Fatalf("%s: wrong key: %v, want ErrAuth", p, err)
			}
			if _, err := c.DecodeBlockTo(dst, obj, 3, id, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
				t.Fatalf("%s: wrong block index: %v, want ErrAuth", p, err)
			}
			if _, err := c.DecodeBlockTo(dst, NewObjectID(), 2, id, st.Shards, st.Sums); !errors.Is(err, ErrAuth) {
				t.Fatalf("%s: wrong object: %v, want ErrAuth", p, err)
			}
		}
	}
}
