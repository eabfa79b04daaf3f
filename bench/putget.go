package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
)

// DefaultSizes are the object sizes PutGet measures when none are given.
var DefaultSizes = []int64{4 << 10, 1 << 20, 64 << 20}

// PutGetOptions configure PutGet.
type PutGetOptions struct {
	// Mode is "put", "get" or "putget". "get" writes the objects first,
	// untimed.
	Mode string
	// Sizes of the objects; nil means DefaultSizes.
	Sizes []int64
	// Count of objects per size; 0 means AutoCount(size).
	Count int
	// BaselineDir is where the baseline writes its files; it should be on
	// the same disk as the backends. "" means next to the first local
	// backend (or the system temp dir when there is none).
	BaselineDir string
	// Prefix of the benchmark's object names (default "bench/").
	Prefix string
	// Keep leaves the objects in the store (they are deleted by default).
	Keep bool
	// Warm leaves the page cache alone before reads. By default (cold)
	// every read, healstore's and the baseline's, starts with the stored
	// bytes evicted from the page cache (fadvise DONTNEED on the local
	// backends' files and on the baseline file), so both read from the
	// disk, which is what the comparison is about. Backends that are not
	// local cannot be evicted and are read as the server caches them.
	Warm bool
	// Progress, when set, hears one line per size measured.
	Progress io.Writer
}

// AutoCount is the default number of objects of a size: enough samples
// for a p99 on small objects, about 256 MiB of data on large ones.
func AutoCount(size int64) int {
	return int(max(3, min(50, (256<<20)/max(size, 1))))
}

// Stats summarise one measured operation over Count objects.
type Stats struct {
	Ops   int           `json:"ops"`
	Bytes int64         `json:"bytes"` // object bytes moved (not stored bytes)
	Total time.Duration `json:"total_ns"`
	MBps  float64       `json:"mb_per_s"` // object bytes per second, in 10^6 bytes
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
}

func stats(lat []time.Duration, bytesPerOp int64) Stats {
	st := Stats{Ops: len(lat), Bytes: bytesPerOp * int64(len(lat))}
	if len(lat) == 0 {
		return st
	}
	for _, d := range lat {
		st.Total += d
	}
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	st.P50 = sorted[(len(sorted)-1)/2]
	st.P99 = sorted[min(len(sorted)-1, (len(sorted)*99+99)/100-1)]
	if st.Total > 0 {
		st.MBps = float64(st.Bytes) / st.Total.Seconds() / 1e6
	}
	return st
}

// SizeResult is one object size's figures.
type SizeResult struct {
	Size int64 `json:"size"`
	// StoredBytes is what one object occupies on the backends (all shards,
	// headers included), or in its metadata record when it is inline (the
	// sealed block): the bytes the baseline writes and reads.
	StoredBytes int64 `json:"stored_bytes"`
	Put         Stats `json:"put"`
	Get         Stats `json:"get"`
	// BasePut writes StoredBytes to one file and fsyncs it; BaseGet reads
	// it back. Their MB/s count object bytes, so ratios compare like with
	// like: the time to store one object either way.
	BasePut  Stats   `json:"baseline_put"`
	BaseGet  Stats   `json:"baseline_get"`
	PutRatio float64 `json:"put_ratio"` // Put.MBps / BasePut.MBps
	GetRatio float64 `json:"get_ratio"` // Get.MBps / BaseGet.MBps
}

// PutGetReport is the result of one PutGet run.
type PutGetReport struct {
	Mode        string       `json:"mode"`
	K           int          `json:"k"`
	M           int          `json:"m"`
	BlockSize   int          `json:"block_size"`
	Encryption  string       `json:"encryption"`
	Compression string       `json:"compression"`
	Backends    int          `json:"backends"`
	BaselineDir string       `json:"baseline_dir"`
	Cache       string       `json:"cache"` // "cold" or "warm" reads
	Results     []SizeResult `json:"results"`
}

