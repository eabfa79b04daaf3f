package healstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

const (
	// readAhead is how many blocks a sequential reader fetches ahead.
	readAhead = 2
	// cacheBlocks bounds a Reader's decoded-block cache.
	cacheBlocks = readAhead + 2
)

// Reader reads one object version. It is an io.ReadSeeker and an
// io.ReaderAt (ReadAt is safe for concurrent use), fetching only the
// blocks a read touches, with a small cache and read-ahead for sequential
// reads. It reads the version it opened, never a mix with a later one:
// a rename keeps that version's stripes, but an overwrite or a delete
// drops them at once, and a read of a block not already fetched then
// fails with an error matching ErrNotFound that says the object was
// replaced or deleted while being read.
type Reader struct {
	s      *Store
	ctx    context.Context
	cancel context.CancelFunc
	obj    *metastore.Object
	pol    encoder.Policy
	codec  *encoder.Codec

	off int64 // Read/Seek position; not for concurrent use, like os.File

	mu      sync.Mutex
	closed  bool
	cache   map[uint64]*blockFetch
	lru     []uint64 // least recently used first
	lastEnd int64    // end offset of the last read, to detect sequential reads
	queued  map[[16]byte]bool

	noDirect bool // tests and benchmarks: every block through the cache
}

type blockFetch struct {
	done chan struct{}
	data []byte
	err  error
}

// Open opens object name for reading. ctx governs the Reader's whole
// life: when it ends, reads fail. ErrNotFound when there is no object.
func (s *Store) Open(ctx context.Context, name string) (*Reader, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	o, err := s.getObject(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	pol := fromMetaPolicy(o.Policy)
	codec, err := s.codec(pol)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", name, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	return &Reader{
		s: s, ctx: rctx, cancel: cancel, obj: o, pol: pol, codec: codec,
		cache: map[uint64]*blockFetch{}, queued: map[[16]byte]bool{}, lastEnd: -1,
	}, nil
}

// Size is the object's length in bytes.
func (r *Reader) Size() int64 { return r.obj.Size }

// Info describes the object version being read.
func (r *Reader) Info() *ObjectInfo { return objectInfo(r.obj) }

// Close stops read-ahead and releases the cache. Reads fail afterwards.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.cancel()
	r.cache = nil
	return nil
}

// checkOpen fails once the Reader or its Store is closed, before anything
// else is looked at: at the end of the object a read would otherwise
// report io.EOF, as if the object had been read in full, and an inline
// object would still be read from the record the Reader holds.
func (r *Reader) checkOpen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("read %q: %w", r.obj.Name, ErrClosed)
	}
	if err := r.s.checkOpen(); err != nil {
		return fmt.Errorf("read %q: %w", r.obj.Name, err)
	}
	return nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// WriteTo implements io.WriterTo: io.Copy hands whole decoded blocks to w
// from the Reader's position, with several blocks fetched and decoded
// ahead, and no intermediate copy.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	n, err := r.writeTo(w)
	r.s.metrics.objectReadBytes.Add(float64(n))
	return n, r.closedCause(err)
}

func (r *Reader) writeTo(w io.Writer) (int64, error) {
	if err := r.checkOpen(); err != nil {
		return 0, err
	}
	var total int64
	bs := int64(r.pol.BlockSize)
	for r.off < r.obj.Size {
		if r.off%bs == 0 && !r.noDirect && !r.obj.IsInline() {
			// From a block boundary on: decoded into recycled buffers
			// (readdirect.go), not through the cache.
			n, err := r.writeWhole(w)
			total += n
			if err != nil {
				return total, err
			}
			continue
		}
		b := uint64(r.off / bs)
		// Read ahead only where the next blocks cannot go direct.
		data, err := r.block(r.ctx, b, r.noDirect || r.obj.IsInline())
		if err != nil {
			return total, err
		}
		in := r.off % bs
		if in >= int64(len(data)) {
			return total, fmt.Errorf("read %q: block %d holds %d bytes, expected more: %w", r.obj.Name, b, len(data), encoder.ErrCorrupt)
		}
		n, err := writeFull(w, data[in:])
		total += int64(n)
		r.off += int64(n)
		if err != nil {
			return total, err
		}
	}
	r.mu.Lock()
	r.lastEnd = r.off
	r.mu.Unlock()
	return total, nil
}

