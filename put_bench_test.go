package healstore

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// BenchmarkPut stores objects on 10+4 local backends: 1 MiB ones with the
// default 4 MiB blocks, and 16 MiB ones with 16 MiB blocks (the FUSE
// mount's default), one at a time and eight at once (the mount's upload
// workers). cpu-ms/op (user+system of the whole process)
// stays meaningful on a loaded machine, where wall time does not.
func BenchmarkPut(b *testing.B) {
	for _, tc := range []struct{ size, block, par int }{{1 << 20, 4 << 20, 1}, {16 << 20, 16 << 20, 1}, {16 << 20, 16 << 20, 8}} {
		size := tc.size
		b.Run(fmt.Sprintf("%dMiB/bs%dMiB/par%d", size>>20, tc.block>>20, tc.par), func(b *testing.B) {
			s := newTestStore(b, testOpts{k: 10, m: 4, blockSize: tc.block})
			ctx := context.Background()
			data := randBytes(rand.New(rand.NewPCG(1, 2)), size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			cpu0 := cpuTime()
			var wg sync.WaitGroup
			next := make(chan int)
			for range tc.par {
				wg.Go(func() {
					for i := range next {
						if _, err := s.Put(ctx, fmt.Sprintf("obj%d", i), bytes.NewReader(data)); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}
