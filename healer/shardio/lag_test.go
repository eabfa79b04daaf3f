package shardio

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// Two hung backends (a node stopped with SIGSTOP: the connection is
// taken, nothing answers) among six: with LagAfter set, their shards are
// given up on once the others have landed and the lag has passed, and
// retried on the spares, instead of waiting out the backends' call
// deadline. Each retry is recorded first (BeforeRetry), the given-up
// locations are reported for garbage collection (a put that hung may
// still land), and the monitor hears of them.
func TestUploadGivesUpOnLaggingShards(t *testing.T) {
	pool, cands, mems := cluster(6, 2)
	shards, _ := shardsOf(6)
	mems[1].putDelay = time.Hour
	mems[4].putDelay = time.Hour
	var mu sync.Mutex
	var retried, blamed []string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the call deadline stand-in
	defer cancel()
	start := time.Now()
	res := Upload(ctx, pool, [16]byte{3}, shards, cands[:6], UploadOptions{
		Candidates: cands,
		LagAfter:   200 * time.Millisecond,
		BeforeRetry: func(ctx context.Context, i int, b string) error {
			mu.Lock()
			defer mu.Unlock()
			retried = append(retried, b)
			return nil
		},
		OnError: func(b string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if !errors.Is(err, backends.ErrUnavailable) {
				t.Errorf("a lagging put reported as %v, want unavailable", err)
			}
			blamed = append(blamed, b)
		},
	})
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("upload took %v: it waited for the hung backends", took)
	}
	if res.Count() != 6 || res.Landed[1] == "b1" || res.Landed[4] == "b4" {
		t.Fatalf("landed %v (errs %v)", res.Landed, res.Errs)
	}
	slices.Sort(retried)
	slices.Sort(blamed)
	if !slices.Equal(retried, []string{"b6", "b7"}) || !slices.Equal(blamed, []string{"b1", "b4"}) {
		t.Fatalf("retried on %v, blamed %v", retried, blamed)
	}
	var tried []string
	for _, l := range res.Tried {
		tried = append(tried, l.Backend)
	}
	slices.Sort(tried)
	if !slices.Equal(tried, []string{"b1", "b4"}) {
		t.Fatalf("tried %v: the given-up locations must go to garbage collection", tried)
	}
}

// Without a shard landed there is nothing to compare with (the network,
// not one backend, may be slow): no shard is given up on, and a slow but
// working backend is waited for. Nor is one given up on before LagAfter.
func TestUploadWaitsWhenNoShardLanded(t *testing.T) {
	pool, cands, mems := cluster(3, 1)
	shards, _ := shardsOf(3)
	for _, m := range mems[:3] {
		m.putDelay = 300 * time.Millisecond
	}
	res := Upload(context.Background(), pool, [16]byte{4}, shards, cands[:3], UploadOptions{
		Candidates: cands, LagAfter: 100 * time.Millisecond,
	})
	if res.Count() != 3 || len(res.Tried) != 0 || slices.Contains(res.Landed, "b3") {
		t.Fatalf("landed %v, tried %v", res.Landed, res.Tried)
	}
	// One fast, one slow: the slow one runs past 4x the fast one's time but
	// not past LagAfter, and is waited for.
	mems[0].putDelay = 0
	mems[1].putDelay = 300 * time.Millisecond
	res = Upload(context.Background(), pool, [16]byte{5}, shards[:2], cands[:2], UploadOptions{
		Candidates: cands, LagAfter: 5 * time.Second,
	})
	if res.Count() != 2 || len(res.Tried) != 0 || res.Landed[1] != "b1" {
		t.Fatalf("landed %v, tried %v", res.Landed, res.Tried)
	}
}
