package healer

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// A rebuild of two shards whose first target hangs (a node stopped, not
// dead) gives that shard up once the other has landed and the lag has
// passed (shardio.LagFor), and puts it on another backend, instead of
// holding the repair for the backend's whole call deadline; the hung
// target's location goes to garbage collection.
func TestRebuildGivesUpOnHungTarget(t *testing.T) {
	e := newEnv(t, envOpts{backends: 9, cfg: Config{Grace: 0, SuspectAfter: 1}})
	ctx := context.Background()
	e.probe()
	// Two backends of one stripe stop: its repair rebuilds two shards.
	objs := e.fill(1, 30<<10)
	var name0 string
	for n := range objs {
		name0 = n
	}
	obj, err := e.meta.GetObject(ctx, name0)
	if err != nil {
		t.Fatal(err)
	}
	st0, err := e.meta.GetStripe(ctx, obj.Stripes[0])
	if err != nil {
		t.Fatal(err)
	}
	lost := []string{st0.Shards[0].Backend, st0.Shards[1].Backend}
	e.kill(lost...)
	e.probe()
	var it metastore.RepairItem
	for _, q := range e.queue() {
		if q.Stripe == st0.ID {
			it = q
		}
	}
	if it.Stripe != st0.ID {
		t.Fatalf("the stripe that lost %v is not queued", lost)
	}
	var mu sync.Mutex
	hung := ""
	e.mu.Lock()
	all := names(e.bs)
	e.mu.Unlock()
	for _, name := range all {
		e.hook(name).beforePut = func(ctx context.Context, key string) error {
			if _, _, ok := shardio.ParseShardKey(key); !ok {
				return nil
			}
			mu.Lock()
			first := hung == ""
			if first {
				hung = name
			}
			mu.Unlock()
			if !first {
				return nil
			}
			select { // the store's 30 s call deadline, which this wrapper sits outside of
			case <-ctx.Done():
			case <-time.After(backends.DefaultCallTimeout):
			}
			return backends.Errorf(name, "put", key, backends.ErrUnavailable, "no answer")
		}
	}
	start := time.Now()
	o, err := e.h.Repair(ctx, it)
	if took := time.Since(start); took >= backends.DefaultCallTimeout {
		t.Fatalf("the repair took %v: it waited out the hung target", took)
	}
	if o != Repaired || err != nil {
		t.Fatalf("repair: %s, %v", o, err)
	}
	st, err := e.meta.GetStripe(ctx, it.Stripe)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range st.Shards {
		if l.Backend == "" || slices.Contains(lost, l.Backend) || l.Backend == hung {
			t.Fatalf("shard %d on %q after the repair (hung target %s)", i, l.Backend, hung)
		}
	}
	garbage := false
	if err := e.meta.ListGarbage(ctx, func(g metastore.Garbage) error {
		garbage = garbage || g.Backend == hung
		return nil
	}); err != nil || !garbage {
		t.Fatalf("the given-up location on %s is not garbage (%v)", hung, err)
	}
}