// Seek implements io.Seeker.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.obj.Size + offset
	default:
		return 0, fmt.Errorf("seek %q: invalid whence %d", r.obj.Name, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek %q: negative position %d", r.obj.Name, abs)
	}
	r.off = abs
	return abs, nil
}

// ReadAt implements io.ReaderAt.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(r.ctx, p, off)
}

// ReadAtContext is ReadAt that also gives up when ctx ends (a block fetch
// that other readers share goes on under the Reader's own context).
func (r *Reader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := r.readAt(ctx, p, off)
	r.s.metrics.objectReadBytes.Add(float64(n))
	return n, r.closedCause(err)
}

// closedCause replaces the error of a read that the Reader's Close (or the
// Store's) interrupted by ErrClosed: the read failed on the Reader's own
// context, and context.Canceled would read as the caller's.
func (r *Reader) closedCause(err error) error {
	if err == nil || err == io.EOF || errors.Is(err, ErrClosed) {
		return err
	}
	if cerr := r.checkOpen(); cerr != nil {
		return cerr
	}
	return err
}

func (r *Reader) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := r.checkOpen(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("read %q: negative offset %d", r.obj.Name, off)
	}
	size := r.obj.Size
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	bs := int64(r.pol.BlockSize)
	n := 0
	for n < len(p) && off+int64(n) < size {
		pos := off + int64(n)
		// Whole blocks p covers go straight into p (readdirect.go).
		k, err := r.readWhole(ctx, p[n:], pos, pos == r.sequentialFrom(off, pos))
		n += k
		if err != nil {
			return n, err
		}
		if k > 0 {
			continue
		}
		b := uint64(pos / bs)
		data, err := r.block(ctx, b, pos == r.sequentialFrom(off, pos))
		if err != nil {
			return n, err
		}
		in := pos % bs
		if in >= int64(len(data)) {
			return n, fmt.Errorf("read %q: block %d holds %d bytes, expected more: %w", r.obj.Name, b, len(data), encoder.ErrCorrupt)
		}
		n += copy(p[n:], data[in:])
	}
	r.mu.Lock()
	r.lastEnd = off + int64(n)
	r.mu.Unlock()
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// sequentialFrom returns pos when the read starting at off continues the
// previous one (or starts the object), so read-ahead should run.
func (r *Reader) sequentialFrom(off, pos int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off == 0 || off == r.lastEnd {
		return pos
	}
	return -1
}

// block returns block b's plaintext, from the cache or fetched; when
// sequential, the following blocks are fetched ahead in the background.
func (r *Reader) block(ctx context.Context, b uint64, sequential bool) ([]byte, error) {
	f, err := r.start(b)
	if err != nil {
		return nil, err
	}
	if sequential {
		for i := uint64(1); i <= readAhead && b+i < uint64(len(r.obj.Stripes)); i++ {
			if _, err := r.start(b + i); err != nil {
				break
			}
		}
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("read %q: %w", r.obj.Name, ctx.Err())
	}
	if f.err != nil {
		r.mu.Lock()
		if r.cache != nil && r.cache[b] == f {
			delete(r.cache, b) // let a later read try again
		}
		r.mu.Unlock()
		return nil, f.err
	}
	return f.data, nil
}

// start returns the cache entry for block b, launching its fetch if needed.
func (r *Reader) start(b uint64) (*blockFetch, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("read %q: %w", r.obj.Name, ErrClosed)
	}
	if int(b) >= r.blockCount() {
		return nil, fmt.Errorf("read %q: block %d beyond the object's %d blocks", r.obj.Name, b, r.blockCount())
	}
	for i, x := range r.lru {
		if x == b {
			r.lru = append(r.lru[:i], r.lru[i+1:]...)
			break
		}
	}
	r.lru = append(r.lru, b)
	if f, ok := r.cache[b]; ok {
		return f, nil
	}
	for len(r.cache) >= cacheBlocks && len(r.lru) > 1 {
		old := r.lru[0]
		r.lru = r.lru[1:]
		delete(r.cache, old)
	}
	f := &blockFetch{done: make(chan struct{})}
	r.cache[b] = f
	go func() {
		f.data, f.err = r.fetch(r.ctx, b)
		close(f.done)
	}()
	return f, nil
}

