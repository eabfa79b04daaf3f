package encoder

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -update-golden rewrites testdata/golden from the current code. Only do it
// for a deliberate format change (with a new FormatVersion); the point of
// the golden set is that a silent one fails.
var updateGolden = flag.Bool("update-golden", false, "rewrite encoder/testdata/golden")

// goldenCase is one stripe in the golden set. The key is testKey, the
// nonces come from a ChaCha8 stream seeded with NonceSeed, so encoding is
// reproducible byte for byte.
type goldenCase struct {
	Name      string   `json:"name"`
	Policy    Policy   `json:"policy"`
	Object    ObjectID `json:"object"`
	Stripe    StripeID `json:"stripe"`
	Block     uint64   `json:"block"`
	NonceSeed byte     `json:"nonce_seed"`
	DataLen   int      `json:"data_len"`
}

func goldenCases() []goldenCase {
	obj := ObjectID{0x0b, 0x1e, 0xc7}
	return []goldenCase{
		{"4+2-none-none-xxh3", Policy{4, 2, 64 << 10, CompressionNone, EncryptionNone, ChecksumXXH3}, obj, StripeID{0x51, 1}, 0, 1, 10000},
		{"3+2-zstd-aes-sha256", Policy{3, 2, 64 << 10, CompressionZstd, EncryptionAESGCM, ChecksumSHA256}, obj, StripeID{0x51, 2}, 7, 2, 20000},
		{"2+1-none-xchacha-xxh3", Policy{2, 1, 8 << 10, CompressionNone, EncryptionXChaCha, ChecksumXXH3}, obj, StripeID{0x51, 3}, 1, 3, 8 << 10},
		{"2+2-none-none-sha256-empty", Policy{2, 2, 4 << 10, CompressionNone, EncryptionNone, ChecksumSHA256}, obj, StripeID{0x51, 4}, 2, 4, 0},
		// Over two checksum leaves per shard.
		{"2+1-none-none-xxh3-leaves", Policy{2, 1, 128 << 10, CompressionNone, EncryptionNone, ChecksumXXH3}, obj, StripeID{0x51, 5}, 3, 5, 70000},
	}
}

// goldenData is a case's block: text-like, so zstd has something to do.
func goldenData(n int) []byte {
	r := rand.New(rand.NewPCG(7, 7))
	words := strings.Fields("shard stripe block parity healer backend object metadata repair scrub")
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(" \n"[r.IntN(2)])
	}
	return b.Bytes()[:n]
}

func (g goldenCase) codec(t *testing.T) *Codec {
	c := newCodec(t, g.Policy)
	var seed [32]byte
	seed[0] = g.NonceSeed
	c.rand = rand.NewChaCha8(seed)
	return c
}

func TestGolden(t *testing.T) {
	root := filepath.Join("testdata", "golden")
	for _, g := range goldenCases() {
		dir := filepath.Join(root, g.Name)
		data := goldenData(g.DataLen)
		if *updateGolden {
			writeGolden(t, dir, g, data)
		}
		t.Run(g.Name, func(t *testing.T) {
			var stored goldenCase
			readJSON(t, filepath.Join(dir, "case.json"), &stored)
			if stored != g {
				t.Fatalf("case.json %+v differs from the test's case %+v", stored, g)
			}
			n := g.Policy.K + g.Policy.M
			shards := make([][]byte, n)
			for i := range n {
				shards[i] = readFile(t, filepath.Join(dir, fmt.Sprintf("shard.%d", i)))
			}
			var sumsHex []string
			readJSON(t, filepath.Join(dir, "sums.json"), &sumsHex)
			sums := make([][]byte, len(sumsHex))
			for i, h := range sumsHex {
				sums[i], _ = hex.DecodeString(h)
			}
			if !bytes.Equal(readFile(t, filepath.Join(dir, "data")), data) {
				t.Fatal("stored data differs from the generated block")
			}

			// Decode what an earlier healstore wrote.
			c := g.codec(t)
			got, err := c.DecodeBlock(g.Object, g.Block, g.Stripe, shards, sums)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("decode of the golden stripe: %v (equal %v)", err, bytes.Equal(got, data))
			}
			for i := range n {
				if !bytes.Equal(Sum(g.Policy.Checksum, shards[i]), sums[i]) {
					t.Fatalf("Sum of golden shard %d changed", i)
				}
				others := cloneShards(shards)
				others[i] = nil
				rb, rs, err := c.Reconstruct(g.Stripe, others, sums, []int{i})
				if err != nil || !bytes.Equal(rb[0], shards[i]) || !bytes.Equal(rs[0], sums[i]) {
					t.Fatalf("rebuilding golden shard %d: %v", i, err)
				}
			}
			// Encode again: the same bytes, or the format changed.
			st, err := c.EncodeBlock(g.Object, g.Block, g.Stripe, data)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if !bytes.Equal(st.Shards[i], shards[i]) || !bytes.Equal(st.Sums[i], sums[i]) {
					t.Fatalf("re-encoding changed shard %d: the shard format is not what testdata/golden records", i)
				}
			}
		})
	}
}

func writeGolden(t *testing.T, dir string, g goldenCase, data []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := g.codec(t).EncodeBlock(g.Object, g.Block, g.Stripe, data)
	if err != nil {
		t.Fatal(err)
	}
	var sums []string
	for i, s := range st.Shards {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("shard.%d", i)), s)
		sums = append(sums, hex.EncodeToString(st.Sums[i]))
	}
	writeFile(t, filepath.Join(dir, "data"), data)
	for name, v := range map[string]any{"case.json": g, "sums.json": sums} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), append(b, '\n'))
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate with go test ./encoder -run TestGolden -update-golden only for a deliberate format change)", err)
	}
	return b
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
