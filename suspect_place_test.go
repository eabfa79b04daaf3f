package healstore

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/healstore/healstore/metastore"
)

// A backend the healer marked suspect, and that answered this store's own
// probe since, takes new shards again. The recorded state is the healer's,
// and only a running healer moves it back to up: after a daemon saw a node
// hang and was stopped before the node came back, a mount or a library
// user without a healer placed nothing on that node for good, while
// `healstore backend ls` (which probes) showed it up. A suspect mark newer
// than the store's last answer from the backend is still followed.
func TestSuspectBackendAnsweringSinceTakesShards(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, testOpts{backends: 7})
	cfg.InlineMaxSize = 0
	markSuspect := func(s *Store) {
		t.Helper()
		if err := s.meta.UpdateBackend(ctx, "b0", func(r *metastore.BackendRecord) error {
			r.State, r.Since = metastore.StateSuspect, time.Now()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// stripesOnB0 puts 10 objects of 4 stripes and counts how many of
	// their 40 stripes have a shard on b0 (6 of 7 backends per stripe: about
	// 34 when b0 is a candidate like the others).
	stripesOnB0 := func(s *Store, round string) int {
		t.Helper()
		before, err := s.meta.CountStripesOnBackend(ctx, "b0")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if _, err := s.Put(ctx, fmt.Sprintf("%s%d", round, i), bytes.NewReader(make([]byte, 4*cfg.Policy.BlockSize))); err != nil {
				t.Fatal(err)
			}
		}
		after, err := s.meta.CountStripesOnBackend(ctx, "b0")
		if err != nil {
			t.Fatal(err)
		}
		return after - before
	}

	s := openTest(t, cfg)
	markSuspect(s)
	s.Close()

	// Reopened: b0 answered the open's probe after it was marked.
	s = openTest(t, cfg)
	if n := stripesOnB0(s, "a"); n < 20 {
		t.Errorf("b0 answered this store's probe after it was marked suspect, yet only %d of 40 new stripes have a shard there", n)
	}
	// Marked again now, after this store's probe: writes keep off it
	// while the other six hold a full stripe.
	markSuspect(s)
	if err := s.refreshBackends(ctx); err != nil {
		t.Fatal(err)
	}
	if n := stripesOnB0(s, "b"); n != 0 {
		t.Errorf("b0 was marked suspect after this store's last probe, yet %d new stripes have a shard there", n)
	}
}
