package shardio

import (
	"context"
	"errors"
	"time"

	"github.com/healstore/healstore/backends"
)

// Observer, when the Pool implements it, is told of every shard call
// shardio makes (the write path's, the read path's and the rebuilder's),
// so the store can count them per backend: an operator whose backends sit
// on strangers' nodes needs to see which one is slow or failing before it
// is declared down. It is called on the caller's goroutine; it must be
// cheap and safe for concurrent use.
type Observer interface {
	ObserveShard(c Call)
}

// Call is one shard call as an Observer sees it. A shard that arrived
// but failed verification against the metastore's checksum is told
// twice: its get (ResultOK: the backend answered) and then a Call with
// ResultCorrupt and no duration (what it answered was wrong). A caller
// that verifies shards itself reports those with ObserveCorrupt.
type Call struct {
	Backend string
	Op      string // "put", "get" or "sync"
	Bytes   int    // value bytes moved: the shard put or got whole; 0 otherwise
	Took    time.Duration
	Result  string // one of the Result constants
}

// Results of a Call.
const (
	ResultOK       = "ok"
	ResultNotFound = "not_found" // a get of a key the backend does not have
	ResultCorrupt  = "corrupt"   // a shard got whole that failed verification
	ResultCanceled = "canceled"  // the caller's context ended (a hedge no longer needed, a cancelled write): no fault of the backend's
	ResultError    = "error"     // anything else the backend failed
)

// observe reports a call to pool's Observer, if it has one.
func observe(ctx context.Context, pool Pool, backend, op string, n int, start time.Time, err error) {
	o, ok := pool.(Observer)
	if !ok {
		return
	}
	c := Call{Backend: backend, Op: op, Took: time.Since(start), Result: ResultOK}
	switch {
	case err == nil:
		c.Bytes = n
	case errors.Is(err, backends.ErrNotFound):
		c.Result = ResultNotFound
	case backends.Ended(ctx) != nil && !errors.Is(context.Cause(ctx), errLagging):
		c.Result = ResultCanceled
	default:
		c.Result = ResultError
	}
	o.ObserveShard(c)
}

// ObserveCorrupt tells pool's Observer, if it has one, of a shard from
// backend that failed verification: Fetch calls it for the shards it
// verifies, a caller that verifies shards itself (the read path, while
// decoding) for the others.
func ObserveCorrupt(pool Pool, backend string) {
	if o, ok := pool.(Observer); ok {
		o.ObserveShard(Call{Backend: backend, Op: "get", Result: ResultCorrupt})
	}
}
