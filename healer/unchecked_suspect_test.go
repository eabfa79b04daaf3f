package healer

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A shard a reader found gone whose backend then turns suspect is no
// source any more, so the repair's check does not look at it. That is no
// all-clear either: the entry stays (retried with back-off) and, once the
// backend answers again, the shard is found gone and rebuilt.
func TestReaderFindingOnSuspectBackendStaysQueued(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1}})
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
	e.probe()
	if s := e.state(lost); s != metastore.StateSuspect {
		t.Fatalf("%s is %s, want suspect", lost, s)
	}
	it, err := e.meta.GetRepair(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := e.h.Repair(ctx, *it); o != Failed || !errors.Is(err, ErrUnchecked) {
		t.Fatalf("repair while %s is suspect: %s, %v; want it to fail unchecked", lost, o, err)
	}
	if _, err := e.meta.GetRepair(ctx, st.ID); err != nil {
		t.Fatalf("entry dropped: %v", err)
	}
	e.revive(lost)
	e.probe()
	e.repairAll()
	e.checkFull()
	e.checkObjects(objs)
}

func TestReadFound(t *testing.T) {
	for reason, want := range map[string][]int{
		"read found shards missing [0], corrupt []":                                              {0},
		"backend b1 down; read found shards missing [2 5], corrupt [1]":                          {2, 5, 1},
		"read found shards missing [], corrupt [3]; read found shards missing [3 4], corrupt []": {3, 4},
		"scrub: shards [1] missing, [] corrupt":                                                  nil,
		"read found shards missing [1":                                                           nil,
	} {
		if got := metastore.ReadFindingShards(reason); !slices.Equal(got, want) {
			t.Errorf("ReadFindingShards(%q) = %v, want %v", reason, got, want)
		}
	}
}
