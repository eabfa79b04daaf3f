package encoder

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRoundTripAllPolicies(t *testing.T) {
	rng, _ := seedRand(t)
	sizes := []int{0, 1, testBlock - 1, testBlock, testBlock + 1, 3*testBlock + 777}
	for _, p := range allPolicies(4, 2, testBlock) {
		c := newCodec(t, p)
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", p, size), func(t *testing.T) {
				data := fill(rng, size)
				obj := NewObjectID()
				// Cut into blocks as the store does; an empty object is one
				// empty block here, to cover EncodeBlock(empty).
				for blk, off := uint64(0), 0; off < size || (size == 0 && blk == 0); blk, off = blk+1, off+p.BlockSize {
					part := data[off:min(off+p.BlockSize, size)]
					id := NewStripeID()
					st, err := c.EncodeBlock(obj, blk, id, part)
					if err != nil {
						t.Fatal(err)
					}
					checkStripe(t, c, st, len(part))
					got, err := c.DecodeBlock(obj, blk, id, st.Shards, st.Sums)
					if err != nil {
						t.Fatalf("block %d: %v", blk, err)
					}
					if !bytes.Equal(got, part) {
						t.Fatalf("block %d: decoded data differs", blk)
					}
					// Drop m shards picked at random: decode must rebuild.
					shards := slices.Clone(st.Shards)
					for _, i := range rng.Perm(p.K + p.M)[:p.M] {
						shards[i] = nil
					}
					got, err = c.DecodeBlock(obj, blk, id, shards, st.Sums)
					if err != nil || !bytes.Equal(got, part) {
						t.Fatalf("block %d with shards missing: err %v, equal %v", blk, err, bytes.Equal(got, part))
					}
					st.Release()
				}
			})
		}
	}
}

// checkStripe checks what every stripe must satisfy.
func checkStripe(t *testing.T, c *Codec, st *Stripe, dataLen int) {
	t.Helper()
	p := c.Policy()
	if len(st.Shards) != p.K+p.M || len(st.Sums) != p.K+p.M || st.DataLen != dataLen {
		t.Fatalf("stripe has %d shards, %d sums, DataLen %d", len(st.Shards), len(st.Sums), st.DataLen)
	}
	for i, s := range st.Shards {
		if len(s) != len(st.Shards[0]) || len(s) > p.MaxShardSize() {
			t.Fatalf("shard %d is %d bytes (shard 0: %d, max %d)", i, len(s), len(st.Shards[0]), p.MaxShardSize())
		}
		if !bytes.Equal(Sum(p.Checksum, s), st.Sums[i]) {
			t.Fatalf("shard %d: Sum of the shard differs from Stripe.Sums", i)
		}
		h, err := ParseHeader(s)
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		if h.Index != i || h.K != p.K || h.M != p.M || h.Stripe != st.ID || h.DataLen != dataLen || h.Checksum != p.Checksum {
			t.Fatalf("shard %d: header %+v", i, h)
		}
		if err := c.VerifyShard(st.ID, i, s, st.Sums[i]); err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
	}
}

func TestMaxShardSizeIsReached(t *testing.T) {
	// Random data does not compress, so a full block makes shards of
	// exactly MaxShardSize: the bound is tight, not just safe.
	rng, _ := seedRand(t)
	for _, p := range allPolicies(4, 2, testBlock) {
		c := newCodec(t, p)
		data := make([]byte, p.BlockSize)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		st, err := c.EncodeBlock(NewObjectID(), 0, NewStripeID(), data)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Shards[0]) != p.MaxShardSize() {
			t.Errorf("%s: shard of %d bytes, MaxShardSize %d", p, len(st.Shards[0]), p.MaxShardSize())
		}
	}
}

func TestCompression(t *testing.T) {
	p := Policy{K: 4, M: 2, BlockSize: testBlock, Compression: CompressionZstd, Encryption: EncryptionAESGCM, Checksum: ChecksumXXH3}
	c := newCodec(t, p)
	text := bytes.Repeat([]byte("the same line over and over\n"), testBlock/28)
	st, err := c.EncodeBlock(NewObjectID(), 0, NewStripeID(), text)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := ParseHeader(st.Shards[0]); h.SealedLen >= len(text)/10 {
		t.Errorf("repetitive block sealed to %d bytes of %d: not compressed", h.SealedLen, len(text))
	}
	rng, _ := seedRand(t)
	random := make([]byte, testBlock)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	st, err = c.EncodeBlock(NewObjectID(), 0, NewStripeID(), random)
	if err != nil {
		t.Fatal(err)
	}
	// Incompressible: stored as is, so exactly header + nonce + data + tag.
	if h, _ := ParseHeader(st.Shards[0]); h.SealedLen != sealFixedLen+12+testBlock+16 {
		t.Errorf("random block sealed to %d bytes, want it stored uncompressed (%d)", h.SealedLen, sealFixedLen+12+testBlock+16)
	}
	sh, err := parseSealHeader(mustDecodeSealed(t, c, st))
	if err != nil || sh.flags&flagZstd != 0 {
		t.Errorf("incompressible block: seal header %+v, %v; want no zstd flag", sh, err)
	}
}

