package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A drained backend is not retired while a write in flight has placed a
// shard on it: the write's commit would otherwise reference a shard on a
// retired backend, whose capacity is given back at once, and nothing would
// queue that stripe for repair.
func TestDrainWaitsForWritesInFlight(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour)}})
	objs, w := e.stageInFlight("b6")
	if err := e.h.Drain(context.Background(), "b6"); err != nil {
		t.Fatal(err)
	}
	e.repairAll()
	e.probe()
	if st := e.state("b6"); st == metastore.StateRetired {
		t.Fatal("b6 was retired while a write in flight still places a shard on it")
	}
	w.commitInto(t, e.meta, objs)
	// The stripe the write committed on b6 is queued at the monitor's
	// next round, moved off like the rest, and then b6 retires.
	e.probe()
	e.repairAndSettle("b6", metastore.StateRetired)
	e.checkFull()
	e.checkObjects(objs)
}

// Removing a backend that holds no committed stripe is refused while a
// write in flight has placed a shard on it.
func TestRemoveBackendWaitsForWritesInFlight(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	e.probe()
	data := make([]byte, 12<<10)
	w := e.stageWrite("in-flight", data, "b6", time.Now())
	if e.onBackend("b6") != 0 {
		t.Fatal("b6 holds committed stripes")
	}
	if err := e.h.RemoveBackend(ctx, "b6"); err == nil {
		t.Fatal("b6 was removed while a write in flight still places a shard on it")
	}
	w.commit(t, e.meta)
	if err := e.h.RemoveBackend(ctx, "b6"); err == nil {
		t.Fatal("b6 was removed while it holds a committed stripe")
	}
}

// A write in flight that placed a shard on a backend that then went down
// commits after the monitor queued that backend's stripes: its stripe is
// queued once the commit is seen, not left one shard short.
func TestDownBackendWriteInFlightQueued(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	objs, w := e.stageInFlight("b6")
	e.kill("b6")
	e.probe() // b6 down: its committed stripes are queued
	e.checkState("b6", metastore.StateDown)
	w.commitInto(t, e.meta, objs)
	e.probe() // the monitor's next round
	e.checkQueued(w.stripes[0].ID, "the write's stripe with a shard on the down b6")
	e.repairAndSettle("b6", metastore.StateReplaced)
	e.checkObjects(objs)
}
