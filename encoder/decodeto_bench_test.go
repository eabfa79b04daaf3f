package encoder

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkDecodeInto is the read path's decode of whole blocks into a
// caller's buffer: "copy" is DecodeBlock followed by a copy into the
// buffer (how a Reader served every read before DecodeBlockTo), "to" is
// DecodeBlockTo. Both run in one process on the same stripes, so their
// ratio holds on a loaded machine. Run with -cpu 1,2.
func BenchmarkDecodeInto(b *testing.B) {
	for _, missing := range []bool{false, true} {
		for _, bc := range benchCases()[:2] {
			c := benchCodec(b, bc.p)
			blocks := benchBlocks(bc.p, 0)
			obj := NewObjectID()
			type enc struct {
				id     StripeID
				shards [][]byte
				sums   [][]byte
			}
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
						sh[j] = nil
					}
				}
				stripes[i] = enc{id, sh, st.Sums}
			}
			blocks = nil
			name := bc.name + "/all-present"
			if missing {
				name = fmt.Sprintf("%s/%d-data-missing", bc.name, bc.p.M)
			}
			for _, mode := range []string{"copy", "to"} {
				b.Run(name+"/"+mode, func(b *testing.B) {
					var next atomic.Int64
					b.SetBytes(int64(bc.p.BlockSize))
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						dst := make([]byte, bc.p.BlockSize)
						for pb.Next() {
							i := int(next.Add(1)) % len(stripes)
							s := stripes[i]
							var err error
							if mode == "copy" {
								var data []byte
								if data, err = c.DecodeBlock(obj, uint64(i), s.id, s.shards, s.sums); err == nil {
									copy(dst, data)
								}
							} else {
								_, err = c.DecodeBlockTo(dst, obj, uint64(i), s.id, s.shards, s.sums)
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
	}
}
