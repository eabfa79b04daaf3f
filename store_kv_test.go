package healstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healstore/healstore/healer/snapshot"
	pebblekv "github.com/healstore/healstore/metastore/pebble"
)

// TestSnapshotPebbleUnderWritesAndLossWindow: a store on the embedded
// metastore counts its commits (the loss window says how many changes a
// lost machine would cost, and max_changes can trigger a snapshot), and
// its snapshots are point-in-time reads, so they succeed while objects are
// being written without a single "metastore kept changing" retry.
func TestSnapshotPebbleUnderWritesAndLossWindow(t *testing.T) {
	ctx := context.Background()
	f := newRecoverFixture(t)
	s := f.open(t)
	defer s.Close()

	if _, ok := snapshot.Unwrap(s.Meta().KV()).(*pebblekv.KV); !ok {
		t.Fatalf("engine under the store's KV is %T, want *pebblekv.KV", snapshot.Unwrap(s.Meta().KV()))
	}
	pos0, ctr, ok, err := snapshot.Changes(ctx, s.Meta().KV())
	if !ok || err != nil || !strings.HasPrefix(ctr, "process:") {
		t.Fatalf("the store's pebble metastore counts no commits: %d %q %v %v", pos0, ctr, ok, err)
	}
	rnd := recRand(t)
	recPutRandom(t, s, rnd, "before", 3)

	sn, err := s.NewSnapshotter(SnapshotConfig{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var puts atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		data := bytes.Repeat([]byte("w"), 3000)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Put(ctx, fmt.Sprintf("busy/%05d", i), bytes.NewReader(data)); err != nil {
				t.Error(err)
				return
			}
			puts.Add(1)
		}
	}()
	stopWriter := func() {
		if stop != nil {
			close(stop)
			wg.Wait()
			stop = nil
		}
	}
	defer stopWriter()
	var last *SnapshotInfo
	for take := range 3 {
		deadline := time.Now().Add(30 * time.Second)
		for p := puts.Load(); puts.Load() == p; time.Sleep(time.Millisecond) {
			if t.Failed() || time.Now().After(deadline) {
				t.Fatal("no put finished in 30s")
			}
		}
		info, err := sn.Take(ctx, false)
		if errors.Is(err, snapshot.ErrBusy) {
			t.Fatalf("take %d under writes: %v (the pebble metastore was not read point-in-time)", take, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if info.Consistency != snapshot.PointInTime {
			t.Fatalf("take %d: consistency %q, want %q", take, info.Consistency, snapshot.PointInTime)
		}
		if last != nil && info.Seq <= last.Seq {
			t.Fatalf("take %d under writes uploaded nothing new: seq %d after %d", take, info.Seq, last.Seq)
		}
		last = info
	}
	stopWriter()
	t.Logf("%d puts during 3 snapshots", puts.Load())

	info, err := sn.Take(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	lw, err := s.LossWindow(ctx)
	if err != nil || lw.Changes != 0 || lw.Snapshot == nil || lw.Snapshot.ID != info.ID {
		t.Fatalf("loss window right after a snapshot: %+v, %v", lw, err)
	}
	recPutRandom(t, s, rnd, "later", 2)
	lw, err = s.LossWindow(ctx)
	if err != nil || lw.Changes < 2 {
		t.Fatalf("loss window after two puts: %+v, %v", lw, err)
	}
	t.Logf("two puts are %d pebble commits", lw.Changes)
}
