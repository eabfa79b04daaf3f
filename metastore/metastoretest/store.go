package metastoretest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// Clock is a fake clock that moves forward one microsecond per reading, so
// that every queue time and garbage time a test produces is distinct.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a Clock at a fixed instant in a non-UTC zone (stored
// times must come back Equal whatever the zone).
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 5*3600))}
}

// Now returns the current fake time and advances it.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

// Peek returns the current fake time without advancing it.
func (c *Clock) Peek() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

const testGarbageDelay = time.Hour

func newStore(t *testing.T, f Factory) (*metastore.Store, *Clock) {
	c := NewClock()
	return metastore.New(f(t), metastore.WithClock(c.Now), metastore.WithGarbageDelay(testGarbageDelay)), c
}

func newID() [16]byte {
	var id [16]byte
	rand.Read(id[:])
	return id
}

// mkStripe builds a stripe with k data shards and len(backends)-k parity
// shards; "" leaves a shard missing.
func mkStripe(obj [16]byte, block uint64, k int, backends ...string) *metastore.Stripe {
	st := &metastore.Stripe{ID: newID(), Object: obj, Block: block, K: k, M: len(backends) - k, DataLen: 1000 + int(block)}
	for i, be := range backends {
		loc := metastore.ShardLoc{}
		if be != "" {
			loc = metastore.ShardLoc{Backend: be, Key: fmt.Sprintf("shards/%x.%d", st.ID, i), Size: int64(300 + i), Sum: []byte{byte(i), 0xab, 0xcd}}
		}
		st.Shards = append(st.Shards, loc)
	}
	return st
}

func mkObject(c *Clock, name string, stripes ...*metastore.Stripe) *metastore.Object {
	o := &metastore.Object{
		Name: name, ID: newID(), Created: c.Now(), Modified: c.Now(),
		Policy: metastore.Policy{K: 2, M: 2, BlockSize: 1 << 20, Compression: "zstd", Encryption: "aes-256-gcm", Checksum: "xxh3-128"},
		Mode:   0o644,
	}
	for _, st := range stripes {
		st.Object = o.ID
		o.Stripes = append(o.Stripes, st.ID)
		o.Size += int64(st.DataLen)
	}
	return o
}

func sameObject(t *testing.T, got, want *metastore.Object) {
	t.Helper()
	if !got.Created.Equal(want.Created) || !got.Modified.Equal(want.Modified) {
		t.Fatalf("object %q times: got %v/%v, want %v/%v", want.Name, got.Created, got.Modified, want.Created, want.Modified)
	}
	g, w := *got, *want
	g.Created, g.Modified, w.Created, w.Modified = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("object %q:\n got %+v\nwant %+v", want.Name, g, w)
	}
}

func sameStripe(t *testing.T, got, want *metastore.Stripe) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stripe %x:\n got %+v\nwant %+v", want.ID, got, want)
	}
}

func onBackend(t *testing.T, s *metastore.Store, backend string) [][16]byte {
	t.Helper()
	var out [][16]byte
	if err := s.StripesOnBackend(ctxT(t), backend, func(id [16]byte) error { out = append(out, id); return nil }); err != nil {
		t.Fatalf("StripesOnBackend(%s): %v", backend, err)
	}
	return out
}

func sortedIDs(ids ...[16]byte) [][16]byte {
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b [16]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}

func garbage(t *testing.T, s *metastore.Store) []metastore.Garbage {
	t.Helper()
	var out []metastore.Garbage
	if err := s.ListGarbage(ctxT(t), func(g metastore.Garbage) error { out = append(out, g); return nil }); err != nil {
		t.Fatalf("ListGarbage: %v", err)
	}
	return out
}

func checkClean(t *testing.T, s *metastore.Store) {
	t.Helper()
	problems, err := s.Check(ctxT(t))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(problems) > 0 {
		t.Fatalf("Check found %d problems: %q", len(problems), problems)
	}
}

// shardsOf lists the placed shards of stripes as garbage keys "backend key".
func shardsOf(stripes ...*metastore.Stripe) []string {
	var out []string
	for _, st := range stripes {
		for _, sh := range st.Shards {
			if sh.Backend != "" {
				out = append(out, sh.Backend+" "+sh.Key)
			}
		}
	}
	slices.Sort(out)
	return out
}

