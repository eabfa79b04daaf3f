package fuse

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
)

// BenchmarkFio runs the fio jobs of bench/fio (sequential 1 MiB write and
// read, 4 KiB random read/write) through a mount of a 10+4 store on local
// backends, and the same jobs on the plain disk underneath, each plain run
// right before its healstore run so both see the same machine and disk,
// over several rounds; it reports the median of each figure and of each
// round's ratio to the plain disk. For the sequential jobs it also
// measures the store API alone (Put and Open of objects of the block size,
// as many at once as the mount uploads or reads ahead): the ceiling the
// filesystem layer works under:
//
//	go test ./fuse -run '^$' -bench Fio -benchtime 1x -v
//
// HEALSTORE_FIO_SIZE (default 1G) sets the sequential file size,
// HEALSTORE_FIO_RAND_SIZE (32M) and HEALSTORE_FIO_RUNTIME (20) the random
// job, HEALSTORE_FIO_ROUNDS (3) the rounds, HEALSTORE_FUSE_BLOCK (16M) the
// filesystem block size (the store's policy block is the same, at most
// 16 MiB), HEALSTORE_FUSE_ENCRYPTION (aes-256-gcm) the store's encryption,
// HEALSTORE_FUSE_CACHE (the mount's default) the write-back cache size in
// MiB, like 256M, HEALSTORE_FUSE_KERNEL_WB=0 turns the kernel's write-back
// cache off, and HEALSTORE_FIO_JOBS (all) names the jobs to run, comma
// separated (seq-write-1m,seq-read-1m,randrw-4k).
// As root the page cache is dropped before each read job, and the mount is
// remounted, so reads come from the disk. The run ignores b.N.
func BenchmarkFio(b *testing.B) {
	requireFUSE(b)
	requireTool(b, "fio")
	seqSize := envOr("HEALSTORE_FIO_SIZE", "1G")
	randSize := envOr("HEALSTORE_FIO_RAND_SIZE", "32M")
	runtime := envOr("HEALSTORE_FIO_RUNTIME", "20")
	rounds, _ := strconv.Atoi(envOr("HEALSTORE_FIO_ROUNDS", "3"))
	blockSize := 16 << 20
	if v := os.Getenv("HEALSTORE_FUSE_BLOCK"); v != "" {
		mib, err := strconv.Atoi(strings.TrimSuffix(v, "M"))
		if err != nil {
			b.Fatalf("HEALSTORE_FUSE_BLOCK=%q: give MiB, like 16M", v)
		}
		blockSize = mib << 20
	}
	enc := envOr("HEALSTORE_FUSE_ENCRYPTION", "aes-256-gcm")
	storeBlock := min(blockSize, 16<<20)
	// Measure what healstore mount runs: it sets this GC target unless
	// GOGC is given.
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(GCPercent))
	}
	st := newStoreWith(b, 10, 4, storeBlock, func(c *healstore.Config) { c.Policy.Encryption = enc })
	opts := Options{BlockSize: blockSize, NoKernelWriteback: os.Getenv("HEALSTORE_FUSE_KERNEL_WB") == "0"}
	if v := os.Getenv("HEALSTORE_FUSE_CACHE"); v != "" {
		mib, err := strconv.Atoi(strings.TrimSuffix(v, "M"))
		if err != nil {
			b.Fatalf("HEALSTORE_FUSE_CACHE=%q: give MiB, like 256M", v)
		}
		opts.CacheSize = int64(mib) << 20
	}
	e := newMount(b, st, opts)
	plainDir := b.TempDir()

	jobs := []struct{ name, file string }{
		{"seq-write-1m", "seq-write-1m.fio"},
		{"seq-read-1m", "seq-read-1m.fio"},
		{"randrw-4k", "randrw-4k.fio"},
	}
	if only := os.Getenv("HEALSTORE_FIO_JOBS"); only != "" {
		jobs = slices.DeleteFunc(jobs, func(j struct{ name, file string }) bool {
			return !slices.Contains(strings.Split(only, ","), j.name)
		})
		if len(jobs) == 0 {
			b.Fatalf("HEALSTORE_FIO_JOBS=%q names none of the jobs", only)
		}
	}
	fio := func(job, dir string) fioResult {
		raw := runFio(b, fioJob(b, job), map[string]string{
			"HEALSTORE_FIO_DIR": dir, "HEALSTORE_FIO_SIZE": seqSize,
			"HEALSTORE_FIO_RAND_SIZE": randSize, "HEALSTORE_FIO_RUNTIME": runtime,
		}, "--output-format=json")
		r, err := parseFio(raw)
		if err != nil {
			b.Fatalf("%s: %v", job, err)
		}
		return r
	}
	// The store API on its own, with the mount's parallelism: what the
	// filesystem layer costs on top of it.
	total := parseFioSize(b, seqSize)
	payload := bytes.Repeat([]byte("healstore fio baseline "), blockSize/23+1)[:blockSize]
	storeAPI := func(round int, write bool) float64 {
		ctx := context.Background()
		n := int((total + int64(blockSize) - 1) / int64(blockSize))
		par := DefaultUploadWorkers
		if !write {
			par = 4 // the mount's read-ahead fetches
			dropCaches(b)
		}
		sem := make(chan struct{}, par)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				name := fmt.Sprintf("bench/%d/%06d", round, i)
				var err error
				if write {
					_, err = st.s.Put(ctx, name, bytes.NewReader(payload))
				} else {
					_, err = storeBlobs{st.s}.GetBlock(ctx, name, blockSize)
				}
				if err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		return float64(int64(n)*int64(blockSize)) / 1e6 / time.Since(start).Seconds()
	}

	type sample struct{ plain, mount, ratio, api []float64 }
	res := map[string]*sample{}
	for round := range rounds {
		for _, j := range jobs {
			read := strings.Contains(j.name, "read")
			rnd := strings.HasPrefix(j.name, "rand")
			if read {
				dropCaches(b)
			}
			p := fio(j.file, plainDir)
			if read {
				e.remount() // empty caches in the mount and the kernel
				dropCaches(b)
			}
			use := startUsage()
			m := fio(j.file, e.dir)
			mountUse := use.done()
			pv, mv := p.mbps(), m.mbps()
			if rnd {
				pv, mv = p.iops(), m.iops()
			}
			s := res[j.name]
			if s == nil {
				s = &sample{}
				res[j.name] = s
			}
			s.plain, s.mount, s.ratio = append(s.plain, pv), append(s.mount, mv), append(s.ratio, mv/pv)
			api := 0.0
			if !rnd {
				use := startUsage()
				api = storeAPI(round, !read)
				apiUse := use.done()
				b.Logf("round %d %-14s this process: mount %s; store API %s", round+1, j.name, mountUse, apiUse)
				s.api = append(s.api, api)
			} else {
				b.Logf("round %d %-14s this process: mount %s", round+1, j.name, mountUse)
			}
			line := fmt.Sprintf("round %d %-14s plain %8.0f healstore %8.0f ratio %.3f", round+1, j.name, pv, mv, mv/pv)
			if !rnd {
				line += fmt.Sprintf(" (store API %.0f)", api)
			}
			b.Log(line)
		}
		// The next round writes its files afresh.
		os.RemoveAll(plainDir)
		os.Mkdir(plainDir, 0o755)
		for _, f := range []string{"fio-seq-1m.dat", "fio-randrw-4k.dat"} {
			os.Remove(e.path(f))
		}
	}

	b.Logf("fio, %s sequential file, %s random file; healstore 10+4 (%s, %d KiB stripes) on local backends, %d KiB file blocks, kernel write-back %v; median of %d rounds",
		seqSize, randSize, enc, storeBlock>>10, blockSize>>10, !opts.NoKernelWriteback, rounds)
	b.Logf("%-14s %14s %14s %7s %14s", "job", "plain disk", "healstore", "ratio", "store API")
	for _, j := range jobs {
		s := res[j.name]
		unit, metric := "MB/s", "-MB/s"
		api := fmt.Sprintf("%9.0f MB/s", median(s.api))
		if strings.HasPrefix(j.name, "rand") {
			unit, metric, api = "IOPS", "-IOPS", ""
		}
		b.Logf("%-14s %9.0f %s %9.0f %s %7.3f %s", j.name, median(s.plain), unit, median(s.mount), unit, median(s.ratio), api)
		b.ReportMetric(median(s.mount), j.name+metric)
		b.ReportMetric(median(s.ratio), j.name+"-ratio")
	}
}

