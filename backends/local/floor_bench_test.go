package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkDurableFloor measures what making one 1 MiB object's shards
// durable costs when all k+m local backends share one disk, as on the
// store bench's default setup (10+4 under one directory), against the bench
// baseline: the same bytes written to one fresh file and fsynced. Each
// iteration runs every variant once, in turn, so all of them see the same
// machine load; the figures are medians, and "x-baseline" is the baseline's
// median time over the variant's (what a put could reach at most if the
// shards were its only cost, before any metadata commit).
//
//	go test ./backends/local -run '^$' -bench DurableFloor -benchtime 200x
//
// Variants:
//   - backends: the store's path today: one file per shard (PutNoSync on
//     k+m backends at once), then each backend's Sync round (file and
//     directory fsyncs).
//   - packed-append: a backend's shards appended to one file of its own,
//     and an fdatasync per backend (the file grows: each sync commits its
//     new size too).
//   - packed-fdatasync: the best case of packing a backend's shards into one
//     pre-allocated file: a write at an offset into blocks already on disk,
//     and an fdatasync per backend. Still one device cache flush per backend.
//   - files-syncfs: one file per shard, then a single syncfs(2) for the file
//     system: one flush for all backends, but it also flushes every other
//     writer's dirty data on that file system.
//   - packed-syncfs: both.
func BenchmarkDurableFloor(b *testing.B) {
	const n, size = 14, 1 << 20 / 10 // 10+4 shards of a 1 MiB object
	root := b.TempDir()
	value := make([]byte, size+64) // a shard's header and payload
	for i := range value {
		value[i] = byte(i * 7)
	}
	one := make([]byte, n*len(value))

	bks := make([]*Backend, n)
	packed := make([]*os.File, n)
	logs := make([]*os.File, n)
	const slots = 64 // pre-allocated shard slots per packed file, reused
	for i := range n {
		bk, err := Open(specFor(filepath.Join(root, fmt.Sprint("b", i))))
		if err != nil {
			b.Fatal(err)
		}
		defer bk.Close()
		bks[i] = bk
		f, err := os.Create(filepath.Join(root, fmt.Sprint("packed", i)))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		// Written, not fallocated: blocks already written need no
		// metadata change when overwritten, the cheapest case there is.
		if _, err := f.Write(make([]byte, slots*len(value))); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		packed[i] = f
		if logs[i], err = os.Create(filepath.Join(root, fmt.Sprint("log", i))); err != nil {
			b.Fatal(err)
		}
		defer logs[i].Close()
	}
	fsFD := int(packed[0].Fd())
	each := func(fn func(i int) error) error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = fn(i) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	ctx := context.Background()
	variants := []struct {
		name string
		run  func(it int) error
	}{
		{"baseline", func(it int) error {
			p := filepath.Join(root, fmt.Sprint("one", it%8))
			os.Remove(p)
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.Write(one); err != nil {
				return err
			}
			return f.Sync()
		}},
		{"backends", func(it int) error {
			return each(func(i int) error {
				key := fmt.Sprintf("floor/%d/%d", it, i)
				if err := bks[i].PutNoSync(ctx, key, value); err != nil {
					return err
				}
				return bks[i].Sync(ctx, []string{key})
			})
		}},
		{"packed-append", func(it int) error {
			return each(func(i int) error {
				if _, err := logs[i].Write(value); err != nil {
					return err
				}
				return unix.Fdatasync(int(logs[i].Fd()))
			})
		}},
		{"packed-fdatasync", func(it int) error {
			return each(func(i int) error {
				if _, err := packed[i].WriteAt(value, int64(it%slots*len(value))); err != nil {
					return err
				}
				return unix.Fdatasync(int(packed[i].Fd()))
			})
		}},
		{"files-syncfs", func(it int) error {
			err := each(func(i int) error {
				return bks[i].PutNoSync(ctx, fmt.Sprintf("floor-syncfs/%d/%d", it, i), value)
			})
			if err != nil {
				return err
			}
			return unix.Syncfs(fsFD)
		}},
		{"packed-syncfs", func(it int) error {
			err := each(func(i int) error {
				_, err := packed[i].WriteAt(value, int64(it%slots*len(value)))
				return err
			})
			if err != nil {
				return err
			}
			return unix.Syncfs(fsFD)
		}},
	}
	took := make([][]time.Duration, len(variants))
	for it := 0; b.Loop(); it++ {
		for v, vr := range variants {
			start := time.Now()
			if err := vr.run(it); err != nil {
				b.Fatalf("%s: %v", vr.name, err)
			}
			took[v] = append(took[v], time.Since(start))
		}
	}
	med := make([]time.Duration, len(variants))
	for v := range variants {
		slices.Sort(took[v])
		med[v] = took[v][len(took[v])/2]
	}
	for v, vr := range variants {
		b.ReportMetric(float64(med[v].Microseconds())/1000, vr.name+"-ms")
		if v > 0 {
			b.ReportMetric(float64(med[0])/float64(med[v]), vr.name+"-x-baseline")
		}
	}
	b.ReportMetric(0, "ns/op") // an iteration runs every variant: its time means nothing
}
