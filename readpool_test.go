package healstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/healstore/healstore/backends"
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

// Shards come in as many sizes as objects do; reading objects of many
// sizes must not leave a pool behind for each (the store's pools are never
// removed): nearby sizes share one, and what a read gets back is still
// exactly its object.
func TestRecycledShardsOfManySizesShareFewPools(t *testing.T) {
	s := newTestStore(t, testOpts{k: 4, m: 2, blockSize: 64 << 10})
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(3, 4))
	pools := func() int {
		n := 0
		s.bufs.pools.Range(func(any, any) bool { n++; return true })
		return n
	}
	before := pools()
	const objs = 120
	sizes := map[int64]bool{}
	for i := range objs {
		// Distinct shard sizes: payloads are padded to 64 bytes, so
		// 4*64 bytes more per object are 64 more in each shard.
		want := randBytes(rnd, 8192+i*4*64)
		name := fmt.Sprintf("o%d", i)
		if _, err := s.Put(ctx, name, bytes.NewReader(want)); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, name); !bytes.Equal(got, want) {
			t.Fatalf("%s read back different", name)
		}
		for _, st := range stripesOf(t, s, name) {
			sizes[st.Shards[0].Size] = true
		}
	}
	if len(sizes) < objs/2 {
		t.Fatalf("setup: only %d distinct shard sizes", len(sizes))
	}
	if added := pools() - before; added > 16 {
		t.Fatalf("reading %d objects (%d shard sizes) left %d more buffer pools", objs, len(sizes), added)
	}
}

// A size class holds its size and wastes at most an eighth of it; sizes
// up to a 64 MiB shard fall in a few hundred classes.
func TestShardSizeClasses(t *testing.T) {
	classes := map[int]bool{}
	for n := 0; n <= 64<<20+64<<10+1; n += 1 + n/997 {
		c := sizeClass(n)
		if c < n || (n > 4096 && c > n+n/8) {
			t.Fatalf("sizeClass(%d) = %d", n, c)
		}
		classes[c] = true
	}
	if len(classes) > 8*20 {
		t.Fatalf("%d classes", len(classes))
	}
	var p bufPool
	b := p.getShard(5000)
	if len(b) != 5000 || cap(b) != sizeClass(5000) {
		t.Fatalf("getShard(5000): len %d cap %d", len(b), cap(b))
	}
	p.putShard(b[:10]) // a short read's prefix gives back the whole buffer
	if c := p.getShard(4900); cap(c) != sizeClass(5000) || len(c) != 4900 {
		t.Fatalf("getShard(4900) after putShard: len %d cap %d", len(c), cap(c))
	}
}

// keeper returns, for each key, the same memory on every Get (a cache of
// its own), as the Backend contract allows; it does not read into the
// caller's memory (no BufGetter). damaged counts Gets that found their
// kept memory changed by someone else.
type keeper struct {
	backends.Backend
	mu      sync.Mutex
	kept    map[string][]byte
	copies  map[string][]byte
	damaged int
}

func (k *keeper) Get(ctx context.Context, key string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.kept[key]; ok {
		if !bytes.Equal(v, k.copies[key]) {
			k.damaged++
		}
		return v, nil
	}
	v, err := k.Backend.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	// Memory of a capacity the store's pool takes, as any backend's
	// memory may happen to have.
	v = append(make([]byte, 0, sizeClass(len(v))), v...)
	k.kept[key], k.copies[key] = v, bytes.Clone(v)
	return v, nil
}

// Memory a backend returned of its own never joins the store's pool: a
// read recycles only what the pool gave it, so the next read into pooled
// memory cannot overwrite a backend's kept value.
func TestReadRecyclesOnlyPooledShards(t *testing.T) {
	s := newTestStore(t, testOpts{k: 4, m: 2, blockSize: 64 << 10})
	ctx := context.Background()
	var keepers []*keeper
	for _, name := range []string{"b0", "b2", "b4"} {
		setBackend(t, s, name, func(b backends.Backend) backends.Backend {
			k := &keeper{Backend: b, kept: map[string][]byte{}, copies: map[string][]byte{}}
			keepers = append(keepers, k)
			return k
		})
	}
	rnd := rand.New(rand.NewPCG(9, 10))
	want := map[string][]byte{}
	for i := range 3 {
		name := fmt.Sprintf("o%d", i)
		want[name] = randBytes(rnd, 256<<10)
		if _, err := s.Put(ctx, name, bytes.NewReader(want[name])); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 10 {
		for name, data := range want {
			r, err := s.Open(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round %d: %s read back wrong (%v)", round, name, err)
			}
		}
	}
	for i, k := range keepers {
		if k.damaged > 0 {
			t.Fatalf("keeper %d: %d reads found its kept memory overwritten", i, k.damaged)
		}
	}
}
