package healstore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/healstore/healstore/backends"
)

// hungDataShardStore writes a 40-stripe object (4+2) and makes the
// backend holding the first stripe's first data shard hang on reads. It
// returns the store, the data and that backend.
func hungDataShardStore(t *testing.T) (*Store, []byte, string) {
	t.Helper()
	ctx := context.Background()
	s := newTestStore(t, testOpts{edit: func(c *Config) { c.InlineMaxSize = 0 }})
	data := randBytes(rand.New(rand.NewPCG(3, 3)), 40*64<<10) // 40 stripes of 4+2
	if _, err := s.Put(ctx, "obj", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	o, err := s.meta.GetObject(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.meta.GetStripe(ctx, o.Stripes[0])
	if err != nil {
		t.Fatal(err)
	}
	hung := first.Shards[0].Backend // holds a data shard of the first stripe
	withData := 0
	for _, id := range o.Stripes {
		st, err := s.meta.GetStripe(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range st.Shards[:st.K] {
			if sh.Backend == hung {
				withData++
			}
		}
	}
	if withData < 10 {
		t.Fatalf("only %d of 40 stripes have a data shard on %s", withData, hung)
	}
	setBackend(t, s, hung, func(b backends.Backend) backends.Backend { return stallBackend{Backend: b} })
	return s, data, hung
}

// readHedges reads obj back, checks it, and returns the hedges it took.
func readHedges(t *testing.T, s *Store, data []byte) float64 {
	t.Helper()
	before := metricSum(t, s, "healstore_read_hedges_total")
	if got := readAll(t, s, "obj"); !bytes.Equal(got, data) {
		t.Fatal("the object does not read back identical")
	}
	return metricSum(t, s, "healstore_read_hedges_total") - before
}

// A read that hedged around a backend that did not answer asks it last
// for a while: with a hung node, every stripe with a data shard on it
// waited hedge_after for that shard before asking for another.
func TestReadsAskALaggingBackendLast(t *testing.T) {
	s, data, _ := hungDataShardStore(t)
	// Reads run a few blocks ahead: those under way when the first hedge
	// marked the backend may hedge too.
	if hedges := readHedges(t, s, data); hedges > 4 {
		t.Fatalf("%v hedges for the stripes with a data shard on the hung backend; want it asked last after the first", hedges)
	}
}

// A backend that failed a call since it last answered (a write gave up on
// it) is asked last by reads from the start, without a first hedge.
func TestReadsAskAnOutOfReachBackendLast(t *testing.T) {
	s, data, hung := hungDataShardStore(t)
	h := s.handleOf(hung)
	h.mu.Lock()
	h.answeredAt, h.failedAt = time.Now().Add(-time.Minute), time.Now()
	h.mu.Unlock()
	if hedges := readHedges(t, s, data); hedges != 0 {
		t.Fatalf("%v hedges: the hung backend failed a write a moment ago, so reads should ask it last", hedges)
	}
}
