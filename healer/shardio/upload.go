package shardio

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
)

// DefaultAttempts is how many backends Upload tries for one shard when
// UploadOptions.Attempts is 0: the first target and two more.
const DefaultAttempts = 3

// UploadOptions tune Upload. The zero value uploads without retries on other
// backends (there are no Candidates to retry on).
type UploadOptions struct {
	// Candidates are the backends a failed shard may be retried on: the
	// store's eligible backends (up, not draining, not full), spares
	// included. Retries go to spares first, then to non-spares, always in a
	// failure domain no other shard of the stripe uses.
	Candidates []placement.Candidate
	// Avoid holds backend names and failure domains a retry must not use
	// besides the ones the uploaded shards occupy: the rebuilder passes the
	// domains of the stripe's surviving shards here.
	Avoid map[string]bool
	// Attempts is the number of backends tried per shard, the first target
	// included. 0 means DefaultAttempts; 1 disables retries.
	Attempts int
	// BeforeRetry, when set, is called before a shard is sent to a retry
	// target (not before the first attempt: the caller records those
	// itself). The write path records the new location in its intent here,
	// so that no shard ever exists on a backend the metastore does not know
	// of. An error abandons that retry (the shard stays missing).
	BeforeRetry func(ctx context.Context, index int, backend string) error
	// OnError, when set, hears every failed backend call, for the monitor,
	// except the calls that ctx's end cut short or never sent: those say
	// nothing about the backend.
	OnError func(backend string, err error)
	// Rand drives the weighted choice of retry targets; nil picks the
	// backend with most free space (deterministic).
	Rand *rand.Rand
	// Deferred stores the shards with backends.PutNoSync: a backend that
	// can (backends.Syncer) skips its per-value fsyncs, and the landed
	// shards are durable only once the caller has passed them to
	// SyncShards. The caller must have recorded every target (the write
	// intent) durably beforehand: a deferred shard may reach the disk,
	// whole or torn, at any moment after its Put begins.
	Deferred bool
	// LagAfter, when set, gives up on a shard's put that has run this
	// long, and four times as long as the slowest put of this call that
	// landed, once at least one has: it is retried elsewhere as if it had
	// failed, its location goes to Tried (the put may still land) and
	// OnError hears of it. A hung node (stopped, not dead: it takes the
	// connection and never answers) otherwise holds every stripe with a
	// shard on it for the backend's whole call deadline. Without a put
	// landed nothing is given up: the network, not one node, may be slow.
	LagAfter time.Duration
}

// UploadResult says where the shards of one Upload went.
type UploadResult struct {
	// Landed[i] is the backend holding shard i, or "" if it is missing
	// (also "" for indices Upload was not asked to send).
	Landed []string
	// Errs[i] is the last error for shard i when it did not land.
	Errs []error
	// Tried lists every location written to in vain. A failed or timed-out
	// Put may still have stored the value, so each of these must reach
	// garbage collection once the stripe commits elsewhere.
	Tried []Loc
}

// Count is the number of shards that landed.
func (r *UploadResult) Count() int {
	n := 0
	for _, b := range r.Landed {
		if b != "" {
			n++
		}
	}
	return n
}

// Missing lists the indices among sent that did not land.
func (r *UploadResult) Missing(sent []int) []int {
	var out []int
	for _, i := range sent {
		if r.Landed[i] == "" {
			out = append(out, i)
		}
	}
	return out
}

