package shardio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/backends/placement"
)

// memBackend is an in-memory backend with switchable faults.
type memBackend struct {
	name string
	mu   sync.Mutex
	m    map[string][]byte
	// faults
	failPut  bool
	failGet  bool
	delay    time.Duration
	putDelay time.Duration // Put waits this long (or until ctx ends)
	gets     int
}

func newMem(name string) *memBackend { return &memBackend{name: name, m: map[string][]byte{}} }

func (b *memBackend) Name() string { return b.name }
func (b *memBackend) Put(ctx context.Context, key string, v []byte) error {
	b.mu.Lock()
	d := b.putDelay
	b.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return backends.Wrap(b.name, "put", key, backends.ErrUnavailable, ctx.Err())
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failPut {
		return backends.Errorf(b.name, "put", key, backends.ErrUnavailable, "injected")
	}
	b.m[key] = bytes.Clone(v)
	return nil
}
func (b *memBackend) Get(ctx context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	b.gets++
	d, fail := b.delay, b.failGet
	v, ok := b.m[key]
	b.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, backends.Wrap(b.name, "get", key, backends.ErrUnavailable, ctx.Err())
		}
	}
	if fail {
		return nil, backends.Errorf(b.name, "get", key, backends.ErrUnavailable, "injected")
	}
	if !ok {
		return nil, backends.Errorf(b.name, "get", key, backends.ErrNotFound, "no such key")
	}
	return bytes.Clone(v), nil
}
func (b *memBackend) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	v, err := b.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	off = min(off, int64(len(v)))
	return v[off:min(off+n, int64(len(v)))], nil
}
func (b *memBackend) Stat(ctx context.Context, key string) (int64, error) {
	v, err := b.Get(ctx, key)
	return int64(len(v)), err
}
func (b *memBackend) Delete(ctx context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, key)
	return nil
}
func (b *memBackend) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, v := range b.m {
		if strings.HasPrefix(k, prefix) {
			if err := fn(k, int64(len(v))); err != nil {
				return err
			}
		}
	}
	return nil
}
func (b *memBackend) Probe(ctx context.Context) (backends.ProbeResult, error) {
	return backends.ProbeResult{}, nil
}
func (b *memBackend) Close() error { return nil }

func TestShardKey(t *testing.T) {
	var id [16]byte
	for i := range id {
		id[i] = byte(i * 17)
	}
	k := ShardKey(id, 13)
	if k != "shards/00112233445566778899aabbccddeeff.13" {
		t.Fatalf("key %q", k)
	}
	got, idx, ok := ParseShardKey(k)
	if !ok || got != id || idx != 13 {
		t.Fatalf("parse %q: %x %d %v", k, got, idx, ok)
	}
	for _, bad := range []string{"", "healstore-marker", "shards/", "shards/00112233445566778899aabbccddeeff",
		"shards/00112233445566778899aabbccddeeff.", "shards/00112233445566778899aabbccddeeff.-1",
		"shards/00112233445566778899aabbccddeeff.01", "shards/0011223344556677889Xaabbccddeeff.1",
		"other/00112233445566778899aabbccddeeff.1"} {
		if _, _, ok := ParseShardKey(bad); ok {
			t.Errorf("ParseShardKey(%q) accepted", bad)
		}
	}
}

// cluster builds n memory backends b0..bn-1, each its own node, plus spares.
func cluster(n, spares int) (MapPool, []placement.Candidate, []*memBackend) {
	pool := MapPool{}
	var cands []placement.Candidate
	var mems []*memBackend
	for i := range n + spares {
		name := fmt.Sprintf("b%d", i)
		m := newMem(name)
		pool[name] = m
		mems = append(mems, m)
		cands = append(cands, placement.Candidate{Name: name, Domain: "node:" + name, Free: 1000, FreeKnown: true, Spare: i >= n})
	}
	return pool, cands, mems
}

func shardsOf(n int) ([][]byte, [][]byte) {
	var shards, sums [][]byte
	for i := range n {
		s := bytes.Repeat([]byte{byte(i + 1)}, 100+i)
		h := sha256.Sum256(s)
		shards = append(shards, s)
		sums = append(sums, h[:])
	}
	return shards, sums
}

