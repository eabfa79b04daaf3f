package healer

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A stripe queued because b6 was found wiped (b6 up again behind a fresh
// marker, its shard gone), then b3 goes down before the repair while b2 is
// suspect: the down sweep queues the stripe at a lower margin than the
// wipe's (it counts b3's shard lost and b2's waiting, and takes b6's for
// whole). Its cause must join the wipe's, not replace it: only the reason
// tells the rebuilder to Stat b6's shard, and without it the repair
// rebuilds b3's shard only and b6's stays missing until a scrub.
func TestWipedThenDownSweepKeepsWipedCause(t *testing.T) {
	// k+m = 7 on 8 backends: a stripe has a shard on all but one, where
	// b3's shard can go.
	e := newEnv(t, envOpts{backends: 8, k: 4, m: 3, cfg: Config{Grace: Duration(time.Hour), SuspectAfter: 1}})
	base := time.Now()
	var mu sync.Mutex
	offset := time.Duration(0)
	e.h.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return base.Add(offset)
	}
	advance := func(to time.Duration) {
		mu.Lock()
		offset = to
		mu.Unlock()
	}
	objs := e.fill(16, 48<<10)
	e.probe()

	e.wipe("b6")
	e.probe() // b6 found wiped: its stripes queued as such, marked again
	e.checkState("b6", metastore.StateUp)
	wipedMargin := map[[16]byte]int{}
	for _, it := range e.queue() {
		if !slices.Contains(wipedBackends(it.Reason), "b6") {
			t.Fatalf("stripe %x queued for %q after the wipe of b6", it.Stripe, it.Reason)
		}
		wipedMargin[it.Stripe] = it.Margin
	}
	if len(wipedMargin) == 0 {
		t.Fatal("nothing queued for the wiped b6")
	}

	e.kill("b3")
	e.probe() // b3 suspect
	advance(50 * time.Minute)
	e.kill("b2")
	e.probe() // b2 suspect; b3's grace runs on
	advance(61 * time.Minute)
	e.probe() // b3 down, b2 still suspect: the down sweep, before any repair
	e.checkState("b3", metastore.StateDown)
	e.checkState("b2", metastore.StateSuspect)

	// The scenario needs a down sweep at a lower margin for a stripe
	// queued as wiped on b6.
	lowered := 0
	for _, it := range e.queue() {
		if m, ok := wipedMargin[it.Stripe]; ok && it.Margin < m && strings.Contains(it.Reason, "backend b3 down") {
			lowered++
		}
	}
	if lowered == 0 {
		t.Fatal("no stripe queued as wiped on b6 was swept for b3 at a lower margin; the test staged nothing")
	}

	e.revive("b2")
	e.probe() // b2 up again
	e.checkState("b2", metastore.StateUp)
	e.repairAll()
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("%d stripes still queued after the repairs, first %+v", len(q), q[0])
	}
	// Every shard is on an up backend and verifies there: b6's is back.
	e.checkFull()
	e.checkObjects(objs)
}
