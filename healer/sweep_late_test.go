package healer

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The orphan sweep must not hand a write's shards to the collector sooner
// than the write's intent expires: a write that began while the sweep
// listed backends (its intent unknown to the sweep) may still commit up to
// the orphan delay after its intent, however long the listing took.
func TestSweepSparesShardsOfLateWrites(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), OrphanDelay: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(3, 30<<10)
	e.probe()
	base := time.Now()
	var mu sync.Mutex
	offset := time.Duration(0)
	setClock := func(d time.Duration) {
		mu.Lock()
		offset = d
		mu.Unlock()
	}
	e.h.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return base.Add(offset)
	}
	data := patterned(12<<10, 13)
	var w *stagedWrite
	var once sync.Once
	e.hook("b0").beforeList = func() {
		once.Do(func() {
			// The listing is slow (a large backend): 59 minutes pass,
			// and a write starts placing shards meanwhile.
			setClock(59 * time.Minute)
			w = e.stageWrite("late", data, "b0", e.h.now())
		})
	}
	if _, err := e.h.Scrub(ctx, ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	if w == nil {
		t.Fatal("the sweep did not list b0")
	}
	// A minute later the write (a minute old) is still well inside the
	// orphan delay; garbage collection runs, then the write commits.
	setClock(time.Hour + time.Minute)
	if _, err := e.h.GC(ctx); err != nil {
		t.Fatal(err)
	}
	w.commit(t, e.meta)
	objs["late"] = data
	e.checkFull()
	e.checkObjects(objs)
	// Once due, the entries the sweep made find the shards referenced.
	setClock(3 * time.Hour)
	rep, err := e.h.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted != 0 {
		t.Fatalf("gc %+v deleted shards of a committed write", rep)
	}
	e.checkFull()
	e.checkObjects(objs)
}
