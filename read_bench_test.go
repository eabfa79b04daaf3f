package healstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGet reads whole objects into one buffer, as `healstore bench
// get` does, from 10+4 local backends with 4 MiB blocks, through the
// direct path (whole blocks decoded into the buffer) and through the block
// cache, alternately. The backend files stay in the page cache, so this
// measures the reader's own cost; cpu-ms/op (user+system, the whole
// process) stays meaningful on a loaded machine, where wall time does not.
func BenchmarkGet(b *testing.B) {
	for _, size := range []int{1 << 20, 64 << 20} {
		s := newTestStore(b, testOpts{k: 10, m: 4, blockSize: 4 << 20})
		ctx := context.Background()
		data := randBytes(rand.New(rand.NewPCG(1, 2)), size)
		if _, err := s.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, size)
		for _, mode := range []string{"direct", "cached"} {
			b.Run(fmt.Sprintf("%dMiB/%s", size>>20, mode), func(b *testing.B) {
				b.SetBytes(int64(size))
				cpu0 := cpuTime()
				for range b.N {
					r, err := s.Open(ctx, "obj")
					if err != nil {
						b.Fatal(err)
					}
					r.noDirect = mode == "cached"
					if _, err := io.ReadFull(r, buf); err != nil {
						b.Fatal(err)
					}
					r.Close()
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
				if !bytes.Equal(buf, data) {
					b.Fatal("read back different bytes")
				}
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
