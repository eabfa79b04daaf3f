package healer

import (
	"context"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// With the loops running, a killed backend is declared down after the
// grace period, a spare takes its place, every stripe is rebuilt and the
// spare target is restored with a freshly provisioned spare, with no call
// from outside.
func TestRunReplacesWithSpareAndRefills(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{
		Grace: Duration(200 * time.Millisecond), SuspectAfter: 1, ProbeInterval: Duration(50 * time.Millisecond),
		SpareTarget: 1, ScrubPeriod: -1, LightScrubPeriod: -1, CensusInterval: Duration(100 * time.Millisecond),
		GCInterval: Duration(100 * time.Millisecond), ProvisionBackoff: Duration(100 * time.Millisecond),
	}, provs: localProv})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	objs := e.fill(15, 40<<10)
	go func() { done <- e.h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The spare target is met first.
	var spare string
	waitFor(t, func() bool {
		recs, _ := e.meta.ListBackends(ctx)
		for _, r := range recs {
			if r.Spare && r.State == metastore.StateUp && r.Marker != "" {
				spare = r.Name
				return true
			}
		}
		return false
	})
	held := e.onBackend("b0")
	e.kill("b0")
	waitFor(t, func() bool { return e.state("b0") == metastore.StateReplaced })
	rec, _ := e.meta.GetBackend(ctx, spare)
	if rec.Spare {
		t.Fatal("the spare was not promoted")
	}
	if e.onBackend(spare) != held {
		t.Fatalf("promoted spare holds %d stripes, b0 held %d", e.onBackend(spare), held)
	}
	// A new spare restores the target.
	waitFor(t, func() bool {
		recs, _ := e.meta.ListBackends(ctx)
		for _, r := range recs {
			if r.Spare && r.State == metastore.StateUp && r.Name != spare {
				return e.onBackend(r.Name) == 0
			}
		}
		return false
	})
	waitFor(t, func() bool {
		c, err := e.h.TakeCensus(ctx)
		return err == nil && c.Degraded == 0 && c.QueueDepth == 0
	})
	e.checkFull()
	e.checkObjects(objs)
	// GC ran in the loop and removed the old locations' garbage entries
	// (the replaced backend's are dropped without deleting).
	waitFor(t, func() bool {
		n := 0
		_ = e.meta.ListGarbage(ctx, func(metastore.Garbage) error { n++; return nil })
		return n == 0
	})
}