// PutGet measures healstore puts and/or gets of objects of each size and,
// interleaved with them (so both see the same machine load), the baseline
// of writing and reading the same stored bytes straight to a file on the
// same disk.
func PutGet(ctx context.Context, s *healstore.Store, o PutGetOptions) (*PutGetReport, error) {
	switch o.Mode {
	case "put", "get", "putget":
	default:
		return nil, fmt.Errorf("bench: mode %q is not put, get or putget", o.Mode)
	}
	sizes := o.Sizes
	if len(sizes) == 0 {
		sizes = DefaultSizes
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = "bench/"
	}
	cfg := s.Config()
	baseDir := o.BaselineDir
	if baseDir == "" {
		baseDir = os.TempDir()
		for _, b := range cfg.Backends {
			if b.Kind == backends.KindLocal {
				baseDir = filepath.Dir(b.Path)
				break
			}
		}
	}
	tmpDir, err := os.MkdirTemp(baseDir, ".healstore-bench-*")
	if err != nil {
		return nil, fmt.Errorf("bench: baseline dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)

	p := cfg.Policy
	rep := &PutGetReport{Mode: o.Mode, K: p.K, M: p.M, BlockSize: p.BlockSize, Encryption: p.Encryption,
		Compression: p.Compression, Backends: len(cfg.Backends), BaselineDir: baseDir, Cache: "cold"}
	if o.Warm {
		rep.Cache = "warm"
	}
	rnd := rand.New(rand.NewChaCha8([32]byte{'h', 'e', 'a', 'l'}))
	for _, size := range sizes {
		count := o.Count
		if count <= 0 {
			count = AutoCount(size)
		}
		r, err := measureSize(ctx, s, o, prefix, tmpDir, size, count, rnd)
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, *r)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "size %s: put %.1f MB/s (baseline %.1f), get %.1f MB/s (baseline %.1f)\n",
				FormatSize(size), r.Put.MBps, r.BasePut.MBps, r.Get.MBps, r.BaseGet.MBps)
		}
	}
	return rep, nil
}

func measureSize(ctx context.Context, s *healstore.Store, o PutGetOptions, prefix, tmpDir string, size int64, count int, rnd *rand.Rand) (*SizeResult, error) {
	data := make([]byte, size)
	names := make([]string, count)
	var putLat, getLat, basePutLat, baseGetLat []time.Duration
	res := &SizeResult{Size: size}
	timedPut := o.Mode != "get"
	timedGet := o.Mode != "put"
	defer func() {
		if o.Keep {
			return
		}
		for _, n := range names {
			if n != "" {
				s.Delete(context.WithoutCancel(ctx), n)
			}
		}
	}()
	// One baseline file per object, as healstore stores each object in
	// shards of its own: a file rewritten in place would sit on the same
	// disk blocks every time, which a caching virtual disk serves from
	// memory on later reads (see docs/benchmarks.md).
	baseFiles := make([]string, count)
	defer func() {
		for _, f := range baseFiles {
			if f != "" {
				os.Remove(f)
			}
		}
	}()
	var stored []byte // what the baseline writes: as many bytes as the shards
	for i := range count {
		fillRandom(rnd, data)
		names[i] = fmt.Sprintf("%s%d-%d", prefix, size, i)
		start := time.Now()
		if _, err := s.Put(ctx, names[i], bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("bench put %s: %w", names[i], err)
		}
		if timedPut {
			putLat = append(putLat, time.Since(start))
		}
		if i == 0 {
			n, err := storedBytes(ctx, s, names[i])
			if err != nil {
				return nil, err
			}
			res.StoredBytes = n
		}
		if stored == nil {
			stored = make([]byte, res.StoredBytes)
		}
		copy(stored, data) // the rest stays as is: content does not matter to a plain file
		baseFiles[i] = filepath.Join(tmpDir, fmt.Sprintf("baseline-%d-%d", size, i))
		d, err := baselineWrite(baseFiles[i], stored)
		if err != nil {
			return nil, err
		}
		if timedPut {
			basePutLat = append(basePutLat, d)
		}
	}
	if timedGet {
		buf := make([]byte, size)
		baseBuf := make([]byte, res.StoredBytes)
		var localDirs []string
		for _, b := range s.Config().Backends {
			if b.Kind == backends.KindLocal {
				localDirs = append(localDirs, b.Path)
			}
		}
		for i := range count {
			if !o.Warm {
				if err := evict(localDirs...); err != nil {
					return nil, err
				}
			}
			start := time.Now()
			r, err := s.Open(ctx, names[i])
			if err != nil {
				return nil, fmt.Errorf("bench get %s: %w", names[i], err)
			}
			_, err = io.ReadFull(r, buf)
			r.Close()
			if err != nil {
				return nil, fmt.Errorf("bench get %s: %w", names[i], err)
			}
			getLat = append(getLat, time.Since(start))
			if !o.Warm {
				if err := evict(baseFiles[i]); err != nil {
					return nil, err
				}
			}
			d, err := baselineRead(baseFiles[i], baseBuf)
			if err != nil {
				return nil, err
			}
			baseGetLat = append(baseGetLat, d)
		}
	}
	res.Put, res.Get = stats(putLat, size), stats(getLat, size)
	res.BasePut, res.BaseGet = stats(basePutLat, size), stats(baseGetLat, size)
	if res.BasePut.MBps > 0 {
		res.PutRatio = res.Put.MBps / res.BasePut.MBps
	}
	if res.BaseGet.MBps > 0 {
		res.GetRatio = res.Get.MBps / res.BaseGet.MBps
	}
	return res, nil
}