// parseFioSize reads a fio size such as 512M or 1G.
func parseFioSize(tb testing.TB, v string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "G"):
		mult, v = 1<<30, strings.TrimSuffix(v, "G")
	case strings.HasSuffix(v, "M"):
		mult, v = 1<<20, strings.TrimSuffix(v, "M")
	case strings.HasSuffix(v, "K"):
		mult, v = 1<<10, strings.TrimSuffix(v, "K")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		tb.Fatalf("size %q: use a number with K, M or G", v)
	}
	return n * mult
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// dropCaches empties the kernel page cache (root only), so a read job
// measures the disk.
func dropCaches(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Logf("not root: the page cache is not dropped before read jobs")
		return
	}
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		tb.Logf("drop caches: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
}

// fioResult is one job's totals: bytes/s and operations/s, reads and
// writes together.
type fioResult struct {
	bw   float64
	ops  float64
	secs float64
}

func (r fioResult) mbps() float64 { return r.bw / 1e6 }
func (r fioResult) iops() float64 { return r.ops }

func parseFio(out string) (fioResult, error) {
	// fio may print notes before the JSON document.
	if i := strings.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var doc struct {
		Jobs []struct {
			Read, Write struct {
				BwBytes float64 `json:"bw_bytes"`
				IOPS    float64 `json:"iops"`
			}
			JobRuntime float64 `json:"job_runtime"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return fioResult{}, fmt.Errorf("parse fio output: %w", err)
	}
	if len(doc.Jobs) == 0 {
		return fioResult{}, fmt.Errorf("fio output has no jobs")
	}
	j := doc.Jobs[0]
	return fioResult{bw: j.Read.BwBytes + j.Write.BwBytes, ops: j.Read.IOPS + j.Write.IOPS, secs: j.JobRuntime / 1000}, nil
}

// usage is the CPU time and page faults of this process (the mount and the
// store run in it; fio does not) since startUsage.
type usage struct{ start unix.Rusage }

func startUsage() *usage {
	u := &usage{}
	unix.Getrusage(unix.RUSAGE_SELF, &u.start)
	return u
}

// done says what the process used since start, as "cpu 1.20s user + 0.80s
// system, 50123 page faults".
func (u *usage) done() string {
	var now unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &now)
	secs := func(a, b unix.Timeval) float64 { return float64(b.Nano()-a.Nano()) / 1e9 }
	return fmt.Sprintf("cpu %.2fs user + %.2fs system, %d page faults",
		secs(u.start.Utime, now.Utime), secs(u.start.Stime, now.Stime), now.Minflt-u.start.Minflt+now.Majflt-u.start.Majflt)
}
