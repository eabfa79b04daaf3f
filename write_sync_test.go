package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/metastore"
)

// syncSpy wraps a backend with the Syncer ability, recording every key
// stored without sync and every key synced; check runs at each Sync, and
// fail, when set, makes Sync fail.
type syncSpy struct {
	backends.Backend
	mu       sync.Mutex
	deferred map[string]bool
	synced   map[string]bool
	syncs    int
	check    func()
	fail     bool
}

func spyOn(t *testing.T, s *Store, name string) *syncSpy {
	spy := &syncSpy{deferred: map[string]bool{}, synced: map[string]bool{}}
	setBackend(t, s, name, func(b backends.Backend) backends.Backend {
		spy.Backend = b
		return spy
	})
	return spy
}

func (s *syncSpy) PutNoSync(ctx context.Context, key string, v []byte) error {
	if err := backends.PutNoSync(ctx, s.Backend, key, v); err != nil {
		return err
	}
	s.mu.Lock()
	s.deferred[key] = true
	s.mu.Unlock()
	return nil
}

func (s *syncSpy) Sync(ctx context.Context, keys []string) error {
	if s.check != nil {
		s.check()
	}
	s.mu.Lock()
	s.syncs++
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return backends.Errorf(s.Name(), "sync", "", backends.ErrUnavailable, "write-back failed (injected)")
	}
	if err := backends.Sync(ctx, s.Backend, keys); err != nil {
		return err
	}
	s.mu.Lock()
	for _, k := range keys {
		s.synced[k] = true
	}
	s.mu.Unlock()
	return nil
}

// Every shard of a put is stored without sync, then synced on its backend
// before the object becomes visible; long writes sync in rounds.
func TestPutSyncsShardsBeforeCommit(t *testing.T) {
	s := newTestStore(t, testOpts{k: 4, m: 2, blockSize: 4 << 10})
	ctx := context.Background()
	spies := map[string]*syncSpy{}
	for _, spec := range s.cfg.Backends {
		spy := spyOn(t, s, spec.Name)
		spy.check = func() {
			if _, err := s.meta.GetObject(ctx, "big"); !errors.Is(err, metastore.ErrNotFound) {
				t.Errorf("Sync on %s ran after the object became visible (%v)", spec.Name, err)
			}
		}
		spies[spec.Name] = spy
	}
	blocks := syncEvery*2 + 3
	data := bytes.Repeat([]byte("healstore "), blocks*(4<<10)/10+1)[:blocks*(4<<10)]
	if _, err := s.Put(ctx, "big", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	obj, err := s.meta.GetObject(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(obj.Stripes) != blocks {
		t.Fatalf("%d stripes, want %d", len(obj.Stripes), blocks)
	}
	shards := 0
	for _, id := range obj.Stripes {
		st, err := s.meta.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for i, loc := range st.Shards {
			spy := spies[loc.Backend]
			if spy == nil || !spy.deferred[loc.Key] || !spy.synced[loc.Key] {
				t.Fatalf("stripe %x shard %d on %q was not stored without sync then synced", id, i, loc.Backend)
			}
			shards++
		}
	}
	rounds := 0
	for _, spy := range spies {
		rounds += spy.syncs
	}
	// Rounds run every syncEvery stripes and at the end, on each backend.
	if min := len(spies) * 2; rounds < min {
		t.Fatalf("%d Sync calls for %d shards of %d stripes, want at least %d", rounds, shards, blocks, min)
	}
	if !bytes.Equal(readAll(t, s, "big"), data) {
		t.Fatal("read back differs")
	}
}

// A backend whose sync fails loses the put's shards there: the put goes on
// degraded (the stripes are queued for repair, the shards left to garbage
// collection) while the write quorum holds, and fails when it does not.
func TestPutWhenSyncFails(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 2))
	s := newTestStore(t, testOpts{k: 4, m: 2, blockSize: 4 << 10}) // quorum k+1 = 5
	ctx := context.Background()
	spies := map[string]*syncSpy{}
	for _, spec := range s.cfg.Backends {
		spies[spec.Name] = spyOn(t, s, spec.Name)
	}
	spies["b3"].fail = true
	data := randBytes(rnd, 3*(4<<10)+100)
	if _, err := s.Put(ctx, "degraded", bytes.NewReader(data)); err != nil {
		t.Fatalf("put with one backend failing its sync: %v", err)
	}
	obj, err := s.meta.GetObject(ctx, "degraded")
	if err != nil {
		t.Fatal(err)
	}
	queue, err := s.meta.Queue(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	queued := map[[16]byte]metastore.RepairItem{}
	for _, it := range queue {
		queued[it.Stripe] = it
	}
	garbage := map[string]bool{}
	s.meta.ListGarbage(ctx, func(g metastore.Garbage) error {
		garbage[g.Backend+":"+g.Key] = true
		return nil
	})
	onB3 := 0
	for _, id := range obj.Stripes {
		st, err := s.meta.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		lost := -1
		for i, loc := range st.Shards {
			if loc.Backend == "b3" {
				t.Fatalf("stripe %x keeps shard %d on b3, whose sync failed", id, i)
			}
			if loc.Backend == "" {
				lost = i
			}
		}
		if lost < 0 {
			continue // b3 held no shard of this stripe
		}
		onB3++
		it, ok := queued[id]
		if !ok || it.Margin != 1 || !strings.Contains(it.Reason, "durable") {
			t.Fatalf("stripe %x lost shard %d but its repair item is %+v (queued %v)", id, lost, it, ok)
		}
		if key := fmt.Sprintf("b3:shards/%x.%d", id, lost); !garbage[key] {
			t.Fatalf("%s, stored but not durable, is not garbage; garbage: %v", key, garbage)
		}
	}
	if onB3 == 0 {
		t.Fatal("no stripe placed a shard on b3: the test tested nothing")
	}
	if !bytes.Equal(readAll(t, s, "degraded"), data) {
		t.Fatal("read back differs")
	}

	// Two failing backends leave 4 durable shards of 6, under the quorum.
	spies["b1"].fail = true
	_, err = s.Put(ctx, "short", bytes.NewReader(data))
	if !errors.Is(err, ErrInsufficientBackends) {
		t.Fatalf("put with two backends failing their sync: %v, want ErrInsufficientBackends", err)
	}
	if _, err := s.meta.GetObject(ctx, "short"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a failed put is visible: %v", err)
	}
	intents := 0
	s.meta.ListIntents(ctx, func(metastore.Intent) error { intents++; return nil })
	if intents != 0 {
		t.Fatalf("%d intents left after a failed put; its shards should be garbage", intents)
	}
}
