package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/healstore/healstore/encoder"
)

// EncodeOptions configure Encode. Zero values take the defaults noted.
type EncodeOptions struct {
	K, M        int    // default 10 and 4
	BlockSize   int    // bytes; default 4 MiB
	Compression string // default "none"
	Encryption  string // default "none"
	Checksum    string // default "xxh3-128"
	// Duration is the total measuring time, shared by all paths in
	// interleaved rounds; default 10s.
	Duration time.Duration
	// Threads is how many blocks are coded at once and how many cores Go
	// may use meanwhile (GOMAXPROCS is set to it for the run, so one
	// thread means one core for everything, helpers included); 0 means
	// all cores.
	Threads int
	// WorkingSet is the bytes of object data each path cycles through;
	// default 64 MiB, several times any CPU cache, so data streams through
	// memory as in a real write.
	WorkingSet int64
}

// PathResult is the measured throughput of one path.
type PathResult struct {
	// GBps is object data (block bytes before coding) per second, in 10^9 bytes.
	GBps float64 `json:"gb_per_s"`
	// RatioToRaw is the median over rounds of this path's throughput over
	// the raw baseline's in the same round; RatioMin and RatioMax are the
	// extremes of the per-round ratio.
	RatioToRaw float64 `json:"ratio_to_raw"`
	RatioMin   float64 `json:"ratio_min"`
	RatioMax   float64 `json:"ratio_max"`
	// CPURatioToRaw compares CPU time per block instead of wall time
	// (process user+system time, GC included): it is what the path costs,
	// and other programs competing for the cores barely move it.
	CPURatioToRaw float64 `json:"cpu_ratio_to_raw"`
	Blocks        int64   `json:"blocks"`
	Seconds       float64 `json:"seconds"`
	CPUSeconds    float64 `json:"cpu_seconds"`
}

// EncodeResult is what Encode measured. RatioToRaw is healstore encode
// over the raw baseline (the headline figure).
type EncodeResult struct {
	Policy     encoder.Policy `json:"policy"`
	Threads    int            `json:"threads"`
	CPUs       int            `json:"cpus"`
	WorkingSet int64          `json:"working_set_bytes"`
	Rounds     int            `json:"rounds"`
	RatioToRaw float64        `json:"ratio_to_raw"`
	// Raw: reedsolomon Split + Encode on buffers with room for parity, so
	// nothing is copied; no sealing, headers or checksums.
	Raw PathResult `json:"raw"`
	// Encode: healstore's write path (BlockBuffer + EncodeBuffer, as the
	// stream encoder does): the block is read into place, then sealed,
	// coded, framed and checksummed.
	Encode PathResult `json:"encode"`
	// EncodeFromSlice: EncodeBlock from a caller's []byte, which costs one
	// copy of the block into the shards.
	EncodeFromSlice PathResult `json:"encode_from_slice"`
	// Decode: DecodeBlock with every shard present (all verified).
	Decode PathResult `json:"decode"`
	// DecodeMissing: DecodeBlock with m data shards missing, rebuilt.
	DecodeMissing PathResult `json:"decode_missing"`
	// ChecksumGBps is the single-core throughput of each checksum
	// algorithm over the working set.
	ChecksumGBps map[string]float64 `json:"checksum_gb_per_s"`
}

