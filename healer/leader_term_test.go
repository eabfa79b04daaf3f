package healer

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// On etcd a daemon that loses the maintenance lease and wins it back runs
// the same Healer again (runLeaderLoops, once per term). Another
// process's healer led in between: here b6 came back up under it, took a
// write, and went down again while that write was in flight; the write
// committed after that healer's last round. The returning healer swept b6
// in its earlier term, but that says nothing of the other healer's
// watches: its new term's first round must sweep b6 again, or the
// write's stripe keeps a shard on the down b6 until a scrub.
func TestDownWriteQueuedWhenLeadershipReturns(t *testing.T) {
	cfg := Config{Grace: 0, SuspectAfter: 1, ProbeInterval: Duration(time.Hour), ScrubPeriod: -1, LightScrubPeriod: -1}
	e := newEnv(t, envOpts{backends: 7, cfg: cfg})
	objs := e.fill(5, 30<<10)
	e.probe()
	e.kill("b6")
	e.probe() // b6 down: this healer sweeps it
	e.checkState("b6", metastore.StateDown)
	returning := e.h

	// Another process leads.
	e.restart(cfg)
	e.revive("b6")
	e.probe()
	e.checkState("b6", metastore.StateUp)
	w := e.stageWrite("in-flight", patterned(12<<10, 7), "b6", time.Now())
	e.kill("b6")
	e.probe() // b6 down again: the write is watched by this healer only
	e.checkState("b6", metastore.StateDown)
	w.commitInto(t, e.meta, objs)

	// The first daemon leads again.
	e.h = returning
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- returning.Run(ctx) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	defer stop()
	id := w.stripes[0].ID
	waitFor(t, func() bool {
		st, err := e.meta.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return !slices.ContainsFunc(st.Shards, func(l metastore.ShardLoc) bool { return l.Backend == "b6" })
	})
	stop()
	e.checkObjects(objs)
}
