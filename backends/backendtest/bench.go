package backendtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// BenchValueSize is the value size the backend benchmarks move.
const BenchValueSize = 1 << 20

// Baseline is the time the local disk takes for one 1 MiB value, written
// as a file with fsync and read back, measured without any backend.
type Baseline struct {
	Write, Read time.Duration
}

var (
	baselineOnce sync.Once
	baseline     Baseline
	baselineErr  error
)

// DiskBaseline measures (once per process) writing BenchValueSize bytes to
// a new file in dir's file system with fsync, and reading a file back.
// TMPDIR decides the disk; set it to the disk the backends use.
func DiskBaseline() (Baseline, error) {
	baselineOnce.Do(func() {
		dir, err := os.MkdirTemp("", "healstore-baseline-")
		if err != nil {
			baselineErr = err
			return
		}
		defer os.RemoveAll(dir)
		v := randBytes(rand.New(rand.NewPCG(1, 2)), BenchValueSize)
		const n = 16
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := WriteSync(filepath.Join(dir, fmt.Sprint(i)), v); err != nil {
				baselineErr = err
				return
			}
		}
		baseline.Write = time.Since(start) / n
		start = time.Now()
		for i := 0; i < n*4; i++ {
			if _, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i%n))); err != nil {
				baselineErr = err
				return
			}
		}
		baseline.Read = time.Since(start) / (n * 4)
	})
	return baseline, baselineErr
}

// WriteSync writes v to a new file at path and fsyncs it: the baseline's
// unit of work.
func WriteSync(path string, v []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(v); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Bench runs Put and Get of 1 MiB values against bk, reporting MB/s and,
// as "x-disk", the time per value relative to the raw local disk (1.0 means
// as fast as writing the file with fsync, or reading it, directly).
func Bench(b *testing.B, bk backends.Backend) {
	base, err := DiskBaseline()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	v := randBytes(rand.New(rand.NewPCG(3, 4)), BenchValueSize)
	const keys = 8
	b.Run("Put1MiB", func(b *testing.B) {
		b.SetBytes(BenchValueSize)
		for i := 0; b.Loop(); i++ {
			v[0] = byte(i) // a new value each time: 0-db skips unchanged ones
			if err := bk.Put(ctx, fmt.Sprintf("bench/%d", i%keys), v); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perOp(b)/float64(base.Write), "x-disk")
	})
	for i := 0; i < keys; i++ {
		if err := bk.Put(ctx, fmt.Sprintf("bench/%d", i), v); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Get1MiB", func(b *testing.B) {
		b.SetBytes(BenchValueSize)
		for i := 0; b.Loop(); i++ {
			if _, err := bk.Get(ctx, fmt.Sprintf("bench/%d", i%keys)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perOp(b)/float64(base.Read), "x-disk")
	})
}

func perOp(b *testing.B) float64 {
	if b.N == 0 {
		return 0
	}
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}