// mustDecodeSealed returns the sealed block of a stripe (data payloads joined).
func mustDecodeSealed(t *testing.T, c *Codec, st *Stripe) []byte {
	t.Helper()
	h, err := ParseHeader(st.Shards[0])
	if err != nil {
		t.Fatal(err)
	}
	var sealed []byte
	for i := range c.p.K {
		sealed = append(sealed, st.Shards[i][HeaderSize:]...)
	}
	return sealed[:h.SealedLen]
}

func TestEncryptionHidesData(t *testing.T) {
	for _, enc := range []string{EncryptionAESGCM, EncryptionXChaCha} {
		p := Policy{K: 2, M: 1, BlockSize: testBlock, Compression: CompressionNone, Encryption: enc, Checksum: ChecksumXXH3}
		c := newCodec(t, p)
		data := bytes.Repeat([]byte("secret-marker "), 1000)
		obj, id := NewObjectID(), NewStripeID()
		a, err := c.EncodeBlock(obj, 0, id, data)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.EncodeBlock(obj, 0, id, data)
		if err != nil {
			t.Fatal(err)
		}
		for i := range a.Shards {
			if bytes.Contains(a.Shards[i], []byte("secret-marker")) {
				t.Errorf("%s: shard %d contains plaintext", enc, i)
			}
			if bytes.Equal(a.Shards[i], b.Shards[i]) {
				t.Errorf("%s: shard %d identical across two encodings: nonce reused", enc, i)
			}
		}
	}
}

func TestEveryMissingPattern(t *testing.T) {
	rng, _ := seedRand(t)
	for _, km := range [][2]int{{4, 2}, {3, 3}} {
		p := Policy{K: km[0], M: km[1], BlockSize: testBlock, Compression: CompressionNone, Encryption: EncryptionAESGCM, Checksum: ChecksumXXH3}
		c := newCodec(t, p)
		n := p.K + p.M
		data := fill(rng, testBlock-5)
		obj, id := NewObjectID(), NewStripeID()
		st, err := c.EncodeBlock(obj, 7, id, data)
		if err != nil {
			t.Fatal(err)
		}
		orig := cloneShards(st.Shards)
		patterns := 0
		for mask := 0; mask < 1<<n; mask++ {
			lost := bits.OnesCount(uint(mask))
			shards := slices.Clone(st.Shards)
			var missing []int
			for i := range n {
				if mask&(1<<i) != 0 {
					shards[i] = nil
					missing = append(missing, i)
				}
			}
			got, err := c.DecodeBlock(obj, 7, id, shards, st.Sums)
			if lost > p.M {
				var tf *TooFewShardsError
				if !errors.As(err, &tf) || !errors.Is(err, ErrTooFewShards) || !slices.Equal(tf.Missing, missing) || tf.Need != p.K || len(tf.Corrupt) != 0 {
					t.Fatalf("%d+%d missing %v: err %v, want TooFewShardsError naming them", p.K, p.M, missing, err)
				}
				continue
			}
			patterns++
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%d+%d missing %v: err %v", p.K, p.M, missing, err)
			}
			if len(missing) == 0 {
				continue
			}
			rebuilt, sums, err := c.Reconstruct(id, shards, st.Sums, missing)
			if err != nil {
				t.Fatalf("%d+%d reconstruct %v: %v", p.K, p.M, missing, err)
			}
			for j, i := range missing {
				if !bytes.Equal(rebuilt[j], orig[i]) || !bytes.Equal(sums[j], st.Sums[i]) {
					t.Fatalf("%d+%d missing %v: rebuilt shard %d differs from the original", p.K, p.M, missing, i)
				}
			}
		}
		for i := range orig {
			if !bytes.Equal(orig[i], st.Shards[i]) {
				t.Fatalf("shard %d was modified by decoding", i)
			}
		}
		t.Logf("%d+%d: %d decodable patterns checked", p.K, p.M, patterns)
	}
}

// corruption is one way a shard goes bad.
type corruption struct {
	name string
	// apply returns the corrupted shard i of st; other is a stripe with the
	// same policy (for swaps).
	apply func(rng *rand.Rand, st, other *Stripe, i int) []byte
	// needsSums: the damage keeps the shard self-consistent, so only the
	// checksum recorded in the metastore can catch it.
	needsSums bool
}

