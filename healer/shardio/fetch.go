package shardio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/healstore/healstore/backends"
)

// FetchRequest names the shards of one stripe and how many are needed.
type FetchRequest struct {
	Stripe [16]byte
	// Locs has one entry per shard index (k+m). A Loc with Backend == ""
	// is a shard known to be missing.
	Locs []Loc
	// Need is the number of verified shards to gather: k to decode or
	// rebuild, len(Locs) to read every shard (a deep scrub).
	Need int
	// Prefer lists indices to fetch first, in order; the rest follow in
	// index order. Leave it nil to prefer the data shards 0..k-1 (indices
	// are in order anyway), so a healthy stripe decodes with no
	// reconstruction.
	Prefer []int
	// Verify checks one fetched shard against sum (the metastore's
	// checksum of the full shard); a non-nil error marks the shard corrupt.
	// encoder.Codec.VerifyShard fits, bound to the stripe id. Every shard
	// read must be verified against the metastore (invariant 3): a caller
	// that passes nil must verify the shards itself before using them, as
	// the read path does with encoder.Codec.DecodeBlock (which checks every
	// shard against the sums while it copies, saving a second pass over
	// the data), and must count the ones that fail as corrupt.
	Verify func(index int, shard, sum []byte) error
	// Have holds shards the caller already has and trusts (nil entries
	// for the rest; nil for none): they count towards Need, are returned
	// in Shards, and are not fetched again. A caller retrying after some
	// fetched shards proved corrupt passes the good ones here.
	Have [][]byte
	// Alloc, when set, provides the memory of each fetched shard (n bytes)
	// from backends that can read into it (backends.BufGetter), so a
	// caller that is done with the shards can recycle them. Shards of
	// requests Fetch no longer waits for are left to the garbage collector.
	Alloc func(n int) []byte
	// HintWait bounds the wait for the first wave's prefetch hints
	// (backends.Prefetcher) before the reads start; 0 means
	// DefaultHintWait.
	HintWait time.Duration
	// HedgeAfter: when no shard has arrived for this long while requests
	// are outstanding, one more shard is requested. 0 disables hedging.
	HedgeAfter time.Duration
	// OnError, when set, hears every failed backend call, for the monitor.
	// Not-found answers are reported too (they mean lost data). Calls cut
	// short by ctx's end, or by Fetch itself once it has Need shards, are
	// not: they say nothing about the backend.
	OnError func(backend string, err error)
}

// FetchResult is what one Fetch found.
type FetchResult struct {
	// Shards has one entry per index: the verified shard, or nil when it
	// was not fetched, missing, unreachable or corrupt.
	Shards [][]byte
	// Good counts the verified shards in Shards.
	Good int
	// Missing: indices with no location, or whose backend answered not
	// found. The shard is lost.
	Missing []int
	// Unreachable: indices whose backend failed or is not open. The shard
	// may come back with its backend.
	Unreachable []int
	// Corrupt: indices whose shard failed verification.
	Corrupt []int
	// Errs holds the error for every index in Missing, Unreachable and
	// Corrupt (nil for a location already known missing).
	Errs map[int]error
	// Hedges counts requests sent beyond Need because one lagged.
	Hedges int
	// Laggards: indices whose request had run HedgeAfter or longer, with
	// no answer, when Need shards were in (cancelled then). A pool that
	// is a LagTracker hears of their backends.
	Laggards []int
}

// Short reports whether the fetch found any shard missing or corrupt:
// the stripe needs a repair (unreachable shards may still come back; the
// caller's view of backend state decides about those).
func (r *FetchResult) Short() bool { return len(r.Missing) > 0 || len(r.Corrupt) > 0 }

// ErrTooFewShards is matched (errors.Is) by *TooFewError.
var ErrTooFewShards = errors.New("too few shards")

// TooFewError: fewer than Need verified shards could be fetched.
type TooFewError struct {
	Stripe      [16]byte
	Need, Got   int
	Missing     []int
	Unreachable []int
	Corrupt     []int
	Errs        map[int]error
}

func (e *TooFewError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stripe %x: %d of %d needed shards readable", e.Stripe, e.Got, e.Need)
	add := func(what string, idx []int) {
		if len(idx) > 0 {
			fmt.Fprintf(&b, "; %s %v", what, idx)
		}
	}
	add("missing", e.Missing)
	add("unreachable", e.Unreachable)
	add("corrupt", e.Corrupt)
	// Name the first cause so an operator sees which backend said what.
	for _, i := range slices.Sorted(mapKeys(e.Errs)) {
		if e.Errs[i] != nil {
			fmt.Fprintf(&b, " (shard %d: %v)", i, e.Errs[i])
			break
		}
	}
	return b.String()
}

