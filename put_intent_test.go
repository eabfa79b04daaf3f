package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// intentSpy checks, before every shard write, that a committed write
// intent lists the shard's location; fail makes the writes fail.
type intentSpy struct {
	backends.Backend
	s      *Store
	mu     sync.Mutex
	writes int
	bad    []string
	fail   bool
}

func (p *intentSpy) check(ctx context.Context, key string) {
	found := false
	p.s.meta.ListIntents(ctx, func(in metastore.Intent) error {
		for _, l := range in.Shards {
			if l.Backend == p.Name() && l.Key == key {
				found = true
			}
		}
		return nil
	})
	p.mu.Lock()
	p.writes++
	if !found {
		p.bad = append(p.bad, key)
	}
	p.mu.Unlock()
}

func (p *intentSpy) failing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fail
}

func (p *intentSpy) Put(ctx context.Context, key string, v []byte) error {
	p.check(ctx, key)
	if p.failing() {
		return backends.Errorf(p.Name(), "put", key, backends.ErrUnavailable, "disk gone (injected)")
	}
	return p.Backend.Put(ctx, key, v)
}

func (p *intentSpy) PutNoSync(ctx context.Context, key string, v []byte) error {
	p.check(ctx, key)
	if p.failing() {
		return backends.Errorf(p.Name(), "put", key, backends.ErrUnavailable, "disk gone (injected)")
	}
	return backends.PutNoSync(ctx, p.Backend, key, v)
}

func (p *intentSpy) Sync(ctx context.Context, keys []string) error {
	return backends.Sync(ctx, p.Backend, keys)
}

// No shard is written before a committed intent names its location: for
// objects of one block (whose intent commits while the block is encoded),
// of exactly one full block, of several blocks, and for shards retried on
// a spare after a failed write.
func TestPutWritesShardsOnlyAfterIntent(t *testing.T) {
	const block = 64 << 10
	s := newTestStore(t, testOpts{k: 4, m: 2, spares: 1, blockSize: block})
	ctx := context.Background()
	var spies []*intentSpy
	for _, spec := range s.cfg.Backends {
		spy := &intentSpy{s: s}
		setBackend(t, s, spec.Name, func(b backends.Backend) backends.Backend {
			spy.Backend = b
			return spy
		})
		spies = append(spies, spy)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	sizes := []int{10 << 10, block - 1, block, block + 1, 5*block + 123}
	for round, failing := range []bool{false, true} {
		spies[1].mu.Lock()
		spies[1].fail = failing // b1: its shards go to the spare
		spies[1].mu.Unlock()
		for _, size := range sizes {
			name := fmt.Sprintf("obj-%d-%d", round, size)
			data := randBytes(rnd, size)
			info, err := s.Put(ctx, name, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("put %s: %v", name, err)
			}
			if info.Size != int64(size) {
				t.Fatalf("put %s: size %d, want %d", name, info.Size, size)
			}
			if !bytes.Equal(readAll(t, s, name), data) {
				t.Fatalf("%s: read back differs", name)
			}
		}
	}
	writes := 0
	for _, spy := range spies {
		if len(spy.bad) > 0 {
			t.Fatalf("%s: shards written before an intent named them: %v", spy.Name(), spy.bad)
		}
		writes += spy.writes
	}
	if writes == 0 || spies[len(spies)-1].writes == 0 {
		t.Fatalf("%d shard writes checked, %d on the spare: the test tested nothing", writes, spies[len(spies)-1].writes)
	}
	intents := 0
	s.meta.ListIntents(ctx, func(metastore.Intent) error { intents++; return nil })
	if intents != 0 {
		t.Fatalf("%d intents left after committed puts", intents)
	}
}

// A Writer whose ctx ends while it waits for input fails its Writes
// instead of taking input for a write that can no longer commit.
func TestCreateCtxEndsBeforeInput(t *testing.T) {
	// Not inline: the inline check reads its first bytes unwatched.
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Create(ctx, "never")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := w.Write([]byte{1}); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Write still takes input 5 s after the write's ctx ended")
		}
		time.Sleep(time.Millisecond)
	}
	if err := w.Close(); err == nil {
		t.Fatal("a write whose ctx ended committed")
	}
	if _, err := s.meta.GetObject(context.Background(), "never"); err == nil {
		t.Fatal("the object of a cancelled write is visible")
	}
}

// expireOnPut stands in for a shard write so slow that garbage collection
// expired the write's intent meanwhile (after the orphan delay): it
// expires every intent, then fails, so the shard is retried elsewhere.
type expireOnPut struct {
	backends.Backend
	s    *Store
	once sync.Once
}

func (p *expireOnPut) expire(ctx context.Context) (hit bool) {
	p.once.Do(func() {
		hit = true
		var ids [][16]byte
		p.s.meta.ListIntents(ctx, func(in metastore.Intent) error { ids = append(ids, in.ID); return nil })
		for _, id := range ids {
			p.s.meta.IntentToGarbage(ctx, id, time.Now())
		}
	})
	return hit
}

func (p *expireOnPut) Put(ctx context.Context, key string, v []byte) error {
	if p.expire(ctx) {
		return backends.Errorf(p.Name(), "put", key, backends.ErrUnavailable, "slow disk gave up (injected)")
	}
	return p.Backend.Put(ctx, key, v)
}

func (p *expireOnPut) PutNoSync(ctx context.Context, key string, v []byte) error {
	if p.expire(ctx) {
		return backends.Errorf(p.Name(), "put", key, backends.ErrUnavailable, "slow disk gave up (injected)")
	}
	return backends.PutNoSync(ctx, p.Backend, key, v)
}

func (p *expireOnPut) Sync(ctx context.Context, keys []string) error {
	return backends.Sync(ctx, p.Backend, keys)
}

// A write whose intent expired while it uploaded (its shards were handed
// to garbage collection) must fail, not record its intent again when it
// retries a shard on a spare and then commit shards the collector deletes.
func TestPutFailsWhenItsIntentExpired(t *testing.T) {
	s := newTestStore(t, testOpts{k: 4, m: 2, spares: 1, blockSize: 64 << 10})
	ctx := context.Background()
	setBackend(t, s, s.cfg.Backends[1].Name, func(b backends.Backend) backends.Backend {
		return &expireOnPut{Backend: b, s: s}
	})
	data := randBytes(rand.New(rand.NewPCG(5, 6)), 40<<10)
	if _, err := s.Put(ctx, "late", bytes.NewReader(data)); err == nil {
		t.Fatal("a put whose intent expired during its upload committed")
	}
	if _, err := s.Stat(ctx, "late"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the object of a failed put is visible: %v", err)
	}
	intents := 0
	s.meta.ListIntents(ctx, func(metastore.Intent) error { intents++; return nil })
	if intents != 0 {
		t.Fatalf("%d intents after the put failed: the expired one was made again", intents)
	}
}
