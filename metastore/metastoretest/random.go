package metastoretest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// Seed returns the seed for a randomized test: HEALSTORE_TEST_SEED when
// set (to replay a failure), else the clock. It logs the seed.
func Seed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HEALSTORE_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HEALSTORE_TEST_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with HEALSTORE_TEST_SEED=%d)", seed, seed)
	return seed
}

func testConcurrentReplace(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	const workers = 6
	objs := make([]*metastore.Object, workers)
	stripes := make([][]*metastore.Stripe, workers)
	for w := range objs {
		stripes[w] = []*metastore.Stripe{
			mkStripe([16]byte{}, 0, 2, "b1", "b2", "b3"),
			mkStripe([16]byte{}, 1, 2, "b2", "b3", "b4"),
		}
		objs[w] = mkObject(c, "same", stripes[w]...)
	}
	var wg sync.WaitGroup
	replaced := make([]*metastore.Object, workers)
	errs := make([]error, workers)
	for w := range objs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replaced[w], errs[w] = s.PutObject(ctx, objs[w], stripes[w], nil, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	final, err := s.GetObject(ctx, "same")
	if err != nil {
		t.Fatal(err)
	}
	// The puts form one chain: each version replaced exactly one other,
	// and every version except the final one was replaced exactly once.
	seen := map[[16]byte]int{}
	nils := 0
	for _, r := range replaced {
		if r == nil {
			nils++
			continue
		}
		seen[r.ID]++
	}
	if nils != 1 {
		t.Fatalf("%d puts replaced nothing, want 1", nils)
	}
	var loser []*metastore.Stripe
	for w, o := range objs {
		if o.ID == final.ID {
			if seen[o.ID] != 0 {
				t.Fatal("the final version was reported replaced")
			}
			continue
		}
		if seen[o.ID] != 1 {
			t.Fatalf("version %d replaced %d times, want 1", w, seen[o.ID])
		}
		loser = append(loser, stripes[w]...)
	}
	if got, want := garbageKeys(garbage(t, s)), shardsOf(loser...); !reflect.DeepEqual(got, want) {
		t.Fatalf("garbage holds %d shards, want the %d of the replaced versions", len(got), len(want))
	}
	checkClean(t, s)
}

// model is what the randomized test expects the Store to hold.
type model struct {
	objects map[string]*metastore.Object
	stripes map[[16]byte]*metastore.Stripe
	queued  map[[16]byte]int // stripe -> margin
	garbage int
}

func (m *model) drop(o *metastore.Object, keep map[[16]byte]bool) {
	for _, id := range o.Stripes {
		if keep[id] {
			continue
		}
		st := m.stripes[id]
		m.garbage += len(st.Present())
		delete(m.stripes, id)
		delete(m.queued, id)
	}
}

func testRandomized(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	rnd := rand.New(rand.NewPCG(Seed(t), 1))
	names := []string{"n0", "n1", "n2", "dir/n3", "dir/n4"}
	backends := []string{"b0", "b1", "b2", "b3", "b4", "b5", "b6"}
	m := &model{objects: map[string]*metastore.Object{}, stripes: map[[16]byte]*metastore.Stripe{}, queued: map[[16]byte]int{}}
	pickStripe := func() *metastore.Stripe {
		ids := make([][16]byte, 0, len(m.stripes))
		for id := range m.stripes {
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			return nil
		}
		slices.SortFunc(ids, func(a, b [16]byte) int { return slices.Compare(a[:], b[:]) })
		return m.stripes[ids[rnd.IntN(len(ids))]]
	}
	const steps = 100
	for step := 0; step < steps; step++ {
		switch op := rnd.IntN(6); op {
		case 0: // put
			name := names[rnd.IntN(len(names))]
			var sts []*metastore.Stripe
			for b := 0; b < 1+rnd.IntN(3); b++ {
				perm := rnd.Perm(len(backends))
				bes := make([]string, 2+rnd.IntN(2))
				for i := range bes {
					if rnd.IntN(8) > 0 {
						bes[i] = backends[perm[i]]
					}
				}
				sts = append(sts, mkStripe([16]byte{}, uint64(b), 1, bes...))
			}
			o := mkObject(c, name, sts...)
			var reps []metastore.RepairItem
			for _, st := range sts {
				if len(st.Missing()) > 0 {
					reps = append(reps, metastore.RepairItem{Stripe: st.ID, Margin: st.Margin(nil)})
				}
			}
			rep, err := s.PutObject(ctx, o, sts, reps, nil)
			if err != nil {
				t.Fatalf("step %d put %q: %v", step, name, err)
			}
			if old := m.objects[name]; old != nil {
				if rep == nil || rep.ID != old.ID {
					t.Fatalf("step %d: put %q replaced %v, want %x", step, name, rep, old.ID)
				}
				m.drop(old, nil)
			} else if rep != nil {
				t.Fatalf("step %d: put %q replaced %x from nowhere", step, name, rep.ID)
			}
			m.objects[name] = o
			for _, st := range sts {
				m.stripes[st.ID] = st
			}
			for _, r := range reps {
				m.queued[r.Stripe] = r.Margin
			}
		case 1: // delete
			name := names[rnd.IntN(len(names))]
			err := s.DeleteObject(ctx, name)
			if old := m.objects[name]; old != nil {
				if err != nil {
					t.Fatalf("step %d delete %q: %v", step, name, err)
				}
				m.drop(old, nil)
				delete(m.objects, name)
			} else if !errors.Is(err, metastore.ErrNotFound) {
				t.Fatalf("step %d delete missing %q: %v", step, name, err)
			}
		case 2: // rename
			from, to := names[rnd.IntN(len(names))], names[rnd.IntN(len(names))]
			err := s.RenameObject(ctx, from, to)
			o := m.objects[from]
			if o == nil {
				if !errors.Is(err, metastore.ErrNotFound) {
					t.Fatalf("step %d rename missing %q: %v", step, from, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("step %d rename %q -> %q: %v", step, from, to, err)
			}
			if from == to {
				continue
			}
			if old := m.objects[to]; old != nil {
				m.drop(old, nil)
			}
			delete(m.objects, from)
			o.Name = to
			m.objects[to] = o
		case 3: // move or lose one shard
			st := pickStripe()
			if st == nil {
				continue
			}
			next := *st
			next.Shards = slices.Clone(st.Shards)
			i := rnd.IntN(len(next.Shards))
			var gs []metastore.Garbage
			if old := next.Shards[i]; old.Backend != "" {
				gs = append(gs, metastore.Garbage{Backend: old.Backend, Key: old.Key})
			}
			next.Shards[i] = metastore.ShardLoc{}
			if rnd.IntN(3) > 0 {
				next.Shards[i] = metastore.ShardLoc{Backend: backends[rnd.IntN(len(backends))], Key: fmt.Sprintf("moved/%d", step), Size: 1}
			}
			if rnd.IntN(5) == 0 {
				next.Version-- // stale: must lose and change nothing
				if err := s.UpdateStripe(ctx, &next, gs); !errors.Is(err, metastore.ErrConflict) {
					t.Fatalf("step %d stale update: %v", step, err)
				}
				continue
			}
			if err := s.UpdateStripe(ctx, &next, gs); err != nil {
				t.Fatalf("step %d update: %v", step, err)
			}
			m.stripes[st.ID] = &next
			m.garbage += len(gs)
		case 4: // enqueue
			st := pickStripe()
			if st == nil {
				continue
			}
			margin := rnd.IntN(3) - 1
			if err := s.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: margin}); err != nil {
				t.Fatalf("step %d enqueue: %v", step, err)
			}
			if cur, ok := m.queued[st.ID]; !ok || margin < cur {
				m.queued[st.ID] = margin
			}
		case 5: // dequeue
			st := pickStripe()
			if st == nil {
				continue
			}
			if err := s.Dequeue(ctx, st.ID); err != nil {
				t.Fatalf("step %d dequeue: %v", step, err)
			}
			delete(m.queued, st.ID)
		}
	}

	objs, err := s.ListObjects(ctx, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(m.objects) {
		t.Fatalf("%d objects, model has %d", len(objs), len(m.objects))
	}
	for i := range objs {
		want := m.objects[objs[i].Name]
		if want == nil {
			t.Fatalf("unexpected object %q", objs[i].Name)
		}
		sameObject(t, &objs[i], want)
	}
	index := map[string][][16]byte{}
	for id, want := range m.stripes {
		got, err := s.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		sameStripe(t, got, want)
		for _, be := range want.Backends() {
			index[be] = append(index[be], id)
		}
	}
	for _, be := range backends {
		if got, want := onBackend(t, s, be), sortedIDs(index[be]...); len(got)+len(want) > 0 && !reflect.DeepEqual(got, want) {
			t.Fatalf("index of %s: %x, model %x", be, got, want)
		}
	}
	q := queueOf(t, s)
	if len(q) != len(m.queued) {
		t.Fatalf("queue has %d entries, model %d", len(q), len(m.queued))
	}
	for _, it := range q {
		if want, ok := m.queued[it.Stripe]; !ok || want != it.Margin {
			t.Fatalf("queue entry %x margin %d; model %d (present %v)", it.Stripe, it.Margin, want, ok)
		}
	}
	if got := len(garbage(t, s)); got != m.garbage {
		t.Fatalf("%d garbage entries, model %d", got, m.garbage)
	}
	checkClean(t, s)
}

// testConcurrentRandomOps runs random operations from several goroutines
// on shared names, then checks the cross-record invariants and that no
// shard was leaked: every shard location ever committed is either still
// referenced by a stripe or queued as garbage.
func testConcurrentRandom(t *testing.T, f Factory) {
	s, c := newStore(t, f)
	ctx := ctxT(t)
	seed := Seed(t)
	names := []string{"x0", "x1", "x2"}
	backends := []string{"b0", "b1", "b2", "b3", "b4"}
	var mu sync.Mutex
	placed := map[string]bool{} // "backend key" ever committed
	record := func(sts ...*metastore.Stripe) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range shardsOf(sts...) {
			placed[k] = true
		}
	}
	const workers, steps = 4, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(w)))
			for step := 0; step < steps; step++ {
				name := names[rnd.IntN(len(names))]
				var err error
				switch rnd.IntN(5) {
				case 0, 1:
					st := mkStripe([16]byte{}, 0, 1, backends[rnd.IntN(5)], backends[rnd.IntN(5)])
					_, err = s.PutObject(ctx, mkObject(c, name, st), []*metastore.Stripe{st}, nil, nil)
					if err == nil {
						record(st)
					}
				case 2:
					err = s.DeleteObject(ctx, name)
				case 3:
					err = s.RenameObject(ctx, name, names[rnd.IntN(len(names))])
				case 4:
					var o *metastore.Object
					if o, err = s.GetObject(ctx, name); err != nil || len(o.Stripes) == 0 {
						break
					}
					var st *metastore.Stripe
					if st, err = s.GetStripe(ctx, o.Stripes[0]); err != nil {
						break
					}
					old := st.Shards[0]
					st.Shards[0] = metastore.ShardLoc{Backend: backends[rnd.IntN(5)], Key: fmt.Sprintf("w%d/%d", w, step), Size: 1}
					if err = s.UpdateStripe(ctx, st, []metastore.Garbage{{Backend: old.Backend, Key: old.Key}}); err == nil {
						record(st)
					}
				}
				if err != nil && !errors.Is(err, metastore.ErrNotFound) && !errors.Is(err, metastore.ErrConflict) {
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
	checkClean(t, s)
	accounted := map[string]bool{}
	for _, k := range garbageKeys(garbage(t, s)) {
		accounted[k] = true
	}
	err := s.ScanStripes(ctx, [16]byte{}, func(st *metastore.Stripe) error {
		for _, k := range shardsOf(st) {
			accounted[k] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range placed {
		if !accounted[k] {
			t.Fatalf("shard %q was committed and is now neither referenced nor garbage", k)
		}
	}
}