// fetch reads, verifies and decodes block b. The shards are verified once,
// by DecodeBlock, against the metastore's checksums as it copies them
// (invariant 3); a shard that fails is counted corrupt and another is
// fetched in its place, keeping the good ones. Stripes found short are
// queued for repair (heal on read).
func (r *Reader) fetch(ctx context.Context, b uint64) ([]byte, error) {
	if r.obj.IsInline() {
		return r.openInline() // inline.go
	}
	return r.fetchStripe(ctx, b, nil)
}

// fetchStripe is fetch for a striped block. With dst nil it returns the
// block in new memory; otherwise it decodes the block into dst, which must
// be exactly the block's length, and returns dst.
func (r *Reader) fetchStripe(ctx context.Context, b uint64, dst []byte) (_ []byte, err error) {
	s := r.s
	defer func() {
		if cause := s.closedCause(err); cause != err {
			err = fmt.Errorf("read %q block %d: %w", r.obj.Name, b, cause)
		}
	}()
	id := r.obj.Stripes[b]
	st, err := s.meta.GetStripe(ctx, id)
	if errors.Is(err, metastore.ErrNotFound) {
		return nil, fmt.Errorf("read %q block %d: the object was replaced or deleted while being read: %w", r.obj.Name, b, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %q block %d: %w", r.obj.Name, b, err)
	}
	n := len(st.Shards)
	locs := make([]shardio.Loc, n)
	sums := make([][]byte, n)
	for i, sh := range st.Shards {
		locs[i] = shardio.Loc{Backend: sh.Backend, Key: sh.Key, Sum: sh.Sum}
		sums[i] = sh.Sum
	}
	sid := encoder.StripeID(id)
	var have [][]byte
	var missing, corrupt []int
	// The shards of the last fetch (the good ones of an earlier round
	// included) go back to the store's pool once the block is decoded or
	// the read has failed: decoding copies out of them, and nothing keeps
	// them. Only memory the pool handed out for this read goes back: a
	// backend without BufGetter returns memory of its own, which the
	// Backend contract does not promise is not kept. Shards dropped as
	// corrupt are left to the garbage collector.
	var (
		fetched [][]byte
		poolMu  sync.Mutex
		pooled  = map[*byte]bool{}
	)
	alloc := func(n int) []byte {
		b := s.bufs.getShard(n)
		poolMu.Lock()
		pooled[unsafe.SliceData(b)] = true
		poolMu.Unlock()
		return b
	}
	defer func() {
		poolMu.Lock()
		defer poolMu.Unlock()
		for _, sh := range fetched {
			if p := unsafe.SliceData(sh); p != nil && pooled[p] {
				delete(pooled, p) // never twice, whatever fetched holds
				s.bufs.putShard(sh)
			}
		}
	}()
	defer func() {
		if len(missing) > 0 || len(corrupt) > 0 {
			r.queueRepair(ctx, st, missing, corrupt)
		}
	}()
	for {
		res, ferr := shardio.Fetch(ctx, s, shardio.FetchRequest{
			Stripe: id, Locs: locs, Need: st.K, Have: have,
			HedgeAfter: s.cfg.HedgeAfter.Std(), OnError: s.noteBackendError,
			Alloc: alloc,
		})
		fetched = res.Shards
		missing = mergeInts(missing, res.Missing)
		s.metrics.hedges.Add(float64(res.Hedges))
		if ferr != nil {
			var tf *shardio.TooFewError
			if errors.As(ferr, &tf) {
				return nil, fmt.Errorf("read %q block %d: %w", r.obj.Name, b, &InsufficientBackendsError{
					Op: "read", Usable: tf.Got, Needed: tf.Need, Detail: tooFewDetail(st, tf, corrupt)})
			}
			return nil, fmt.Errorf("read %q block %d: %w", r.obj.Name, b, ferr)
		}
		data, err := r.decode(dst, b, sid, res.Shards, sums)
		var tfs *encoder.TooFewShardsError
		switch {
		case err == nil:
			if len(data) != st.DataLen || (dst != nil && len(data) != len(dst)) {
				return nil, fmt.Errorf("read %q block %d: decoded %d bytes, the metastore says %d: %w", r.obj.Name, b, len(data), st.DataLen, encoder.ErrCorrupt)
			}
			how := "direct"
			if slices.ContainsFunc(res.Shards[:st.K], func(sh []byte) bool { return sh == nil }) {
				how = "decoded"
			}
			s.metrics.blockReads.WithLabelValues(how).Inc()
			return data, nil
		case errors.Is(err, encoder.ErrAuth):
			return nil, fmt.Errorf("read %q block %d: %w: %w", r.obj.Name, b, ErrAuth, err)
		case errors.As(err, &tfs) && len(tfs.Corrupt) > 0:
			// Keep the shards that verified; never ask again for the
			// corrupt ones. Each round removes at least one shard, so
			// this ends.
			for _, i := range tfs.Corrupt {
				shardio.ObserveCorrupt(s, st.Shards[i].Backend)
				locs[i] = shardio.Loc{}
				s.noteBackendError(st.Shards[i].Backend, fmt.Errorf("shard %d of stripe %x: %w", i, id, err))
			}
			corrupt = mergeInts(corrupt, tfs.Corrupt)
			have = make([][]byte, n)
			for _, i := range tfs.Present {
				have[i] = res.Shards[i]
			}
		default:
			return nil, fmt.Errorf("read %q block %d: %w", r.obj.Name, b, err)
		}
	}
}

// tooFewDetail says which shards of st a read could not use and on which
// backends they were. corrupt holds the shards earlier rounds found
// corrupt: their locations were dropped, so Fetch then reports them
// missing; they are named once, as corrupt. The first backend error is
// kept, as Fetch's own message does, so the operator sees what was said.
func tooFewDetail(st *metastore.Stripe, tf *shardio.TooFewError, corrupt []int) string {
	corrupt = mergeInts(slices.Clone(corrupt), tf.Corrupt)
	slices.Sort(corrupt)
	missing := slices.DeleteFunc(slices.Clone(tf.Missing), func(i int) bool { return slices.Contains(corrupt, i) })
	s := stripeShardsText("", st, tf.Got, missing, tf.Unreachable, corrupt)
	for _, i := range slices.Sorted(maps.Keys(tf.Errs)) {
		if tf.Errs[i] != nil {
			s += fmt.Sprintf(" (shard %d: %v)", i, tf.Errs[i])
			break
		}
	}
	return s
}

// mergeInts adds the values of b missing from a.
func mergeInts(a, b []int) []int {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	return a
}

// queueRepair puts a stripe a read found short on the repair queue, once
// per Reader. missing holds indices without a location or whose backend
// said not found; corrupt those that failed verification. Unreachable
// shards are not queued: the backend may come back, and the healer decides
// after its grace period. Failure to queue is logged, not returned.
func (r *Reader) queueRepair(ctx context.Context, st *metastore.Stripe, missing, corrupt []int) {
	r.mu.Lock()
	done := r.queued[st.ID]
	r.queued[st.ID] = true
	r.mu.Unlock()
	if done {
		return
	}
	// A shard found corrupt is dropped from the next fetch's locations,
	// which then report it missing too: count it once, as corrupt.
	missing = slices.DeleteFunc(slices.Clone(missing), func(i int) bool { return slices.Contains(corrupt, i) })
	slices.Sort(missing)
	slices.Sort(corrupt)
	item := metastore.RepairItem{
		Stripe: st.ID, Margin: len(st.Shards) - len(missing) - len(corrupt) - st.K, Queued: time.Now(),
		Reason: metastore.ReadFindingReason(missing, corrupt),
	}
	// Joined to an entry the stripe may already have (a backend down, say):
	// only this reason tells the rebuilder to check the shards it names.
	if err := r.s.meta.EnqueueJoin(context.WithoutCancel(ctx), item); err != nil {
		r.s.log.Warn("heal on read: cannot queue repair", "stripe", fmt.Sprintf("%x", st.ID), "err", err)
		return
	}
	r.s.metrics.readRepairs.Inc()
}
