package shardio

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// observedPool is a MapPool that records what shardio tells its Observer.
type observedPool struct {
	MapPool
	mu    sync.Mutex
	calls []Call
}

func (p *observedPool) ObserveShard(c Call) {
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
}

// seen lists the calls as "backend op result bytes", sorted.
func (p *observedPool) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, c := range p.calls {
		if c.Took <= 0 && c.Result != ResultCorrupt {
			out = append(out, fmt.Sprintf("%s %s: no duration", c.Backend, c.Op))
		}
		out = append(out, fmt.Sprintf("%s %s %s %d", c.Backend, c.Op, c.Result, c.Bytes))
	}
	slices.Sort(out)
	p.calls = nil
	return out
}

// Every put, get and sync shardio makes reaches an Observer pool, with
// the backend, the bytes moved and what came of it, so the store can
// count per backend; a shard that fails verification counts as corrupt,
// not as a good get, and a get the caller's context ended is no error of
// the backend's.
func TestObserverSeesEveryShardCall(t *testing.T) {
	mp, cands, mems := cluster(4, 0)
	pool := &observedPool{MapPool: mp}
	shards, sums := shardsOf(4)
	id := [16]byte{9}
	mems[3].failPut = true
	res := Upload(context.Background(), pool, id, shards[:3], cands[:3], UploadOptions{})
	if res.Count() != 3 {
		t.Fatalf("upload: %v", res.Errs)
	}
	res = Upload(context.Background(), pool, [16]byte{8}, [][]byte{shards[3]}, cands[3:], UploadOptions{Attempts: 1})
	want := []string{"b0 put ok 100", "b1 put ok 101", "b2 put ok 102", "b3 put error 0"}
	if got := pool.seen(); !slices.Equal(got, want) {
		t.Fatalf("uploads seen as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	locs := make([]Loc, 4)
	for i := range 3 {
		locs[i] = Loc{Backend: cands[i].Name, Key: ShardKey(id, i), Sum: sums[i]}
	}
	locs[3] = Loc{Backend: "b3", Key: ShardKey(id, 3), Sum: sums[3]} // never landed
	mems[0].m[locs[0].Key] = []byte("rotten")
	if _, err := Fetch(context.Background(), pool, FetchRequest{Stripe: id, Locs: locs, Need: 3, Verify: verify}); !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("fetch of 3 where 2 are good: %v", err)
	}
	want = []string{"b0 get corrupt 0", "b0 get ok 6", "b1 get ok 101", "b2 get ok 102", "b3 get not_found 0"}
	if got := pool.seen(); !slices.Equal(got, want) {
		t.Fatalf("fetch seen as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A get the caller gave up on.
	mems[1].delay = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Fetch(ctx, pool, FetchRequest{Stripe: id, Locs: locs[1:2], Need: 1, Verify: verify})
	if err == nil {
		t.Fatal("fetch from a backend that never answers succeeded")
	}
	time.Sleep(100 * time.Millisecond) // the abandoned get reports when it returns
	if got := pool.seen(); !slices.Equal(got, []string{"b1 get canceled 0"}) {
		t.Fatalf("abandoned get seen as %v", got)
	}

	// Syncs, one per backend, failed or not.
	sm := &syncMem{memBackend: newMem("s1"), syncErr: errors.New("disk gone")}
	pool.MapPool["s0"] = &syncMem{memBackend: newMem("s0")}
	pool.MapPool["s1"] = sm
	errs := SyncShards(context.Background(), pool, map[string][]string{"s0": {"k"}, "s1": {"k"}})
	if len(errs) != 1 || errs["s1"] == nil {
		t.Fatalf("sync errors %v", errs)
	}
	if got := pool.seen(); !slices.Equal(got, []string{"s0 sync ok 0", "s1 sync error 0"}) {
		t.Fatalf("syncs seen as %v", got)
	}
}
