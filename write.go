package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

const (
	// encodeAhead is how many blocks the stream encoder seals and codes
	// ahead of the uploads.
	encodeAhead = 2
	// uploadWindow is how many stripes upload at once. Several stripes in
	// flight keep every backend busy while another stripe's slowest shard
	// finishes; memory stays bounded by (encodeAhead+uploadWindow) stripes.
	uploadWindow = 4
	// syncEvery is how many uploaded stripes may wait for their shards'
	// durability (see objectWrite.sync) before a sync round runs in the
	// middle of a write; the rest are synced just before the commit.
	// It bounds the work each round does and the bookkeeping it needs.
	syncEvery = 32
	// MaxNameLen bounds object names (bytes).
	MaxNameLen = 4096
)

// WriteOption adjusts one Put or Create.
type WriteOption func(*writeOpts)

type writeOpts struct {
	mode  uint32
	attrs map[string]string
}

// applyWriteOpts collects opts. A nil option is skipped: options are often
// built conditionally (var opt WriteOption; if ... { opt = WithMode(m) }),
// and such a caller's nil would otherwise panic inside the store.
func applyWriteOpts(opts []WriteOption) writeOpts {
	var o writeOpts
	for _, fn := range opts {
		if fn != nil {
			fn(&o)
		}
	}
	return o
}

// WithMode records a file mode with the object (the FUSE layer uses it).
func WithMode(mode uint32) WriteOption { return func(o *writeOpts) { o.mode = mode } }

// WithAttrs records small attributes with the object (valid UTF-8 keys and
// values, which Put and Create check before reading any data; a few
// hundred bytes in all).
func WithAttrs(attrs map[string]string) WriteOption {
	return func(o *writeOpts) {
		o.attrs = make(map[string]string, len(attrs))
		for k, v := range attrs {
			o.attrs[k] = v
		}
	}
}

// checkAttrs refuses attributes the metadata record cannot hold (it
// checks again at the commit), so a write fails before its data is read
// and uploaded, not after.
func checkAttrs(attrs map[string]string) error {
	for k, v := range attrs {
		switch {
		case !utf8.ValidString(k):
			return fmt.Errorf("attribute name %q is not valid UTF-8", k)
		case !utf8.ValidString(v):
			return fmt.Errorf("attribute %q: value %q is not valid UTF-8", k, v)
		}
	}
	return nil
}

// CheckName says why name cannot name an object, or nil when it can; Put,
// Create and Rename refuse the names it refuses.
func CheckName(name string) error { return checkName(name) }

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("object name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("object name is %d bytes, longer than %d", len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("object name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if r == 0 {
			return fmt.Errorf("object name %q contains a NUL byte", name)
		}
	}
	return nil
}

// Put stores everything r yields as object name, replacing any object of
// that name (whose shards go to garbage collection). It returns after the
// metadata commit is durable; on any error nothing is visible and the
// shards already uploaded are left to garbage collection.
//
// Each block is placed on k+m backends in distinct failure domains. A shard
// that cannot be written is retried on another backend (spares first); the
// write succeeds when at least the write quorum of every stripe's shards
// landed, and the missing ones are queued for repair in the same commit.
// Otherwise the error matches ErrInsufficientBackends.
func (s *Store) Put(ctx context.Context, name string, r io.Reader, opts ...WriteOption) (*ObjectInfo, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	o := applyWriteOpts(opts)
	if err := checkAttrs(o.attrs); err != nil {
		return nil, fmt.Errorf("put %q: %w", name, err)
	}
	info, err := s.write(ctx, name, r, o, nil)
	if err != nil {
		return nil, fmt.Errorf("put %q: %w", name, s.closedCause(err))
	}
	return info, nil
}

// objectWrite collects what one write produced until its commit.
type objectWrite struct {
	s      *Store
	name   string
	pol    encoder.Policy
	codec  *encoder.Codec
	id     encoder.ObjectID
	quorum int

	mu       sync.Mutex
	stripes  map[uint64]*metastore.Stripe
	intents  [][16]byte
	repairs  []metastore.RepairItem
	tried    []metastore.Garbage
	size     int64
	err      error
	unsynced syncBatch // shards uploaded but not yet known durable
}

