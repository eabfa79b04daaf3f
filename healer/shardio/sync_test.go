package shardio

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/healstore/healstore/backends"
)

// syncMem is a memBackend with the Syncer ability: it records which keys
// were stored without sync and which were synced.
type syncMem struct {
	*memBackend
	mu       sync.Mutex
	deferred []string
	synced   []string
	syncErr  error
}

func (s *syncMem) PutNoSync(ctx context.Context, key string, v []byte) error {
	if err := s.memBackend.Put(ctx, key, v); err != nil {
		return err
	}
	s.mu.Lock()
	s.deferred = append(s.deferred, key)
	s.mu.Unlock()
	return nil
}

func (s *syncMem) Sync(ctx context.Context, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncErr != nil {
		return s.syncErr
	}
	s.synced = append(s.synced, keys...)
	return nil
}

func TestUploadDeferredAndSyncShards(t *testing.T) {
	pool, cands, mems := cluster(4, 0)
	sm := map[string]*syncMem{}
	for _, name := range []string{"b0", "b1"} {
		sm[name] = &syncMem{memBackend: pool[name].(*memBackend)}
		pool[name] = sm[name]
	}
	shards, _ := shardsOf(4)
	var id [16]byte
	id[0] = 7
	ctx := context.Background()

	res := Upload(ctx, pool, id, shards, cands[:4], UploadOptions{Deferred: true})
	if res.Count() != 4 {
		t.Fatalf("landed %v, errs %v", res.Landed, res.Errs)
	}
	for i, m := range mems {
		if got, _ := m.Get(ctx, ShardKey(id, i)); !bytes.Equal(got, shards[i]) {
			t.Fatalf("shard %d not on %s", i, m.name)
		}
	}
	for _, name := range []string{"b0", "b1"} {
		if len(sm[name].deferred) != 1 {
			t.Fatalf("%s: deferred puts %v, want the one shard", name, sm[name].deferred)
		}
	}

	keys := map[string][]string{}
	for i, b := range res.Landed {
		keys[b] = append(keys[b], ShardKey(id, i))
	}
	keys["gone"] = []string{"shards/x.0"} // a backend the pool no longer has
	sm["b1"].syncErr = backends.Errorf("b1", "sync", "", backends.ErrUnavailable, "injected")
	errs := SyncShards(ctx, pool, keys)
	if len(errs) != 2 || !errors.Is(errs["b1"], backends.ErrUnavailable) || !errors.Is(errs["gone"], backends.ErrUnavailable) {
		t.Fatalf("SyncShards errors %v, want b1 and gone unavailable", errs)
	}
	if !slices.Equal(sm["b0"].synced, []string{ShardKey(id, 0)}) {
		t.Fatalf("b0 synced %v", sm["b0"].synced)
	}

	// Without Deferred, every backend gets a durable Put.
	var id2 [16]byte
	id2[0] = 8
	Upload(ctx, pool, id2, shards, cands[:4], UploadOptions{})
	if len(sm["b0"].deferred) != 1 {
		t.Fatalf("an upload without Deferred used PutNoSync: %v", sm["b0"].deferred)
	}
}