func verify(i int, shard, sum []byte) error {
	h := sha256.Sum256(shard)
	if !bytes.Equal(h[:], sum) {
		return fmt.Errorf("checksum mismatch")
	}
	return nil
}

func TestUploadRetriesOnSpareFirst(t *testing.T) {
	pool, cands, mems := cluster(8, 1)
	shards, _ := shardsOf(6)
	targets := cands[:6]
	mems[2].failPut = true
	var mu sync.Mutex
	var retried []string
	res := Upload(context.Background(), pool, [16]byte{1}, shards, targets, UploadOptions{
		Candidates: cands,
		BeforeRetry: func(ctx context.Context, i int, b string) error {
			mu.Lock()
			defer mu.Unlock()
			retried = append(retried, fmt.Sprintf("%d:%s", i, b))
			return nil
		},
	})
	if res.Count() != 6 {
		t.Fatalf("landed %d: %v %v", res.Count(), res.Landed, res.Errs)
	}
	if res.Landed[2] != "b8" {
		t.Fatalf("shard 2 went to %s, want the spare b8", res.Landed[2])
	}
	if len(retried) != 1 || retried[0] != "2:b8" {
		t.Fatalf("BeforeRetry calls %v", retried)
	}
	if len(res.Tried) != 1 || res.Tried[0].Backend != "b2" {
		t.Fatalf("tried %v", res.Tried)
	}
	if _, ok := mems[8].m[ShardKey([16]byte{1}, 2)]; !ok {
		t.Fatal("spare does not hold the shard")
	}
}

// An upload whose ctx has ended blames no backend: OnError makes the store
// probe a backend, and a user's Ctrl-C is no sign of trouble there.
func TestUploadCancelledBlamesNoBackend(t *testing.T) {
	pool, cands, _ := cluster(8, 1)
	shards, _ := shardsOf(6)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var mu sync.Mutex
	var blamed []string
	res := Upload(ctx, pool, [16]byte{1}, shards, cands[:6], UploadOptions{
		Candidates: cands,
		OnError:    func(b string, err error) { mu.Lock(); blamed = append(blamed, b); mu.Unlock() },
	})
	if res.Count() != 0 {
		t.Fatalf("landed %d shards with a cancelled ctx", res.Count())
	}
	if len(blamed) != 0 {
		t.Fatalf("a cancelled upload blamed backends %v", blamed)
	}
	// A deadline that passed before any put was sent blames nobody.
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	blamed = nil
	Upload(dctx, pool, [16]byte{2}, shards, cands[:6], UploadOptions{
		Candidates: cands,
		OnError:    func(b string, err error) { mu.Lock(); blamed = append(blamed, b); mu.Unlock() },
	})
	if len(blamed) != 0 {
		t.Fatalf("an upload whose deadline had passed before it began blamed %v", blamed)
	}
}

// blockBackend holds every Put and Get until its ctx ends, as a backend
// that is slow or hung does, and fails then as a network backend does
// (ErrUnavailable). Each call says so on entered, if set, when it begins;
// returned, if set, hears it end.
type blockBackend struct {
	backends.Backend
	entered  chan<- string
	returned chan<- string
}

func (b blockBackend) wait(ctx context.Context, op, key string) error {
	if b.entered != nil {
		b.entered <- b.Name()
	}
	<-ctx.Done()
	if b.returned != nil {
		defer func() { b.returned <- b.Name() }()
	}
	return backends.Wrap(b.Name(), op, key, backends.ErrUnavailable, ctx.Err())
}

func (b blockBackend) Put(ctx context.Context, key string, v []byte) error {
	return b.wait(ctx, "put", key)
}

func (b blockBackend) Get(ctx context.Context, key string) ([]byte, error) {
	return nil, b.wait(ctx, "get", key)
}

// blamer collects the backends an OnError hears of.
type blamer struct {
	mu     sync.Mutex
	blamed []string
}

func (b *blamer) onError(name string, err error) {
	b.mu.Lock()
	b.blamed = append(b.blamed, name)
	b.mu.Unlock()
}

func (b *blamer) names() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.blamed...)
}

