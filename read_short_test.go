package healstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A read of a stripe short of k shards names, in its error, the missing
// and corrupt shard indices with the backends the record placed them on
// and how many were present of the k needed. A shard found corrupt (its
// location then dropped for the next round) is named once, as corrupt.
func TestReadShortStripeNamesShards(t *testing.T) {
	s := newTestStore(t, testOpts{})
	ctx := context.Background()
	putRandom(t, s, "obj", 2*testBS)
	st := stripesOf(t, s, "obj")[1]
	loseShards(t, s, "obj", 1, 0, 1)
	flipShard(t, s, "obj", 1, 3)
	on := func(i int) string { return st.Shards[i].Backend }

	r, err := s.Open(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.noDirect = true // the cached path; the direct one shares fetchStripe
	_, err = r.ReadAt(make([]byte, 10), testBS)
	if !errors.Is(err, ErrInsufficientBackends) {
		t.Fatalf("read of a stripe with 3 of 4 shards: %v, want ErrInsufficientBackends", err)
	}
	want := fmt.Sprintf("stripe %x: 3 present, 4 needed; missing 0 (%s), 1 (%s); corrupt 3 (%s)", st.ID, on(0), on(1), on(3))
	if msg := err.Error(); !strings.Contains(msg, `read "obj" block 1`) || !strings.Contains(msg, want) {
		t.Fatalf("error %q\nwant it to hold %q", msg, want)
	}
}
