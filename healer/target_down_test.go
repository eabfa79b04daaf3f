package healer

import (
	"context"
	"testing"

	"github.com/healstore/healstore/metastore"
)

// A rebuild target that goes down between the upload and the commit was
// scanned by the monitor without the stripe (the backend index did not
// name it yet): the rebuilder queues the stripe again itself, or the shard
// it just placed would count as lost with nothing to rebuild it.
func TestRebuildTargetDownBeforeCommit(t *testing.T) {
	e := newEnv(t, envOpts{backends: 7, cfg: Config{Grace: 0, SuspectAfter: 1}})
	ctx := context.Background()
	e.fill(6, 30<<10)
	e.probe()
	it, name := e.rebuildLosingTarget(func(target string) {
		// The rebuilt shard landed; now the target dies and the
		// monitor declares it down before the commit.
		e.kill(target)
	})
	e.checkState(name, metastore.StateDown)
	st, err := e.meta.GetStripe(ctx, it.Stripe)
	if err != nil {
		t.Fatal(err)
	}
	on := false
	for _, l := range st.Shards {
		on = on || l.Backend == name
	}
	if !on {
		t.Fatalf("the repair committed no shard on %s", name)
	}
	e.checkQueued(it.Stripe, "stripe with a shard on the down "+name)
}