// Upload writes shards[i] to targets[i] under ShardKey(stripe, i) for every
// i with shards[i] != nil, all in parallel, and waits for them all. A shard
// whose Put fails is retried on another candidate (see UploadOptions),
// never on a backend that already failed in this call, and never in a
// domain that another shard of this call or opts.Avoid holds.
//
// Upload itself never fails: the caller decides from the result whether
// enough shards landed (the write quorum) and queues the rest for repair.
// When ctx ends, outstanding shards are reported missing with ctx's error.
func Upload(ctx context.Context, pool Pool, stripe [16]byte, shards [][]byte, targets []placement.Candidate, opts UploadOptions) *UploadResult {
	if len(targets) != len(shards) {
		panic(fmt.Sprintf("shardio.Upload: %d shards but %d targets", len(shards), len(targets)))
	}
	attempts := opts.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	u := &uploader{
		pool:    pool,
		stripe:  stripe,
		opts:    opts,
		current: append([]placement.Candidate(nil), targets...),
		failed:  map[string]bool{},
		landing: make(chan struct{}),
		res: &UploadResult{
			Landed: make([]string, len(shards)),
			Errs:   make([]error, len(shards)),
		},
	}
	// Unsent shards are cleared before any upload starts: a retry reads
	// every target (chooseRetry) while the others run.
	for i, sh := range shards {
		if sh == nil {
			u.current[i] = placement.Candidate{}
		}
	}
	var wg sync.WaitGroup
	for i, sh := range shards {
		if sh == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.one(ctx, i, sh, attempts)
		}()
	}
	wg.Wait()
	return u.res
}

type uploader struct {
	pool   Pool
	stripe [16]byte
	opts   UploadOptions

	mu      sync.Mutex
	current []placement.Candidate // target per index; zero when not sent
	failed  map[string]bool       // backends that failed a Put in this call
	res     *UploadResult
	slowest time.Duration // the longest put that landed (LagAfter)
	landing chan struct{} // closed (and replaced) when a put lands
}

func (u *uploader) one(ctx context.Context, i int, shard []byte, attempts int) {
	key := ShardKey(u.stripe, i)
	var lastErr error
	for a := 0; a < attempts; a++ {
		u.mu.Lock()
		target := u.current[i]
		u.mu.Unlock()
		if a > 0 && u.opts.BeforeRetry != nil {
			if err := u.opts.BeforeRetry(ctx, i, target.Name); err != nil {
				lastErr = fmt.Errorf("shard %d: record retry on %s: %w", i, target.Name, err)
				break
			}
		}
		took, err := u.putWatched(ctx, target.Name, key, shard)
		if err == nil {
			u.mu.Lock()
			u.res.Landed[i] = target.Name
			u.slowest = max(u.slowest, took)
			close(u.landing) // puts waiting on LagAfter look again
			u.landing = make(chan struct{})
			u.mu.Unlock()
			return
		}
		lastErr = fmt.Errorf("shard %d: %w", i, err)
		// A put that the caller's ctx cut short (cancelled, or past its
		// deadline: a user's short deadline, a mount's operation
		// timeout), or never sent because ctx had ended, says nothing
		// about the backend; reporting it would keep a healthy backend
		// out of placement and have it probed. A hung backend is still
		// reported: the store bounds every call with a deadline of its
		// own (backends.WithDeadline), which expires while the caller's
		// ctx is live. Ended, not ctx.Err(): a call bounded by a socket
		// deadline taken from ctx can fail a moment before ctx.Err()
		// turns non-nil.
		ended := backends.Ended(ctx) != nil
		if u.opts.OnError != nil && !ended {
			u.opts.OnError(target.Name, err)
		}
		u.mu.Lock()
		u.failed[target.Name] = true
		u.res.Tried = append(u.res.Tried, Loc{Backend: target.Name, Key: key})
		if ended || a+1 == attempts {
			u.current[i] = placement.Candidate{}
			u.mu.Unlock()
			break
		}
		next, cerr := u.chooseRetry(i)
		if cerr != nil {
			u.current[i] = placement.Candidate{}
			u.mu.Unlock()
			lastErr = fmt.Errorf("%w; no other backend to retry on: %w", lastErr, cerr)
			break
		}
		u.current[i] = next
		u.mu.Unlock()
	}
	u.mu.Lock()
	u.res.Errs[i] = lastErr
	u.mu.Unlock()
}

// LagFor is the LagAfter the store and the rebuilder give a put of shards
// of size bytes: 5 s, or the time one takes at 1 MB/s if longer, so a
// large shard to a distant node is not taken for a hung one.
func LagFor(size int) time.Duration {
	return max(5*time.Second, time.Duration(size)*time.Microsecond)
}

// errLagging ends a put that LagAfter gave up on.
var errLagging = errors.New("no answer while the other shards landed")

