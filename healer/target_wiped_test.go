package healer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/healer/shardio"
	"github.com/healstore/healstore/metastore"
)

// A rebuild target whose disk is replaced (its directory emptied, the
// backend still up) between the upload and the commit, with the monitor
// finding it wiped in between: the monitor's scan of the backend index
// did not name the stripe yet, and the fresh marker it writes hides the
// loss from later probes. The rebuilder's check of what it just committed
// queues the stripe again, so the shard is rebuilt without a scrub.
func TestRebuildTargetWipedBeforeCommit(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	ctx := context.Background()
	objs := e.fill(6, 30<<10)
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
				// The rebuilt shard landed; now the target's disk
				// is replaced, and the monitor finds it wiped (and
				// marks it again) before the commit.
				target.Store(name)
				emptyDir(t, filepath.Join(e.dir, name, "data"))
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
	if st := e.state(name); st != metastore.StateUp {
		t.Fatalf("target %s is %s, want up", name, st)
	}
	if _, err := e.sw(name).Backend.Get(ctx, MarkerKey); err != nil {
		t.Fatalf("the monitor did not mark the wiped %s again: %v", name, err)
	}
	st, err := e.meta.GetStripe(ctx, it.Stripe)
	if err != nil {
		t.Fatal(err)
	}
	gone := false
	for _, l := range st.Shards {
		if l.Backend != name {
			continue
		}
		_, err := e.sw(name).Backend.Stat(ctx, l.Key)
		gone = gone || errors.Is(err, backends.ErrNotFound)
	}
	if !gone {
		t.Fatalf("the repair committed no shard on %s that is gone there; the test staged nothing", name)
	}
	if _, err := e.meta.GetRepair(ctx, it.Stripe); err != nil {
		t.Fatalf("stripe with a committed shard gone from the wiped %s is not queued: %v", name, err)
	}
	e.repairAll()
	e.checkFull()
	e.checkObjects(objs)
}

// emptyDir removes everything inside dir, as a new, empty disk put in
// the place of a local backend's data directory (see local.OpenUsed)
// would: the backend answers, and holds nothing.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		if err := os.RemoveAll(filepath.Join(dir, ent.Name())); err != nil {
			t.Fatal(err)
		}
	}
}