// A put the caller's ctx cuts short, cancelled or past its deadline,
// blames no backend: a user's short deadline or a mount's operation
// timeout says nothing about backends that were busy writing, and each
// report keeps a healthy backend out of placement and has it probed. The
// puts must have reached the backends before ctx ended (an Upload whose
// ctx had already ended sends nothing: TestUploadCancelledBlamesNoBackend).
func TestUploadCutShortByCallerBlamesNoBackend(t *testing.T) {
	for _, how := range []string{"cancel", "deadline"} {
		t.Run(how, func(t *testing.T) {
			mpool, cands, _ := cluster(8, 1)
			entered := make(chan string, len(mpool))
			pool := MapPool{}
			for name, b := range mpool {
				pool[name] = blockBackend{Backend: b, entered: entered}
			}
			shards, _ := shardsOf(6)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if how == "deadline" {
				// Long enough for every put to begin on a loaded machine;
				// the test waits for them to begin either way.
				ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
			}
			var bl blamer
			done := make(chan *UploadResult, 1)
			go func() {
				done <- Upload(ctx, pool, [16]byte{3}, shards, cands[:6], UploadOptions{Candidates: cands, OnError: bl.onError})
			}()
			for range 6 {
				<-entered
			}
			if how == "cancel" {
				cancel()
			}
			res := <-done
			if res.Count() != 0 {
				t.Fatalf("landed %d shards on backends that never answer", res.Count())
			}
			if got := bl.names(); len(got) != 0 {
				t.Fatalf("an upload cut short by its caller (%s) blamed %v", how, got)
			}
		})
	}
}

// A backend that does not answer within the store's own per-call
// deadline (backends.WithDeadline) while the caller still waits is
// reported: that is how the data path tells the monitor of a hung
// backend. The shard goes to another backend.
func TestUploadBlamesBackendPastItsCallDeadline(t *testing.T) {
	mpool, cands, _ := cluster(8, 1)
	pool := MapPool{}
	for name, b := range mpool {
		pool[name] = b
	}
	pool["b2"] = backends.WithDeadline(blockBackend{Backend: mpool["b2"]}, 50*time.Millisecond)
	shards, _ := shardsOf(6)
	var bl blamer
	res := Upload(context.Background(), pool, [16]byte{4}, shards, cands[:6], UploadOptions{Candidates: cands, OnError: bl.onError})
	if got := fmt.Sprint(bl.names()); got != "[b2]" {
		t.Fatalf("blamed %v, want the hung b2 only", got)
	}
	if res.Count() != 6 || res.Landed[2] == "b2" {
		t.Fatalf("landed %v, want shard 2 retried elsewhere", res.Landed)
	}
}

// endedCtx is a ctx whose deadline has passed while its timer has not yet
// fired: Err is still nil. A call bounded by a socket deadline taken from
// ctx can fail in that moment (see backends.Ended), and the failure is
// the caller's deadline, not the backend's.
type endedCtx struct{ context.Context }

func (endedCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Second), true }

// lateBackend fails every call whose ctx has ended, deadline included,
// as a backend with socket deadlines does.
type lateBackend struct{ backends.Backend }

func (b lateBackend) Put(ctx context.Context, key string, v []byte) error {
	if err := backends.Ended(ctx); err != nil {
		return backends.Wrap(b.Name(), "put", key, backends.ErrUnavailable, err)
	}
	return b.Backend.Put(ctx, key, v)
}

func (b lateBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := backends.Ended(ctx); err != nil {
		return nil, backends.Wrap(b.Name(), "get", key, backends.ErrUnavailable, err)
	}
	return b.Backend.Get(ctx, key)
}

func TestCallerDeadlineBlamesNoBackendBeforeCtxErr(t *testing.T) {
	ctx := endedCtx{context.Background()}
	if ctx.Err() != nil || backends.Ended(ctx) == nil {
		t.Fatal("endedCtx does not model a deadline passed before its timer fired")
	}
	t.Run("upload", func(t *testing.T) {
		mpool, cands, _ := cluster(8, 1)
		pool := MapPool{}
		for name, b := range mpool {
			pool[name] = lateBackend{b}
		}
		shards, _ := shardsOf(6)
		var bl blamer
		Upload(ctx, pool, [16]byte{5}, shards, cands[:6], UploadOptions{Candidates: cands, OnError: bl.onError})
		if got := bl.names(); len(got) != 0 {
			t.Fatalf("an upload past its caller's deadline blamed %v", got)
		}
	})
	t.Run("fetch", func(t *testing.T) {
		mpool, _, locs, _ := stripeAt(t, 6)
		pool := MapPool{}
		for name, b := range mpool {
			pool[name] = lateBackend{b}
		}
		var bl blamer
		Fetch(ctx, pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify, OnError: bl.onError})
		if got := bl.names(); len(got) != 0 {
			t.Fatalf("a fetch past its caller's deadline blamed %v", got)
		}
	})
}

