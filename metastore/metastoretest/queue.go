package metastoretest

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

func queueOf(t *testing.T, s *metastore.Store) []metastore.RepairItem {
	t.Helper()
	q, err := s.Queue(ctxT(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func testQueueOrder(t *testing.T, f Factory) {
	s, _ := newStore(t, f)
	ctx := ctxT(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ids := make([][16]byte, 6)
	for i := range ids {
		ids[i] = newID()
	}
	items := []metastore.RepairItem{
		{Stripe: ids[0], Margin: 2, Queued: at(1)},
		{Stripe: ids[1], Margin: 0, Queued: at(3)},
		{Stripe: ids[2], Margin: 1, Queued: at(2)},
		{Stripe: ids[3], Margin: 0, Queued: at(2)},
		{Stripe: ids[4], Margin: -1, Queued: at(5), Reason: "lost"},
		{Stripe: ids[5], Margin: 300, Queued: at(0)},
	}
	if err := s.Enqueue(ctx, items[:3]...); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, items[3:]...); err != nil {
		t.Fatal(err)
	}
	want := [][16]byte{ids[4], ids[3], ids[1], ids[2], ids[0], ids[5]}
	q := queueOf(t, s)
	var got [][16]byte
	for _, it := range q {
		got = append(got, it.Stripe)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("queue order %x, want %x (margin, then age)", got, want)
	}
	if q[0].Margin != -1 || q[0].Reason != "lost" || !q[0].Queued.Equal(at(5)) {
		t.Fatalf("first entry %+v", q[0])
	}
	top, err := s.Queue(ctx, 2)
	if err != nil || len(top) != 2 || top[1].Stripe != ids[3] {
		t.Fatalf("Queue(2) = %+v, %v", top, err)
	}
	if n, err := s.QueueLen(ctx); err != nil || n != 6 {
		t.Fatalf("QueueLen = %d, %v", n, err)
	}
	it, err := s.GetRepair(ctx, ids[2])
	if err != nil || it.Margin != 1 || !it.Queued.Equal(at(2)) {
		t.Fatalf("GetRepair = %+v, %v", it, err)
	}
	if err := s.Dequeue(ctx, ids[3]); err != nil {
		t.Fatal(err)
	}
	if err := s.Dequeue(ctx, ids[3]); err != nil {
		t.Fatalf("second Dequeue: %v", err)
	}
	if _, err := s.GetRepair(ctx, ids[3]); !errors.Is(err, metastore.ErrNotFound) {
		t.Fatalf("dequeued stripe: %v", err)
	}
	if n, _ := s.QueueLen(ctx); n != 5 {
		t.Fatalf("QueueLen after dequeue %d", n)
	}
	checkClean(t, s)
}

func testQueueIdempotent(t *testing.T, f Factory) {
	s, _ := newStore(t, f)
	ctx := ctxT(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	id, other := newID(), newID()
	enq := func(items ...metastore.RepairItem) {
		t.Helper()
		if err := s.Enqueue(ctx, items...); err != nil {
			t.Fatal(err)
		}
	}
	enq(metastore.RepairItem{Stripe: id, Margin: 1, Queued: t0, Reason: "scrub"},
		metastore.RepairItem{Stripe: other, Margin: 1, Queued: t0.Add(time.Second)})
	// Same stripe again, later, higher margin: nothing changes.
	enq(metastore.RepairItem{Stripe: id, Margin: 2, Queued: t0.Add(time.Hour), Reason: "read"})
	it, err := s.GetRepair(ctx, id)
	if err != nil || it.Margin != 1 || !it.Queued.Equal(t0) || it.Reason != "scrub" {
		t.Fatalf("after higher-margin enqueue: %+v, %v", it, err)
	}
	if n, _ := s.QueueLen(ctx); n != 2 {
		t.Fatalf("QueueLen %d, want 2", n)
	}
	// A lower margin moves the entry ahead of every margin-1 entry, and
	// keeps the original queue time.
	enq(metastore.RepairItem{Stripe: id, Margin: 0, Queued: t0.Add(2 * time.Hour), Reason: "backend down"})
	it, err = s.GetRepair(ctx, id)
	if err != nil || it.Margin != 0 || !it.Queued.Equal(t0) || it.Reason != "backend down" {
		t.Fatalf("after lower-margin enqueue: %+v, %v", it, err)
	}
	// Duplicates in one call merge too.
	enq(metastore.RepairItem{Stripe: other, Margin: 3}, metastore.RepairItem{Stripe: other, Margin: -1, Reason: "x"})
	q := queueOf(t, s)
	if len(q) != 2 || q[0].Stripe != other || q[0].Margin != -1 || q[1].Stripe != id {
		t.Fatalf("queue %+v", q)
	}
	checkClean(t, s)
}

func testRequeue(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	id := newID()
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: "scrub"}); err != nil {
		t.Fatal(err)
	}
	first, err := s.GetRepair(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	later := c.Peek().Add(10 * time.Minute)
	if err := s.Requeue(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Attempts: 1, LastError: "no target", NotBefore: later}); err != nil {
		t.Fatal(err)
	}
	it, err := s.GetRepair(ctx, id)
	if err != nil || it.Attempts != 1 || it.LastError != "no target" || !it.NotBefore.Equal(later) || !it.Queued.Equal(first.Queued) {
		t.Fatalf("after requeue %+v, %v (first %+v)", it, err, first)
	}
	due, err := s.QueueDue(ctx, c.Peek(), 0)
	if err != nil || len(due) != 0 {
		t.Fatalf("QueueDue while backing off: %+v, %v", due, err)
	}
	if due, _ = s.QueueDue(ctx, later, 0); len(due) != 1 {
		t.Fatalf("QueueDue at NotBefore: %+v", due)
	}
	// A scrub finding the same margin keeps the back-off; a lower margin
	// clears it.
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 1}); err != nil {
		t.Fatal(err)
	}
	if it, _ = s.GetRepair(ctx, id); !it.NotBefore.Equal(later) || it.Attempts != 1 {
		t.Fatalf("same-margin enqueue changed the back-off: %+v", it)
	}
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 0}); err != nil {
		t.Fatal(err)
	}
	if due, _ = s.QueueDue(ctx, c.Peek(), 0); len(due) != 1 || due[0].Margin != 0 {
		t.Fatalf("lower margin did not clear the back-off: %+v", due)
	}
	// An item without a reason, at a lower margin too, keeps the entry's
	// reason (it says which shards are lost).
	if due[0].Reason != "scrub" {
		t.Fatalf("a lower margin without a reason replaced the reason %q with %q", "scrub", due[0].Reason)
	}
	if err := s.Requeue(ctx, metastore.RepairItem{Stripe: id, Margin: -1, Attempts: 2, LastError: "too few"}); err != nil {
		t.Fatal(err)
	}
	if it, _ = s.GetRepair(ctx, id); it.Reason != "scrub" || it.Margin != -1 || it.LastError != "too few" {
		t.Fatalf("requeue at a lower margin: %+v", it)
	}
	// DequeueIf with a stale position leaves the entry.
	if ok, err := s.DequeueIf(ctx, *first); err != nil || ok {
		t.Fatalf("DequeueIf(stale) = %v, %v", ok, err)
	}
	cur, _ := s.GetRepair(ctx, id)
	if ok, err := s.DequeueIf(ctx, *cur); err != nil || !ok {
		t.Fatalf("DequeueIf(current) = %v, %v", ok, err)
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("QueueLen %d after DequeueIf", n)
	}
	if ok, err := s.DequeueIf(ctx, *cur); err != nil || ok {
		t.Fatalf("DequeueIf(absent) = %v, %v", ok, err)
	}
	checkClean(t, s)
}