func corruptions() []corruption {
	return []corruption{
		{name: "payload bit flip", apply: func(rng *rand.Rand, st, _ *Stripe, i int) []byte {
			b := bytes.Clone(st.Shards[i])
			pos := HeaderSize + rng.IntN(len(b)-HeaderSize)
			b[pos] ^= 1 << rng.IntN(8)
			return b
		}},
		{name: "header bit flip", apply: func(rng *rand.Rand, st, _ *Stripe, i int) []byte {
			b := bytes.Clone(st.Shards[i])
			pos := rng.IntN(HeaderSize)
			b[pos] ^= 1 << rng.IntN(8)
			return b
		}},
		{name: "truncated", apply: func(rng *rand.Rand, st, _ *Stripe, i int) []byte {
			return bytes.Clone(st.Shards[i][:rng.IntN(len(st.Shards[i]))])
		}},
		{name: "extended", apply: func(rng *rand.Rand, st, _ *Stripe, i int) []byte {
			return append(bytes.Clone(st.Shards[i]), 0)
		}},
		{name: "header index changed, crc fixed", apply: func(rng *rand.Rand, st, _ *Stripe, i int) []byte {
			b := bytes.Clone(st.Shards[i])
			h, _ := ParseHeader(b)
			h.Index = (h.Index + 1) % (h.K + h.M)
			h.put(b, checksumIDs[h.Checksum])
			return b
		}},
		{name: "swapped with another stripe's shard", apply: func(rng *rand.Rand, _, other *Stripe, i int) []byte {
			return bytes.Clone(other.Shards[i])
		}},
		{name: "payload and all its checksums rewritten", needsSums: true, apply: func(rng *rand.Rand, st, _ *Stripe, i int) []byte {
			b := bytes.Clone(st.Shards[i])
			b[HeaderSize] ^= 0xff
			h, _ := ParseHeader(b)
			alg := checksumIDs[h.Checksum]
			h.PayloadSum = alg.payloadSum(b[HeaderSize:])
			h.put(b, alg)
			return b
		}},
	}
}

func TestCorruptShardDetectedAndRepaired(t *testing.T) {
	rng, _ := seedRand(t)
	for _, p := range []Policy{
		{K: 4, M: 2, BlockSize: testBlock, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3},
		{K: 3, M: 3, BlockSize: testBlock, Compression: CompressionZstd, Encryption: EncryptionXChaCha, Checksum: ChecksumSHA256},
	} {
		c := newCodec(t, p)
		obj, id := NewObjectID(), NewStripeID()
		data := fill(rng, testBlock)
		st, err := c.EncodeBlock(obj, 1, id, data)
		if err != nil {
			t.Fatal(err)
		}
		other, err := c.EncodeBlock(obj, 2, NewStripeID(), fill(rng, testBlock))
		if err != nil {
			t.Fatal(err)
		}
		for _, cr := range corruptions() {
			for i := range p.K + p.M {
				name := fmt.Sprintf("%s/%s/shard %d", p, cr.name, i)
				bad := cr.apply(rng, st, other, i)
				shards := slices.Clone(st.Shards)
				shards[i] = bad
				sums := st.Sums
				if !cr.needsSums {
					sums = nil // the shard's own header must catch it
				}
				checkCorruptDetected(t, name, c, id, i, bad, shards, sums)
				// Decoding must not use the bad shard: force it into the
				// k shards needed by dropping other shards up to m-1.
				forced := slices.Clone(shards)
				dropped := 0
				for j := range forced {
					if j != i && dropped < p.M-1 {
						forced[j] = nil
						dropped++
					}
				}
				got, err := c.DecodeBlock(obj, 1, id, forced, sums)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%s: decode around it: %v", name, err)
				}
				rebuilt, newSums, err := c.Reconstruct(id, shards, sums, []int{i})
				if err != nil || !bytes.Equal(rebuilt[0], st.Shards[i]) || !bytes.Equal(newSums[0], st.Sums[i]) {
					t.Fatalf("%s: reconstruct: %v", name, err)
				}
				// One more loss than m, counting the bad shard: too few.
				for j := range forced {
					if j != i && forced[j] != nil {
						forced[j] = nil
						break
					}
				}
				_, err = c.DecodeBlock(obj, 1, id, forced, sums)
				var tf *TooFewShardsError
				if !errors.As(err, &tf) || !slices.Contains(tf.Corrupt, i) || len(tf.Causes) != len(tf.Corrupt) || !errors.Is(tf.Causes[0], ErrCorrupt) {
					t.Fatalf("%s: beyond m: %v, want TooFewShardsError listing %d as corrupt", name, err, i)
				}
			}
		}
	}
}

func checkCorruptDetected(t *testing.T, name string, c *Codec, id StripeID, i int, bad []byte, shards, sums [][]byte) {
	t.Helper()
	var sum []byte
	if sums != nil {
		sum = sums[i]
	}
	err := c.VerifyShard(id, i, bad, sum)
	var se *ShardError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &se) || se.Index != i {
		t.Fatalf("%s: VerifyShard = %v, want a ShardError for index %d", name, err, i)
	}
	got, err := c.BadShards(id, shards, sums)
	if err != nil || !slices.Equal(got, []int{i}) {
		t.Fatalf("%s: BadShards = %v, %v; want [%d]", name, got, err, i)
	}
}