// TestUploadDistinctDomainsUnderRetries fails several targets at once and
// checks that concurrent retries never put two shards in one domain.
func TestUploadDistinctDomainsUnderRetries(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	for round := range 50 {
		pool, cands, mems := cluster(10, 2)
		// Backends b0..b11 on 8 nodes: b8 shares node with b0, b9 with b1.
		for i := range cands {
			if i >= 8 && i < 10 {
				cands[i].Domain = cands[i-8].Domain
			}
		}
		shards, _ := shardsOf(6)
		for _, i := range rnd.Perm(6)[:3] {
			mems[i].failPut = true
		}
		res := Upload(context.Background(), pool, [16]byte{byte(round)}, shards, cands[:6],
			UploadOptions{Candidates: cands, Rand: rand.New(rand.NewPCG(seed, uint64(round)))})
		seen := map[string]int{}
		domainOf := map[string]string{}
		for _, c := range cands {
			domainOf[c.Name] = c.Domain
		}
		for i, b := range res.Landed {
			if b == "" {
				continue
			}
			d := domainOf[b]
			if j, dup := seen[d]; dup {
				t.Fatalf("round %d: shards %d and %d both in %s (%v)", round, j, i, d, res.Landed)
			}
			seen[d] = i
			if pool[b].(*memBackend).failPut {
				t.Fatalf("round %d: shard %d landed on failing backend %s", round, i, b)
			}
		}
		if res.Count() != 6 {
			t.Fatalf("round %d: only %d landed: %v", round, res.Count(), res.Errs)
		}
	}
}

func TestUploadGivesUpAndReports(t *testing.T) {
	pool, cands, mems := cluster(6, 0)
	for _, m := range mems {
		m.failPut = true
	}
	mems[0].failPut = false
	shards, _ := shardsOf(6)
	res := Upload(context.Background(), pool, [16]byte{2}, shards, cands, UploadOptions{Candidates: cands})
	if res.Count() != 1 || res.Landed[0] != "b0" {
		t.Fatalf("landed %v", res.Landed)
	}
	for i := 1; i < 6; i++ {
		if res.Errs[i] == nil || !errors.Is(res.Errs[i], backends.ErrUnavailable) {
			t.Fatalf("shard %d error %v", i, res.Errs[i])
		}
	}
	if got := res.Missing([]int{0, 1, 2, 3, 4, 5}); len(got) != 5 {
		t.Fatalf("missing %v", got)
	}
	// Skipped shards (nil) are neither sent nor reported.
	pool2, cands2, _ := cluster(3, 0)
	res = Upload(context.Background(), pool2, [16]byte{3}, [][]byte{nil, {1}, nil}, cands2, UploadOptions{})
	if res.Landed[0] != "" || res.Landed[1] != "b1" || res.Landed[2] != "" || res.Errs[0] != nil {
		t.Fatalf("partial upload: %v %v", res.Landed, res.Errs)
	}
}

func TestUploadBeforeRetryErrorAbandons(t *testing.T) {
	pool, cands, mems := cluster(4, 1)
	mems[0].failPut = true
	shards, _ := shardsOf(3)
	res := Upload(context.Background(), pool, [16]byte{4}, shards, cands[:3], UploadOptions{
		Candidates:  cands,
		BeforeRetry: func(context.Context, int, string) error { return errors.New("metastore down") },
	})
	if res.Landed[0] != "" || !strings.Contains(res.Errs[0].Error(), "metastore down") {
		t.Fatalf("landed %v err %v", res.Landed, res.Errs[0])
	}
	if len(mems[4].m) != 0 || len(mems[3].m) != 0 {
		t.Fatal("a shard was written without its retry being recorded")
	}
}

