package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// restart replaces the env's healer by a new one on the same metastore and
// pool, as a restarted daemon builds it: what the old one kept in memory
// is gone. (Tests drive ProbeAll and RepairAll themselves, so nothing of
// the old healer runs on.)
func (e *env) restart(cfg Config) {
	e.t.Helper()
	e.newHealer(cfg, e.h.provs)
}

// A write in flight with a shard on a backend that went down, committed
// after the healer that watched it was restarted and before the new one's
// first round: that round queues its stripe (from the backend index,
// having listed the intents first), not a scrub days later.
func TestDownWriteInFlightQueuedAcrossRestart(t *testing.T) {
	cfg := Config{Grace: 0, SuspectAfter: 1}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	objs, w := e.stageInFlight("b6")
	e.kill("b6")
	e.probe() // b6 down: its committed stripes are queued, the write watched
	e.checkState("b6", metastore.StateDown)
	e.restart(cfg)
	w.commitInto(t, e.meta, objs)
	e.probe() // the new healer's first round
	e.checkQueued(w.stripes[0].ID, "after the healer restarted, the write's stripe with a shard on the down b6")
	e.repairAndSettle("b6", metastore.StateReplaced)
	e.checkObjects(objs)
}

// Likewise for a drain: the write commits between the restart and the new
// healer's first round, and the drain still ends with b6 retired.
func TestDrainWriteInFlightQueuedAcrossRestart(t *testing.T) {
	cfg := Config{Grace: Duration(time.Hour)}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	objs, w := e.stageInFlight("b6")
	if err := e.h.Drain(context.Background(), "b6"); err != nil {
		t.Fatal(err)
	}
	e.restart(cfg)
	w.commitInto(t, e.meta, objs)
	e.probe()
	e.checkQueued(w.stripes[0].ID, "after the healer restarted, the write's stripe with a shard on the draining b6")
	e.repairAndSettle("b6", metastore.StateRetired)
	e.checkFull()
	e.checkObjects(objs)
}

// A healer that crashed after recording a backend down but before its down
// event queued the backend's stripes leaves only the state: the next
// healer's first round queues them.
func TestDownRecordedBeforeCrashQueuedAtStart(t *testing.T) {
	cfg := Config{Grace: 0, SuspectAfter: 1}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	ctx := context.Background()
	objs := e.fill(5, 30<<10)
	e.probe()
	held := e.onBackend("b6")
	if held == 0 {
		t.Fatal("b6 holds no stripes; the test needs some")
	}
	e.kill("b6")
	// What apply records before onEvent runs, and nothing else.
	err := e.meta.UpdateBackend(ctx, "b6", func(r *metastore.BackendRecord) error {
		r.State, r.Since = metastore.StateDown, time.Now()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.restart(cfg)
	e.probe()
	if q := e.queue(); len(q) != held {
		t.Fatalf("%d stripes queued at the first round after the restart, want the %d on the down b6", len(q), held)
	}
	e.repairAndSettle("b6", metastore.StateReplaced)
	e.checkObjects(objs)
}

// What a restart does not lose: a write still in flight at the new
// healer's first round is watched again from the intents and the recorded
// states (queueCommitted lists them for every down or draining backend),
// and queued once it commits.
func TestDownWriteInFlightRewatchedAfterRestart(t *testing.T) {
	cfg := Config{Grace: 0, SuspectAfter: 1}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	objs, w := e.stageInFlight("b6")
	e.kill("b6")
	e.probe()
	e.restart(cfg)
	e.probe() // the new healer's first round, the write still in flight
	w.commitInto(t, e.meta, objs)
	e.probe()
	e.checkQueued(w.stripes[0].ID, "the write's stripe with a shard on the down b6")
	e.repairAndSettle("b6", metastore.StateReplaced)
	e.checkObjects(objs)
}
