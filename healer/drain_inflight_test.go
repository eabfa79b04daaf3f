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
	ctx := context.Background()
	objs := e.fill(5, 30<<10)
	e.probe()
	data := patterned(12<<10, 7)
	w := e.stageWrite("in-flight", data, "b6", time.Now())
	if err := e.h.Drain(ctx, "b6"); err != nil {
		t.Fatal(err)
	}
	e.repairAll()
	e.probe()
	if st := e.state("b6"); st == metastore.StateRetired {
		t.Fatal("b6 was retired while a write in flight still places a shard on it")
	}
	w.commit(t, e.meta)
	objs["in-flight"] = data
	// The stripe the write committed on b6 is queued at the monitor's
	// next round, moved off like the rest, and then b6 retires.
	e.probe()
	e.repairAll()
	e.probe()
	if st := e.state("b6"); st != metastore.StateRetired {
		t.Fatalf("b6 is %s after the write committed and its stripe moved, want retired", st)
	}
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
	ctx := context.Background()
	objs := e.fill(5, 30<<10)
	e.probe()
	data := patterned(12<<10, 5)
	w := e.stageWrite("in-flight", data, "b6", time.Now())
	e.kill("b6")
	e.probe() // b6 down: its committed stripes are queued
	if st := e.state("b6"); st != metastore.StateDown {
		t.Fatalf("b6 is %s", st)
	}
	w.commit(t, e.meta)
	objs["in-flight"] = data
	e.probe() // the monitor's next round
	if _, err := e.meta.GetRepair(ctx, w.stripes[0].ID); err != nil {
		t.Fatalf("the write's stripe with a shard on the down b6 is not queued: %v", err)
	}
	e.repairAll()
	e.probe()
	if st := e.state("b6"); st != metastore.StateReplaced {
		t.Fatalf("b6 is %s, want replaced", st)
	}
	e.checkObjects(objs)
}