func stripeAt(t *testing.T, n int) (MapPool, []*memBackend, []Loc, [][]byte) {
	t.Helper()
	pool, cands, mems := cluster(n, 0)
	shards, sums := shardsOf(n)
	id := [16]byte{9}
	res := Upload(context.Background(), pool, id, shards, cands, UploadOptions{})
	if res.Count() != n {
		t.Fatal("setup upload failed")
	}
	locs := make([]Loc, n)
	for i := range n {
		locs[i] = Loc{Backend: res.Landed[i], Key: ShardKey(id, i), Sum: sums[i]}
	}
	return pool, mems, locs, shards
}

func TestFetchDataFirst(t *testing.T) {
	pool, mems, locs, shards := stripeAt(t, 6)
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if !bytes.Equal(res.Shards[i], shards[i]) {
			t.Fatalf("shard %d wrong", i)
		}
	}
	if res.Shards[4] != nil || res.Shards[5] != nil || mems[4].gets+mems[5].gets != 0 {
		t.Fatal("parity fetched although data shards were all there")
	}
	if res.Short() {
		t.Fatal("healthy stripe reported short")
	}
}

func TestFetchMissingCorruptUnreachable(t *testing.T) {
	pool, mems, locs, shards := stripeAt(t, 6)
	// Shard 0 silently corrupted (its own content is consistent, but the
	// metastore's checksum tells), shard 1 deleted, shard 2 unreachable.
	mems[0].m[locs[0].Key] = []byte("rotten")
	delete(mems[1].m, locs[1].Key)
	mems[2].failGet = true
	var mu sync.Mutex
	heard := map[string]bool{}
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 3, Verify: verify,
		OnError: func(b string, err error) { mu.Lock(); heard[b] = true; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Good != 3 || !bytes.Equal(res.Shards[3], shards[3]) || !bytes.Equal(res.Shards[5], shards[5]) {
		t.Fatalf("good %d", res.Good)
	}
	if fmt.Sprint(res.Corrupt, res.Missing, res.Unreachable) != "[0] [1] [2]" {
		t.Fatalf("corrupt/missing/unreachable = %v %v %v", res.Corrupt, res.Missing, res.Unreachable)
	}
	if !res.Short() || !heard["b0"] || !heard["b1"] || !heard["b2"] {
		t.Fatalf("short %v heard %v", res.Short(), heard)
	}
	if res.Shards[0] != nil {
		t.Fatal("corrupt shard returned")
	}

	// Need more than remain: a TooFewError naming everything.
	mems[3].failGet = true
	res, err = Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 3, Verify: verify})
	var tf *TooFewError
	if !errors.As(err, &tf) || !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("want TooFewError, got %v", err)
	}
	if tf.Got != 2 || tf.Need != 3 || !strings.Contains(err.Error(), "corrupt [0]") {
		t.Fatalf("error %v", err)
	}
	if res.Good != 2 {
		t.Fatalf("partial result good=%d", res.Good)
	}
}

func TestFetchKnownMissingNotRequested(t *testing.T) {
	pool, mems, locs, _ := stripeAt(t, 6)
	locs[0] = Loc{}
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	if mems[0].gets != 0 || fmt.Sprint(res.Missing) != "[0]" || res.Shards[4] == nil {
		t.Fatalf("gets %d missing %v", mems[0].gets, res.Missing)
	}
}

func TestFetchHedgesLaggard(t *testing.T) {
	pool, mems, locs, _ := stripeAt(t, 6)
	mems[1].delay = 10 * time.Second // stuck backend
	start := time.Now()
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify,
		HedgeAfter: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Usually one hedge (index 4) does it; on a loaded machine the good
	// backends can also miss a 20ms window, and a second hedge (index 5)
	// may then come back first. Either way the shards come from the
	// backends that answer, never from the stuck one.
	if res.Hedges < 1 || res.Good != 4 || res.Shards[1] != nil || (res.Shards[4] == nil && res.Shards[5] == nil) {
		t.Fatalf("hedges %d, good %d, shard1 %v shard4 %v shard5 %v", res.Hedges, res.Good,
			res.Shards[1] != nil, res.Shards[4] != nil, res.Shards[5] != nil)
	}
	// Generous bound: the point is not waiting for the stuck backend.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("fetch waited for the stuck backend: %v", d)
	}
	// The stuck one is named, for the caller to ask it last next time;
	// only requests without an answer are.
	if !slices.Contains(res.Laggards, 1) {
		t.Fatalf("laggards %v, want the stuck index 1 among them", res.Laggards)
	}
	for _, i := range res.Laggards {
		if res.Shards[i] != nil {
			t.Fatalf("laggards %v include index %d, which answered", res.Laggards, i)
		}
	}
}