// Encode runs the encoder benchmark. progress, when not nil, hears one line
// per round. It sets GOMAXPROCS to opts.Threads while it runs.
func Encode(ctx context.Context, opts EncodeOptions, progress io.Writer) (*EncodeResult, error) {
	o := withEncodeDefaults(opts)
	p := encoder.Policy{K: o.K, M: o.M, BlockSize: o.BlockSize, Compression: o.Compression, Encryption: o.Encryption, Checksum: o.Checksum}
	if err := p.Validate(0); err != nil {
		return nil, err
	}
	if o.Threads < 1 {
		return nil, fmt.Errorf("bench encode: threads must be at least 1, got %d", o.Threads)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(o.Threads))
	if progress == nil {
		progress = io.Discard
	}

	key := bytes.Repeat([]byte{0x42}, 32) // a benchmark key, never a real one
	c, err := encoder.NewCodec(p, key)
	if err != nil {
		return nil, err
	}
	nblocks := int(max(o.WorkingSet/int64(p.BlockSize), int64(2*o.Threads)))
	fmt.Fprintf(progress, "bench encode: %s, %d thread(s), working set %d blocks (%d MiB), %s\n",
		p, o.Threads, nblocks, int64(nblocks)*int64(p.BlockSize)>>20, o.Duration)
	w, err := newEncodeWork(ctx, c, nblocks)
	if err != nil {
		return nil, err
	}
	paths := []*benchPath{
		{name: "raw", op: w.raw},
		{name: "encode", op: w.encode},
		{name: "encode_from_slice", op: w.encodeFromSlice},
		{name: "decode", op: w.decode},
		{name: "decode_missing", op: w.decodeMissing},
	}
	// Warm up: touch every buffer once per path (page faults, pools,
	// inversion cache) before anything is timed.
	for _, bp := range paths {
		for i := range nblocks {
			if err := bp.op(i); err != nil {
				return nil, fmt.Errorf("bench encode: %s: %w", bp.name, err)
			}
		}
	}

	// Interleaved rounds: each round gives every path a short slice, in a
	// rotating order, so load that drifts during the run (other programs,
	// frequency scaling) hits every path alike. Ratios are the median of
	// the per-round ratios, which a burst of load in one slice cannot move.
	rounds := max(3, int(o.Duration/(time.Duration(len(paths))*roundSlice)))
	slice := o.Duration / time.Duration(rounds*len(paths))
	for r := range rounds {
		for k := range paths {
			bp := paths[(r+k)%len(paths)]
			if err := bp.run(ctx, o.Threads, nblocks, slice); err != nil {
				return nil, fmt.Errorf("bench encode: %s: %w", bp.name, err)
			}
		}
		gbps := func(bp *benchPath) float64 { return bp.last() * float64(p.BlockSize) / 1e9 }
		raw := paths[0].last()
		fmt.Fprintf(progress, "round %d/%d: raw %.2f GB/s", r+1, rounds, gbps(paths[0]))
		for _, bp := range paths[1:] {
			ratio := bp.last() / raw
			bp.ratios = append(bp.ratios, ratio)
			fmt.Fprintf(progress, ", %s %.2f (%.2f)", bp.name, gbps(bp), ratio)
		}
		fmt.Fprintln(progress)
	}

	res := &EncodeResult{Policy: p, Threads: o.Threads, CPUs: runtime.NumCPU(), WorkingSet: int64(nblocks) * int64(p.BlockSize), Rounds: rounds}
	res.Raw = paths[0].result(p.BlockSize, paths[0])
	res.Raw.RatioToRaw, res.Raw.RatioMin, res.Raw.RatioMax = 1, 1, 1
	res.Encode = paths[1].result(p.BlockSize, paths[0])
	res.EncodeFromSlice = paths[2].result(p.BlockSize, paths[0])
	res.Decode = paths[3].result(p.BlockSize, paths[0])
	res.DecodeMissing = paths[4].result(p.BlockSize, paths[0])
	res.RatioToRaw = res.Encode.RatioToRaw
	runtime.GOMAXPROCS(1) // checksum speed is per core
	res.ChecksumGBps = map[string]float64{}
	for _, alg := range []string{encoder.ChecksumXXH3, encoder.ChecksumSHA256} {
		res.ChecksumGBps[alg] = checksumSpeed(alg, w.data, max(200*time.Millisecond, o.Duration/50))
	}
	return res, nil
}

