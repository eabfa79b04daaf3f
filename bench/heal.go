package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/local"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer"
	"github.com/healstore/healstore/metastore"
)

// HealOptions configure Heal.
type HealOptions struct {
	// Size is the object data written before the loss (default 256 MiB).
	// With 4+2 over six backends one backend holds about Size/4 of shards.
	Size int64
	// ObjectSize of each object (default 16 MiB).
	ObjectSize int64
	// K and M of the policy (default 4+2) over K+M local backends.
	K, M int
	// BlockSize of the policy (default 4 MiB).
	BlockSize int
	// Workers rebuilding in parallel (default 8: the rebuild waits on
	// fsyncs, so more repairs in flight keep the disk busy).
	Workers int
	// ProbeInterval of the healer's monitor (default 1s).
	ProbeInterval time.Duration
	// Dir holds the store; "" means a new temporary directory, deleted
	// afterwards unless Keep.
	Dir  string
	Keep bool
	// MarginZero is how many stripes get a second shard deleted while the
	// rebuild is under way, to time how fast margin-0 stripes jump the
	// queue (default 8; negative: none).
	MarginZero int
	// Progress, when set, hears what happens.
	Progress io.Writer
}

func (o *HealOptions) defaults() {
	if o.Size <= 0 {
		o.Size = 256 << 20
	}
	if o.ObjectSize <= 0 {
		o.ObjectSize = 16 << 20
	}
	if o.K == 0 {
		o.K, o.M = 4, 2
	}
	if o.BlockSize == 0 {
		o.BlockSize = 4 << 20
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.MarginZero == 0 {
		o.MarginZero = 8
	}
}

// HealReport is what Heal measured. Durations count from the moment the
// backend's directory was wiped.
type HealReport struct {
	K           int   `json:"k"`
	M           int   `json:"m"`
	Backends    int   `json:"backends"`
	BlockSize   int   `json:"block_size"`
	Workers     int   `json:"workers"`
	DataBytes   int64 `json:"data_bytes"`
	Stripes     int   `json:"stripes"`
	LostStripes int   `json:"lost_stripes"`
	LostBytes   int64 `json:"lost_bytes"` // shard bytes the wiped backend held
	// Detected: the first stripe queued (by a read that met a lost
	// shard, or by the monitor). WipeNoticed: the monitor found the
	// backend's identity marker gone and queued everything it held.
	// HealingStarted: the first repair committed. FullRedundancy: every
	// stripe whole again.
	Detected       time.Duration `json:"detected_ns"`
	WipeNoticed    time.Duration `json:"wipe_noticed_ns"`
	HealingStarted time.Duration `json:"healing_started_ns"`
	FullRedundancy time.Duration `json:"full_redundancy_ns"`
	BytesRead      int64         `json:"bytes_read"`
	BytesWritten   int64         `json:"bytes_written"`
	// ReadAmplification is bytes read per byte rebuilt; a classic
	// Reed-Solomon repair of one shard reads k.
	ReadAmplification float64 `json:"read_amplification"`
	// RebuildMBps is rebuilt shard bytes per second, from the first repair
	// to full redundancy (10^6 bytes/s).
	RebuildMBps float64 `json:"rebuild_mb_per_s"`
	// BaselineMBps: the same stripes' k source shards read and one shard
	// written (fsynced) per stripe, through the same backends with the
	// same parallelism, no decoding, no metadata: the I/O floor of a
	// rebuild. Ratio = RebuildMBps / BaselineMBps.
	BaselineMBps float64 `json:"baseline_mb_per_s"`
	Ratio        float64 `json:"ratio"`
	// Margin-0 stripes made during the rebuild (a second shard deleted,
	// found by a read) and the longest time from that read to the stripe
	// having a margin again.
	MarginZeroStripes int           `json:"margin0_stripes"`
	MarginZeroMax     time.Duration `json:"margin0_max_ns"`
	// Reads of random ranges kept running from the loss to full
	// redundancy; ReadErrors must be 0.
	Reads      int    `json:"reads"`
	ReadErrors int    `json:"read_errors"`
	Dir        string `json:"dir"`
}

// Heal builds a store on local backends, fills it, wipes one backend
// (every shard and its identity marker deleted, its data directory left
// empty, as when a disk is replaced by a blank one) and lets the healer
// restore full redundancy while readers keep reading. It measures the time
// to detection, first repair and full redundancy, the rebuild rate, read
// amplification, how fast margin-0 stripes are repaired in the middle of
// the backlog, and the baseline rebuild I/O.
func Heal(ctx context.Context, o HealOptions) (*HealReport, error) {
	o.defaults()
	say := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "healstore-bench-heal-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	pol := encoder.Policy{K: o.K, M: o.M, BlockSize: o.BlockSize, Compression: encoder.CompressionNone,
		Encryption: encoder.EncryptionAESGCM, Checksum: encoder.ChecksumXXH3}
	cfgPath, err := healstore.Init(dir, healstore.InitOptions{Policy: pol, Backends: o.K + o.M})
	if err != nil {
		return nil, err
	}
	cfg, err := healstore.LoadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	cfg.Healer.GCDelay = healstore.Duration(time.Hour)
	cfg.Healer.Workers = o.Workers
	cfg.Healer.ProbeInterval = healstore.Duration(o.ProbeInterval)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := healstore.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	rep := &HealReport{K: o.K, M: o.M, Backends: o.K + o.M, BlockSize: o.BlockSize, Workers: o.Workers, Dir: dir}

	// Fill.
	rnd := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, o.ObjectSize)
	var names []string
	t0 := time.Now()
	for written := int64(0); written < o.Size; {
		n := min(o.ObjectSize, o.Size-written)
		fillRandom(rnd, buf[:n])
		name := fmt.Sprintf("bench/heal/%05d", len(names))
		if _, err := s.Put(ctx, name, bytes.NewReader(buf[:n])); err != nil {
			return nil, err
		}
		names = append(names, name)
		written += n
		rep.DataBytes = written
	}
	say("filled %s in %d objects (%s)", human(rep.DataBytes), len(names), time.Since(t0).Round(time.Millisecond))

	victim := cfg.Backends[0]
	meta := s.Meta()
	if err := meta.StripesOnBackend(ctx, victim.Name, func(id [16]byte) error {
		st, err := meta.GetStripe(ctx, id)
		if err != nil {
			return err
		}
		for _, l := range st.Shards {
			if l.Backend == victim.Name {
				rep.LostBytes += l.Size
			}
		}
		rep.LostStripes++
		return nil
	}); err != nil {
		return nil, err
	}
	if err := meta.ScanStripes(ctx, [16]byte{}, func(*metastore.Stripe) error { rep.Stripes++; return nil }); err != nil {
		return nil, err
	}

	h, err := s.NewHealer(ctx, healstore.HealerOptions{Tune: func(c *healer.Config) {
		c.SuspectAfter = 1
		c.ScrubPeriod, c.LightScrubPeriod = -1, -1
		c.CensusInterval = healer.Duration(time.Hour)
	}})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if err := h.ProbeAll(ctx); err != nil {
		return nil, err
	}
	var dirs []string
	for _, b := range cfg.Backends {
		dirs = append(dirs, b.Path)
	}
	if err := evict(dirs...); err != nil {
		return nil, err
	}
	hctx, stopHealer := context.WithCancel(ctx)
	healerDone := make(chan struct{})
	go func() { _ = h.Run(hctx); close(healerDone) }()
	defer func() { stopHealer(); <-healerDone }()
	// Let the monitor's first round (run at start) pass, so the wipe lands
	// at a random point of its probe interval, as in production.
	time.Sleep(o.ProbeInterval + o.ProbeInterval/2)

	// The loss: every shard file and the identity marker go; the local
	// backend's data directory stays, empty, as a blank disk mounted in
	// place of the old one would be once healstore wrote to it. (A
	// directory that vanished altogether is an unreachable backend: it is
	// declared down after the grace period, as the demo shows.)
	// The swap is atomic, so nothing the healer writes there afterwards
	// is caught by the deletion.
	dataDir := filepath.Join(victim.Path, "data")
	lossAt := time.Now()
	if err := os.Rename(dataDir, dataDir+".wiped"); err != nil {
		return nil, fmt.Errorf("bench heal: %w", err)
	}
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("bench heal: %w", err)
	}
	// The old files are deleted after the measurement, not during it.
	defer os.RemoveAll(dataDir + ".wiped")
	say("wiped backend %s: %d stripes lost a shard (%s of shards)", victim.Name, rep.LostStripes, human(rep.LostBytes))

	// A reader keeps reading until full redundancy: a random 256 KiB
	// range of a random object every 100 ms, so reads are checked all
	// along without the reader becoming the benchmark.
	var reads, readErrs atomic.Int64
	rctx, stopReaders := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		rr := rand.New(rand.NewPCG(3, 9))
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for rctx.Err() == nil {
			if err := readRange(rctx, s, names[rr.IntN(len(names))], rr, 256<<10); err != nil && rctx.Err() == nil {
				readErrs.Add(1)
				say("read error: %v", err)
			}
			reads.Add(1)
			select {
			case <-rctx.Done():
			case <-tick.C:
			}
		}
	}()

	// Polled cheaply (queue length, the rebuilder's totals); a census
	// (a scan of every stripe) only confirms the end.
	var zeroAt time.Time
	var zeroIDs map[[16]byte]uint64
	var zeroDone time.Duration
	fail := func(err error) (*HealReport, error) {
		stopReaders()
		rwg.Wait()
		return nil, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		depth, err := meta.QueueLen(ctx)
		if err != nil {
			return fail(err)
		}
		tot := h.Repairs()
		el := time.Since(lossAt)
		if rep.Detected == 0 && depth > 0 {
			rep.Detected = el
			say("%5.1fs  detected: %d stripes queued", el.Seconds(), depth)
		}
		if rep.WipeNoticed == 0 && wipes(h) > 0 {
			rep.WipeNoticed = el
			say("%5.1fs  the monitor found %s wiped: %d stripes queued", el.Seconds(), victim.Name, depth)
		}
		if rep.HealingStarted == 0 && tot.BytesWritten > 0 {
			rep.HealingStarted = el
			say("%5.1fs  healing started", el.Seconds())
		}
		if rep.HealingStarted > 0 && zeroAt.IsZero() && o.MarginZero > 0 && depth > o.MarginZero*4 {
			// A second loss in the middle of the backlog: some stripes
			// still waiting for their first repair lose one more shard and
			// are found (queued at margin 0, as a read that meets them
			// queues them).
			ids, err := makeMarginZero(ctx, s, cfg, victim.Name, o.MarginZero)
			if err != nil {
				return fail(err)
			}
			zeroAt = time.Now()
			zeroIDs = ids
			rep.MarginZeroStripes = len(ids)
			say("%5.1fs  %d stripes pushed to margin 0 behind a backlog of %d", el.Seconds(), len(ids), depth)
		}
		if len(zeroIDs) > 0 && zeroDone == 0 {
			// Repaired: a commit since the damage, no shard missing.
			left := 0
			for id, ver := range zeroIDs {
				mst, err := meta.GetStripe(ctx, id)
				if err == nil && (mst.Version == ver || len(mst.Missing()) > 0) {
					left++
				}
			}
			if left == 0 {
				zeroDone = time.Since(zeroAt)
				say("%5.1fs  margin-0 stripes repaired %s after they were found", el.Seconds(), zeroDone.Round(time.Millisecond))
			}
		}
		// Not before the monitor noticed the wipe: until then the
		// metastore still names the lost shards, so a census of it finds
		// nothing degraded once the few stripes readers met are repaired.
		if rep.Detected > 0 && rep.WipeNoticed > 0 && depth == 0 && (len(zeroIDs) == 0 || zeroDone > 0) {
			c, err := h.TakeCensus(ctx)
			if err != nil {
				return fail(err)
			}
			if c.Degraded == 0 && c.QueueDepth == 0 {
				rep.FullRedundancy = el
				rep.BytesRead, rep.BytesWritten = tot.BytesRead, tot.BytesWritten
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopReaders()
	rwg.Wait()
	rep.MarginZeroMax = zeroDone
	rep.Reads, rep.ReadErrors = int(reads.Load()), int(readErrs.Load())
	if rep.BytesWritten > 0 {
		rep.ReadAmplification = float64(rep.BytesRead) / float64(rep.BytesWritten)
		if d := rep.FullRedundancy - rep.HealingStarted; d > 0 {
			rep.RebuildMBps = float64(rep.BytesWritten) / d.Seconds() / 1e6
		}
	}
	say("%5.1fs  full redundancy: %s rebuilt from %s read", rep.FullRedundancy.Seconds(), human(rep.BytesWritten), human(rep.BytesRead))
	stopHealer()
	<-healerDone
	// Trust, but check: every shard the metastore names exists with its
	// size (a light scrub), and the rebuilt bytes cover what was lost.
	sp, err := h.Scrub(ctx, healer.ScrubOptions{})
	if err != nil {
		return nil, err
	}
	if sp.Missing+sp.Corrupt+sp.Unreachable+sp.Misplaced > 0 || sp.Queued > 0 {
		return nil, fmt.Errorf("bench heal: after healing a scrub found %d missing, %d wrong-size, %d unreachable shards, %d misplaced stripes",
			sp.Missing, sp.Corrupt, sp.Unreachable, sp.Misplaced)
	}
	if rep.BytesWritten < rep.LostBytes {
		return nil, fmt.Errorf("bench heal: %d bytes rebuilt, %d were lost", rep.BytesWritten, rep.LostBytes)
	}

	base, err := rebuildBaseline(ctx, s, cfg, victim.Name, o.Workers, dirs)
	if err != nil {
		return nil, err
	}
	rep.BaselineMBps = base
	if base > 0 {
		rep.Ratio = rep.RebuildMBps / base
	}
	say("baseline (read k shards, write one, no decoding): %.1f MB/s", base)
	return rep, nil
}

// wipes reads the healer's count of backends found wiped.
func wipes(h *healstore.Healer) float64 {
	mfs, err := h.Registry().Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "healstore_backend_wipes_total" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func missingOn(st *metastore.Stripe, backend string) bool {
	for _, l := range st.Shards {
		if l.Backend == backend {
			return false
		}
	}
	return true
}

// readOne reads an object whole and discards it.
func readOne(ctx context.Context, s *healstore.Store, name string) error {
	r, err := s.Open(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return err
}

// readRange reads n bytes at a random offset of an object.
func readRange(ctx context.Context, s *healstore.Store, name string, rr *rand.Rand, n int64) error {
	r, err := s.Open(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	off := int64(0)
	if r.Size() > n {
		off = rr.Int64N(r.Size() - n)
	}
	buf := make([]byte, min(n, r.Size()))
	_, err = r.ReadAtContext(ctx, buf, off)
	return err
}

// makeMarginZero deletes, on a second backend, one shard of n stripes that
// still wait for their shard on the wiped backend (the newest queue
// entries, those the rebuilder would reach last), and queues each at
// margin 0 with the entry the read path makes when a read finds a stripe
// short. It returns the stripes and their versions.
func makeMarginZero(ctx context.Context, s *healstore.Store, cfg *healstore.Config, wiped string, n int) (map[[16]byte]uint64, error) {
	meta := s.Meta()
	second := cfg.Backends[1]
	b, err := local.Open(second)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	items, err := meta.Queue(ctx, 0)
	if err != nil {
		return nil, err
	}
	ids := map[[16]byte]uint64{}
	var found []metastore.RepairItem
	for i := len(items) - 1; i >= 0 && len(ids) < n; i-- {
		st, err := meta.GetStripe(ctx, items[i].Stripe)
		if err != nil || st.Version != 1 {
			continue // gone, or already repaired
		}
		var lost []int
		for j, l := range st.Shards {
			if l.Backend == wiped {
				lost = append(lost, j)
			}
			if l.Backend == second.Name {
				if err := b.Delete(ctx, l.Key); err != nil {
					return nil, err
				}
				lost = append(lost, j)
			}
		}
		ids[st.ID] = st.Version
		found = append(found, metastore.RepairItem{Stripe: st.ID, Margin: len(st.Shards) - len(lost) - st.K,
			Reason: fmt.Sprintf("read found shards missing %v, corrupt []", lost)})
	}
	if err := meta.Enqueue(ctx, found...); err != nil {
		return nil, err
	}
	return ids, nil
}

// rebuildBaseline times the I/O of the rebuild without healstore: for each
// stripe that lost a shard, read k of its surviving shards and write one
// shard-sized value (fsynced) to the wiped backend, with the same number of
// workers, from a cold page cache. It returns written MB/s.
func rebuildBaseline(ctx context.Context, s *healstore.Store, cfg *healstore.Config, wiped string, workers int, dirs []string) (float64, error) {
	meta := s.Meta()
	open := map[string]backends.Backend{}
	for _, spec := range cfg.Backends {
		b, err := local.Open(spec)
		if err != nil {
			return 0, err
		}
		defer b.Close()
		open[spec.Name] = b
	}
	type job struct{ srcs []metastore.ShardLoc }
	var jobs []job
	err := meta.StripesOnBackend(ctx, wiped, func(id [16]byte) error {
		st, err := meta.GetStripe(ctx, id)
		if err != nil {
			return err
		}
		var srcs []metastore.ShardLoc
		for _, l := range st.Shards {
			if l.Backend != wiped && open[l.Backend] != nil && len(srcs) < st.K {
				srcs = append(srcs, l)
			}
		}
		if len(srcs) == st.K {
			jobs = append(jobs, job{srcs})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(jobs) == 0 {
		return 0, errors.New("bench heal baseline: no stripe to rebuild")
	}
	if err := evict(dirs...); err != nil {
		return 0, err
	}
	target := open[wiped]
	var next, written atomic.Int64
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) || ctx.Err() != nil {
					return
				}
				var out []byte
				for _, src := range jobs[i].srcs {
					v, err := open[src.Backend].Get(ctx, src.Key)
					if err != nil {
						mu.Lock()
						firstErr = errors.Join(firstErr, err)
						mu.Unlock()
						return
					}
					out = v
				}
				key := fmt.Sprintf("bench/baseline/%d", i)
				if err := target.Put(ctx, key, out); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				written.Add(int64(len(out)))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	for i := range jobs {
		_ = target.Delete(ctx, fmt.Sprintf("bench/baseline/%d", i))
	}
	if firstErr != nil {
		return 0, fmt.Errorf("bench heal baseline: %w", firstErr)
	}
	return float64(written.Load()) / el.Seconds() / 1e6, nil
}

// WriteText prints the report for people.
func (r *HealReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "layout\t%d+%d over %d local backends, %s blocks, %d workers\n", r.K, r.M, r.Backends, human(int64(r.BlockSize)), r.Workers)
	fmt.Fprintf(tw, "data\t%s in %d stripes; the wiped backend held %s of shards (%d stripes)\n", human(r.DataBytes), r.Stripes, human(r.LostBytes), r.LostStripes)
	fmt.Fprintf(tw, "first stripe queued\t%s after the wipe (a read met a lost shard, or the monitor)\n", r.Detected.Round(time.Millisecond))
	fmt.Fprintf(tw, "wipe noticed\t%s (the monitor found the marker gone and queued every stripe)\n", r.WipeNoticed.Round(time.Millisecond))
	fmt.Fprintf(tw, "healing started\t%s\n", r.HealingStarted.Round(time.Millisecond))
	fmt.Fprintf(tw, "full redundancy\t%s\n", r.FullRedundancy.Round(time.Millisecond))
	fmt.Fprintf(tw, "rebuilt\t%s, reading %s: %.3f bytes read per byte rebuilt (k = %d)\n", human(r.BytesWritten), human(r.BytesRead), r.ReadAmplification, r.K)
	fmt.Fprintf(tw, "rebuild rate\t%.1f MB/s; baseline (read k shards, write one, no decoding) %.1f MB/s; ratio %.2f\n", r.RebuildMBps, r.BaselineMBps, r.Ratio)
	if r.MarginZeroStripes > 0 {
		fmt.Fprintf(tw, "margin 0\t%d stripes pushed to margin 0 mid-rebuild were repaired within %s\n", r.MarginZeroStripes, r.MarginZeroMax.Round(time.Millisecond))
	}
	fmt.Fprintf(tw, "reads during healing\t%d, %d failed\n", r.Reads, r.ReadErrors)
	return tw.Flush()
}

// JSON returns the report as indented JSON.
func (r *HealReport) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// human formats bytes in binary units.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