// A fetch whose requests all answered within HedgeAfter names no laggard,
// though it cancels nothing either way.
func TestFetchNoLaggardsWhenNoneLagged(t *testing.T) {
	pool, _, locs, _ := stripeAt(t, 6)
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify,
		HedgeAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Good != 4 || res.Hedges != 0 || len(res.Laggards) != 0 {
		t.Fatalf("good %d, hedges %d, laggards %v; want 4, 0, none", res.Good, res.Hedges, res.Laggards)
	}
}

// A laggard that a hedge made unnecessary is cancelled when Fetch has its
// shards; that cancellation is Fetch's own doing and blames nobody.
func TestFetchHedgedLaggardNotBlamed(t *testing.T) {
	mpool, _, locs, _ := stripeAt(t, 6)
	pool := MapPool{}
	for name, b := range mpool {
		pool[name] = b
	}
	returned := make(chan string, 1)
	pool["b1"] = blockBackend{Backend: mpool["b1"], returned: returned}
	var bl blamer
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify,
		HedgeAfter: 20 * time.Millisecond, OnError: bl.onError})
	if err != nil {
		t.Fatal(err)
	}
	if res.Hedges < 1 || res.Shards[1] != nil {
		t.Fatalf("hedges %d, shard 1 fetched %v", res.Hedges, res.Shards[1] != nil)
	}
	<-returned // the laggard's Get has ended: its cancellation is over
	if got := bl.names(); len(got) != 0 {
		t.Fatalf("a fetch that hedged around a laggard blamed %v", got)
	}
}

func TestFetchContextCancel(t *testing.T) {
	pool, mems, locs, _ := stripeAt(t, 4)
	for _, m := range mems {
		m.delay = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Fetch(ctx, pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 2, Verify: verify})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestFetchHaveAndNoVerify(t *testing.T) {
	pool, mems, locs, shards := stripeAt(t, 6)
	have := make([][]byte, 6)
	have[0], have[2] = shards[0], shards[2]
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Have: have})
	if err != nil {
		t.Fatal(err)
	}
	if mems[0].gets+mems[2].gets != 0 {
		t.Fatal("shards the caller has were fetched again")
	}
	if res.Good != 4 || res.Shards[0] == nil || res.Shards[1] == nil || res.Shards[3] == nil || res.Shards[4] != nil {
		t.Fatalf("good %d", res.Good)
	}
	// Without Verify, a corrupt shard is returned as fetched: the caller
	// verifies.
	mems[1].m[locs[1].Key] = []byte("rotten")
	res, err = Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 2})
	if err != nil || string(res.Shards[1]) != "rotten" {
		t.Fatalf("unverified fetch: %v %q", err, res.Shards[1])
	}
	// Enough in hand: nothing is fetched.
	before := mems[4].gets + mems[5].gets + mems[3].gets
	if res, err := Fetch(context.Background(), pool, FetchRequest{Locs: locs, Need: 2, Have: have}); err != nil || res.Good != 2 {
		t.Fatalf("%v %d", err, res.Good)
	}
	if mems[4].gets+mems[5].gets+mems[3].gets != before {
		t.Fatal("fetched although Have sufficed")
	}
}

// hinted records the hints and reads a backend gets, in one log shared by
// the stripe's backends.
type hinted struct {
	*memBackend
	mu  *sync.Mutex
	log *[]string
}

func (h hinted) Prefetch(ctx context.Context, key string) {
	h.mu.Lock()
	*h.log = append(*h.log, "hint "+h.name)
	h.mu.Unlock()
}

func (h hinted) Get(ctx context.Context, key string) ([]byte, error) {
	h.mu.Lock()
	*h.log = append(*h.log, "get "+h.name)
	h.mu.Unlock()
	return h.memBackend.Get(ctx, key)
}

