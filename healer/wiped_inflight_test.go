package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A write in flight with a shard on b6 when b6 is wiped (its data gone,
// the backend still up) and the monitor finds it so, committed after
// that: the wipe's scan of the backend index did not name the write's
// stripe yet, and the fresh marker hides the loss from later probes. The
// monitor watched the write's intent before its scan, so the stripe is
// queued once the write commits and its shard rebuilt on b6, not left
// missing until a scrub.
func TestWipedWriteInFlightQueuedOnCommit(t *testing.T) {
	// k+m = 7 on 7 backends: every stripe has a shard on each, so a
	// shard rebuilt for b6 can only go back to b6.
	e := newEnv(t, envOpts{backends: 7, k: 4, m: 3, cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	objs, w := e.stageInFlight("b6")
	e.wipe("b6")
	e.probe() // b6 found wiped: its committed stripes queued, marked again
	e.checkState("b6", metastore.StateUp)
	if _, err := e.sw("b6").Backend.Get(ctx, MarkerKey); err != nil {
		t.Fatalf("the monitor did not mark the wiped b6 again: %v", err)
	}
	id := w.stripes[0].ID
	if _, err := e.meta.GetRepair(ctx, id); err == nil {
		t.Fatal("the write's stripe is queued before it committed; the test staged nothing")
	}
	w.commitInto(t, e.meta, objs)
	e.probe()
	e.checkQueued(id, "the write's stripe with its shard gone from the wiped b6")
	e.repairAll()
	e.checkFull()
	e.checkObjects(objs)
	st, err := e.meta.GetStripe(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	on := -1
	for i, l := range st.Shards {
		if l.Backend == "b6" {
			on = i
		}
	}
	if on < 0 {
		t.Fatal("the write's stripe has no shard on b6 after the repairs")
	}
	if _, err := e.sw("b6").Backend.Stat(ctx, st.Shards[on].Key); err != nil {
		t.Fatalf("b6 does not hold the write's shard %d again: %v", on, err)
	}
}
