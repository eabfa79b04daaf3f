package encoder

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"
)

// TestShardAlignment checks the memory layout backends rely on for direct
// I/O: every shard of at least AlignedShardMin bytes starts on a
// ShardAlign boundary (EncodeBlock, and EncodeBuffer in place and not),
// and the stripe still decodes to the data.
func TestShardAlignment(t *testing.T) {
	rnd, _ := seedRand(t)
	for _, enc := range []string{EncryptionNone, EncryptionAESGCM} {
		p := Policy{K: 10, M: 4, BlockSize: 4 << 20, Compression: CompressionNone, Encryption: enc, Checksum: ChecksumXXH3}
		c := newCodec(t, p)
		for _, size := range []int{100, 300 << 10, 640<<10 + 77, 1 << 20, 4 << 20} {
			data := fill(rnd, size)
			for _, viaBuffer := range []bool{false, true} {
				name := fmt.Sprintf("%s/%d/buffer=%v", enc, size, viaBuffer)
				var st *Stripe
				var err error
				if viaBuffer {
					bb := c.NewBlockBuffer()
					if _, err := bb.Write(data); err != nil {
						t.Fatal(name, err)
					}
					st, err = c.EncodeBuffer(ObjectID{1}, 0, StripeID{2}, bb)
					defer bb.Free()
				} else {
					st, err = c.EncodeBlock(ObjectID{1}, 0, StripeID{2}, data)
				}
				if err != nil {
					t.Fatal(name, err)
				}
				for i, sh := range st.Shards {
					addr := uintptr(unsafe.Pointer(&sh[0]))
					if len(sh) >= AlignedShardMin && addr%ShardAlign != 0 {
						t.Errorf("%s: shard %d (%d bytes) at %#x, not on a %d-byte boundary", name, i, len(sh), addr, ShardAlign)
					}
				}
				got, err := c.DecodeBlock(ObjectID{1}, 0, StripeID{2}, st.Shards, st.Sums)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%s: decode: equal %v, %v", name, bytes.Equal(got, data), err)
				}
				st.Release()
			}
		}
	}
}