// A fetch hints every backend of its first wave (the data shards) before
// it reads any of them, through decorators such as the deadline wrapper,
// and hints none it does not read.
func TestFetchHintsFirstWaveBeforeReading(t *testing.T) {
	pool, mems, locs, shards := stripeAt(t, 6)
	var mu sync.Mutex
	var log []string
	for _, m := range mems {
		pool[m.name] = backends.WithDeadline(hinted{memBackend: m, mu: &mu, log: &log}, time.Minute)
	}
	// Fetch waits for the hints only briefly; on a busy machine the
	// reads could start first.
	res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify, HintWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if !bytes.Equal(res.Shards[i], shards[i]) {
			t.Fatalf("shard %d wrong", i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(log) != 8 {
		t.Fatalf("events %q, want 4 hints then 4 reads", log)
	}
	hintedNames := map[string]bool{}
	for i, e := range log {
		name, isHint := strings.CutPrefix(e, "hint ")
		if isHint != (i < 4) {
			t.Fatalf("events %q: every hint must come before the first read", log)
		}
		if isHint {
			hintedNames[name] = true
		}
	}
	for i := range 4 {
		if !hintedNames[locs[i].Backend] {
			t.Fatalf("events %q: data shard %d's backend %s not hinted", log, i, locs[i].Backend)
		}
	}
}

// stuckHint is a backend whose hints never return until released, as a
// local backend's do when open(2) or fadvise(2) waits on a disk that hangs.
type stuckHint struct {
	*memBackend
	release chan struct{}
}

func (h stuckHint) Prefetch(ctx context.Context, key string) { <-h.release }

// A hint that does not return does not hold up the read: the other shards
// are read, the stuck one is hedged around, as without hints.
func TestFetchNotHeldByStuckHint(t *testing.T) {
	pool, mems, locs, shards := stripeAt(t, 6)
	release := make(chan struct{})
	defer close(release)
	for _, m := range mems {
		if m.name == locs[0].Backend {
			m.delay = time.Hour // its read hangs too (honouring ctx)
			pool[m.name] = stuckHint{memBackend: m, release: release}
		}
	}
	type out struct {
		res *FetchResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := Fetch(context.Background(), pool, FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify, HedgeAfter: 20 * time.Millisecond})
		done <- out{res, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.res.Good != 4 || o.res.Shards[0] != nil || !bytes.Equal(o.res.Shards[4], shards[4]) {
			t.Fatalf("good %d, shard 0 %v, shard 4 right %v", o.res.Good, o.res.Shards[0] != nil, bytes.Equal(o.res.Shards[4], shards[4]))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Fetch still waiting 5 s after it began, behind a hint that does not return")
	}
}

// lagPool is a MapPool that tracks lagging backends (LagTracker).
type lagPool struct {
	MapPool
	mu     sync.Mutex
	lagged map[string]int // times noted
}

func (p *lagPool) Lagging(b string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lagged[b] > 0
}

func (p *lagPool) NoteLagging(b string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lagged[b]++
}

// A pool that tracks lagging backends hears of the one a fetch hedged
// around, and the next fetch asks it last: no wait, no request to it.
func TestFetchAsksLaggingBackendLast(t *testing.T) {
	mpool, mems, locs, _ := stripeAt(t, 6)
	pool := &lagPool{MapPool: mpool, lagged: map[string]int{}}
	stuck := mems[1]
	stuck.mu.Lock()
	stuck.delay = 10 * time.Second
	stuck.mu.Unlock()
	req := FetchRequest{Stripe: [16]byte{9}, Locs: locs, Need: 4, Verify: verify, HedgeAfter: 20 * time.Millisecond}
	if _, err := Fetch(context.Background(), pool, req); err != nil {
		t.Fatal(err)
	}
	if !pool.Lagging(locs[1].Backend) {
		t.Fatalf("the stuck backend %s was not noted lagging: %v", locs[1].Backend, pool.lagged)
	}
	stuck.mu.Lock()
	before := stuck.gets
	stuck.mu.Unlock()
	res, err := Fetch(context.Background(), pool, req)
	if err != nil {
		t.Fatal(err)
	}
	stuck.mu.Lock()
	asked := stuck.gets - before
	stuck.mu.Unlock()
	if res.Hedges != 0 || asked != 0 || res.Good != 4 || res.Shards[1] != nil {
		t.Fatalf("second fetch: hedges %d, gets of the lagging backend %d, good %d; want 0, 0, 4", res.Hedges, asked, res.Good)
	}
}
