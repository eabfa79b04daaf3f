package healstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkGet reads whole objects into one buffer, as `healstore bench
// get` does, and through io.Copy, as `healstore get` does (WriteTo), from
// 10+4 local backends with 4 MiB and 16 MiB blocks (the FUSE mount's
// default): through the direct path (whole blocks decoded into the
// buffer), through the block cache, and through WriteTo. "warm" reads
// from the page cache, measuring the reader's own cost; "cold" evicts the
// backend files before each read (untimed), as `bench get` does.
// cpu-ms/op (user+system of the whole process, during the reads only)
// stays meaningful on a loaded machine, where wall time does not.
func BenchmarkGet(b *testing.B) {
	for _, tc := range []struct{ size, block int }{{1 << 20, 4 << 20}, {64 << 20, 4 << 20}, {64 << 20, 16 << 20}} {
		size := tc.size
		dir := b.TempDir()
		s := newTestStore(b, testOpts{k: 10, m: 4, blockSize: tc.block, dir: dir})
		ctx := context.Background()
		data := randBytes(rand.New(rand.NewPCG(1, 2)), size)
		if _, err := s.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, size)
		for _, mode := range []string{"warm/direct", "warm/cached", "warm/writeto", "cold/direct", "cold/cached", "cold/writeto"} {
			b.Run(fmt.Sprintf("%dMiB/bs%dMiB/%s", size>>20, tc.block>>20, mode), func(b *testing.B) {
				b.SetBytes(int64(size))
				var cpu time.Duration
				for range b.N {
					if strings.HasPrefix(mode, "cold") {
						b.StopTimer()
						if err := evictTree(filepath.Join(dir, "backends")); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
					cpu0 := cpuTime()
					r, err := s.Open(ctx, "obj")
					if err != nil {
						b.Fatal(err)
					}
					r.noDirect = strings.HasSuffix(mode, "cached")
					if strings.HasSuffix(mode, "writeto") {
						// io.Copy, as `healstore get` reads: WriteTo.
						if n, err := io.Copy(&sliceWriter{buf: buf}, r); err != nil || n != int64(size) {
							b.Fatal(n, err)
						}
					} else if _, err := io.ReadFull(r, buf); err != nil {
						b.Fatal(err)
					}
					r.Close()
					cpu += cpuTime() - cpu0
				}
				b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
				if !bytes.Equal(buf, data) {
					b.Fatal("read back different bytes")
				}
			})
		}
	}
}

// sliceWriter writes into buf from its start: an io.Writer that keeps
// what it gets (io.Discard would let a wrong read go unnoticed).
type sliceWriter struct {
	buf []byte
	n   int
}

func (w *sliceWriter) Write(p []byte) (int, error) {
	if len(p) > len(w.buf)-w.n {
		return 0, io.ErrShortWrite
	}
	w.n += copy(w.buf[w.n:], p)
	return len(p), nil
}

// evictTree drops the files under root from the page cache (they are
// clean: written and synced).
func evictTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
