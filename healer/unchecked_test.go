package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A wiped backend's shards are rebuilt even when the backend does not
// answer the rebuilder's checks for a moment: a check that could not be
// made is not a shard found present, and the entry stays queued.
func TestWipedShardsUncheckedStayQueued(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(6, 30<<10)
	e.probe()
	held := e.onBackend("b0")
	if held == 0 {
		t.Fatal("b0 holds nothing")
	}
	e.wipe("b0")
	e.probe() // finds the marker gone: every stripe on b0 is queued
	if n := len(e.queue()); n != held {
		t.Fatalf("queued %d, want %d", n, held)
	}
	// b0 stops answering before the monitor looks again.
	e.kill("b0")
	for _, it := range e.queue() {
		if o, err := e.h.Repair(ctx, it); o == NoOp {
			t.Fatalf("repair of %x while b0 could not be checked: %s, %v", it.Stripe, o, err)
		}
	}
	e.revive("b0")
	e.probe()
	e.repairAll()
	e.checkFull()
	e.checkObjects(objs)
}

// Likewise a reader's finding: a check whose backend did not answer is no
// all-clear, and the entry stays.
func TestReaderFindingUncheckedStaysQueued(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(3, 30<<10)
	e.probe()
	st := e.stripes()[0]
	lost := st.Shards[0].Backend
	if err := e.sw(lost).Backend.Delete(ctx, st.Shards[0].Key); err != nil {
		t.Fatal(err)
	}
	if err := e.meta.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: 1,
		Reason: "read found shards missing [0], corrupt []"}); err != nil {
		t.Fatal(err)
	}
	e.kill(lost)
	it, err := e.meta.GetRepair(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := e.h.Repair(ctx, *it); o == NoOp {
		t.Fatalf("repair while %s could not be checked: %s, %v", lost, o, err)
	}
	e.revive(lost)
	e.probe()
	e.repairAll()
	e.checkFull()
	e.checkObjects(objs)
}
