package encoder

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/reedsolomon"
)

// The benchmarks cycle through a working set of benchWorkingSet bytes of
// blocks, larger than the CPU caches, so data streams through memory as it
// does in a real write. Run with -cpu 1,2 for one thread and all threads;
// `healstore bench encode` measures the same paths in one run with ratios.

const benchWorkingSet = 96 << 20

type benchCase struct {
	name string
	p    Policy
}

func benchCases() []benchCase {
	mk := func(comp, enc string) Policy {
		return Policy{K: 10, M: 4, BlockSize: 4 << 20, Compression: comp, Encryption: enc, Checksum: ChecksumXXH3}
	}
	return []benchCase{
		{"10+4/4MiB/none/none", mk("none", "none")},
		{"10+4/4MiB/none/aes-256-gcm", mk("none", "aes-256-gcm")},
		{"10+4/4MiB/zstd/none", mk("zstd", "none")},
		{"4+2/4MiB/none/aes-256-gcm", Policy{K: 4, M: 2, BlockSize: 4 << 20, Compression: "none", Encryption: "aes-256-gcm", Checksum: ChecksumXXH3}},
	}
}

// benchBlocks returns blocks of pseudo-random data; with zstd, 8 KiB of
// random bytes alternate with 8 KiB of word text, so a block compresses to
// about 60% as mixed data might (bench.Encode uses the same mix).
func benchBlocks(p Policy, extra int) [][]byte {
	n := max(benchWorkingSet/(p.BlockSize+extra), 4)
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("stripe shard block parity backend healer object metadata repair scrub the of and to in is for on with error 2026 bytes ok")
	blocks := make([][]byte, n)
	for i := range blocks {
		b := make([]byte, p.BlockSize, p.BlockSize+extra)
		for off := 0; off < len(b); off += 8 << 10 {
			chunk := b[off:min(off+8<<10, len(b))]
			if p.Compression == CompressionZstd && (off>>13)%2 == 1 {
				for j := 0; j < len(chunk); {
					j += copy(chunk[j:], words[rng.IntN(len(words))])
					if j < len(chunk) {
						chunk[j] = ' '
						j++
					}
				}
				continue
			}
			for j := range chunk {
				chunk[j] = byte(rng.Uint32())
			}
		}
		blocks[i] = b
	}
	return blocks
}

func BenchmarkRawBaseline(b *testing.B) {
	for _, bc := range benchCases()[:1] {
		b.Run(bc.name, func(b *testing.B) {
			p := bc.p
			per := (p.BlockSize + p.K - 1) / p.K
			blocks := benchBlocks(p, per*(p.K+p.M)-p.BlockSize)
			rs, err := reedsolomon.New(p.K, p.M, reedsolomon.WithMaxGoroutines(1))
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetBytes(int64(p.BlockSize))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					blk := blocks[int(next.Add(1))%len(blocks)]
					shards, err := rs.Split(blk)
					if err == nil {
						err = rs.Encode(shards)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkEncode is the write path: blocks filled in place in
// BlockBuffers (as the stream encoder reads them), then EncodeBuffer.
func BenchmarkEncode(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			c := benchCodec(b, bc.p)
			blocks := benchBlocks(bc.p, 0)
			bufs := make([]*BlockBuffer, len(blocks))
			for i, blk := range blocks {
				bufs[i] = c.NewBlockBuffer()
				if _, err := bufs[i].Write(blk); err != nil {
					b.Fatal(err)
				}
			}
			blocks = nil
			obj := NewObjectID()
			var worker atomic.Int64
			b.SetBytes(int64(bc.p.BlockSize))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				// Each goroutine owns every n-th buffer: no buffer is
				// encoded by two goroutines at once.
				w, n := int(worker.Add(1)-1), runtime.GOMAXPROCS(0)
				for i := w; pb.Next(); i += n {
					j := i % len(bufs)
					st, err := c.EncodeBuffer(obj, uint64(j), NewStripeID(), bufs[j])
					if err != nil {
						b.Error(err)
						return
					}
					st.Release()
				}
			})
		})
	}
}

// BenchmarkEncodeFromSlice is EncodeBlock from a caller's []byte: one copy
// of the block more than BenchmarkEncode.
func BenchmarkEncodeFromSlice(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			c := benchCodec(b, bc.p)
			blocks := benchBlocks(bc.p, 0)
			obj := NewObjectID()
			var next atomic.Int64
			b.SetBytes(int64(bc.p.BlockSize))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					st, err := c.EncodeBlock(obj, uint64(i), NewStripeID(), blocks[int(i)%len(blocks)])
					if err != nil {
						b.Error(err)
						return
					}
					st.Release()
				}
			})
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, missing := range []bool{false, true} {
		for _, bc := range benchCases() {
			name := bc.name + "/all-present"
			if missing {
				name = fmt.Sprintf("%s/%d-data-missing", bc.name, bc.p.M)
			}
			b.Run(name, func(b *testing.B) {
				c := benchCodec(b, bc.p)
				blocks := benchBlocks(bc.p, 0)
				obj := NewObjectID()
				type enc struct {
					id     StripeID
					shards [][]byte
					sums   [][]byte
				}
				// Encoded stripes take 1.4× the working set; keep fewer.
				stripes := make([]enc, max(len(blocks)*2/3, 4))
				for i := range stripes {
					id := NewStripeID()
					st, err := c.EncodeBlock(obj, uint64(i), id, blocks[i%len(blocks)])
					if err != nil {
						b.Fatal(err)
					}
					sh := append([][]byte(nil), st.Shards...)
					if missing {
						for j := range bc.p.M {
							sh[j] = nil // data shards: the worst case, all decoded
						}
					}
					stripes[i] = enc{id, sh, st.Sums}
				}
				blocks = nil
				var next atomic.Int64
				b.SetBytes(int64(bc.p.BlockSize))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := int(next.Add(1)) % len(stripes)
						if _, err := c.DecodeBlock(obj, uint64(i), stripes[i].id, stripes[i].shards, stripes[i].sums); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1<<20)
	for _, alg := range []string{ChecksumXXH3, ChecksumSHA256} {
		b.Run(alg, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				Sum(alg, buf)
			}
		})
	}
}

func benchCodec(b *testing.B, p Policy) *Codec {
	b.Helper()
	key := make([]byte, 32)
	c, err := NewCodec(p, key)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkSeal measures sealing alone (compress and/or encrypt a block),
// the part of encode that does not depend on k and m.
func BenchmarkSeal(b *testing.B) {
	for _, bc := range []struct{ comp, enc string }{
		{CompressionNone, EncryptionAESGCM},
		{CompressionNone, EncryptionXChaCha},
		{CompressionZstd, EncryptionNone},
	} {
		p := Policy{K: 10, M: 4, BlockSize: 4 << 20, Compression: bc.comp, Encryption: bc.enc, Checksum: ChecksumXXH3}
		b.Run(bc.comp+"/"+bc.enc, func(b *testing.B) {
			c := benchCodec(b, p)
			blocks := benchBlocks(p, 0)
			b.SetBytes(int64(p.BlockSize))
			i := 0
			for b.Loop() {
				s, err := c.seal(ObjectID{}, uint64(i), StripeID{}, blocks[i%len(blocks)])
				if err != nil {
					b.Fatal(err)
				}
				c.release(&s)
				i++
			}
		})
	}
}
