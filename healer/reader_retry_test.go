package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A stripe a reader found short (a shard the metastore still lists, gone
// from its backend) must stay queued until that shard is rebuilt, even
// when the first attempt fails: a retry must not take the stripe for
// whole and drop it from the queue.
func TestReaderFindingSurvivesFailedAttempt(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(3, 30<<10)
	e.probe()
	st := e.stripes()[0]
	if err := e.sw(st.Shards[0].Backend).Backend.Delete(ctx, st.Shards[0].Key); err != nil {
		t.Fatal(err)
	}
	// What the read path queues when it meets the missing shard.
	if err := e.meta.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: 1,
		Reason: "read found shards missing [0], corrupt []"}); err != nil {
		t.Fatal(err)
	}
	// Two source backends do not answer for a moment (not long enough
	// for the monitor to notice): the first attempt cannot read K shards.
	e.kill(st.Shards[1].Backend, st.Shards[2].Backend)
	it, err := e.meta.GetRepair(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := e.h.Repair(ctx, *it); o != Failed {
		t.Fatalf("first attempt: %s, %v; want it to fail", o, err)
	}
	e.revive(st.Shards[1].Backend, st.Shards[2].Backend)
	e.repairAll()
	if _, err := e.meta.GetRepair(ctx, st.ID); err == nil {
		t.Fatal("the stripe is still queued after a repair round with every backend up")
	}
	// The lost shard was rebuilt, not forgotten.
	e.checkFull()
	e.checkObjects(objs)
}