// syncBatch lists uploaded shards by backend, for one sync round.
type syncBatch struct {
	stripes int
	shards  map[string][]shardRef
}

type shardRef struct {
	block uint64
	index int
	key   string
}

func (w *objectWrite) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *objectWrite) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// write stores r as object name. stopInput, when set, is called with the
// error as soon as the write fails, to unblock a producer feeding r (the
// Writer's pipe): the encoder cannot stop while its read of r blocks.
func (s *Store) write(ctx context.Context, name string, r io.Reader, o writeOpts, stopInput func(error)) (info *ObjectInfo, err error) {
	start := time.Now()
	defer func() { s.metrics.objectWritten(start, info, err) }()
	// Small objects go into their metadata record instead (inline.go).
	if info, done, err := s.maybeInline(ctx, name, &r, o); done {
		return info, err
	}
	pol := s.cfg.Policy
	codec, err := s.codec(pol)
	if err != nil {
		return nil, err
	}
	w := &objectWrite{
		s: s, name: name, pol: pol, codec: codec,
		id:      encoder.NewObjectID(),
		quorum:  s.cfg.Quorum(),
		stripes: map[uint64]*metastore.Stripe{},
	}
	// A small object of one block skips the stream encoder: its stripe id
	// is chosen first, so the intent commit runs while the block is sealed
	// and encoded (putSingle). That saves 0.5-1 ms, and costs a copy of
	// the input the stream encoder avoids (it reads straight into the
	// shard buffers): worth it up to singleMax bytes, not for a 16 MiB
	// block, whose puts ran about 10 % slower this way.
	stopWatch := func() bool { return false }
	if stopInput != nil {
		// The read below blocks until the producer writes or closes;
		// when ctx ends first, unblock both (as the encoder does).
		stopWatch = context.AfterFunc(ctx, func() { stopInput(context.Cause(ctx)) })
	}
	buf, n, more, err := s.readFirstBlock(r, min(pol.BlockSize, singleMax))
	stopWatch()
	if err != nil {
		err = fmt.Errorf("read block 0: %w", err)
		if stopInput != nil {
			stopInput(err)
		}
		return nil, err
	}
	if !more && n > 0 {
		if err := w.putSingle(ctx, buf, n); err != nil {
			if stopInput != nil {
				stopInput(err)
			}
			w.abandon()
			return nil, err
		}
		return w.finish(ctx, o)
	}
	defer s.bufs.put(buf) // after enc.Close: the encoder reads it
	r = io.MultiReader(bytes.NewReader((*buf)[:n]), r)
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	enc := codec.NewStreamEncoder(wctx, w.id, r, encodeAhead)
	defer enc.Close()

	slots := make(chan struct{}, uploadWindow)
	var wg sync.WaitGroup
	for w.failed() == nil {
		block, st, err := enc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if cause := context.Cause(wctx); cause != nil && wctx.Err() != nil {
				err = cause
			}
			w.fail(err)
			break
		}
		select {
		case slots <- struct{}{}:
		case <-wctx.Done():
			w.fail(context.Cause(wctx))
		}
		if w.failed() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := w.putStripe(wctx, block, st); err != nil {
				w.fail(err)
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := w.failed(); err != nil {
		if stopInput != nil {
			stopInput(err)
		}
		enc.Close()
		w.abandon()
		return nil, err
	}
	return w.finish(ctx, o)
}

// finish syncs what the uploads left unsynced and commits the object.
func (w *objectWrite) finish(ctx context.Context, o writeOpts) (*ObjectInfo, error) {
	// Every shard must be durable before the commit that makes the object
	// visible (invariant 1).
	if err := w.sync(ctx, w.takeUnsynced(0)); err != nil {
		w.abandon()
		return nil, err
	}
	info, err := w.commit(ctx, o)
	if err != nil {
		w.abandon()
		return nil, err
	}
	return info, nil
}

// singleMax is the largest object putSingle stores (when the block size
// is not smaller).
const singleMax = 1 << 20

// readFirstBlock reads up to blockSize+1 bytes of r into a buffer from the
// store's pool (given back with s.bufs.put): n bytes, and more when r holds
// more than blockSize.
func (s *Store) readFirstBlock(r io.Reader, blockSize int) (buf *[]byte, n int, more bool, err error) {
	buf = s.bufs.get(blockSize + 1)
	n, ended, err := readFull(r, *buf)
	if err != nil {
		s.bufs.put(buf)
		return nil, 0, false, err
	}
	return buf, n, !ended, nil
}

// readFull reads r into buf until buf is full or r ends first (io.EOF:
// ended). Any other error of r is returned, io.ErrUnexpectedEOF included:
// unlike io.ReadFull's own, it comes from a source cut short (a truncated
// HTTP body says so), and the bytes before it are not the whole object.
func readFull(r io.Reader, buf []byte) (n int, ended bool, err error) {
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			// A full buffer is not ended, even when r said EOF with
			// its last bytes: the caller reads on (and finds EOF again).
			return n, n < len(buf), nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// putSingle stores an object of one block, the n bytes in buf (given back
// to the store's pool once sealed). The stripe's locations are chosen and its
// intent committed while the block is sealed and encoded; no shard is
// written before the intent is durable.
func (w *objectWrite) putSingle(ctx context.Context, buf *[]byte, n int) error {
	s := w.s
	id := encoder.NewStripeID()
	// The shard size before encoding, generously: the seal adds less
	// than 256 bytes, compression (when it does not pay) a little more.
	est := int64(n/w.pol.K + n/(64*w.pol.K) + 4096)
	targets, cands, err := s.place(ctx, w.pol.K+w.pol.M, w.quorum, est)
	if err != nil {
		s.bufs.put(buf)
		return err
	}
	intent := newIntent(id, targets)
	intentErr := make(chan error, 1)
	go func() { intentErr <- s.meta.AddIntent(ctx, intent) }()
	st, encErr := w.codec.EncodeBlock(w.id, 0, id, (*buf)[:n])
	s.bufs.put(buf) // EncodeBlock keeps none of it
	if err := <-intentErr; err != nil {
		st.Release()
		return fmt.Errorf("block 0: record write intent: %w", err)
	}
	w.mu.Lock()
	w.intents = append(w.intents, id)
	w.mu.Unlock()
	if encErr != nil {
		return encErr
	}
	return w.upload(ctx, 0, st, targets, cands, intent)
}

// newIntent lists the locations of a stripe's shards: one per target
// (a degraded placement leaves some without).
func newIntent(id [16]byte, targets []placement.Candidate) metastore.Intent {
	intent := metastore.Intent{ID: id, Created: time.Now()}
	for i, t := range targets {
		if t.Name != "" {
			intent.Shards = append(intent.Shards, metastore.ShardLoc{Backend: t.Name, Key: shardio.ShardKey(id, i)})
		}
	}
	return intent
}

// putStripe places, records (intent) and uploads one stripe.
func (w *objectWrite) putStripe(ctx context.Context, block uint64, st *encoder.Stripe) error {
	s := w.s
	n := len(st.Shards)
	shardSize := int64(len(st.Shards[0]))
	targets, cands, err := s.place(ctx, n, w.quorum, shardSize)
	if err != nil {
		return err
	}
	// The intent lists every location before anything is uploaded there,
	// so the shards of a write that crashes are known to the collector.
	// It must be durable (AddIntent commits synced) before the first
	// shard is written, although the shards themselves are made durable
	// only later, all at once: a shard stored without fsync can still
	// reach the disk at any moment (write-back, or any other writer's
	// fsync committing the file system's journal), so an intent that a
	// crash could lose would leave shards nobody knows of. Overlapping
	// the two would need the shards to stay under temporary names until
	// the intent is durable, and one more round of renames.
	intent := newIntent(st.ID, targets)
	if err := s.meta.AddIntent(ctx, intent); err != nil {
		return fmt.Errorf("block %d: record write intent: %w", block, err)
	}
	w.mu.Lock()
	w.intents = append(w.intents, st.ID)
	w.mu.Unlock()
	return w.upload(ctx, block, st, targets, cands, intent)
}

// upload writes the shards of a stripe whose intent is durable to their
// targets (retrying failed ones on other backends, each recorded in the
// intent first) and records where they landed.
func (w *objectWrite) upload(ctx context.Context, block uint64, st *encoder.Stripe, targets, cands []placement.Candidate, intent metastore.Intent) error {
	s := w.s
	n := len(st.Shards)
	shards := make([][]byte, n)
	for i, t := range targets {
		if t.Name != "" { // else degraded placement: this shard starts missing
			shards[i] = st.Shards[i]
		}
	}
	var imu sync.Mutex
	res := shardio.Upload(ctx, s, st.ID, shards, targets, shardio.UploadOptions{
		Candidates: cands,
		BeforeRetry: func(ctx context.Context, i int, backend string) error {
			imu.Lock()
			defer imu.Unlock()
			intent.Shards = append(intent.Shards, metastore.ShardLoc{Backend: backend, Key: shardio.ShardKey(st.ID, i)})
			// Only an intent still there is extended: one garbage
			// collection expired handed its shards to be deleted, and
			// this write must not commit them.
			return s.meta.ExtendIntent(ctx, intent)
		},
		OnError:  s.noteBackendError,
		Rand:     s.randSource(),
		Deferred: true,
		LagAfter: shardio.LagFor(len(st.Shards[0])),
	})
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	landed := res.Count()
	if landed < w.quorum {
		var why []string
		for i, e := range res.Errs {
			if e != nil {
				why = append(why, e.Error())
			} else if res.Landed[i] == "" {
				why = append(why, fmt.Sprintf("shard %d: no backend in a free failure domain", i))
			}
		}
		return &InsufficientBackendsError{Op: "write", Usable: landed, Needed: w.quorum,
			Detail: fmt.Sprintf("block %d: only %d of %d shards landed: %s", block, landed, n, joinLimited(why, 3))}
	}
	ms := &metastore.Stripe{
		ID: st.ID, Object: w.id, Block: block, K: w.pol.K, M: w.pol.M, DataLen: st.DataLen,
		Shards: make([]metastore.ShardLoc, n),
	}
	var missing []int
	for i, b := range res.Landed {
		if b == "" {
			missing = append(missing, i)
			continue
		}
		ms.Shards[i] = metastore.ShardLoc{Backend: b, Key: shardio.ShardKey(st.ID, i), Size: int64(len(st.Shards[i])), Sum: bytes.Clone(st.Sums[i])}
		s.noteWritten(b, int64(len(st.Shards[i])))
	}
	if len(res.Tried) == 0 {
		// Every Put returned success, so no backend still reads the
		// buffers: hand them back for the next block. After a failure a
		// cancelled transfer might still hold them, so the GC frees those.
		st.Release()
	}
	w.mu.Lock()
	w.stripes[block] = ms
	w.size += int64(st.DataLen)
	for _, t := range res.Tried {
		w.tried = append(w.tried, metastore.Garbage{Backend: t.Backend, Key: t.Key})
	}
	if len(missing) > 0 {
		w.repairs = append(w.repairs, metastore.RepairItem{
			Stripe: st.ID, Margin: landed - w.pol.K, Queued: time.Now(),
			Reason: fmt.Sprintf("written degraded: shards %v did not land", missing),
		})
	}
	if w.unsynced.shards == nil {
		w.unsynced.shards = map[string][]shardRef{}
	}
	for i, loc := range ms.Shards {
		if loc.Backend != "" {
			w.unsynced.shards[loc.Backend] = append(w.unsynced.shards[loc.Backend], shardRef{block: block, index: i, key: loc.Key})
		}
	}
	w.unsynced.stripes++
	w.mu.Unlock()
	return w.sync(ctx, w.takeUnsynced(syncEvery))
}

// takeUnsynced hands over the shards waiting for durability once at least
// min stripes' worth wait (any number when min is 0).
func (w *objectWrite) takeUnsynced(min int) syncBatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.unsynced.stripes == 0 || w.unsynced.stripes < min {
		return syncBatch{}
	}
	b := w.unsynced
	w.unsynced = syncBatch{}
	return b
}

// sync makes the shards of batch durable: the uploads stored them without
// per-shard fsyncs (shardio.UploadOptions.Deferred), so each backend that
// received some makes them durable at once, in parallel with the others.
// The shards of a backend whose sync fails count as not landed: their
// stripes lose them (and go on the repair queue) if they keep the write
// quorum, and the write fails otherwise.
func (w *objectWrite) sync(ctx context.Context, batch syncBatch) error {
	if len(batch.shards) == 0 {
		return nil
	}
	keys := make(map[string][]string, len(batch.shards))
	for name, refs := range batch.shards {
		for _, r := range refs {
			keys[name] = append(keys[name], r.key)
		}
	}
	errs := shardio.SyncShards(ctx, w.s, keys)
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	// A deadline that passed while ctx's timer has not fired yet fails
	// the syncs it bounded a moment early: the caller's deadline again,
	// not the backends' fault (see backends.Ended).
	if err := backends.Ended(ctx); err != nil {
		return err
	}
	if len(errs) == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	lost := map[uint64][]int{}
	why := map[uint64][]string{}
	for name, err := range errs {
		w.s.noteBackendError(name, err)
		for _, r := range batch.shards[name] {
			w.stripes[r.block].Shards[r.index] = metastore.ShardLoc{}
			// The shard may be on the disk after all, whole or torn.
			w.tried = append(w.tried, metastore.Garbage{Backend: name, Key: r.key})
			lost[r.block] = append(lost[r.block], r.index)
			why[r.block] = append(why[r.block], fmt.Sprintf("shard %d: %v", r.index, err))
		}
	}
	for block, idx := range lost {
		ms := w.stripes[block]
		landed := 0
		for _, loc := range ms.Shards {
			if loc.Backend != "" {
				landed++
			}
		}
		if landed < w.quorum {
			return &InsufficientBackendsError{Op: "write", Usable: landed, Needed: w.quorum,
				Detail: fmt.Sprintf("block %d: only %d of %d shards durable: %s", block, landed, len(ms.Shards), joinLimited(why[block], 3))}
		}
		sort.Ints(idx)
		w.addRepair(metastore.RepairItem{
			Stripe: ms.ID, Margin: landed - w.pol.K, Queued: time.Now(),
			Reason: fmt.Sprintf("written degraded: shards %v could not be made durable", idx),
		})
	}
	return nil
}

// addRepair queues a stripe in the commit, merging with an item the write
// already holds for it (the lowest margin wins). Called with w.mu held.
func (w *objectWrite) addRepair(item metastore.RepairItem) {
	for i := range w.repairs {
		if w.repairs[i].Stripe == item.Stripe {
			if item.Margin < w.repairs[i].Margin {
				w.repairs[i].Margin = item.Margin
			}
			w.repairs[i].Reason += "; " + item.Reason
			return
		}
	}
	w.repairs = append(w.repairs, item)
}

// commit makes the object visible: one metastore batch with the object,
// its stripes, the repairs, and the removal of its intents (the replaced
// version's shards become garbage in the same batch).
func (w *objectWrite) commit(ctx context.Context, o writeOpts) (*ObjectInfo, error) {
	s := w.s
	blocks := make([]uint64, 0, len(w.stripes))
	for b := range w.stripes {
		blocks = append(blocks, b)
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	now := time.Now()
	obj := &metastore.Object{
		Name: w.name, ID: w.id, Size: w.size, Created: now, Modified: now,
		Policy: toMetaPolicy(w.pol), Mode: o.mode, Attrs: o.attrs,
	}
	stripes := make([]*metastore.Stripe, 0, len(blocks))
	for i, b := range blocks {
		if b != uint64(i) {
			return nil, fmt.Errorf("internal: block %d missing from the write", i)
		}
		obj.Stripes = append(obj.Stripes, w.stripes[b].ID)
		stripes = append(stripes, w.stripes[b])
	}
	// Locations tried in vain may hold a copy; they leave the intent in the
	// commit, so they must reach the collector first.
	if len(w.tried) > 0 {
		if err := s.meta.AddGarbage(ctx, w.tried...); err != nil {
			return nil, fmt.Errorf("record failed shard uploads: %w", err)
		}
	}
	if _, err := s.meta.PutObject(ctx, obj, stripes, w.repairs, w.intents); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	info := objectInfo(obj)
	info.Redundancy = w.writtenRedundancy()
	return info, nil
}

// writtenRedundancy says how safe the object is as written: every stripe
// is at full redundancy but those the commit queued for repair.
func (w *objectWrite) writtenRedundancy() *Redundancy {
	r := &Redundancy{MinMargin: w.pol.M}
	for _, it := range w.repairs {
		r.Degraded++
		r.MinMargin = min(r.MinMargin, it.Margin)
		r.MissingShards += w.pol.M - it.Margin
	}
	return r
}

// abandon hands the shards of a failed write to garbage collection, due at
// once (nothing ever referenced them). If the commit in fact happened (an
// ambiguous error), its intents are gone and nothing is touched.
func (w *objectWrite) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.mu.Lock()
	intents := append([][16]byte(nil), w.intents...)
	w.mu.Unlock()
	for _, id := range intents {
		if err := w.s.meta.IntentToGarbage(ctx, id, time.Now()); err != nil {
			// The intent stays; the collector finds it when it expires.
			w.s.log.Warn("abandoned write: intent kept for the collector", "object", w.name, "stripe", fmt.Sprintf("%x", id), "err", err)
		}
	}
}

// place chooses targets for the n shards of one stripe: n backends in
// distinct domains when possible (first among healthy non-spares, then
// with spares, then also with suspect or lately failing backends), else as many as there are domains when
// that still reaches quorum (the shards left without a target, parity
// first, start missing and are queued for repair). It also returns the
// healthy candidates (spares included), for retries.
func (s *Store) place(ctx context.Context, n, quorum int, shardSize int64) ([]placement.Candidate, []placement.Candidate, error) {
	s.maybeRefresh(ctx)
	primary, fallback := s.candidates(shardSize)
	rnd := s.randSource()
	// Healthy non-spares first; then spares (they exist to stand in);
	// only then backends that are suspect or failed a moment ago.
	got, err := placement.Choose(primary, n, nil, false, rnd)
	if err != nil {
		got, err = placement.Choose(primary, n, nil, true, rnd)
	}
	if err != nil {
		got, err = placement.Choose(fallback, n, nil, true, rnd)
	}
	if err != nil {
		var ne *placement.NotEnoughError
		if !errors.As(err, &ne) || ne.Usable < quorum {
			usable := 0
			if ne != nil {
				usable = ne.Usable
			}
			return nil, nil, &InsufficientBackendsError{Op: "write", Usable: usable, Needed: quorum,
				Detail: fmt.Sprintf("%v; a write needs at least %d (the write quorum) of %d shards placed in distinct %s domains", err, quorum, n, s.cfg.PlacementLevel)}
		}
		if got, err = placement.Choose(fallback, ne.Usable, nil, true, rnd); err != nil {
			return nil, nil, &InsufficientBackendsError{Op: "write", Usable: 0, Needed: quorum, Detail: err.Error()}
		}
	}
	targets := make([]placement.Candidate, n)
	copy(targets, got) // a short placement leaves the last (parity) shards without target
	// Retries go to healthy backends only: one that failed a moment ago
	// would most likely fail again, perhaps only after a long timeout.
	return targets, primary, nil
}

// candidates lists the backends a new shard of shardSize bytes may go to.
// primary: open, up, not failing lately, with room. fallback adds suspect
// and lately failing ones. Never down, draining, retired, replaced, full,
// unopened or foreign backends.
//
// A suspect backend that answered this store's probe after it was marked
// counts as up: the mark is the healer's, and only a running healer takes
// it back, so without one (a daemon stopped while a node hung) the node
// would take nothing new for good. A backend that failed is back once a
// probe answers after the failure, tried holdOff after it (reprobe).
func (s *Store) candidates(shardSize int64) (primary, fallback []placement.Candidate) {
	now := time.Now()
	for _, h := range s.handleList() {
		h.mu.Lock()
		rec, open, foreign := h.rec, h.b != nil, h.foreign
		capy, written := h.capacity, h.written
		out := h.outOfReach(rec) || now.Sub(h.fullAt) < failedFor
		reprobe := h.failing() && now.Sub(h.failedAt) > holdOff(h.strikes)
		h.mu.Unlock()
		if !open || foreign {
			continue
		}
		if rec.State != metastore.StateUp && rec.State != metastore.StateSuspect {
			continue
		}
		c := placement.Candidate{Name: h.name, Domain: h.spec.Domain(s.cfg.PlacementLevel), Spare: rec.Spare}
		if capy.Known {
			c.FreeKnown = true
			c.Free = capy.Free - written
			if c.Free < shardSize {
				continue // full
			}
		}
		fallback = append(fallback, c)
		if reprobe {
			s.reprobe(h)
		}
		if !out {
			primary = append(primary, c)
		}
	}
	return primary, fallback
}

// noteWritten lowers the backend's free-space estimate until its next probe.
func (s *Store) noteWritten(name string, n int64) {
	h := s.handleOf(name)
	if h != nil {
		h.mu.Lock()
		h.written += n
		h.strikes = 0
		h.mu.Unlock()
	}
}

// Writer writes one object. The object appears only when Close returns
// nil; Abort (or an error) leaves the previous object, if any, in place.
// A Writer is not safe for concurrent use.
type Writer struct {
	name string
	pw   *io.PipeWriter
	done chan struct{}
	info *ObjectInfo
	err  error
	end  bool
}

// Create starts writing object name. Writes stream through the encoder
// and the uploads with bounded memory; Close commits. ctx governs the
// whole write: when it ends before Close, the write fails.
func (s *Store) Create(ctx context.Context, name string, opts ...WriteOption) (*Writer, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	o := applyWriteOpts(opts)
	if err := checkAttrs(o.attrs); err != nil {
		return nil, fmt.Errorf("create %q: %w", name, err)
	}
	pr, pw := io.Pipe()
	w := &Writer{name: name, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		stop := func(err error) { pr.CloseWithError(fmt.Errorf("write %q: %w", name, s.closedCause(err))) }
		info, err := s.write(ctx, name, pr, o, stop)
		if err != nil {
			err = fmt.Errorf("write %q: %w", name, s.closedCause(err))
			// Unblock a Write waiting on a reader that stopped.
			pr.CloseWithError(err)
		}
		w.info, w.err = info, err
	}()
	return w, nil
}

// Write implements io.Writer. After a failure of the write in the
// background, Write returns that error.
func (w *Writer) Write(p []byte) (int, error) {
	if w.end {
		return 0, fmt.Errorf("write %q: %w", w.name, ErrClosed)
	}
	return w.pw.Write(p)
}

// Close finishes the object and commits it; the object is visible exactly
// when Close returns nil.
func (w *Writer) Close() error {
	if w.end {
		<-w.done
		return w.err
	}
	w.end = true
	w.pw.Close()
	<-w.done
	return w.err
}

// Abort gives up the write: nothing is committed, and the shards already
// uploaded go to garbage collection. Abort after Close does nothing.
func (w *Writer) Abort() error {
	if w.end {
		<-w.done
		return nil
	}
	w.end = true
	w.pw.CloseWithError(ErrAborted)
	<-w.done
	if w.err == nil {
		// The encoder had already consumed everything and committed:
		// too late to abort.
		return fmt.Errorf("abort %q: already committed", w.name)
	}
	return nil
}

// Info describes the committed object after a successful Close.
func (w *Writer) Info() *ObjectInfo { return w.info }
