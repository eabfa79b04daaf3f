package healer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A check of a reader's finding where one source backend does not answer
// and another is not open at all names both shards unchecked. statSources
// records the first from a goroutine and the second from its own loop:
// both must append under the same lock (go test -race flags it otherwise).
func TestUncheckedNotOpenAndUnanswered(t *testing.T) {
	e := newEnv(t, envOpts{cfg: Config{Grace: Duration(time.Hour)}})
	ctx := context.Background()
	e.fill(3, 30<<10)
	e.probe()
	st := e.stripes()[0]
	if err := e.meta.Enqueue(ctx, metastore.RepairItem{Stripe: st.ID, Margin: 1,
		Reason: "read found shards missing [0], corrupt []"}); err != nil {
		t.Fatal(err)
	}
	// Shard 0's backend times out; shard 2's is not open (the monitor has
	// not looked since, so both still count as sources).
	e.kill(st.Shards[0].Backend)
	e.mu.Lock()
	delete(e.bs, st.Shards[2].Backend)
	e.mu.Unlock()
	it, err := e.meta.GetRepair(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	o, err := e.h.Repair(ctx, *it)
	if o != Failed || !errors.Is(err, ErrUnchecked) {
		t.Fatalf("repair: %s, %v; want it to fail unchecked", o, err)
	}
	if !strings.Contains(err.Error(), "shards [0 2]") {
		t.Fatalf("repair error %q does not name shards 0 and 2 unchecked", err)
	}
}