func testCompleteRepair(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	st := mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3", "")
	o := mkObject(c, "o", st)
	if _, err := s.PutObject(ctx, o, []*metastore.Stripe{st}, []metastore.RepairItem{{Stripe: st.ID, Margin: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	taken, err := s.GetRepair(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	// While the repair runs, another shard is reported lost.
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: 0}); err != nil {
		t.Fatal(err)
	}
	fixed := *st
	fixed.Shards = append([]metastore.ShardLoc(nil), st.Shards...)
	fixed.Shards[3] = metastore.ShardLoc{Backend: "b4", Key: "k3", Size: 1}
	if err := s.CompleteRepair(ctx, &fixed, nil, taken); err != nil {
		t.Fatal(err)
	}
	it, err := s.GetRepair(ctx, st.ID)
	if err != nil || it.Margin != 0 {
		t.Fatalf("the newer, lower-margin entry must stay: %+v, %v", it, err)
	}
	if ids := onBackend(t, s, "b4"); len(ids) != 1 {
		t.Fatalf("repaired shard not indexed: %x", ids)
	}
	fixed.Shards[1] = metastore.ShardLoc{Backend: "b5", Key: "k1", Size: 1}
	if err := s.CompleteRepair(ctx, &fixed, []metastore.Garbage{{Backend: "b2", Key: st.Shards[1].Key}}, it); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("completed repair still queued")
	}
	if fixed.Version != 3 {
		t.Fatalf("version %d, want 3", fixed.Version)
	}
	if ids := onBackend(t, s, "b2"); len(ids) != 0 {
		t.Fatalf("b2 still indexed: %x", ids)
	}
	if len(garbage(t, s)) != 1 {
		t.Fatal("garbage of the completed repair missing")
	}
	checkClean(t, s)
}

func testConcurrentEnqueue(t *testing.T, f Factory) {
	s, _ := newStore(t, f)
	ctx := ctxT(t)
	id := newID()
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: workers - 1 - w}, metastore.RepairItem{Stripe: newID(), Margin: 5})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	it, err := s.GetRepair(ctx, id)
	if err != nil || it.Margin != 0 {
		t.Fatalf("contended stripe %+v, %v; want margin 0", it, err)
	}
	if n, _ := s.QueueLen(ctx); n != 1+workers {
		t.Fatalf("QueueLen %d, want %d", n, 1+workers)
	}
	if q := queueOf(t, s); q[0].Stripe != id {
		t.Fatalf("lowest margin not first: %+v", q[0])
	}
	checkClean(t, s)
}

