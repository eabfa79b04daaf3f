package healer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/healstore/healstore/backends"
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
	it, name := e.rebuildLosingTarget(func(target string) {
		// The rebuilt shard landed; now the target's disk is
		// replaced, and the monitor finds it wiped (and marks it
		// again) before the commit.
		emptyDir(t, filepath.Join(e.dir, target, "data"))
	})
	e.checkState(name, metastore.StateUp)
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
	e.checkQueued(it.Stripe, "stripe with a committed shard gone from the wiped "+name)
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