func withEncodeDefaults(o EncodeOptions) EncodeOptions {
	if o.K == 0 {
		o.K = 10
	}
	if o.M == 0 {
		o.M = 4
	}
	if o.BlockSize == 0 {
		o.BlockSize = encoder.DefaultBlockSize
	}
	if o.Compression == "" {
		o.Compression = encoder.CompressionNone
	}
	if o.Encryption == "" {
		o.Encryption = encoder.EncryptionNone
	}
	if o.Checksum == "" {
		o.Checksum = encoder.ChecksumXXH3
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Threads == 0 {
		o.Threads = runtime.NumCPU()
	}
	if o.WorkingSet <= 0 {
		o.WorkingSet = 64 << 20
	}
	return o
}

// roundSlice is each path's time in one round: short enough that load
// changes little between the paths of a round, long enough to code dozens
// of blocks.
const roundSlice = 100 * time.Millisecond

// benchPath is one measured path: op codes block i of the working set.
type benchPath struct {
	name   string
	op     func(i int) error
	blocks int64
	dur    time.Duration
	cpu    time.Duration
	// the latest round's figures
	lastBlocks int64
	lastDur    time.Duration
	ratios     []float64
}

// run codes blocks on threads workers for d. Worker t takes blocks t,
// t+threads, ... so no two workers ever touch the same buffer.
func (bp *benchPath) run(ctx context.Context, threads, nblocks int, d time.Duration) error {
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, threads)
	cpu0 := cpuTime()
	start := time.Now()
	deadline := start.Add(d)
	for t := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := t; time.Now().Before(deadline); i += threads {
				if err := ctx.Err(); err != nil {
					errs[t] = err
					return
				}
				if err := bp.op(i % nblocks); err != nil {
					errs[t] = err
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	bp.cpu += cpuTime() - cpu0
	if err := errors.Join(errs...); err != nil {
		return err
	}
	bp.lastBlocks, bp.lastDur = done.Load(), elapsed
	bp.blocks += bp.lastBlocks
	bp.dur += elapsed
	return nil
}

// last is the latest round's throughput in blocks per second (a ratio of
// two paths' last() is the ratio of their GB/s).
func (bp *benchPath) last() float64 {
	return float64(bp.lastBlocks) / bp.lastDur.Seconds()
}

func (bp *benchPath) result(blockSize int, raw *benchPath) PathResult {
	r := PathResult{Blocks: bp.blocks, Seconds: bp.dur.Seconds(), CPUSeconds: bp.cpu.Seconds()}
	if bp.blocks > 0 && raw.blocks > 0 && raw.cpu > 0 {
		r.CPURatioToRaw = (raw.cpu.Seconds() / float64(raw.blocks)) / (bp.cpu.Seconds() / float64(bp.blocks))
	}
	r.GBps = float64(bp.blocks) * float64(blockSize) / bp.dur.Seconds() / 1e9
	if len(bp.ratios) > 0 {
		s := slices.Sorted(slices.Values(bp.ratios))
		r.RatioMin, r.RatioMax = s[0], s[len(s)-1]
		r.RatioToRaw = s[len(s)/2]
		if len(s)%2 == 0 {
			r.RatioToRaw = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
	}
	return r
}

// encodeWork holds every path's working set.
type encodeWork struct {
	c       *encoder.Codec
	p       encoder.Policy
	rs      reedsolomon.Encoder
	obj     encoder.ObjectID
	data    [][]byte // blocks, each with room for raw parity after it
	ids     []encoder.StripeID
	buffers []*encoder.BlockBuffer
	shards  [][][]byte // encoded stripes for decoding
	missing [][][]byte // the same with m data shards dropped
	sums    [][][]byte
}

func newEncodeWork(ctx context.Context, c *encoder.Codec, n int) (*encodeWork, error) {
	p := c.Policy()
	rs, err := reedsolomon.New(p.K, p.M, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, err
	}
	w := &encodeWork{c: c, p: p, rs: rs, obj: encoder.NewObjectID()}
	per := (p.BlockSize + p.K - 1) / p.K
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := make([]byte, p.BlockSize, per*(p.K+p.M))
		fillBlock(rng, b, p.Compression == encoder.CompressionZstd)
		w.data = append(w.data, b)
		w.ids = append(w.ids, encoder.NewStripeID())
		bb := c.NewBlockBuffer()
		if _, err := bb.Write(b); err != nil {
			return nil, err
		}
		w.buffers = append(w.buffers, bb)
		st, err := c.EncodeBlock(w.obj, uint64(i), w.ids[i], b)
		if err != nil {
			return nil, err
		}
		w.shards = append(w.shards, st.Shards)
		w.sums = append(w.sums, st.Sums)
		miss := slices.Clone(st.Shards)
		clear(miss[:p.M]) // data shards: every missing byte must be rebuilt
		w.missing = append(w.missing, miss)
	}
	// Check the paths once before timing them.
	got, err := c.DecodeBlock(w.obj, 0, w.ids[0], w.missing[0], w.sums[0])
	if err != nil {
		return nil, fmt.Errorf("decode check: %w", err)
	}
	if !bytes.Equal(got, w.data[0]) {
		return nil, errors.New("decode check: decoded block differs from the original")
	}
	return w, nil
}

// fillBlock fills b with pseudo-random bytes. When the policy compresses,
// it alternates 8 KiB of random bytes with 8 KiB of text made of words
// from a small vocabulary, so a block compresses to about 60% as mixed
// real data might, and zstd's time is spent as it would be there.
func fillBlock(rng *rand.Rand, b []byte, compressible bool) {
	const chunk = 8 << 10
	for off := 0; off < len(b); off += chunk {
		end := min(off+chunk, len(b))
		if compressible && (off/chunk)%2 == 1 {
			fillText(rng, b[off:end])
			continue
		}
		for j := off; j < end; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < end; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
	}
}

var benchWords = strings.Fields(`stripe shard block parity backend healer object metadata
	repair scrub node farm domain quorum replica sealed nonce checksum header payload
	the of and to in is for on with as by at from that this be are was it an or not
	2026 07 13 error warning info debug request response latency bytes seconds ok`)

// fillText fills b with space-separated words, one per line now and then.
func fillText(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); {
		w := benchWords[rng.IntN(len(benchWords))]
		i += copy(b[i:], w)
		if i < len(b) {
			b[i] = " \n"[min(rng.IntN(12), 1)^1]
			i++
		}
	}
}

func (w *encodeWork) raw(i int) error {
	shards, err := w.rs.Split(w.data[i])
	if err != nil {
		return err
	}
	return w.rs.Encode(shards)
}

func (w *encodeWork) encode(i int) error {
	st, err := w.c.EncodeBuffer(w.obj, uint64(i), w.ids[i], w.buffers[i])
	if err != nil {
		return err
	}
	st.Release()
	return nil
}

func (w *encodeWork) encodeFromSlice(i int) error {
	st, err := w.c.EncodeBlock(w.obj, uint64(i), w.ids[i], w.data[i])
	if err != nil {
		return err
	}
	st.Release()
	return nil
}

func (w *encodeWork) decode(i int) error {
	_, err := w.c.DecodeBlock(w.obj, uint64(i), w.ids[i], w.shards[i], w.sums[i])
	return err
}

func (w *encodeWork) decodeMissing(i int) error {
	_, err := w.c.DecodeBlock(w.obj, uint64(i), w.ids[i], w.missing[i], w.sums[i])
	return err
}

// checksumSpeed hashes the working set with alg for about d on one core.
func checksumSpeed(alg string, blocks [][]byte, d time.Duration) float64 {
	var n int64
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		b := blocks[i%len(blocks)]
		encoder.Sum(alg, b)
		n += int64(len(b))
	}
	return float64(n) / time.Since(start).Seconds() / 1e9
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// WriteText prints the result as a table.
func (r *EncodeResult) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "policy %s, %d thread(s) of %d CPUs, working set %d MiB, %d rounds\n", r.Policy, r.Threads, r.CPUs, r.WorkingSet>>20, r.Rounds)
	fmt.Fprintf(tw, "path\tGB/s\tratio to raw\tper-round range\tCPU ratio\t\n")
	for _, row := range []struct {
		name string
		p    PathResult
	}{
		{"raw Reed-Solomon", r.Raw},
		{"encode", r.Encode},
		{"encode from slice", r.EncodeFromSlice},
		{"decode, all present", r.Decode},
		{fmt.Sprintf("decode, %d missing", r.Policy.M), r.DecodeMissing},
	} {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f-%.2f\t%.2f\t\n", row.name, row.p.GBps, row.p.RatioToRaw, row.p.RatioMin, row.p.RatioMax, row.p.CPURatioToRaw)
	}
	for _, alg := range []string{encoder.ChecksumXXH3, encoder.ChecksumSHA256} {
		fmt.Fprintf(tw, "checksum %s, one core\t%.2f\t\t\t\t\n", alg, r.ChecksumGBps[alg])
	}
	return tw.Flush()
}