// Is makes errors.Is(err, ErrTooFewShards) true.
func (e *TooFewError) Is(target error) bool { return target == ErrTooFewShards }

func mapKeys(m map[int]error) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// DefaultHintWait bounds how long Fetch waits for its first wave's hints
// before reading (FetchRequest.HintWait): hints that work take
// microseconds to a few cold metadata reads.
const DefaultHintWait = 10 * time.Millisecond

type fetched struct {
	index int
	shard []byte
	kind  int // 0 good, 1 missing, 2 unreachable, 3 corrupt
	err   error
}

const (
	kindGood = iota
	kindMissing
	kindUnreachable
	kindCorrupt
)

// LagTracker is a Pool that remembers the backends fetches stopped waiting
// for (FetchResult.Laggards): Fetch asks them last, after its preference
// order, and tells it of each new one. A hung node fails no request that
// is hedged around it, so without this every fetch with a shard to ask of
// it first waits HedgeAfter. How long a backend stays lagging is the
// tracker's to say.
type LagTracker interface {
	Pool
	// Lagging reports whether backend lagged lately.
	Lagging(backend string) bool
	// NoteLagging hears of a backend a fetch stopped waiting for.
	NoteLagging(backend string)
}

// Fetch gathers req.Need verified shards of a stripe (see FetchRequest).
// Requests go out req.Need at a time in preference order; each failure
// sends a request for the next index; each HedgeAfter without progress
// sends one extra. As soon as Need shards are verified the outstanding
// requests are cancelled. It returns the result and, when fewer than Need
// shards could be verified, a *TooFewError (the result is still filled in
// so the caller can queue the repair). A ctx that ends returns ctx's error.
func Fetch(ctx context.Context, pool Pool, req FetchRequest) (*FetchResult, error) {
	n := len(req.Locs)
	res := &FetchResult{Shards: make([][]byte, n), Errs: map[int]error{}}
	have := make([]bool, n)
	for i, sh := range req.Have {
		if i < n && sh != nil {
			res.Shards[i], have[i] = sh, true
			res.Good++
		}
	}
	if res.Good >= req.Need {
		return res, nil
	}
	if req.Need > n {
		return res, &TooFewError{Stripe: req.Stripe, Need: req.Need, Got: res.Good}
	}

	// Order: preferred indices first, then the rest; known-missing
	// locations are recorded at once and never requested.
	order := make([]int, 0, n)
	seen := make([]bool, n)
	for _, i := range req.Prefer {
		if i >= 0 && i < n && !seen[i] {
			seen[i] = true
			order = append(order, i)
		}
	}
	for i := range n {
		if !seen[i] {
			order = append(order, i)
		}
	}
	if lt, ok := pool.(LagTracker); ok {
		// Backends a fetch stopped waiting for lately go last.
		var late []int
		order = slices.DeleteFunc(order, func(i int) bool {
			if b := req.Locs[i].Backend; b != "" && lt.Lagging(b) {
				late = append(late, i)
				return true
			}
			return false
		})
		order = append(order, late...)
	}
	queue := order[:0:0]
	for _, i := range order {
		if have[i] {
			continue
		}
		if req.Locs[i].Backend == "" {
			res.Missing = append(res.Missing, i)
			res.Errs[i] = nil
			continue
		}
		queue = append(queue, i)
	}

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan fetched, n) // buffered: late senders never block
	inflight := 0
	launched := map[int]time.Time{} // requests without an answer yet
	launch := func() bool {
		if len(queue) == 0 {
			return false
		}
		i := queue[0]
		queue = queue[1:]
		inflight++
		launched[i] = time.Now()
		go func() { results <- fetchOne(fctx, pool, req, i) }()
		return true
	}
	// Hint every backend of the first wave before any read begins: the
	// reads themselves block their threads, and with few of those the
	// later ones would not reach their disks until earlier ones are done.
	// The hints are waited for only briefly: a local hint opens the file,
	// and on a disk that hangs that open blocks as long as the read would,
	// with no ctx or hedge to end it. The reads then go ahead, and the
	// stuck shard is hedged around as it would be without hints.
	if first := queue[:min(len(queue), req.Need-res.Good)]; len(first) > 0 {
		hinted := make(chan struct{})
		go func() {
			defer close(hinted)
			for _, i := range first {
				if b, ok := pool.Backend(req.Locs[i].Backend); ok {
					backends.Prefetch(fctx, b, req.Locs[i].Key)
				}
			}
		}()
		t := time.NewTimer(cmp.Or(req.HintWait, DefaultHintWait))
		select {
		case <-hinted:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	for range req.Need - res.Good {
		if !launch() {
			break
		}
	}

	var hedge <-chan time.Time
	var timer *time.Timer
	if req.HedgeAfter > 0 {
		timer = time.NewTimer(req.HedgeAfter)
		defer timer.Stop()
		hedge = timer.C
	}
	for inflight > 0 && res.Good < req.Need {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-hedge:
			if launch() {
				res.Hedges++
			}
			timer.Reset(req.HedgeAfter)
		case f := <-results:
			inflight--
			delete(launched, f.index)
			switch f.kind {
			case kindGood:
				res.Shards[f.index] = f.shard
				res.Good++
			case kindMissing:
				res.Missing = append(res.Missing, f.index)
				res.Errs[f.index] = f.err
			case kindUnreachable:
				res.Unreachable = append(res.Unreachable, f.index)
				res.Errs[f.index] = f.err
			case kindCorrupt:
				res.Corrupt = append(res.Corrupt, f.index)
				res.Errs[f.index] = f.err
			}
			// A read that ctx's end cut short is the caller's doing
			// (its deadline, its cancel, its Reader closing), not the
			// backend's. Ended, not ctx.Err(): a call bounded by a
			// socket deadline taken from ctx can fail a moment before
			// ctx.Err() turns non-nil. The reads Fetch cancels itself
			// once it has Need shards (hedged laggards) end after it
			// has stopped listening, and are never reported.
			if f.kind != kindGood && f.err != nil && req.OnError != nil && backends.Ended(ctx) == nil {
				req.OnError(req.Locs[f.index].Backend, f.err)
			}
			// Keep enough requests outstanding to reach Need.
			for res.Good+inflight < req.Need && launch() {
			}
			if timer != nil && f.kind == kindGood {
				// Progress: the hedge clock restarts.
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
				timer.Reset(req.HedgeAfter)
			}
		}
	}
	if res.Good >= req.Need && req.HedgeAfter > 0 {
		for i, at := range launched {
			if time.Since(at) >= req.HedgeAfter {
				res.Laggards = append(res.Laggards, i)
			}
		}
		if lt, ok := pool.(LagTracker); ok {
			for _, i := range res.Laggards {
				lt.NoteLagging(req.Locs[i].Backend)
			}
		}
	}
	slices.Sort(res.Missing)
	slices.Sort(res.Unreachable)
	slices.Sort(res.Corrupt)
	slices.Sort(res.Laggards)
	if res.Good < req.Need {
		if err := backends.Ended(ctx); err != nil {
			return res, err
		}
		return res, &TooFewError{Stripe: req.Stripe, Need: req.Need, Got: res.Good,
			Missing: res.Missing, Unreachable: res.Unreachable, Corrupt: res.Corrupt, Errs: res.Errs}
	}
	return res, nil
}

func fetchOne(ctx context.Context, pool Pool, req FetchRequest, i int) fetched {
	loc := req.Locs[i]
	b, ok := pool.Backend(loc.Backend)
	if !ok {
		return fetched{index: i, kind: kindUnreachable,
			err: backends.Errorf(loc.Backend, "get", loc.Key, backends.ErrUnavailable, "backend is not open")}
	}
	start := time.Now()
	data, err := backends.GetBuf(ctx, b, loc.Key, req.Alloc)
	observe(ctx, pool, loc.Backend, "get", len(data), start, err)
	switch {
	case err == nil:
	case errors.Is(err, backends.ErrNotFound):
		return fetched{index: i, kind: kindMissing, err: err}
	default:
		return fetched{index: i, kind: kindUnreachable, err: err}
	}
	if req.Verify == nil {
		return fetched{index: i, shard: data, kind: kindGood}
	}
	if err := req.Verify(i, data, loc.Sum); err != nil {
		ObserveCorrupt(pool, loc.Backend)
		return fetched{index: i, kind: kindCorrupt,
			err: fmt.Errorf("shard %d on backend %s (%s): %w", i, loc.Backend, loc.Key, err)}
	}
	return fetched{index: i, shard: data, kind: kindGood}
}
