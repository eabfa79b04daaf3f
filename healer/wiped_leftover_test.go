package healer

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// A wiped backend may hold a value under a lost shard's key again before
// the repair looks: a rebuild that crashed between its upload and its
// commit, torn if the machine went down. Its size is the shard's, so a
// Stat takes it for the shard; the repair must read and verify it, and
// rebuild it when it is not the shard, rather than drop the entry and
// leave the stripe a shard short until a deep scrub.
func TestWipedBackendLeftoverVerified(t *testing.T) {
	// k+m = 7 on 7 backends: a shard rebuilt for b6 can only go to b6.
	e := newEnv(t, envOpts{backends: 7, k: 4, m: 3, cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	objs := e.fill(6, 96<<10)
	e.wipe("b6")
	e.probe() // b6 found wiped: every stripe queued, b6 marked again
	st := e.stripes()[0]
	on := -1
	for i, l := range st.Shards {
		if l.Backend == "b6" {
			on = i
		}
	}
	if on < 0 {
		t.Fatal("the stripe has no shard on b6")
	}
	loc := st.Shards[on]
	torn := bytes.Repeat([]byte{0xa5}, int(loc.Size))
	if err := e.sw("b6").Backend.Put(ctx, loc.Key, torn); err != nil {
		t.Fatal(err)
	}
	e.checkQueued(st.ID, "the stripe whose shard on b6 is a leftover")
	rep := e.repairAll()
	if rep.Failed != 0 || rep.Remaining != 0 {
		t.Fatalf("repairs: %+v", rep)
	}
	e.checkFull()
	e.checkObjects(objs)
}
