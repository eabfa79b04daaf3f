package healstore

import (
	"bytes"
	"context"
	"testing"

	"github.com/healstore/healstore/metastore"
)

// A read that finds a shard corrupt on a stripe already queued for another
// cause (at the same or a lower margin) adds its finding to the entry: the
// rebuilder checks the shard and rewrites it, instead of finding nothing to
// do for the other cause and dropping the entry with the corrupt shard
// left in place.
func TestReadFindingJoinsQueuedEntry(t *testing.T) {
	hs := newHealStore(t, 6, 4, 2, nil)
	ctx := context.Background()
	data := bytes.Repeat([]byte("healstore "), 3000)
	hs.put("o", data)
	h := hs.probedHealer()
	obj, _ := hs.s.meta.GetObject(ctx, "o")
	sid := obj.Stripes[0]
	mst, _ := hs.s.meta.GetStripe(ctx, sid)
	// Queued earlier for a backend that was suspect for a while (it
	// answers again), at the margin the read will find.
	if err := hs.s.meta.Enqueue(ctx, metastore.RepairItem{Stripe: sid, Margin: 1,
		Reason: "backend " + mst.Shards[5].Backend + " suspect"}); err != nil {
		t.Fatal(err)
	}
	loc := mst.Shards[0]
	raw := hs.raw(hs.spec(loc.Backend))
	bad, err := raw.Get(ctx, loc.Key)
	if err != nil {
		t.Fatal(err)
	}
	bad[200] ^= 1
	if err := raw.Put(ctx, loc.Key, bad); err != nil {
		t.Fatal(err)
	}
	hs.check(map[string][]byte{"o": data})
	if _, err := h.RepairAll(ctx, nil); err != nil {
		t.Fatal(err)
	}
	mst, _ = hs.s.meta.GetStripe(ctx, sid)
	got, err := hs.raw(hs.spec(mst.Shards[0].Backend)).Get(ctx, mst.Shards[0].Key)
	if err != nil || bytes.Equal(got, bad) {
		t.Fatalf("the corrupt shard 0 was not rewritten (%v)", err)
	}
	if err := hs.fullAndPlaced(); err != nil {
		t.Fatal(err)
	}
}
