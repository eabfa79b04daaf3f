package healer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// A draining backend that starts answering with another store's marker is
// someone else's now: nothing of it is deleted, by garbage collection or
// by the orphan sweep (whose listing would take every shard of the other
// store for an orphan of this one).
func TestForeignMarkerWhileDraining(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour), OrphanDelay: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(10, 32<<10)
	e.probe()
	base := time.Now()
	var mu sync.Mutex
	offset := time.Duration(0)
	e.h.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return base.Add(offset)
	}
	if err := e.h.Drain(ctx, "b0"); err != nil {
		t.Fatal(err)
	}
	foreign := `{"store_id":"someone-else","backend":"b0"}`
	if err := e.sw("b0").Backend.Put(ctx, MarkerKey, []byte(foreign)); err != nil {
		t.Fatal(err)
	}
	// The other store's own shards.
	theirs := []string{shardio.ShardKey([16]byte{0xee, 1}, 0), shardio.ShardKey([16]byte{0xee, 2}, 3)}
	for _, k := range theirs {
		if err := e.sw("b0").Backend.Put(ctx, k, []byte("someone else's data")); err != nil {
			t.Fatal(err)
		}
	}
	var before int
	_ = e.sw("b0").Backend.List(ctx, shardio.ShardPrefix, func(string, int64) error { before++; return nil })
	e.probe()
	// While b0 is still draining: an orphan sweep, and garbage
	// collection once its entries would be due.
	if _, err := e.h.Scrub(ctx, ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	offset = 2 * time.Hour
	mu.Unlock()
	if _, err := e.h.GC(ctx); err != nil {
		t.Fatal(err)
	}
	// The drain still completes, from the other backends.
	e.repairAll()
	e.probe()
	if st := e.state("b0"); st != metastore.StateRetired {
		t.Fatalf("b0 is %s, want retired", st)
	}
	if _, err := e.h.GC(ctx); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.sw("b0").Backend.Get(ctx, MarkerKey)
	if string(raw) != foreign {
		t.Fatal("the foreign marker was overwritten")
	}
	after := 0
	_ = e.sw("b0").Backend.List(ctx, shardio.ShardPrefix, func(string, int64) error { after++; return nil })
	if after != before {
		t.Fatalf("%d of %d shard files left on the foreign backend", after, before)
	}
	for _, k := range theirs {
		if _, err := e.sw("b0").Backend.Stat(ctx, k); err != nil {
			t.Fatalf("the other store's %s: %v", k, err)
		}
	}
	e.checkObjects(objs)
}
