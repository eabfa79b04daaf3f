package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A backend the store never marked (it was unreachable when the store
// opened, and got shards later) that then loses everything is wiped, not
// new: the probe must not hide the loss behind a fresh marker, since the
// metadata says stripes have shards there.
func TestUnmarkedBackendWithStripesWipedIsQueued(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(12, 64<<10)
	e.probe()
	held := e.onBackend("b3")
	if held == 0 {
		t.Fatal("b3 holds no stripes; the test needs some")
	}
	// The record says no marker was ever written.
	if err := e.meta.UpdateBackend(ctx, "b3", func(r *metastore.BackendRecord) error { r.Marker = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	e.wipe("b3")
	e.probe()
	if q := e.queue(); len(q) != held {
		t.Fatalf("%d stripes queued after the unmarked backend was wiped, want %d", len(q), held)
	}
	rep := e.repairAll()
	if rep.Repaired != held {
		t.Fatalf("repaired %d, want %d (%v)", rep.Repaired, held, rep.Errors)
	}
	e.checkFull()
	e.checkObjects(objs)
}

// An unmarked backend that holds nothing is simply marked: no stripe is
// queued.
func TestUnmarkedEmptyBackendIsMarked(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	e.probe()
	if err := e.meta.UpdateBackend(ctx, "b3", func(r *metastore.BackendRecord) error { r.Marker = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	e.wipe("b3")
	e.probe()
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("%d stripes queued for an empty unmarked backend", len(q))
	}
	if _, err := e.sw("b3").Backend.Get(ctx, MarkerKey); err != nil {
		t.Fatalf("marker not written on the empty unmarked backend: %v", err)
	}
}