// EnqueueRecause: a finding that changes why a stripe needs repair takes
// over the entry whatever the margins, and makes it due now; the margin
// and queue time still merge as in Enqueue.
func testEnqueueRecause(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	id := newID()
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 0, Reason: "backend b0 suspect"}); err != nil {
		t.Fatal(err)
	}
	first, err := s.GetRepair(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	later := c.Peek().Add(time.Hour)
	if err := s.Requeue(ctx, metastore.RepairItem{Stripe: id, Margin: 0, Attempts: 1, LastError: "no target", NotBefore: later}); err != nil {
		t.Fatal(err)
	}
	// Enqueue at a higher margin keeps the reason; EnqueueRecause does not.
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: "backend b0 wiped"}); err != nil {
		t.Fatal(err)
	}
	if it, _ := s.GetRepair(ctx, id); it.Reason != "backend b0 suspect" {
		t.Fatalf("Enqueue at a higher margin changed the reason: %+v", it)
	}
	if err := s.EnqueueRecause(ctx, metastore.RepairItem{Stripe: id, Margin: 1, Reason: "backend b0 wiped"}); err != nil {
		t.Fatal(err)
	}
	it, err := s.GetRepair(ctx, id)
	if err != nil || it.Reason != "backend b0 wiped" || it.Margin != 0 || !it.Queued.Equal(first.Queued) || !it.NotBefore.IsZero() {
		t.Fatalf("after EnqueueRecause %+v, %v (first %+v)", it, err, first)
	}
	if due, _ := s.QueueDue(ctx, c.Peek(), 0); len(due) != 1 {
		t.Fatalf("QueueDue after EnqueueRecause: %+v", due)
	}
	// A repair that read the entry before the new cause must not remove
	// it: DequeueIf with the old record leaves it.
	if ok, err := s.DequeueIf(ctx, *first); err != nil || ok {
		t.Fatalf("DequeueIf with the record from before the new cause = %v, %v", ok, err)
	}
	if _, err := s.GetRepair(ctx, id); err != nil {
		t.Fatalf("the entry with the new cause is gone: %v", err)
	}
	// A lower margin with a new reason starts the attempts over; without
	// a reason it keeps them.
	if err := s.Requeue(ctx, metastore.RepairItem{Stripe: id, Margin: 0, Attempts: 3, LastError: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: -1}); err != nil {
		t.Fatal(err)
	}
	if it, _ := s.GetRepair(ctx, id); it.Attempts != 3 {
		t.Fatalf("a lower margin without a reason reset the attempts: %+v", it)
	}
	if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: id, Margin: -2, Reason: "read found shards missing [1]"}); err != nil {
		t.Fatal(err)
	}
	if it, _ := s.GetRepair(ctx, id); it.Attempts != 0 || it.Reason != "read found shards missing [1]" {
		t.Fatalf("a lower margin with a new reason: %+v", it)
	}
	// A stripe not queued is queued as by Enqueue.
	other := newID()
	if err := s.EnqueueRecause(ctx, metastore.RepairItem{Stripe: other, Margin: 1, Reason: "backend b1 wiped"}); err != nil {
		t.Fatal(err)
	}
	if it, err := s.GetRepair(ctx, other); err != nil || it.Reason != "backend b1 wiped" || it.Margin != 1 {
		t.Fatalf("EnqueueRecause of a new stripe: %+v, %v", it, err)
	}
}
