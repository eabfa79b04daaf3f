package snapshot

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
	"github.com/healstore/healstore/metastore/memkv"
	pebblekv "github.com/healstore/healstore/metastore/pebble"
)

// pebble's engine snapshots are how a pebble metastore gives a view.
var _ PointInTimeScanner = (*pebblekv.KV)(nil)

// TestPebblePointInTimeUnderWrites: a pebble metastore, wrapped as the
// store wraps it (CountCommits), is read through its engine snapshot, so
// snapshots succeed under constant writes, never with ErrBusy and never
// holding half a commit; the wrapper counts the changes.
func TestPebblePointInTimeUnderWrites(t *testing.T) {
	ctx := context.Background()
	engine, err := pebblekv.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	kv := CountCommits(engine)
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	fill(t, kv, mrand.New(mrand.NewPCG(seed, 7)), 300)
	filled := dump(t, kv)

	keys, _ := testKeys(t)
	f := newFixture(t, 6)
	s := newSnapshotter(t, keys, 3)
	pos0, ctr0, ok, err := Changes(ctx, kv)
	if !ok || err != nil || !strings.HasPrefix(ctr0, "process:") || pos0 == 0 {
		t.Fatalf("pebble change counter through CountCommits: %d %q %v %v", pos0, ctr0, ok, err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var commits atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := 0; ; gen++ {
			select {
			case <-stop:
				return
			default:
			}
			var b metastore.Batch
			for i := range 5 {
				v := fmt.Appendf(nil, "gen-%d", gen)
				b.Put(fmt.Appendf(nil, "a/%d", i), v)
				b.Put(fmt.Appendf(nil, "z/%d", i), v)
			}
			if err := kv.Commit(ctx, &b); err != nil {
				t.Error(err)
				return
			}
			commits.Add(1)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for take := range 3 {
		// Let the writer commit before each take, so every view holds
		// pairs and writes are under way while it is read.
		deadline := time.Now().Add(30 * time.Second)
		for c := commits.Load(); commits.Load() == c; time.Sleep(time.Millisecond) {
			if t.Failed() || time.Now().After(deadline) {
				t.Fatal("the writer made no commit in 30s")
			}
		}
		res, err := s.Take(ctx, kv, f.members, TakeOptions{})
		if errors.Is(err, ErrBusy) {
			t.Fatalf("take %d: %v: the pebble view was not read point-in-time", take, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !res.Uploaded || res.Newest.Consistency != PointInTime || res.Counter != ctr0 || res.Position <= pos0 {
			t.Fatalf("take %d under writes: uploaded %v, %s, counter %s at %d (start %d)",
				take, res.Uploaded, res.Newest.Consistency, res.Counter, res.Position, pos0)
		}
		dst := memkv.New()
		if _, err := Restore(ctx, keys, &res.Newest, f.opener(), dst); err != nil {
			t.Fatal(err)
		}
		got := dump(t, dst)
		for i := range 5 {
			if a, z := got[fmt.Sprintf("a/%d", i)], got[fmt.Sprintf("z/%d", i)]; a != z || a == "" {
				t.Fatalf("take %d holds half a commit: a/%d=%q z/%d=%q", take, i, a, i, z)
			}
		}
		for k, v := range filled {
			if got[k] != v {
				t.Fatalf("take %d: key %s restored with %d bytes, want %d", take, k, len(got[k]), len(v))
			}
		}
		if len(got) != len(filled)+10 {
			t.Fatalf("take %d restored %d keys, want %d", take, len(got), len(filled)+10)
		}
	}
	t.Logf("%d commits during 3 snapshots", commits.Load())
}
