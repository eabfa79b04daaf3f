package healstore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/healstore/healstore/backends"
)

// A read that hedged around a backend that did not answer asks it last
// for a while: with a hung node, every stripe with a data shard on it
// waited hedge_after for that shard before asking for another.
func TestReadsAskALaggingBackendLast(t *testing.T) {
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

	before := metricSum(t, s, "healstore_read_hedges_total")
	if got := readAll(t, s, "obj"); !bytes.Equal(got, data) {
		t.Fatal("the object does not read back identical")
	}
	// Reads run a few blocks ahead: those under way when the first hedge
	// marked the backend may hedge too.
	if hedges := metricSum(t, s, "healstore_read_hedges_total") - before; hedges > 4 {
		t.Fatalf("%v hedges for the %d stripes with a data shard on the hung backend; want it asked last after the first", hedges, withData)
	}
}
