package metastoretest

import (
	"errors"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

func testBackends(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	rec := metastore.BackendRecord{
		Name: "zdb-1", SpecJSON: []byte(`{ "name": "zdb-1", "kind": "zdb", "secret_ref": "zdb-1" }`),
		State: metastore.StateUp, Since: c.Now(), LastProbe: c.Now(), ProbeFailures: 0,
		Capacity: metastore.Capacity{Known: true, Used: 10, Limit: 100, Free: 90},
		Domain:   "node:12", Spare: true, Marker: "store/abc",
	}
	if err := s.PutBackend(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBackend(ctx, "zdb-1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.SpecJSON) != `{"name":"zdb-1","kind":"zdb","secret_ref":"zdb-1"}` {
		t.Fatalf("spec %s", got.SpecJSON)
	}
	if !got.Since.Equal(rec.Since) || !got.LastProbe.Equal(rec.LastProbe) || got.Capacity != rec.Capacity ||
		got.State != rec.State || got.Domain != rec.Domain || !got.Spare || got.Marker != rec.Marker {
		t.Fatalf("backend %+v, want %+v", got, rec)
	}
	if err := s.PutBackend(ctx, &metastore.BackendRecord{Name: "a", State: metastore.StateDown}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListBackends(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Name != "zdb-1" {
		t.Fatalf("ListBackends %+v, %v", list, err)
	}
	if err := s.PutBackend(ctx, &metastore.BackendRecord{Name: "x/y"}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("name with '/': %v", err)
	}
	if err := s.PutBackend(ctx, &metastore.BackendRecord{Name: "x", SpecJSON: []byte("{not json")}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("bad spec JSON: %v", err)
	}
	// Concurrent read-modify-write through UpdateBackend loses nothing.
	// Few enough updates in all that no call can exhaust its retries: each
	// retry needs another worker's update to have landed.
	const workers, each = 4, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := s.UpdateBackend(ctx, "zdb-1", func(r *metastore.BackendRecord) error {
					r.ProbeFailures++
					r.State = metastore.StateSuspect
					return nil
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _ = s.GetBackend(ctx, "zdb-1")
	if got.ProbeFailures != workers*each || got.State != metastore.StateSuspect {
		t.Fatalf("after concurrent updates: failures=%d state=%s, want %d suspect", got.ProbeFailures, got.State, workers*each)
	}
	boom := errors.New("boom")
	if err := s.UpdateBackend(ctx, "zdb-1", func(r *metastore.BackendRecord) error { r.Spare = false; return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if got, _ = s.GetBackend(ctx, "zdb-1"); !got.Spare {
		t.Fatal("aborted update wrote")
	}
	if err := s.UpdateBackend(ctx, "nope", func(*metastore.BackendRecord) error { return nil }); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	if err := s.DeleteBackend(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBackend(ctx, "a"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("deleted backend: %v", err)
	}
	if err := s.DeleteBackend(ctx, "a"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
}

func testGarbage(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gs := []metastore.Garbage{
		{Backend: "b1", Key: "shards/x.3", After: t0.Add(3 * time.Second)},
		{Backend: "b2", Key: "deep/path/y", After: t0.Add(1 * time.Second)},
		{Backend: "b1", Key: "shards/z.0", After: t0.Add(2 * time.Second)},
	}
	if err := s.AddGarbage(ctx, gs...); err != nil {
		t.Fatal(err)
	}
	got := garbage(t, s)
	if len(got) != 3 || got[0].Key != "deep/path/y" || got[1].Key != "shards/z.0" || got[2].Key != "shards/x.3" ||
		got[0].Backend != "b2" || !got[0].After.Equal(gs[1].After) {
		t.Fatalf("garbage order %+v", got)
	}
	var due []metastore.Garbage
	if err := s.DueGarbage(ctx, t0.Add(2*time.Second), func(g metastore.Garbage) error { due = append(due, g); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(due) != 2 {
		t.Fatalf("due garbage %+v, want the first 2", due)
	}
	if err := s.RemoveGarbage(ctx, due...); err != nil {
		t.Fatal(err)
	}
	if got = garbage(t, s); len(got) != 1 || got[0].Key != "shards/x.3" {
		t.Fatalf("after remove %+v", got)
	}
	before := c.Peek()
	if err := s.AddGarbage(ctx, metastore.Garbage{Backend: "b3", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	got = garbage(t, s)
	if len(got) != 2 || got[1].Backend != "b3" || got[1].After.Before(before.Add(testGarbageDelay)) {
		t.Fatalf("zero After must mean now + delay: %+v", got)
	}
	if err := s.AddGarbage(ctx, metastore.Garbage{Backend: "", Key: "k"}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("garbage without backend: %v", err)
	}
}

func testIntents(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "", "b4")
	in := metastore.Intent{ID: newID(), Shards: st.Shards}
	if err := s.AddIntent(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetIntent(ctx, in.ID)
	if err != nil || got.Created.IsZero() || len(got.Shards) != 4 || got.Shards[1].Key != st.Shards[1].Key || string(got.Shards[3].Sum) != string(st.Shards[3].Sum) {
		t.Fatalf("GetIntent %+v, %v", got, err)
	}
	in2 := metastore.Intent{ID: newID(), Shards: st.Shards[:1], Created: c.Now()}
	if err := s.AddIntent(ctx, in2); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.ListIntents(ctx, func(metastore.Intent) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("ListIntents: %d, %v", n, err)
	}
	after := c.Peek().Add(time.Minute)
	if err := s.IntentToGarbage(ctx, in.ID, after); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetIntent(ctx, in.ID); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("expired intent still there: %v", err)
	}
	gs := garbage(t, s)
	if len(gs) != 3 || !gs[0].After.Equal(after) {
		t.Fatalf("intent garbage %+v, want its 3 placed shards due %v", gs, after)
	}
	if err := s.IntentToGarbage(ctx, in.ID, after); err != nil {
		t.Fatalf("expiring an absent intent: %v", err)
	}
	// A write extending its intent after it expired is refused, and the
	// intent is not made again (its shards belong to the collector now).
	more := in
	more.Shards = append(slices.Clone(in.Shards), metastore.ShardLoc{Backend: "b5", Key: "k5"})
	if err := s.ExtendIntent(ctx, more); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("extending an expired intent: %v, want ErrNotFound", err)
	}
	if _, err := s.GetIntent(ctx, in.ID); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("extending an expired intent made it again: %v", err)
	}
	// A live one gains the shards and keeps its creation time.
	more2 := in2
	more2.Created = time.Time{}
	more2.Shards = append(slices.Clone(in2.Shards), metastore.ShardLoc{Backend: "b5", Key: "k5"})
	if err := s.ExtendIntent(ctx, more2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetIntent(ctx, in2.ID); err != nil || len(got.Shards) != 2 || got.Shards[1].Backend != "b5" || !got.Created.Equal(in2.Created) {
		t.Fatalf("extended intent %+v, %v; want 2 shards, created %v", got, err, in2.Created)
	}
	if err := s.RemoveIntent(ctx, in2.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveIntent(ctx, in2.ID); err != nil {
		t.Fatalf("removing an absent intent: %v", err)
	}
	if err := s.AddIntent(ctx, metastore.Intent{}); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("zero intent id: %v", err)
	}
}

func testStoreID(t *testing.T, f Factory) {
	kv := f(t)
	s := metastore.New(kv)
	ctx := ctxT(t)
	const workers = 6
	ids := make([]string, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.StoreID(ctx)
			if err != nil {
				t.Error(err)
			}
			ids[w] = id
		}()
	}
	wg.Wait()
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(ids[0]) {
		t.Fatalf("store id %q", ids[0])
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent first calls disagree: %q", ids)
		}
	}
	// A second Store over the same KV sees the same id.
	if id, err := metastore.New(kv).StoreID(ctx); err != nil || id != ids[0] {
		t.Fatalf("second store: %q, %v", id, err)
	}
}

func testMeta(t *testing.T, f Factory) {
	s, _ := newStore(t, f)
	ctx := ctxT(t)
	if _, err := s.GetMeta(ctx, "snapshot"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("unset meta: %v", err)
	}
	if err := s.PutMeta(ctx, "snapshot", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetMeta(ctx, "snapshot"); err != nil || string(v) != "v1" {
		t.Fatalf("meta = %q, %v", v, err)
	}
	if err := s.SwapMeta(ctx, "snapshot", nil, []byte("v2")); !errors.Is(err, metastore.ErrConflict) {
		t.Fatalf("swap expecting unset: %v", err)
	}
	if err := s.SwapMeta(ctx, "snapshot", []byte("v0"), []byte("v2")); !errors.Is(err, metastore.ErrConflict) {
		t.Fatalf("swap with the wrong old value: %v", err)
	}
	if err := s.SwapMeta(ctx, "snapshot", []byte("v1"), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if err := s.SwapMeta(ctx, "leader", nil, []byte("me")); err != nil {
		t.Fatal(err)
	}
	if err := s.SwapMeta(ctx, "leader", []byte("me"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta(ctx, "leader"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("swapped-to-nil meta: %v", err)
	}
	if err := s.DeleteMeta(ctx, "snapshot"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta(ctx, "snapshot"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("deleted meta: %v", err)
	}
}

func testRecordVersions(t *testing.T, f Factory) {
	kv := f(t)
	s := metastore.New(kv)
	ctx := ctxT(t)
	var b metastore.Batch
	b.Put([]byte("obj/future"), []byte(`{"v":3,"name":"future","id":"00000000000000000000000000000000","new_field":1}`))
	b.Put([]byte("obj/broken"), []byte(`{"v":1,`))
	b.Put([]byte("obj/unversioned"), []byte(`{"name":"x"}`))
	if err := kv.Commit(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetObject(ctx, "future"); !errors.Is(err, metastore.ErrSchema) {
		t.Fatalf("newer record: %v, want ErrSchema", err)
	}
	if _, err := s.GetObject(ctx, "broken"); !errors.Is(err, metastore.ErrCorrupt) {
		t.Fatalf("broken record: %v, want ErrCorrupt", err)
	}
	if _, err := s.GetObject(ctx, "unversioned"); !errors.Is(err, metastore.ErrCorrupt) {
		t.Fatalf("unversioned record: %v, want ErrCorrupt", err)
	}
	if _, err := s.ListObjects(ctx, "f", "", 0); !errors.Is(err, metastore.ErrSchema) {
		t.Fatalf("listing a newer record: %v, want ErrSchema", err)
	}
}