func garbageKeys(gs []metastore.Garbage) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Backend+" "+g.Key)
	}
	slices.Sort(out)
	return out
}

// RunStore runs the typed Store suite on fresh KVs from newKV.
func RunStore(t *testing.T, newKV Factory) {
	t.Run("ObjectRoundTrip", func(t *testing.T) { testObjectRoundTrip(t, newKV) })
	t.Run("PutObjectIndexesQueuesIntents", func(t *testing.T) { testPutObject(t, newKV) })
	t.Run("ReplaceObject", func(t *testing.T) { testReplaceObject(t, newKV) })
	t.Run("PutObjectIntentCollected", func(t *testing.T) { testPutObjectIntentCollected(t, newKV) })
	t.Run("PutObjectRacesCollector", func(t *testing.T) { testPutObjectRacesCollector(t, newKV) })
	t.Run("PutObjectInvalid", func(t *testing.T) { testPutObjectInvalid(t, newKV) })
	t.Run("DeleteObject", func(t *testing.T) { testDeleteObject(t, newKV) })
	t.Run("RenameObject", func(t *testing.T) { testRenameObject(t, newKV) })
	t.Run("ListObjects", func(t *testing.T) { testListObjects(t, newKV) })
	t.Run("UpdateStripe", func(t *testing.T) { testUpdateStripe(t, newKV) })
	t.Run("ConcurrentUpdateStripe", func(t *testing.T) { testConcurrentUpdateStripe(t, newKV) })
	t.Run("ScanStripes", func(t *testing.T) { testScanStripes(t, newKV) })
	t.Run("QueueOrder", func(t *testing.T) { testQueueOrder(t, newKV) })
	t.Run("QueueIdempotent", func(t *testing.T) { testQueueIdempotent(t, newKV) })
	t.Run("RequeueAndDue", func(t *testing.T) { testRequeue(t, newKV) })
	t.Run("EnqueueRecause", func(t *testing.T) { testEnqueueRecause(t, newKV) })
	t.Run("CompleteRepair", func(t *testing.T) { testCompleteRepair(t, newKV) })
	t.Run("ConcurrentEnqueue", func(t *testing.T) { testConcurrentEnqueue(t, newKV) })
	t.Run("Backends", func(t *testing.T) { testBackends(t, newKV) })
	t.Run("Garbage", func(t *testing.T) { testGarbage(t, newKV) })
	t.Run("Intents", func(t *testing.T) { testIntents(t, newKV) })
	t.Run("StoreID", func(t *testing.T) { testStoreID(t, newKV) })
	t.Run("Meta", func(t *testing.T) { testMeta(t, newKV) })
	t.Run("RecordVersions", func(t *testing.T) { testRecordVersions(t, newKV) })
	t.Run("ConcurrentReplaceSameName", func(t *testing.T) { testConcurrentReplace(t, newKV) })
	t.Run("RandomizedAgainstModel", func(t *testing.T) { testRandomized(t, newKV) })
	t.Run("ConcurrentRandomOps", func(t *testing.T) { testConcurrentRandom(t, newKV) })
}

func testObjectRoundTrip(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	for _, name := range []string{"plain", "dir/sub/file.txt", "a<b>&c \"q\"", "bin\xff\xfe\x00name", "ünïcødé"} {
		st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "b4")
		o := mkObject(c, name, st)
		o.Attrs = map[string]string{"uid": "1000", "content-type": "text/plain"}
		if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, nil, nil); err != nil {
			t.Fatalf("PutObject(%q): %v", name, err)
		}
		got, err := s.GetObject(ctx, name)
		if err != nil {
			t.Fatalf("GetObject(%q): %v", name, err)
		}
		sameObject(t, got, o)
		gst, err := s.GetStripe(ctx, st.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameStripe(t, gst, st)
	}
	if _, err := s.GetObject(ctx, "missing"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetObject(missing): %v", err)
	}
	if _, err := s.GetStripe(ctx, newID()); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("GetStripe(missing): %v", err)
	}
	// An empty object has no stripes.
	e := mkObject(c, "empty")
	if _, err := s.PutObject(ctx, e, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetObject(ctx, "empty")
	if err != nil || len(got.Stripes) != 0 || got.Size != 0 {
		t.Fatalf("empty object: %+v, %v", got, err)
	}
	checkClean(t, s)
}

