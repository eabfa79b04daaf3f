package healer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// A rebuild target that goes down between the upload and the commit was
// scanned by the monitor without the stripe (the backend index did not
// name it yet): the rebuilder queues the stripe again itself, or the shard
// it just placed would count as lost with nothing to rebuild it.
func TestRebuildTargetDownBeforeCommit(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	ctx := context.Background()
	e.fill(6, 30<<10)
	e.probe()
	var once sync.Once
	var target atomic.Value
	for i := range 7 {
		name := fmt.Sprintf("b%d", i)
		e.hook(name).afterPut = func(key string) {
			if _, _, ok := shardio.ParseShardKey(key); !ok {
				return
			}
			once.Do(func() {
				// The rebuilt shard landed; now the target dies and
				// the monitor declares it down before the commit.
				target.Store(name)
				e.kill(name)
				_ = e.h.ProbeAll(ctx)
			})
		}
	}
	e.kill("b0")
	e.probe()
	q := e.queue()
	if len(q) == 0 {
		t.Fatal("nothing queued for the down b0")
	}
	it := q[0]
	if o, err := e.h.Repair(ctx, it); o != Repaired {
		t.Fatalf("repair: %s, %v", o, err)
	}
	name, _ := target.Load().(string)
	if name == "" {
		t.Fatal("the rebuild wrote no shard")
	}
	if st := e.state(name); st != metastore.StateDown {
		t.Fatalf("target %s is %s, want down", name, st)
	}
	st, err := e.meta.GetStripe(ctx, it.Stripe)
	if err != nil {
		t.Fatal(err)
	}
	on := false
	for _, l := range st.Shards {
		on = on || l.Backend == name
	}
	if !on {
		t.Fatalf("the repair committed no shard on %s", name)
	}
	if _, err := e.meta.GetRepair(ctx, it.Stripe); err != nil {
		t.Fatalf("stripe with a shard on the down %s is not queued: %v", name, err)
	}
}