// putWatched is put, given up on when it lags (UploadOptions.LagAfter);
// it returns how long the put took.
func (u *uploader) putWatched(ctx context.Context, name, key string, shard []byte) (time.Duration, error) {
	start := time.Now()
	if u.opts.LagAfter <= 0 {
		return time.Since(start), u.put(ctx, name, key, shard)
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		for {
			u.mu.Lock()
			landed := slices.ContainsFunc(u.res.Landed, func(b string) bool { return b != "" })
			wait, next := max(u.opts.LagAfter, 4*u.slowest), u.landing
			u.mu.Unlock()
			var lag <-chan time.Time
			if landed {
				t := time.NewTimer(time.Until(start.Add(wait)))
				defer t.Stop() // one per landing: at most one per shard of the call
				lag = t.C
			}
			select {
			case <-done:
				return
			case <-lag:
				cancel(errLagging)
				return
			case <-next: // another put landed: the wait may be longer now
			}
		}
	}()
	err := u.put(pctx, name, key, shard)
	close(done)
	<-watched // so a lag cancel cannot come after the put ended
	took := time.Since(start)
	if err != nil && errors.Is(context.Cause(pctx), errLagging) && backends.Ended(ctx) == nil {
		err = backends.Wrap(name, "put", key, backends.ErrUnavailable,
			fmt.Errorf("%w: %v without an answer (given up; retried elsewhere)", errLagging, took.Round(time.Millisecond)))
	}
	return took, err
}

func (u *uploader) put(ctx context.Context, name, key string, shard []byte) error {
	if err := backends.Ended(ctx); err != nil {
		return backends.Wrap(name, "put", key, backends.ErrUnavailable, err)
	}
	b, ok := u.pool.Backend(name)
	if !ok {
		return backends.Errorf(name, "put", key, backends.ErrUnavailable, "backend is not open")
	}
	start := time.Now()
	var err error
	if u.opts.Deferred {
		err = backends.PutNoSync(ctx, b, key, shard)
	} else {
		err = b.Put(ctx, key, shard)
	}
	observe(ctx, u.pool, name, "put", len(shard), start, err)
	return err
}

// SyncShards makes durable the shards that Uploads with Deferred stored:
// keys maps a backend name to the keys written there. Each backend gets
// one Sync, all in parallel. It returns the error of every backend whose
// Sync failed; the caller counts all of that backend's shards as not
// landed (they may be lost or torn after a crash). A backend that is no
// longer open is such a failure.
func SyncShards(ctx context.Context, pool Pool, keys map[string][]string) map[string]error {
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for name, ks := range keys {
		if len(ks) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if b, ok := pool.Backend(name); ok {
				start := time.Now()
				err = backends.Sync(ctx, b, ks)
				observe(ctx, pool, name, "sync", 0, start, err)
			} else {
				err = backends.Errorf(name, "sync", "", backends.ErrUnavailable, "backend is not open")
			}
			if err != nil {
				mu.Lock()
				errs[name] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// chooseRetry picks a new target for shard i. Called with u.mu held, so
// two shards retrying at once cannot pick the same domain.
func (u *uploader) chooseRetry(i int) (placement.Candidate, error) {
	avoid := make(map[string]bool, len(u.opts.Avoid)+len(u.current)+len(u.failed))
	for k := range u.opts.Avoid {
		avoid[k] = true
	}
	for j, c := range u.current {
		if j != i && c.Name != "" {
			avoid[c.Name] = true
			avoid[c.Domain] = true
		}
	}
	for name := range u.failed {
		avoid[name] = true
	}
	var spares []placement.Candidate
	for _, c := range u.opts.Candidates {
		if c.Spare {
			spares = append(spares, c)
		}
	}
	if got, err := placement.Choose(spares, 1, avoid, true, u.opts.Rand); err == nil {
		return got[0], nil
	}
	got, err := placement.Choose(u.opts.Candidates, 1, avoid, false, u.opts.Rand)
	if err != nil {
		var ne *placement.NotEnoughError
		if errors.As(err, &ne) {
			return placement.Candidate{}, fmt.Errorf("every eligible backend is failed or in a domain the stripe already uses: %w", err)
		}
		return placement.Candidate{}, err
	}
	return got[0], nil
}
