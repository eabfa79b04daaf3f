package healstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// Reads recycle their shards' memory (Reader.fetchStripe): many readers
// at once, of objects whose shards share one size and so one pool, each
// read back exactly, and again after a shard of one object was corrupted
// (its read decodes around it, and recycles the rest).
func TestConcurrentReadsWithRecycledShards(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, testOpts{k: 4, m: 2, blockSize: 64 << 10, dir: dir})
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(7, 8))
	const objs = 4
	want := make([][]byte, objs)
	for i := range objs {
		want[i] = randBytes(rnd, 256<<10) // four blocks of the same size
		if _, err := s.Put(ctx, fmt.Sprintf("o%d", i), bytes.NewReader(want[i])); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func(round string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 20 {
					i := (g + j) % objs
					r, err := s.Open(ctx, fmt.Sprintf("o%d", i))
					if err != nil {
						errs <- err
						return
					}
					got, err := io.ReadAll(r)
					r.Close()
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, want[i]) {
						errs <- fmt.Errorf("%s: o%d read back different (reader %d, read %d)", round, i, g, j)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	readAll("healthy")

	// Corrupt one data shard of o0's first stripe.
	sh := stripesOf(t, s, "o0")[0].Shards[0]
	b, ok := s.Backend(sh.Backend)
	if !ok {
		t.Fatalf("backend %s not open", sh.Backend)
	}
	v, err := b.Get(ctx, sh.Key)
	if err != nil {
		t.Fatal(err)
	}
	v[len(v)-1] ^= 0xff
	if err := b.Put(ctx, sh.Key, v); err != nil {
		t.Fatal(err)
	}
	readAll("one shard corrupt")
}
