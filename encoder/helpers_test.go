package encoder

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// testKey is the master key of every test codec.
var testKey = bytes.Repeat([]byte{0x5a}, 32)

// testBlock is the block size most tests use: small for speed, yet several
// checksum leaves (32 KiB) per shard for small k.
const testBlock = 64 << 10

func newCodec(t testing.TB, p Policy) *Codec {
	t.Helper()
	c, err := NewCodec(p, testKey)
	if err != nil {
		t.Fatalf("NewCodec(%v): %v", p, err)
	}
	return c
}

// seedRand returns a seeded generator and logs the seed so a failure
// replays: HEALSTORE_SEED=<seed from the log> go test ./encoder -run <test>.
func seedRand(t testing.TB) (*rand.Rand, uint64) {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("HEALSTORE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HEALSTORE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with HEALSTORE_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x68656c)), seed
}

// fill makes n bytes of data, half of it compressible, from rng.
func fill(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if (i/4096)%2 == 0 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = "healstore "[i%10]
		}
	}
	return b
}

// allPolicies is every compression × encryption × checksum combination at
// k+m, plus k+m shapes (with none/none) at the edges.
func allPolicies(k, m, bs int) []Policy {
	var ps []Policy
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		for _, enc := range []string{EncryptionNone, EncryptionAESGCM, EncryptionXChaCha} {
			for _, sum := range []string{ChecksumXXH3, ChecksumSHA256} {
				ps = append(ps, Policy{K: k, M: m, BlockSize: bs, Compression: comp, Encryption: enc, Checksum: sum})
			}
		}
	}
	for _, km := range [][2]int{{1, 1}, {2, 1}, {3, 3}, {10, 4}, {17, 3}} {
		ps = append(ps, Policy{K: km[0], M: km[1], BlockSize: bs, Compression: CompressionNone, Encryption: EncryptionNone, Checksum: ChecksumXXH3})
	}
	return ps
}

// cloneShards copies the slice of shards and each shard.
func cloneShards(s [][]byte) [][]byte {
	out := make([][]byte, len(s))
	for i, b := range s {
		if b != nil {
			out[i] = bytes.Clone(b)
		}
	}
	return out
}