// storedBytes sums the sizes of an object's shards as the metastore
// records them; for an inline object, the sealed block its record holds.
func storedBytes(ctx context.Context, s *healstore.Store, name string) (int64, error) {
	o, err := s.Meta().GetObject(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	n := int64(len(o.Inline))
	for _, id := range o.Stripes {
		st, err := s.Meta().GetStripe(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("bench: %w", err)
		}
		for _, sh := range st.Shards {
			n += sh.Size
		}
	}
	return n, nil
}

// baselineWrite writes b to a fresh file and fsyncs it: storing the bytes
// on the disk with nothing in between.
func baselineWrite(path string, b []byte) (time.Duration, error) {
	os.Remove(path)
	start := time.Now()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("bench baseline: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return 0, fmt.Errorf("bench baseline: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, fmt.Errorf("bench baseline: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("bench baseline: %w", err)
	}
	return time.Since(start), nil
}

// baselineRead reads the baseline file whole into buf.
func baselineRead(path string, buf []byte) (time.Duration, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("bench baseline: %w", err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, buf); err != nil {
		return 0, fmt.Errorf("bench baseline: %w", err)
	}
	return time.Since(start), nil
}

// evict drops every regular file under paths from the page cache. Files
// must be clean (written and fsynced), as shards and the baseline are.
func evict(paths ...string) error {
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return nil // raced with a delete
			}
			defer f.Close()
			return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		})
		if err != nil {
			return fmt.Errorf("bench: evict %s from the page cache: %w", root, err)
		}
	}
	return nil
}

func fillRandom(rnd *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rnd.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rnd.Uint32())
	}
}

// ParseSize reads sizes like 4096, 4k, 4KiB, 1M, 1MiB, 2GiB (binary units).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	lower := strings.ToLower(t)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			lower = strings.TrimSuffix(lower, u.suffix)
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(lower), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: use a number with an optional unit (4KiB, 1MiB, 64MiB)", s)
	}
	return n * mult, nil
}

// FormatSize prints a size in the largest binary unit that divides it.
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// WriteText prints the report as a table.
func (r *PutGetReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "healstore bench %s: policy %d+%d, block %s, encryption %s, compression %s, %d backends; %s-cache reads; baseline on %s\n",
		r.Mode, r.K, r.M, FormatSize(int64(r.BlockSize)), r.Encryption, r.Compression, r.Backends, r.Cache, r.BaselineDir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\top\tn\tMB/s\tp50\tp99\tbaseline MB/s\tbaseline p50\tratio\t")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }
	for _, res := range r.Results {
		if res.Put.Ops > 0 {
			fmt.Fprintf(tw, "%s\tput\t%d\t%.1f\t%s\t%s\t%.1f\t%s\t%.2f\t\n", FormatSize(res.Size), res.Put.Ops, res.Put.MBps,
				ms(res.Put.P50), ms(res.Put.P99), res.BasePut.MBps, ms(res.BasePut.P50), res.PutRatio)
		}
		if res.Get.Ops > 0 {
			fmt.Fprintf(tw, "%s\tget\t%d\t%.1f\t%s\t%s\t%.1f\t%s\t%.2f\t\n", FormatSize(res.Size), res.Get.Ops, res.Get.MBps,
				ms(res.Get.P50), ms(res.Get.P99), res.BaseGet.MBps, ms(res.BaseGet.P50), res.GetRatio)
		}
	}
	return tw.Flush()
}

// WriteJSON prints the report as one JSON object.
func (r *PutGetReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
