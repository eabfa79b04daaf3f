package fuse

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
)

// BenchmarkFio runs the fio jobs of bench/fio (sequential 1 MiB write and
// read, 4 KiB random read/write) through a mount of a 10+4 store on local
// backends, and the same jobs on the plain disk underneath in the same
// run, and reports each figure with its ratio to the plain disk:
//
//	go test ./fuse -run '^$' -bench Fio -benchtime 1x
//
// HEALSTORE_FIO_SIZE (default 1G) sets the sequential file size,
// HEALSTORE_FIO_RAND_SIZE (32M) and HEALSTORE_FIO_RUNTIME (20) the random
// job, HEALSTORE_FUSE_BLOCK (default 16M) the filesystem block size and
// HEALSTORE_FUSE_ENCRYPTION (aes-256-gcm) the store's encryption. As root the
// page cache is dropped before each read job, so reads come from the disk.
// The run ignores b.N: each job runs once.
func BenchmarkFio(b *testing.B) {
	requireFUSE(b)
	requireTool(b, "fio")
	seqSize := envOr("HEALSTORE_FIO_SIZE", "1G")
	randSize := envOr("HEALSTORE_FIO_RAND_SIZE", "32M")
	runtime := envOr("HEALSTORE_FIO_RUNTIME", "20")
	blockSize := 16 << 20
	if v := os.Getenv("HEALSTORE_FUSE_BLOCK"); v != "" {
		fmt.Sscanf(strings.TrimSuffix(v, "M"), "%d", &blockSize)
		blockSize <<= 20
	}
	jobs := []struct{ name, file string }{
		{"seq-write-1m", "seq-write-1m.fio"},
		{"seq-read-1m", "seq-read-1m.fio"},
		{"randrw-4k", "randrw-4k.fio"},
	}
	run := func(dir string, before func(job string)) map[string]fioResult {
		out := map[string]fioResult{}
		for _, j := range jobs {
			before(j.name)
			raw := runFio(b, fioJob(b, j.file), map[string]string{
				"HEALSTORE_FIO_DIR": dir, "HEALSTORE_FIO_SIZE": seqSize,
				"HEALSTORE_FIO_RAND_SIZE": randSize, "HEALSTORE_FIO_RUNTIME": runtime,
			}, "--output-format=json")
			r, err := parseFio(raw)
			if err != nil {
				b.Fatalf("%s: %v", j.name, err)
			}
			out[j.name] = r
		}
		return out
	}

	plainDir := b.TempDir()
	plain := run(plainDir, func(job string) {
		if strings.Contains(job, "read") {
			dropCaches(b)
		}
	})

	enc := envOr("HEALSTORE_FUSE_ENCRYPTION", "aes-256-gcm")
	st := newStoreWith(b, 10, 4, 4<<20, func(c *healstore.Config) { c.Policy.Encryption = enc })
	e := newMount(b, st, Options{BlockSize: blockSize})
	mounted := run(e.dir, func(job string) {
		if strings.Contains(job, "read") {
			e.remount() // empty caches in the mount and the kernel
			dropCaches(b)
		}
	})

	b.Logf("fio, %s sequential file, %s random file; healstore 10+4 (%s) on local backends, %d KiB file blocks", seqSize, randSize, enc, blockSize>>10)
	b.Logf("%-14s %14s %14s %7s", "job", "plain disk", "healstore", "ratio")
	for _, j := range jobs {
		p, m := plain[j.name], mounted[j.name]
		if strings.HasPrefix(j.name, "rand") {
			b.Logf("%-14s %9.0f IOPS %9.0f IOPS %7.3f", j.name, p.iops(), m.iops(), m.iops()/p.iops())
			b.ReportMetric(m.iops(), j.name+"-IOPS")
			b.ReportMetric(m.iops()/p.iops(), j.name+"-ratio")
			continue
		}
		b.Logf("%-14s %9.0f MB/s %9.0f MB/s %7.3f", j.name, p.mbps(), m.mbps(), m.mbps()/p.mbps())
		b.ReportMetric(m.mbps(), j.name+"-MB/s")
		b.ReportMetric(m.mbps()/p.mbps(), j.name+"-ratio")
	}
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