func testPutObject(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st0 := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "b4")
	st1 := mkStripe([16]byte{}, 1, 2, "b1", "b2", "b3", "")
	st2 := mkStripe([16]byte{}, 2, 2, "b2", "b1", "b4", "b3")
	o := mkObject(c, "obj", st0, st1, st2)
	in1, in2 := metastore.Intent{ID: newID(), Shards: st0.Shards}, metastore.Intent{ID: newID(), Shards: st1.Shards}
	other := metastore.Intent{ID: newID(), Shards: st2.Shards[:1]}
	for _, in := range []metastore.Intent{in1, in2, other} {
		if err := s.AddIntent(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	rep := metastore.RepairItem{Stripe: st1.ID, Margin: 1, Reason: "degraded write"}
	replaced, err := s.PutObject(ctx, o, []*metastore.Stripe{st0, st1, st2}, []metastore.RepairItem{rep}, [][16]byte{in1.ID, in2.ID})
	if err != nil || replaced != nil {
		t.Fatalf("PutObject: replaced=%v err=%v", replaced, err)
	}
	for _, st := range []*metastore.Stripe{st0, st1, st2} {
		if st.Version != 1 {
			t.Fatalf("caller's stripe version %d, want 1", st.Version)
		}
		got, err := s.GetStripe(ctx, st.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameStripe(t, got, st)
	}
	all := sortedIDs(st0.ID, st1.ID, st2.ID)
	for _, be := range []string{"b1", "b2", "b3"} {
		if got := onBackend(t, s, be); !reflect.DeepEqual(got, all) {
			t.Fatalf("backend %s holds %x, want %x", be, got, all)
		}
	}
	if got, want := onBackend(t, s, "b4"), sortedIDs(st0.ID, st2.ID); !reflect.DeepEqual(got, want) {
		t.Fatalf("backend b4 holds %x, want %x (st1 has no shard there)", got, want)
	}
	if got := onBackend(t, s, "b5"); len(got) != 0 {
		t.Fatalf("unknown backend holds %x", got)
	}
	if n, err := s.CountStripesOnBackend(ctx, "b4"); err != nil || n != 2 {
		t.Fatalf("CountStripesOnBackend = %d, %v", n, err)
	}
	q, err := s.Queue(ctx, 0)
	if err != nil || len(q) != 1 || q[0].Stripe != st1.ID || q[0].Margin != 1 || q[0].Reason != "degraded write" || q[0].Queued.IsZero() {
		t.Fatalf("queue after degraded put: %+v, %v", q, err)
	}
	var intents [][16]byte
	if err := s.ListIntents(ctx, func(in metastore.Intent) error { intents = append(intents, in.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(intents, [][16]byte{other.ID}) {
		t.Fatalf("intents after commit: %x, want only the unrelated one %x", intents, other.ID)
	}
	checkClean(t, s)
}

// testPutObjectIntentCollected: a write held open past the collector's
// orphan delay loses its intent (and the collector deletes its shards), so
// its commit must fail and change nothing rather than reference them.
func testPutObjectIntentCollected(t *testing.T, f Factory) {
	for _, how := range []string{"IntentToGarbage", "RemoveIntent"} {
		t.Run(how, func(t *testing.T) {
			s, c := newStore(t, f)
			ctx := ctxT(t)
			// An older version under the name: a commit would replace it.
			a0 := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "b4")
			v1 := mkObject(c, "name", a0)
			if _, err := s.PutObject(ctx, v1, []*metastore.Stripe{a0}, nil, nil); err != nil {
				t.Fatal(err)
			}
			st0 := mkStripe([16]byte{}, 0, 2, "b5", "b6", "b7", "b8")
			st1 := mkStripe([16]byte{}, 1, 2, "b5", "b6", "b7", "")
			v2 := mkObject(c, "name", st0, st1)
			in0 := metastore.Intent{ID: newID(), Shards: st0.Shards}
			in1 := metastore.Intent{ID: newID(), Shards: st1.Shards}
			for _, in := range []metastore.Intent{in0, in1} {
				if err := s.AddIntent(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if how == "IntentToGarbage" {
				err = s.IntentToGarbage(ctx, in1.ID, c.Peek())
			} else {
				err = s.RemoveIntent(ctx, in1.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			before := scanAll(t, s.KV(), "", "")
			_, err = s.PutObject(ctx, v2, []*metastore.Stripe{st0, st1}, []metastore.RepairItem{{Stripe: st1.ID, Margin: 1}}, [][16]byte{in0.ID, in1.ID})
			if !errors.Is(err, metastore.ErrIntentLost) || !errors.Is(err, metastore.ErrConflict) {
				t.Fatalf("PutObject with a collected intent: %v, want ErrIntentLost (and ErrConflict)", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%x", in1.ID)) {
				t.Fatalf("error %q does not name the lost intent %x", err, in1.ID)
			}
			if after := scanAll(t, s.KV(), "", ""); !reflect.DeepEqual(after, before) {
				t.Fatalf("failed PutObject changed the store:\nbefore %q\nafter  %q", before, after)
			}
			if st0.Version != 0 || st1.Version != 0 {
				t.Fatalf("failed PutObject set the caller's stripe versions %d/%d", st0.Version, st1.Version)
			}
			got, err := s.GetObject(ctx, "name")
			if err != nil || got.ID != v1.ID {
				t.Fatalf("object after failed replace: %+v, %v; want the old version %x", got, err, v1.ID)
			}
			if _, err := s.GetIntent(ctx, in0.ID); err != nil {
				t.Fatalf("the surviving intent must stay for the collector: %v", err)
			}
			checkClean(t, s)
		})
	}
}

// testPutObjectRacesCollector runs a commit and the collector's
// IntentToGarbage on the same intent at once: exactly one wins. Either the
// object is committed and its shards are not garbage, or the commit fails
// with ErrIntentLost and the shards are garbage.
func testPutObjectRacesCollector(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	commits, collects := 0, 0
	for i := range 16 {
		st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "b4")
		name := fmt.Sprintf("race/%d", i)
		o := mkObject(c, name, st)
		in := metastore.Intent{ID: newID(), Shards: st.Shards}
		if err := s.AddIntent(ctx, in); err != nil {
			t.Fatal(err)
		}
		var putErr, gcErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, putErr = s.PutObject(ctx, o, []*metastore.Stripe{st}, nil, [][16]byte{in.ID})
		}()
		go func() {
			defer wg.Done()
			<-start
			gcErr = s.IntentToGarbage(ctx, in.ID, c.Peek())
		}()
		close(start)
		wg.Wait()
		if gcErr != nil {
			t.Fatalf("round %d: IntentToGarbage: %v", i, gcErr)
		}
		var mine []metastore.Garbage
		for _, g := range garbage(t, s) {
			if strings.Contains(g.Key, fmt.Sprintf("%x", st.ID)) {
				mine = append(mine, g)
			}
		}
		_, getErr := s.GetObject(ctx, name)
		switch {
		case putErr == nil:
			commits++
			if getErr != nil || len(mine) != 0 {
				t.Fatalf("round %d: commit won, but object: %v, garbage of its shards: %+v", i, getErr, mine)
			}
		case errors.Is(putErr, metastore.ErrIntentLost):
			collects++
			if !errors.Is(getErr, metastore.ErrNotFound) || len(mine) != 4 {
				t.Fatalf("round %d: collector won, but object: %v, garbage of its shards: %+v", i, getErr, mine)
			}
		default:
			t.Fatalf("round %d: PutObject: %v", i, putErr)
		}
		if _, err := s.GetIntent(ctx, in.ID); !errors.Is(err, metastore.ErrNotFound) {
			t.Fatalf("round %d: intent survived both: %v", i, err)
		}
	}
	t.Logf("commit won %d rounds, collector %d", commits, collects)
	checkClean(t, s)
}

func testReplaceObject(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	a0 := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "b4")
	a1 := mkStripe([16]byte{}, 1, 2, "b1", "b2", "b3", "")
	v1 := mkObject(c, "name", a0, a1)
	if _, err := s.PutObject(ctx, v1, []*metastore.Stripe{a0, a1}, []metastore.RepairItem{{Stripe: a1.ID, Margin: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	b0 := mkStripe([16]byte{}, 0, 2, "b5", "b6", "b7", "b8")
	v2 := mkObject(c, "name", b0)
	before := c.Peek()
	replaced, err := s.PutObject(ctx, v2, []*metastore.Stripe{b0}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if replaced == nil || replaced.ID != v1.ID {
		t.Fatalf("replaced = %+v, want v1 %x", replaced, v1.ID)
	}
	got, err := s.GetObject(ctx, "name")
	if err != nil {
		t.Fatal(err)
	}
	sameObject(t, got, v2)
	for _, id := range [][16]byte{a0.ID, a1.ID} {
		if _, err := s.GetStripe(ctx, id); !errors.Is(err, metastore.ErrNotFound) {
			t.Fatalf("old stripe %x still there: %v", id, err)
		}
	}
	for _, be := range []string{"b1", "b2", "b3", "b4"} {
		if ids := onBackend(t, s, be); len(ids) != 0 {
			t.Fatalf("backend %s still indexes old stripes %x", be, ids)
		}
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("old stripe's repair still queued (%d entries)", n)
	}
	gs := garbage(t, s)
	if got, want := garbageKeys(gs), shardsOf(a0, a1); !reflect.DeepEqual(got, want) {
		t.Fatalf("garbage %q, want the old shards %q", got, want)
	}
	for _, g := range gs {
		if g.After.Before(before.Add(testGarbageDelay)) {
			t.Fatalf("garbage due %v, before the garbage delay after the replace (%v)", g.After, before.Add(testGarbageDelay))
		}
	}
	checkClean(t, s)

	// v3 keeps v2's stripe (same object id, block unchanged) and adds one.
	c0 := mkStripe(v2.ID, 1, 2, "b1", "b2", "b3", "b4")
	v3 := *v2
	v3.Stripes = [][16]byte{b0.ID, c0.ID}
	v3.Size += int64(c0.DataLen)
	if _, err := s.PutObject(ctx, &v3, []*metastore.Stripe{c0}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetStripe(ctx, b0.ID); err != nil {
		t.Fatalf("kept stripe dropped: %v", err)
	}
	if got := garbage(t, s); len(got) != len(gs) {
		t.Fatalf("kept stripe's shards became garbage: %d entries, want %d", len(got), len(gs))
	}
	checkClean(t, s)
}

func testPutObjectInvalid(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3")
	o := mkObject(c, "x")
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, nil, nil); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("stripe not listed: %v", err)
	}
	o = mkObject(c, "x", st)
	if _, err := s.PutObject(ctx, o, nil, nil, nil); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("listed stripe neither given nor kept: %v", err)
	}
	bad := mkStripe([16]byte{}, 0, 2, "b/1", "b2", "b3")
	o = mkObject(c, "x", bad)
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{bad}, nil, nil); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("backend name with '/': %v", err)
	}
	foreign := mkStripe(newID(), 0, 2, "b1", "b2", "b3")
	o = mkObject(c, "x")
	o.Stripes = [][16]byte{foreign.ID}
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{foreign}, nil, nil); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("stripe of another object: %v", err)
	}
	short := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3")
	short.Shards = short.Shards[:2]
	o = mkObject(c, "x", short)
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{short}, nil, nil); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("K+M != len(Shards): %v", err)
	}
	if _, err := s.PutObject(ctx, &metastore.Object{}, nil, nil, nil); !errors.Is(err, metastore.ErrInvalid) {
		t.Fatalf("no name: %v", err)
	}
	if _, err := s.GetObject(ctx, "x"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("a refused put wrote something: %v", err)
	}
	if problems, _ := s.Check(ctx); len(problems) != 0 {
		t.Fatalf("refused puts left %q", problems)
	}
}

func testDeleteObject(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "", "b4")
	o := mkObject(c, "gone", st)
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, []metastore.RepairItem{{Stripe: st.ID, Margin: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteObject(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetObject(ctx, "gone"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("deleted object: %v", err)
	}
	if _, err := s.GetStripe(ctx, st.ID); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("deleted object's stripe: %v", err)
	}
	if got, want := garbageKeys(garbage(t, s)), shardsOf(st); !reflect.DeepEqual(got, want) {
		t.Fatalf("garbage %q, want %q", got, want)
	}
	if ids := onBackend(t, s, "b1"); len(ids) != 0 {
		t.Fatalf("index still lists %x", ids)
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("queue still holds %d", n)
	}
	if err := s.DeleteObject(ctx, "gone"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	checkClean(t, s)
}

func testRenameObject(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	sa := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3")
	a := mkObject(c, "a", sa)
	sb := mkStripe([16]byte{}, 0, 2, "b4", "b5", "b6")
	b := mkObject(c, "b", sb)
	for _, p := range []struct {
		o  *metastore.Object
		st *metastore.Stripe
	}{{a, sa}, {b, sb}} {
		if _, err := s.PutObject(ctx, p.o, []*metastore.Stripe{p.st}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Without replacing: an existing target is refused, nothing changes.
	if err := s.RenameObjectNoReplace(ctx, "a", "b"); !errors.Is(err, metastore.ErrExists) {
		t.Fatalf("rename onto existing without replacing: %v", err)
	}
	if got, err := s.GetObject(ctx, "b"); err != nil || got.ID != b.ID {
		t.Fatalf("refused rename changed the target: %+v, %v", got, err)
	}
	if got, err := s.GetObject(ctx, "a"); err != nil || got.ID != a.ID {
		t.Fatalf("refused rename changed the source: %+v, %v", got, err)
	}
	if err := s.RenameObject(ctx, "a", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetObject(ctx, "a"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("old name after rename: %v", err)
	}
	got, err := s.GetObject(ctx, "c")
	if err != nil || got.ID != a.ID || got.Name != "c" {
		t.Fatalf("new name: %+v, %v", got, err)
	}
	if len(garbage(t, s)) != 0 {
		t.Fatal("plain rename made garbage")
	}
	// Renaming onto an existing name replaces it; its shards become garbage.
	if err := s.RenameObject(ctx, "c", "b"); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetObject(ctx, "b")
	if err != nil || got.ID != a.ID {
		t.Fatalf("rename onto existing: %+v, %v", got, err)
	}
	if g, want := garbageKeys(garbage(t, s)), shardsOf(sb); !reflect.DeepEqual(g, want) {
		t.Fatalf("garbage %q, want the replaced target's %q", g, want)
	}
	if _, err := s.GetStripe(ctx, sb.ID); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("replaced target's stripe: %v", err)
	}
	if err := s.RenameObject(ctx, "b", "b"); err != nil {
		t.Fatalf("rename onto itself: %v", err)
	}
	if err := s.RenameObject(ctx, "nope", "x"); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("rename of missing: %v", err)
	}
	checkClean(t, s)
}

func testListObjects(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	names := []string{"a/1", "a/2", "a/3", "a/4", "a/5", "a0", "b/1"}
	for _, n := range names {
		if _, err := s.PutObject(ctx, mkObject(c, n), nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	list := func(prefix, after string, limit int) []string {
		objs, err := s.ListObjects(ctx, prefix, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range objs {
			out = append(out, o.Name)
		}
		return out
	}
	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          []string
	}{
		{"", "", 0, names},
		{"a/", "", 0, []string{"a/1", "a/2", "a/3", "a/4", "a/5"}},
		{"a/", "a/2", 2, []string{"a/3", "a/4"}},
		{"a/", "a/4", 10, []string{"a/5"}},
		{"a/", "a/5", 10, nil},
		{"a", "a/5", 0, []string{"a0"}},
		{"c", "", 0, nil},
	} {
		if got := list(tc.prefix, tc.after, tc.limit); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListObjects(%q, %q, %d) = %q, want %q", tc.prefix, tc.after, tc.limit, got, tc.want)
		}
	}
}

func testUpdateStripe(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "")
	o := mkObject(c, "o", st)
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Move shard 0 off b1 to b5 and fill the missing shard 3 on b6.
	next := *st
	next.Shards = slices.Clone(st.Shards)
	old0 := next.Shards[0]
	next.Shards[0] = metastore.ShardLoc{Backend: "b5", Key: old0.Key, Size: old0.Size, Sum: old0.Sum}
	next.Shards[3] = metastore.ShardLoc{Backend: "b6", Key: "shards/new.3", Size: 303, Sum: []byte{3}}
	g := metastore.Garbage{Backend: "b1", Key: old0.Key}
	if err := s.UpdateStripe(ctx, &next, []metastore.Garbage{g}); err != nil {
		t.Fatal(err)
	}
	if next.Version != 2 {
		t.Fatalf("version after update %d, want 2", next.Version)
	}
	got, err := s.GetStripe(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameStripe(t, got, &next)
	if ids := onBackend(t, s, "b1"); len(ids) != 0 {
		t.Fatalf("stripe moved off b1 is still in b1's index: %x", ids)
	}
	for _, be := range []string{"b2", "b3", "b5", "b6"} {
		if ids := onBackend(t, s, be); len(ids) != 1 || ids[0] != st.ID {
			t.Fatalf("backend %s index %x, want the stripe", be, ids)
		}
	}
	gs := garbage(t, s)
	if len(gs) != 1 || gs[0].Backend != "b1" || gs[0].Key != old0.Key || gs[0].After.IsZero() {
		t.Fatalf("garbage %+v", gs)
	}
	// The stale copy (version 1) loses.
	stale := *st
	stale.Shards = slices.Clone(st.Shards)
	stale.Shards[1].Backend = "b9"
	if err := s.UpdateStripe(ctx, &stale, nil); !errors.Is(err, metastore.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if ids := onBackend(t, s, "b9"); len(ids) != 0 {
		t.Fatal("a refused update indexed its backend")
	}
	got, _ = s.GetStripe(ctx, st.ID)
	sameStripe(t, got, &next)
	gone := mkStripe([16]byte{}, 0, 2, "b1", "b2")
	gone.Version = 1
	if err := s.UpdateStripe(ctx, gone, nil); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("update of a missing stripe: %v", err)
	}
	checkClean(t, s)
}

func testConcurrentUpdateStripe(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3")
	o := mkObject(c, "o", st)
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, nil, nil); err != nil {
		t.Fatal(err)
	}
	const workers, each = 5, 4
	// Round 1: every worker updates from the same version; one wins.
	var wg sync.WaitGroup
	results := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := *st
			mine.Shards = slices.Clone(st.Shards)
			mine.Shards[0].Backend = fmt.Sprintf("w%d", w)
			results <- s.UpdateStripe(ctx, &mine, nil)
		}()
	}
	wg.Wait()
	close(results)
	wins := 0
	for err := range results {
		if err == nil {
			wins++
		} else if !errors.Is(err, metastore.ErrConflict) {
			t.Fatal(err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d updates from the same version won, want 1", wins)
	}
	// Round 2: read-modify-write loops; every update lands exactly once.
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				cur, err := s.GetStripe(ctx, st.ID)
				if err != nil {
					errs <- err
					return
				}
				cur.Shards[1].Size++
				cur.Shards[0].Backend = fmt.Sprintf("w%d", w)
				err = s.UpdateStripe(ctx, cur, nil)
				if errors.Is(err, metastore.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				done++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s.GetStripe(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != uint64(2+workers*each) {
		t.Fatalf("version %d, want %d", got.Version, 2+workers*each)
	}
	if got.Shards[1].Size != st.Shards[1].Size+workers*each {
		t.Fatalf("size counter %d, want %d: an update was lost", got.Shards[1].Size, st.Shards[1].Size+workers*each)
	}
	// Only the last writer's backend indexes the stripe.
	for w := 0; w < workers; w++ {
		be := fmt.Sprintf("w%d", w)
		ids := onBackend(t, s, be)
		if (be == got.Shards[0].Backend) != (len(ids) == 1) {
			t.Fatalf("backend %s index %x; shard 0 is on %s", be, ids, got.Shards[0].Backend)
		}
	}
	checkClean(t, s)
}

func testScanStripes(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	var sts []*metastore.Stripe
	var ids [][16]byte
	for i := 0; i < 25; i++ {
		st := mkStripe([16]byte{}, uint64(i), 1, "b1", "b2")
		sts = append(sts, st)
		ids = append(ids, st.ID)
	}
	if _, err := s.PutObject(ctx, mkObject(c, "o", sts...), sts, nil, nil); err != nil {
		t.Fatal(err)
	}
	want := sortedIDs(ids...)
	var got [][16]byte
	if err := s.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error { got = append(got, st.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ScanStripes order %x, want %x", got, want)
	}
	// Resume after the 10th, stop after 5 more.
	got = nil
	err := s.ScanStripes(ctx, want[9], func(st *metastore.Stripe) error {
		got = append(got, st.ID)
		if len(got) == 5 {
			return metastore.ErrStop
		}
		return nil
	})
	if err != nil || !reflect.DeepEqual(got, want[10:15]) {
		t.Fatalf("resumed scan %x, %v; want %x", got, err, want[10:15])
	}
}
